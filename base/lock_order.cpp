#include "base/lock_order.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include <fmt/core.h>

namespace sptelab::lock_order {
namespace {

bool checking_by_default() {
#if !defined(NDEBUG) || defined(SPTELAB_SANITIZED)
  return true;
#else
  const char* value = std::getenv("SPTELAB_LOCK_CHECKS");
  return value != nullptr && value[0] == '1';
#endif
}

struct Held {
  const void* lock;
  LockRank rank;
  const char* name;
};

thread_local std::vector<Held> held_locks;

std::mutex handler_mutex;
ViolationHandler handler;

const char* rank_name(LockRank rank) {
  switch (rank) {
    case LockRank::kUnranked:
      return "unranked";
    case LockRank::kMmapLock:
      return "mmap_lock";
    case LockRank::kPtl:
      return "PTL";
    case LockRank::kMmuLock:
      return "mmu_lock";
    case LockRank::kMirror:
      return "mirror";
  }
  return "?";
}

void violation(const std::string& what) {
  std::string held = "held:";
  for (const Held& lock : held_locks) held += fmt::format(" {}", lock.name);
  const std::string report = fmt::format("{} ({})", what, held);
  {
    std::lock_guard lock(handler_mutex);
    if (handler) {
      handler(report);
      return;
    }
  }
  std::fprintf(stderr, "sptelab: lock order violated: %s\n", report.c_str());
  std::abort();
}

}  // namespace

namespace detail {
std::atomic<bool> checking{checking_by_default()};
}  // namespace detail

void set_enabled(bool on) {
  detail::checking.store(on, std::memory_order_relaxed);
}

void before_acquire(LockRank rank, const char* name) {
  if (rank == LockRank::kUnranked) return;
  for (const Held& outer : held_locks) {
    if (outer.rank > rank) {
      violation(
          fmt::format("{} ({}) taken while holding {} ({}); the order is mmap_lock -> "
                      "PTL -> mmu_lock -> mirror",
                      name, rank_name(rank), outer.name, rank_name(outer.rank)));
      return;
    }
  }
}

void acquired(const void* lock, LockRank rank, const char* name) {
  held_locks.push_back({lock, rank, name});
}

void released(const void* lock) {
  for (auto it = held_locks.rbegin(); it != held_locks.rend(); ++it) {
    if (it->lock == lock) {
      held_locks.erase(std::next(it).base());
      return;
    }
  }
}

bool held_by_this_thread(const void* lock) {
  for (const Held& held : held_locks) {
    if (held.lock == lock) return true;
  }
  return false;
}

void not_held(const char* name) {
  violation(fmt::format("{} is not held where its callers must hold it", name));
}

void set_violation_handler(ViolationHandler new_handler) {
  std::lock_guard lock(handler_mutex);
  handler = std::move(new_handler);
}

}  // namespace sptelab::lock_order
