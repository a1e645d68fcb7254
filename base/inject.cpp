#include "base/inject.h"

#include "base/sched.h"

#include <array>
#include <memory>

namespace sptelab::inject {
namespace {

constexpr std::array<const char*, static_cast<size_t>(Point::kCount)> kNames = {
    "host_before_ptl",         "host_after_pte_clear",  "host_after_ptl_unlock",
    "host_before_release",     "host_after_release",    "host_fault_before_ptl",
    "gup_fast_after_pte_read", "gup_fast_after_ref",    "gup_slow_after_walk",
    "tlb_before_flush",        "walk_after_pte_read",   "spte_fault_after_snapshot",
    "spte_fault_after_gup",    "spte_fault_under_lock", "spte_zap_before_mirror",
    "host_before_ref_freeze",
};

// shared_ptr so that a hook being replaced stays alive while another thread
// is still inside it (a paused thread, typically).
std::array<std::atomic<std::shared_ptr<Hook>>, static_cast<size_t>(Point::kCount)> hooks;

}  // namespace

namespace detail {
std::atomic<unsigned> armed_count{0};

void dispatch(Point point, const Context& context) {
  // Under `explore` every injection point is a scheduling point.
  sched::point(sched::Step{.kind = sched::Kind::kPoint,
                           .label = name(point),
                           .detail = context.gfn ? context.gfn : context.addr});
  std::shared_ptr<Hook> hook = hooks[static_cast<size_t>(point)].load(std::memory_order_acquire);
  if (hook) (*hook)(point, context);
}
}  // namespace detail

void set_hook(Point point, Hook hook) {
  auto next = hook ? std::make_shared<Hook>(std::move(hook)) : nullptr;
  auto previous = hooks[static_cast<size_t>(point)].exchange(next, std::memory_order_acq_rel);
  if (previous && !next) detail::armed_count.fetch_sub(1, std::memory_order_relaxed);
  if (!previous && next) detail::armed_count.fetch_add(1, std::memory_order_relaxed);
}

void clear_all() {
  for (size_t i = 0; i < hooks.size(); ++i) set_hook(static_cast<Point>(i), {});
}

const char* name(Point point) {
  return kNames[static_cast<size_t>(point)];
}

std::optional<Point> from_name(std::string_view wanted) {
  for (size_t i = 0; i < kNames.size(); ++i) {
    if (wanted == kNames[i]) return static_cast<Point>(i);
  }
  return std::nullopt;
}

}  // namespace sptelab::inject
