// Named delay-injection points. Tests pause threads at them to drive an exact
// interleaving; race scenarios widen them with delays so that a racy design
// shows its failure quickly. Disarmed points cost one relaxed load.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

namespace sptelab::inject {

enum class Point : uint16_t {
  // mm/: host side of an operation.
  kHostBeforePtl,        // after the "before" notifier point, before the PTL is taken
  kHostAfterPteClear,    // inside the PTL: PTE cleared and flushed, new PTE not yet set
  kHostAfterPtlUnlock,   // PTL dropped, before the "after unlock" notifier point
  kHostBeforeRelease,    // before the old page is released
  kHostAfterRelease,     // after the old page is released, before the "after release" point
  kHostFaultBeforePtl,   // host fault handler: page prepared, PTL not yet taken
  kGupFastAfterPteRead,  // GUP fast: PTE read locklessly, reference not yet taken
  kGupFastAfterRef,      // GUP fast: reference taken, PTE not yet re-validated
  kGupSlowAfterWalk,     // GUP slow: page found and referenced, mmap_lock still held
  kTlbBeforeFlush,       // TLB shootdown about to start
  kWalkAfterPteRead,     // page walker: PTE read (under the PTL or not), new entry not yet written
  // spte/: secondary MMU fault path.
  kSpteFaultAfterSnapshot,  // sequence snapshot taken, GUP not yet called
  kSpteFaultAfterGup,       // GUP returned a page, mmu_lock not yet taken
  kSpteFaultUnderLock,      // mmu_lock held, before the retry check and install
  kSpteZapBeforeMirror,     // spte cleared, mirror not yet told
  // mm/ again, appended: trace files name a delay's point by its number.
  kHostBeforeRefFreeze,  // migration: every mapping unmapped, refcount not yet frozen
  kCount
};

// What the code passing a point knows; fields it does not know are zero.
struct Context {
  uint64_t addr = 0;  // host virtual address
  uint64_t gfn = 0;   // guest frame number (spte layer)
  uint64_t pfn = 0;   // frame involved
};

using Hook = std::function<void(Point, const Context&)>;

// Installs (or with an empty hook, removes) the hook for one point.
void set_hook(Point point, Hook hook);
void clear_all();

const char* name(Point point);
std::optional<Point> from_name(std::string_view name);

namespace detail {
extern std::atomic<unsigned> armed_count;
void dispatch(Point point, const Context& context);
}  // namespace detail

inline void at(Point point, const Context& context = {}) {
  if (detail::armed_count.load(std::memory_order_relaxed) != 0) {
    detail::dispatch(point, context);
  }
}

// RAII: arms a hook for the lifetime of a scope (tests).
class ScopedHook {
 public:
  ScopedHook(Point point, Hook hook) : point_(point) { set_hook(point, std::move(hook)); }
  ~ScopedHook() { set_hook(point_, {}); }
  ScopedHook(const ScopedHook&) = delete;
  ScopedHook& operator=(const ScopedHook&) = delete;

 private:
  Point point_;
};

}  // namespace sptelab::inject
