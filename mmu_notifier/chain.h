// The MMU-notifier chain of one address space (Linux's struct
// mmu_notifier_subscriptions and the dispatch in mm/mmu_notifier.c). The host
// MM calls it through mm::NotifierHooks; the chain turns each host point into
// the callbacks its Placement prescribes, walks its subscriptions under an
// SRCU-style read section, drives interval subscriptions, and checks that no
// subscription that may sleep is called where the host holds a spinlock.
//
// Attach one Chain to one Mm (mm.set_notifier_hooks(&chain)). Subscriptions
// can be registered and unregistered at any time, from any thread, except
// from inside one of this chain's callbacks (unregistering waits for every
// walker, including the caller: Linux has the same rule).
#pragma once

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "mm/notifier_hooks.h"
#include "mm/types.h"
#include "mmu_notifier/placement.h"
#include "mmu_notifier/srcu.h"
#include "mmu_notifier/subscription.h"

namespace sptelab::mmu_notifier {

enum class ViolationKind : uint8_t {
  // A subscription that may sleep was called while the host held a spinlock
  // (the PTL under ptl-page): the 2008 objection from XPmem/GRU.
  kSleepInAtomic,
  // A subscription that may sleep was called for a non-blockable range and
  // did not decline it.
  kSleepInNonBlockable,
  // kWouldBlock (or an interval's false) for a blockable range: only a
  // non-blockable range may be declined (Linux WARNs).
  kWouldBlockInBlockable,
  // A non-blockable range was declined, but NotifierHooks gives the host MM
  // no way to back off (Linux's OOM reaper would skip the VMA), so the host
  // changed PTEs this subscription has not invalidated.
  kDeclineIgnored,
};
const char* violation_kind_name(ViolationKind kind);

struct Violation {
  ViolationKind kind = ViolationKind::kSleepInAtomic;
  Callback callback = Callback::kCount;
  std::string subscription;  // Subscription::name()
  mm::Mm* mm = nullptr;
  uint64_t start = 0;    // the address, for single-address callbacks
  uint64_t end = 0;      // 0 for callbacks without a range (release)
  int atomic_depth = 0;  // spinlocks the calling thread held
  std::string describe() const;
};

struct ChainStats {
  Placement placement = Placement::kNone;
  std::array<uint64_t, static_cast<size_t>(HookPoint::kCount)> points{};  // host passed the point
  // Callbacks the chain issued (one per host point or aging/release call),
  // whether or not anything was subscribed.
  std::array<uint64_t, static_cast<size_t>(Callback::kCount)> notifications{};
  // Subscription callbacks actually made (notifications x subscriptions).
  std::array<uint64_t, static_cast<size_t>(Callback::kCount)> calls{};
  uint64_t dropped = 0;  // change_pte / secondary TLBs / aging / release under placement none
  uint64_t violations = 0;
  uint64_t sleep_in_atomic = 0;
  uint64_t sleep_in_nonblockable = 0;
  uint64_t declined = 0;       // kWouldBlock / false answers, blockable or not
  uint64_t grace_periods = 0;  // SRCU grace periods waited for

  uint64_t point(HookPoint p) const { return points[static_cast<size_t>(p)]; }
  uint64_t notified(Callback c) const { return notifications[static_cast<size_t>(c)]; }
  uint64_t called(Callback c) const { return calls[static_cast<size_t>(c)]; }
};

class Chain final : public mm::NotifierHooks {
 public:
  // violations() keeps this many; stats count them all.
  static constexpr size_t kMaxKeptViolations = 1024;

  explicit Chain(Placement placement);
  ~Chain() override;
  Chain(const Chain&) = delete;
  Chain& operator=(const Chain&) = delete;

  Placement placement() const { return placement_; }

  // mmu_notifier_register. Throws Error(kInternal) if already registered.
  void register_subscription(Subscription* subscription);
  // mmu_notifier_unregister: when it returns, no callback of this chain is
  // running in the subscription or will be called on it again. Returns false
  // if it was not registered (or release() already detached it). Unlike
  // Linux's, it does not call ->release: the owner tears down itself.
  bool unregister_subscription(Subscription* subscription);
  size_t subscription_count() const;

  // mmu_interval_notifier_insert / _remove. While an invalidation that
  // overlapped some interval is open, the interval set is frozen: an insert
  // is deferred to its end, and a remove waits for it (like Linux, so the
  // owner may free the subscription as soon as unregister returns).
  void register_interval(IntervalSubscription* interval);
  void unregister_interval(IntervalSubscription* interval);
  size_t interval_count() const;
  // The mm-wide interval sequence: odd while an invalidation is open.
  uint64_t invalidate_seq() const;

  // The mmu_interval_* calls, spelled on the chain for callers that hold it.
  uint64_t read_begin(IntervalSubscription& interval) { return interval.read_begin(); }
  bool read_retry(const IntervalSubscription& interval, uint64_t seq) const {
    return interval.read_retry(seq);
  }
  bool check_retry(const IntervalSubscription& interval, uint64_t seq) const {
    return interval.check_retry(seq);
  }
  void set_seq(IntervalSubscription& interval, uint64_t seq) { interval.set_seq(seq); }

  // Strict mode: a host point that produced a violation throws
  // Error(kViolation) when its dispatch is complete (after every callback and
  // the interval bookkeeping ran). Meant for tests that drive the points
  // directly: the host MM does not expect its hooks to throw.
  void set_strict(bool strict) { strict_.store(strict, std::memory_order_relaxed); }
  std::vector<Violation> violations() const;
  void clear_violations();

  ChainStats stats() const;
  void reset_stats();

  // mm::NotifierHooks
  void before_change(const mm::InvalidateRange& range) override;
  void in_ptl_cleared(const mm::InvalidateRange& page) override;
  void after_unlock(const mm::InvalidateRange& range) override;
  void after_release(const mm::InvalidateRange& range) override;
  void change_pte(mm::Mm* mm, uint64_t addr, mm::Pte pte) override;
  void arch_invalidate_secondary_tlbs(mm::Mm* mm, uint64_t start, uint64_t end) override;
  bool clear_flush_young(mm::Mm* mm, uint64_t start, uint64_t end) override;
  bool clear_young(mm::Mm* mm, uint64_t start, uint64_t end) override;
  bool test_young(mm::Mm* mm, uint64_t addr) override;
  void release(mm::Mm* mm) override;

 private:
  friend class IntervalSubscription;
  using SubscriptionList = std::vector<Subscription*>;
  struct Dispatch;
  class IntervalInvalidation;

  // What a callback was about, for checks and reports.
  struct Target {
    mm::Mm* mm = nullptr;
    uint64_t start = 0;
    uint64_t end = 0;
  };

  void on_point(HookPoint point, const mm::InvalidateRange& range);
  std::optional<Callback> callback_at(HookPoint point) const;
  void notify_single(Dispatch& dispatch, Callback callback, const mm::InvalidateRange& range);
  void notify_range_start(Dispatch& dispatch, const mm::InvalidateRange& range);
  void notify_range_end(Dispatch& dispatch, const mm::InvalidateRange& range);

  template <typename Fn>
  void for_each_subscription(Fn&& fn);
  void detach_all();
  void wait_grace_period_and_free(std::vector<const SubscriptionList*> lists);

  // Interval side (mn_itree_*).
  uint64_t interval_invalidate_start(Dispatch& dispatch, const mm::InvalidateRange& range);
  void interval_invalidate_end();
  void apply_deferred_locked();
  uint64_t interval_read_begin(const IntervalSubscription& interval);
  bool interval_invalidating(const IntervalSubscription& interval) const;

  // Checks. `nonblockable` is for callbacks that cannot decline.
  bool check_sleep(Dispatch& dispatch, Callback callback, std::string_view name, bool may_sleep,
                   const Target& target, bool nonblockable);
  void check_answer(Dispatch& dispatch, Callback callback, std::string_view name, bool may_sleep,
                    const mm::InvalidateRange& range, bool declined, bool reported_atomic);
  void report(Dispatch& dispatch, Violation violation);
  void finish(const Dispatch& dispatch) const;

  void count_call(Callback callback) {
    calls_[static_cast<size_t>(callback)].fetch_add(1, std::memory_order_relaxed);
  }
  void count_notification(Callback callback) {
    notifications_[static_cast<size_t>(callback)].fetch_add(1, std::memory_order_relaxed);
  }

  const Placement placement_;

  // Classic subscriptions: an immutable list replaced on every change and
  // read under srcu_; replaced lists are freed after a grace period.
  Srcu srcu_;
  std::atomic<const SubscriptionList*> list_;
  mutable std::mutex list_mutex_;                 // writers
  std::vector<const SubscriptionList*> retired_;  // under list_mutex_

  // Interval subscriptions (Linux: subscriptions->lock, itree, wq).
  mutable std::mutex interval_mutex_;
  std::condition_variable interval_cv_;
  uint64_t invalidate_seq_ = 2;                   // even: no interval invalidation open
  uint64_t active_invalidations_ = 0;             // open invalidations, overlapping or not
  std::vector<IntervalSubscription*> intervals_;  // frozen while invalidate_seq_ is odd
  std::vector<IntervalSubscription*> deferred_;   // inserts/removes waiting for the end

  std::atomic<bool> strict_{false};
  mutable std::mutex violations_mutex_;
  std::vector<Violation> violations_;

  std::array<std::atomic<uint64_t>, static_cast<size_t>(HookPoint::kCount)> points_{};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Callback::kCount)> notifications_{};
  std::array<std::atomic<uint64_t>, static_cast<size_t>(Callback::kCount)> calls_{};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> violation_count_{0};
  std::atomic<uint64_t> sleep_in_atomic_{0};
  std::atomic<uint64_t> sleep_in_nonblockable_{0};
  std::atomic<uint64_t> declined_{0};
};

}  // namespace sptelab::mmu_notifier
