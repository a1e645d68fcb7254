// The only way the host MM calls upward: each mm operation passes through the
// points below in Linux's order, and whoever is attached (the MMU-notifier
// chain, mmu_notifier/) decides what a point means under its placement policy.
// The host MM itself knows nothing about secondary MMUs.
//
// Order inside an operation that changes present PTEs:
//   before_change(range)        before any PTL is taken
//     [PTL taken] PTE cleared, TLB flushed
//     in_ptl_cleared(page)      still inside the PTL, before the new PTE is set
//     new PTE set [PTL dropped]
//   after_unlock(range)         all PTLs dropped, pages not yet released
//     old pages released (put_page, maybe freed)
//   after_release(range)        everything done
#pragma once

#include "mm/types.h"

namespace sptelab::mm {

class NotifierHooks {
 public:
  virtual ~NotifierHooks() = default;

  virtual void before_change(const InvalidateRange& range) = 0;
  virtual void in_ptl_cleared(const InvalidateRange& page) = 0;
  virtual void after_unlock(const InvalidateRange& range) = 0;
  virtual void after_release(const InvalidateRange& range) = 0;

  // set_pte_at_notify(): inside the PTL, after the new PTE is set.
  virtual void change_pte(Mm* mm, uint64_t addr, Pte pte) = 0;
  // The end of every host TLB flush of [start, end) (x86 flush_tlb_mm_range
  // -> mmu_notifier_arch_invalidate_secondary_tlbs, era 6.6 on), wherever the
  // flush is: inside the PTL for ptep_clear_flush.
  virtual void arch_invalidate_secondary_tlbs(Mm* mm, uint64_t start, uint64_t end) = 0;
  // Aging, called where Linux calls the *_young notifiers; the result is ORed
  // with the primary PTE's accessed bit.
  virtual bool clear_flush_young(Mm* mm, uint64_t start, uint64_t end) = 0;
  virtual bool clear_young(Mm* mm, uint64_t start, uint64_t end) = 0;
  virtual bool test_young(Mm* mm, uint64_t addr) = 0;
  // exit_mmap(): the address space is going away.
  virtual void release(Mm* mm) = 0;
};

}  // namespace sptelab::mm
