// Internal to mm/: how an operation passes its notifier points and traces
// itself. Every operation that changes present PTEs goes through the points
// of notifier_hooks.h in this order:
//   notify_before -> [PTL: clear (+flush) -> notify_in_ptl -> new PTE]
//   -> notify_after_unlock -> release pages -> notify_after_release
// clear_flush_notify and unlock_release_notify name the two compound steps
// of that order for one page.
#pragma once

#include "base/inject.h"
#include "mm/mm.h"
#include "trace/trace.h"

namespace sptelab::mm::detail {

inline InvalidateRange page_range(Mm& mm, uint64_t addr, InvalidateEvent event) {
  return InvalidateRange{&mm, addr, addr + kPageSize, event, true};
}

inline void notify_before(Mm& mm, const InvalidateRange& range) {
  if (NotifierHooks* hooks = mm.notifier_hooks()) hooks->before_change(range);
}

inline void notify_in_ptl(Mm& mm, uint64_t addr, InvalidateEvent event) {
  if (NotifierHooks* hooks = mm.notifier_hooks())
    hooks->in_ptl_cleared(page_range(mm, addr, event));
}

inline void notify_after_unlock(Mm& mm, const InvalidateRange& range) {
  if (NotifierHooks* hooks = mm.notifier_hooks()) hooks->after_unlock(range);
}

inline void notify_after_release(Mm& mm, const InvalidateRange& range) {
  if (NotifierHooks* hooks = mm.notifier_hooks()) hooks->after_release(range);
}

// set_pte_at_notify(): inside the PTL, after the new PTE is set; from 6.10
// on a plain set_pte_at (the caller's bracket alone invalidates).
inline void notify_change_pte(Mm& mm, uint64_t addr, Pte pte) {
  if (!era_has_change_pte(mm.era())) return;
  if (NotifierHooks* hooks = mm.notifier_hooks()) hooks->change_pte(&mm, addr, pte);
}

inline void inject_at(inject::Point point, uint64_t addr, Pfn pfn = 0) {
  inject::at(point, inject::Context{.addr = addr, .gfn = 0, .pfn = pfn == kNoPfn ? 0 : pfn});
}

// ptep_clear_flush_notify(): under the PTL, the PTE cleared and every TLB
// flushed, then the in-PTL notifier point. `pfn` is the frame being moved
// away from (the injection point's context). Returns the old PTE.
inline Pte clear_flush_notify(Mm& mm, const PteSlot& slot, uint64_t addr, Pfn pfn,
                              InvalidateEvent event) {
  const Pte old = mm.clear_pte_flush(slot, addr);
  inject_at(inject::Point::kHostAfterPteClear, addr, pfn);
  notify_in_ptl(mm, addr, event);
  return old;
}

// The tail of a one-page operation once the PTL is dropped (as
// try_to_unmap_one's caller or zap_page_range_single end): the after-unlock
// point, then the old page's reference dropped if `released` is a frame,
// then the after-release point. `unlocked_pfn` is the after-unlock
// injection point's context.
inline void unlock_release_notify(Mm& mm, const InvalidateRange& range, Pfn unlocked_pfn,
                                  Pfn released) {
  inject_at(inject::Point::kHostAfterPtlUnlock, range.start, unlocked_pfn);
  notify_after_unlock(mm, range);
  if (released != kNoPfn) {
    inject_at(inject::Point::kHostBeforeRelease, range.start, released);
    mm.phys().put(released);
    inject_at(inject::Point::kHostAfterRelease, range.start, released);
  }
  notify_after_release(mm, range);
}

// kMmOpBegin / kMmOpEnd around one operation. For operations on a frame
// (migrate by pfn, mkclean, reclaim) start is the pfn and end pfn + 1.
class OpTrace {
 public:
  OpTrace(MmOp op, uint64_t start, uint64_t end) : op_(op), start_(start), end_(end) {
    trace::emit(trace::Kind::kMmOpBegin, static_cast<uint64_t>(op_), start_, end_);
  }
  ~OpTrace() { trace::emit(trace::Kind::kMmOpEnd, static_cast<uint64_t>(op_), start_, end_); }
  OpTrace(const OpTrace&) = delete;
  OpTrace& operator=(const OpTrace&) = delete;

 private:
  MmOp op_;
  uint64_t start_;
  uint64_t end_;
};

}  // namespace sptelab::mm::detail
