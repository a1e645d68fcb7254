#include "trace/trace.h"

#include <algorithm>
#include <ctime>
#include <mutex>

namespace sptelab::trace {
namespace {

struct Registry {
  std::mutex mutex;
  std::vector<std::shared_ptr<Ring>> rings;  // kept after threads exit: their events stay
  size_t capacity_log2 = 16;
};

Registry& registry() {
  static Registry* instance = new Registry();  // never destroyed: threads may outlive main
  return *instance;
}

std::shared_ptr<Ring> make_ring() {
  Registry& reg = registry();
  std::lock_guard lock(reg.mutex);
  auto ring = std::make_shared<Ring>(static_cast<uint32_t>(reg.rings.size()), reg.capacity_log2);
  reg.rings.push_back(ring);
  return ring;
}

}  // namespace

Ring::Ring(uint32_t id, size_t capacity_log2)
    : id_(id),
      name_("thread" + std::to_string(id)),
      slots_(size_t{1} << capacity_log2),
      mask_((uint64_t{1} << capacity_log2) - 1) {}

std::vector<Event> Ring::drain_copy() const {
  uint64_t head = head_.load(std::memory_order_acquire);
  uint64_t capacity = mask_ + 1;
  uint64_t first = head > capacity ? head - capacity : 0;
  std::vector<Event> out;
  out.reserve(head - first);
  for (uint64_t i = first; i < head; ++i) out.push_back(slots_[i & mask_]);
  return out;
}

uint64_t Ring::overwritten() const {
  uint64_t head = head_.load(std::memory_order_acquire);
  uint64_t capacity = mask_ + 1;
  return head > capacity ? head - capacity : 0;
}

namespace detail {
std::atomic<bool> enabled{false};

Ring& this_thread_ring() {
  thread_local std::shared_ptr<Ring> ring = make_ring();
  return *ring;
}

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
}  // namespace detail

void enable(bool on) {
  detail::enabled.store(on, std::memory_order_relaxed);
}

void set_ring_capacity_log2(size_t capacity_log2) {
  Registry& reg = registry();
  std::lock_guard lock(reg.mutex);
  reg.capacity_log2 = std::clamp<size_t>(capacity_log2, 4, 26);
}

void name_this_thread(const std::string& name) {
  Ring& ring = detail::this_thread_ring();
  std::lock_guard lock(registry().mutex);
  ring.set_name(name);
}

uint32_t this_thread_id() {
  return detail::this_thread_ring().id();
}

Snapshot snapshot() {
  Snapshot snap;
  Registry& reg = registry();
  std::lock_guard lock(reg.mutex);
  for (const auto& ring : reg.rings) {
    std::vector<Event> events = ring->drain_copy();
    uint64_t lost = ring->overwritten();
    if (events.empty() && lost == 0) continue;
    snap.threads.push_back({ring->id(), ring->name(), lost});
    snap.overwritten += lost;
    snap.events.insert(snap.events.end(), events.begin(), events.end());
  }
  // Stable: events of one thread keep their program order on equal stamps.
  std::stable_sort(snap.events.begin(), snap.events.end(), [](const Event& a, const Event& b) {
    return a.ts_ns != b.ts_ns ? a.ts_ns < b.ts_ns : a.thread < b.thread;
  });
  return snap;
}

void reset() {
  Registry& reg = registry();
  std::lock_guard lock(reg.mutex);
  for (const auto& ring : reg.rings) ring->clear();
}

}  // namespace sptelab::trace
