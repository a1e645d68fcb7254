// What a secondary MMU implements to hear about host page-table changes:
// Linux's struct mmu_notifier_ops plus the two callbacks of the January 2008
// designs (invalidate_page, invalidate_range), and the interval subscription
// (struct mmu_interval_notifier). Which callbacks actually arrive, and where,
// depends on the Chain's Placement (placement.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <string_view>

#include "mm/types.h"

namespace sptelab::mmu_notifier {

class Chain;

// invalidate_range_start's "would block" answer (Linux: -EAGAIN). Allowed
// only for a range that is not blockable.
inline constexpr int kWouldBlock = -11;

class Subscription {
 public:
  virtual ~Subscription() = default;

  // For violation reports.
  virtual std::string_view name() const { return "subscription"; }
  // True if the callbacks may block (take a mutex, wait for a device). Such
  // a subscription must not be called while the host holds a spinlock (the
  // PTL) nor for a non-blockable range; the chain reports it when it is.
  virtual bool may_sleep() const { return false; }

  // Andrea Arcangeli's Jan 2008 design: one page, from inside the PTL.
  virtual void invalidate_page(mm::Mm* /*mm*/, uint64_t /*addr*/) {}
  // Christoph Lameter's v1: one call for [start, end), before or after the change.
  virtual void invalidate_range(mm::Mm* /*mm*/, uint64_t /*start*/, uint64_t /*end*/,
                                mm::InvalidateEvent /*event*/) {}
  // Bracket around the change. Returns 0, or kWouldBlock when
  // !range.blockable and the callback would have to sleep. As in Linux, a
  // subscription that can answer kWouldBlock must not rely on its
  // invalidate_range_end (Linux forbids having one); here the host MM cannot
  // back off, so the chain still calls range_end and reports the decline.
  virtual int invalidate_range_start(const mm::InvalidateRange& /*range*/) { return 0; }
  virtual void invalidate_range_end(const mm::InvalidateRange& /*range*/) {}

  // Aging. The chain ORs the answers of all subscriptions.
  virtual bool clear_flush_young(mm::Mm* /*mm*/, uint64_t /*start*/, uint64_t /*end*/) {
    return false;
  }
  virtual bool clear_young(mm::Mm* /*mm*/, uint64_t /*start*/, uint64_t /*end*/) { return false; }
  virtual bool test_young(mm::Mm* /*mm*/, uint64_t /*addr*/) { return false; }
  // set_pte_at_notify(): the PTE at addr now is pte (historical, removed in 6.10).
  virtual void change_pte(mm::Mm* /*mm*/, uint64_t /*addr*/, mm::Pte /*pte*/) {}
  // mmu_notifier_arch_invalidate_secondary_tlbs (6.6+): the host flushed its
  // TLBs for [start, end), maybe inside the PTL. For a secondary TLB that
  // walks the host page table itself (IOMMU SVA); a shadow MMU ignores it.
  virtual void arch_invalidate_secondary_tlbs(mm::Mm* /*mm*/, uint64_t /*start*/,
                                              uint64_t /*end*/) {}
  // The address space is going away; no callback follows.
  virtual void release(mm::Mm* /*mm*/) {}
};

// mmu_interval_notifier: a subscription to one virtual range [start, end),
// with a sequence the owner's fault path checks (the collision-retry scheme of
// mm/mmu_notifier.c, used by HMM and GPU drivers).
//
// The model is Linux's, not a simplification of it:
//  - The chain keeps one mm-wide sequence, invalidate_seq. It is odd while any
//    invalidation that overlapped some interval is open, and becomes even
//    when the last open invalidation ends (mn_itree_inv_start_range /
//    mn_itree_inv_end).
//  - invalidate() is called with that odd value as cur_seq; the owner takes
//    its own lock, calls set_seq(cur_seq), and tears down its mappings.
//    So an interval's own seq is the (odd) mm-wide value of the last
//    invalidation that covered it, and "an invalidation covering this
//    interval is open" means seq() == the chain's invalidate_seq().
//  - read_begin() waits while that is so, then returns seq(); read_retry(seq)
//    (under the owner's lock) is true if an invalidation covered the interval
//    since read_begin.
class IntervalSubscription {
 public:
  IntervalSubscription(uint64_t start, uint64_t end) : start_(start), end_(end) {}
  // The owner must unregister before destroying the subscription (a chain
  // might otherwise call into a half-destroyed object); violating that aborts.
  virtual ~IntervalSubscription();
  IntervalSubscription(const IntervalSubscription&) = delete;
  IntervalSubscription& operator=(const IntervalSubscription&) = delete;

  virtual std::string_view name() const { return "interval"; }
  virtual bool may_sleep() const { return false; }

  // mmu_interval_notifier_ops::invalidate. Returns false only when
  // !range.blockable and the owner's lock could not be taken without sleeping.
  virtual bool invalidate(const mm::InvalidateRange& range, uint64_t cur_seq) = 0;

  uint64_t start() const { return start_; }
  uint64_t end() const { return end_; }
  bool overlaps(uint64_t start, uint64_t end) const { return start_ < end && start < end_; }

  // mmu_interval_read_begin: sleeps while an invalidation covering this
  // interval is open. Call without holding the owner's lock.
  uint64_t read_begin();
  // mmu_interval_read_retry: call under the owner's lock.
  bool read_retry(uint64_t seq) const { return seq_.load(std::memory_order_acquire) != seq; }
  // mmu_interval_check_retry: a lockless early hint; false does not mean done.
  bool check_retry(uint64_t seq) const { return seq_.load(std::memory_order_relaxed) != seq; }
  // mmu_interval_set_seq: from invalidate(), under the owner's lock.
  void set_seq(uint64_t seq) { seq_.store(seq, std::memory_order_release); }
  uint64_t seq() const { return seq_.load(std::memory_order_acquire); }
  // An invalidation covering this interval is open now (racy snapshot).
  bool invalidating() const;
  bool registered() const { return chain_.load(std::memory_order_acquire) != nullptr; }

 private:
  friend class Chain;

  const uint64_t start_;
  const uint64_t end_;
  std::atomic<uint64_t> seq_{0};
  std::atomic<Chain*> chain_{nullptr};  // set while registered
  // Under the chain's interval lock.
  bool in_set_ = false;    // in the chain's interval set (else a deferred insert)
  bool deferred_ = false;  // on the chain's deferred list
};

}  // namespace sptelab::mmu_notifier
