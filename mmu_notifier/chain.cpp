#include "mmu_notifier/chain.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "base/error.h"
#include "base/mutation.h"
#include "base/spinlock.h"
#include "trace/trace.h"

namespace sptelab::mmu_notifier {

using trace::Kind;

namespace {

uint64_t event_arg(mm::InvalidateEvent event) {
  return static_cast<uint64_t>(event);
}

std::string hex(uint64_t value) {
  char buffer[24];
  std::snprintf(buffer, sizeof buffer, "0x%" PRIx64, value);
  return buffer;
}

}  // namespace

// ---- reports --------------------------------------------------------------------

const char* violation_kind_name(ViolationKind kind) {
  switch (kind) {
    case ViolationKind::kSleepInAtomic:
      return "sleep-in-atomic";
    case ViolationKind::kSleepInNonBlockable:
      return "sleep-in-nonblockable";
    case ViolationKind::kWouldBlockInBlockable:
      return "would-block-in-blockable";
    case ViolationKind::kDeclineIgnored:
      return "decline-ignored";
  }
  return "?";
}

std::string Violation::describe() const {
  // fmt::format rather than chained operator+: GCC 12 reports a false
  // -Wrestrict inside libstdc++ for the concatenation at -O2.
  const std::string where =
      end > start ? fmt::format("[{}, {})", hex(start), hex(end)) : "the address space";
  const char* name = violation_kind_name(kind);
  const std::string& who = subscription;
  const char* what = callback_name(callback);
  switch (kind) {
    case ViolationKind::kSleepInAtomic:
      return fmt::format(
          "{}: '{}' may sleep but got {} for {} while the host held {} spinlock(s); the callback "
          "must not block there, or the host must call it outside the lock",
          name, who, what, where, atomic_depth);
    case ViolationKind::kSleepInNonBlockable:
      return fmt::format(
          "{}: '{}' may sleep but accepted {} for non-blockable {}; it must decline (would-block) "
          "instead",
          name, who, what, where);
    case ViolationKind::kWouldBlockInBlockable:
      return fmt::format(
          "{}: '{}' declined {} for blockable {}; only a non-blockable range may be declined", name,
          who, what, where);
    case ViolationKind::kDeclineIgnored:
      return fmt::format(
          "{}: '{}' declined {} for non-blockable {}, but the host MM has no back-off path and "
          "changed PTEs this subscription did not invalidate",
          name, who, what, where);
  }
  return "?";
}

// One host point's dispatch: collects what strict mode has to throw.
struct Chain::Dispatch {
  std::string first_violation;
};

// An interval invalidation over one range, begun and ended around a scope
// (single-call placements and release).
class Chain::IntervalInvalidation {
 public:
  IntervalInvalidation(Chain& chain, Dispatch& dispatch, const mm::InvalidateRange& range)
      : chain_(chain) {
    chain_.interval_invalidate_start(dispatch, range);
  }
  ~IntervalInvalidation() { chain_.interval_invalidate_end(); }
  IntervalInvalidation(const IntervalInvalidation&) = delete;
  IntervalInvalidation& operator=(const IntervalInvalidation&) = delete;

 private:
  Chain& chain_;
};

// ---- lifetime and registration -----------------------------------------------------

Chain::Chain(Placement placement) : placement_(placement), list_(new SubscriptionList()) {}

Chain::~Chain() {
  delete list_.load();
  for (const SubscriptionList* list : retired_) delete list;
  // Subscriptions outliving the chain must not point at it.
  for (IntervalSubscription* interval : intervals_) interval->chain_.store(nullptr);
  for (IntervalSubscription* interval : deferred_) interval->chain_.store(nullptr);
}

void Chain::register_subscription(Subscription* subscription) {
  if (subscription == nullptr) throw_internal("register_subscription: null subscription");
  std::lock_guard lock(list_mutex_);
  const SubscriptionList* current = list_.load(std::memory_order_relaxed);
  if (std::find(current->begin(), current->end(), subscription) != current->end()) {
    throw_internal("subscription '" + std::string(subscription->name()) +
                   "' registered twice on one notifier chain");
  }
  auto* next = new SubscriptionList(*current);
  next->push_back(subscription);
  list_.store(next, std::memory_order_seq_cst);
  // Walkers may still be reading `current`; the next grace period frees it.
  retired_.push_back(current);
}

bool Chain::unregister_subscription(Subscription* subscription) {
  bool found = false;
  std::vector<const SubscriptionList*> to_free;
  {
    std::lock_guard lock(list_mutex_);
    const SubscriptionList* current = list_.load(std::memory_order_relaxed);
    auto it = std::find(current->begin(), current->end(), subscription);
    if (it != current->end()) {
      found = true;
      auto* next = new SubscriptionList(current->begin(), it);
      next->insert(next->end(), it + 1, current->end());
      list_.store(next, std::memory_order_seq_cst);
      retired_.push_back(current);
    }
    to_free.swap(retired_);
  }
  // Even when not found: release() may have detached it while a walker was
  // still inside (Linux's unregister synchronizes in that case too).
  wait_grace_period_and_free(std::move(to_free));
  return found;
}

size_t Chain::subscription_count() const {
  std::lock_guard lock(list_mutex_);
  return list_.load(std::memory_order_relaxed)->size();
}

void Chain::detach_all() {
  std::vector<const SubscriptionList*> to_free;
  {
    std::lock_guard lock(list_mutex_);
    retired_.push_back(list_.load(std::memory_order_relaxed));
    list_.store(new SubscriptionList(), std::memory_order_seq_cst);
    to_free.swap(retired_);
  }
  wait_grace_period_and_free(std::move(to_free));
}

void Chain::wait_grace_period_and_free(std::vector<const SubscriptionList*> lists) {
  srcu_.synchronize();
  for (const SubscriptionList* list : lists) delete list;
}

template <typename Fn>
void Chain::for_each_subscription(Fn&& fn) {
  SrcuReadGuard guard(srcu_);
  const SubscriptionList* list = list_.load(std::memory_order_seq_cst);
  for (Subscription* subscription : *list) fn(*subscription);
}

// ---- interval subscriptions (mm/mmu_notifier.c: mn_itree_*) -------------------------

IntervalSubscription::~IntervalSubscription() {
  if (chain_.load(std::memory_order_acquire) != nullptr) {
    // name() is no use here: the derived part is already gone.
    std::fprintf(stderr,
                 "sptelab: interval subscription [%s, %s) destroyed while still registered; call "
                 "Chain::unregister_interval first\n",
                 hex(start_).c_str(), hex(end_).c_str());
    std::abort();
  }
}

uint64_t IntervalSubscription::read_begin() {
  Chain* chain = chain_.load(std::memory_order_acquire);
  if (chain == nullptr) throw_internal("read_begin on an unregistered interval subscription");
  return chain->interval_read_begin(*this);
}

bool IntervalSubscription::invalidating() const {
  Chain* chain = chain_.load(std::memory_order_acquire);
  return chain != nullptr && chain->interval_invalidating(*this);
}

void Chain::register_interval(IntervalSubscription* interval) {
  if (interval == nullptr) throw_internal("register_interval: null subscription");
  if (interval->start() >= interval->end()) {
    throw_internal("register_interval: empty range [" + hex(interval->start()) + ", " +
                   hex(interval->end()) + ")");
  }
  std::lock_guard lock(interval_mutex_);
  Chain* expected = nullptr;
  if (!interval->chain_.compare_exchange_strong(expected, this)) {
    throw_internal("interval subscription '" + std::string(interval->name()) +
                   "' is already registered");
  }
  // Follows __mmu_interval_notifier_insert(). With an invalidation open we
  // cannot know whether it covers the new interval, so the interval starts
  // out "being invalidated": read_begin waits for the open ones to end.
  if (active_invalidations_ > 0) {
    if (invalidate_seq_ & 1) {
      deferred_.push_back(interval);  // the set is frozen
      interval->deferred_ = true;
    } else {
      invalidate_seq_ |= 1;  // nobody walks the set: change it now
      intervals_.push_back(interval);
      interval->in_set_ = true;
    }
    interval->seq_.store(invalidate_seq_, std::memory_order_release);
  } else {
    // Odd and different from invalidate_seq_: not being invalidated.
    interval->seq_.store(invalidate_seq_ - 1, std::memory_order_release);
    intervals_.push_back(interval);
    interval->in_set_ = true;
  }
}

void Chain::unregister_interval(IntervalSubscription* interval) {
  if (interval == nullptr) throw_internal("unregister_interval: null subscription");
  std::unique_lock lock(interval_mutex_);
  if (interval->chain_.load(std::memory_order_relaxed) != this) {
    throw_internal("unregister_interval: '" + std::string(interval->name()) +
                   "' is not registered on this chain");
  }
  // Follows mmu_interval_notifier_remove().
  uint64_t wait_for = 0;
  if (invalidate_seq_ & 1) {
    if (!interval->in_set_) {
      // Its insert is still deferred: cancel it, nobody can be calling it.
      std::erase(deferred_, interval);
      interval->deferred_ = false;
    } else {
      if (!interval->deferred_) deferred_.push_back(interval);
      interval->deferred_ = true;
      wait_for = invalidate_seq_;
    }
  } else {
    std::erase(intervals_, interval);
    interval->in_set_ = false;
  }
  // A walker may be inside this interval's callback: wait for the
  // invalidation to end; the deferred removal happens before the wake-up.
  if (wait_for != 0) sched::wait(interval_cv_, lock, [&] { return invalidate_seq_ != wait_for; });
  interval->chain_.store(nullptr, std::memory_order_release);
}

size_t Chain::interval_count() const {
  std::lock_guard lock(interval_mutex_);
  size_t pending_inserts = 0;
  for (const IntervalSubscription* interval : deferred_) pending_inserts += !interval->in_set_;
  size_t pending_removes = deferred_.size() - pending_inserts;
  return intervals_.size() + pending_inserts - pending_removes;
}

uint64_t Chain::invalidate_seq() const {
  std::lock_guard lock(interval_mutex_);
  return invalidate_seq_;
}

uint64_t Chain::interval_read_begin(const IntervalSubscription& interval) {
  // mmu_interval_read_begin(): being invalidated means the interval's seq is
  // the mm-wide seq of an invalidation that is still open.
  std::unique_lock lock(interval_mutex_);
  uint64_t seq = interval.seq_.load(std::memory_order_acquire);
  if (seq == invalidate_seq_) {
    sched::wait(interval_cv_, lock, [&] { return invalidate_seq_ != seq; });
  }
  return seq;
}

bool Chain::interval_invalidating(const IntervalSubscription& interval) const {
  std::lock_guard lock(interval_mutex_);
  return interval.seq_.load(std::memory_order_acquire) == invalidate_seq_;
}

// mn_itree_inv_start_range() + mn_itree_invalidate(). Every call is paired
// with interval_invalidate_end(), overlapping or not, so the count of open
// invalidations stays exact even if an interval is registered in between.
uint64_t Chain::interval_invalidate_start(Dispatch& dispatch, const mm::InvalidateRange& range) {
  uint64_t cur_seq = 0;
  {
    std::lock_guard lock(interval_mutex_);
    ++active_invalidations_;
    bool overlaps = std::any_of(intervals_.begin(), intervals_.end(), [&](auto* interval) {
      return interval->overlaps(range.start, range.end);
    });
    if (!overlaps) return 0;
    invalidate_seq_ |= 1;
    cur_seq = invalidate_seq_;
  }
  // The set is frozen while invalidate_seq_ is odd (changes are deferred to
  // the end), so it is walked without the lock, as Linux walks its tree.
  for (IntervalSubscription* interval : intervals_) {
    if (!interval->overlaps(range.start, range.end)) continue;
    Target target{range.mm, range.start, range.end};
    bool atomic = check_sleep(dispatch, Callback::kIntervalInvalidate, interval->name(),
                              interval->may_sleep(), target, /*nonblockable=*/false);
    trace::emit(Kind::kIntervalInvalidate, range.start, range.end, cur_seq);
    count_call(Callback::kIntervalInvalidate);
    bool done = interval->invalidate(range, cur_seq);
    check_answer(dispatch, Callback::kIntervalInvalidate, interval->name(), interval->may_sleep(),
                 range, !done, atomic);
  }
  return cur_seq;
}

// mn_itree_inv_end(): the last open invalidation makes the seq even, applies
// the deferred inserts and removes, and wakes read_begin / remove waiters.
void Chain::interval_invalidate_end() {
  {
    std::lock_guard lock(interval_mutex_);
    --active_invalidations_;
    if (active_invalidations_ != 0 || (invalidate_seq_ & 1) == 0) return;
    ++invalidate_seq_;
    apply_deferred_locked();
  }
  interval_cv_.notify_all();
}

void Chain::apply_deferred_locked() {
  for (IntervalSubscription* interval : deferred_) {
    interval->deferred_ = false;
    if (interval->in_set_) {
      std::erase(intervals_, interval);
      interval->in_set_ = false;
    } else {
      intervals_.push_back(interval);
      interval->in_set_ = true;
    }
  }
  deferred_.clear();
}

// ---- checks ---------------------------------------------------------------------------

bool Chain::check_sleep(Dispatch& dispatch, Callback callback, std::string_view name,
                        bool may_sleep, const Target& target, bool nonblockable) {
  if (!may_sleep) return false;
  if (AtomicContext::active()) {
    report(dispatch, {ViolationKind::kSleepInAtomic, callback, std::string(name), target.mm,
                      target.start, target.end, AtomicContext::depth()});
    return true;
  }
  if (nonblockable) {
    report(dispatch, {ViolationKind::kSleepInNonBlockable, callback, std::string(name), target.mm,
                      target.start, target.end, 0});
  }
  return false;
}

// For the callbacks that may decline (range_start, interval invalidate).
void Chain::check_answer(Dispatch& dispatch, Callback callback, std::string_view name,
                         bool may_sleep, const mm::InvalidateRange& range, bool declined,
                         bool reported_atomic) {
  Violation violation{ViolationKind::kDeclineIgnored,
                      callback,
                      std::string(name),
                      range.mm,
                      range.start,
                      range.end,
                      0};
  if (declined) {
    declined_.fetch_add(1, std::memory_order_relaxed);
    violation.kind =
        range.blockable ? ViolationKind::kWouldBlockInBlockable : ViolationKind::kDeclineIgnored;
    report(dispatch, std::move(violation));
  } else if (!range.blockable && may_sleep && !reported_atomic) {
    violation.kind = ViolationKind::kSleepInNonBlockable;
    report(dispatch, std::move(violation));
  }
}

void Chain::report(Dispatch& dispatch, Violation violation) {
  violation_count_.fetch_add(1, std::memory_order_relaxed);
  if (violation.kind == ViolationKind::kSleepInAtomic) {
    sleep_in_atomic_.fetch_add(1, std::memory_order_relaxed);
  } else if (violation.kind == ViolationKind::kSleepInNonBlockable) {
    sleep_in_nonblockable_.fetch_add(1, std::memory_order_relaxed);
  }
  if (violation.kind == ViolationKind::kSleepInAtomic ||
      violation.kind == ViolationKind::kSleepInNonBlockable) {
    trace::emit(Kind::kSleepInAtomic, static_cast<uint64_t>(violation.callback),
                static_cast<uint64_t>(violation.atomic_depth));
  }
  if (strict_.load(std::memory_order_relaxed) && dispatch.first_violation.empty()) {
    dispatch.first_violation = violation.describe();
  }
  std::lock_guard lock(violations_mutex_);
  if (violations_.size() < kMaxKeptViolations) violations_.push_back(std::move(violation));
}

void Chain::finish(const Dispatch& dispatch) const {
  if (!dispatch.first_violation.empty()) {
    throw Error(ExitStatus::kViolation, "notifier chain (" +
                                            std::string(placement_name(placement_)) +
                                            "): " + dispatch.first_violation);
  }
}

std::vector<Violation> Chain::violations() const {
  std::lock_guard lock(violations_mutex_);
  return violations_;
}

void Chain::clear_violations() {
  std::lock_guard lock(violations_mutex_);
  violations_.clear();
}

// ---- invalidation points ----------------------------------------------------------------

void Chain::before_change(const mm::InvalidateRange& range) {
  on_point(HookPoint::kBeforeChange, range);
}
void Chain::in_ptl_cleared(const mm::InvalidateRange& page) {
  on_point(HookPoint::kInPtlCleared, page);
}
void Chain::after_unlock(const mm::InvalidateRange& range) {
  on_point(HookPoint::kAfterUnlock, range);
}
void Chain::after_release(const mm::InvalidateRange& range) {
  on_point(HookPoint::kAfterRelease, range);
}

// The end-before-pte-change mutant: start-end's invalidate_range_end runs
// right after the start, before the PTL is taken, and the usual end is
// skipped.
std::optional<Callback> Chain::callback_at(HookPoint point) const {
  if (placement_ == Placement::kStartEnd &&
      mutation::active(mutation::Mutant::kEndBeforePteChange) && point == HookPoint::kAfterUnlock) {
    return std::nullopt;
  }
  return invalidation_at(placement_, point);
}

void Chain::on_point(HookPoint point, const mm::InvalidateRange& range) {
  points_[static_cast<size_t>(point)].fetch_add(1, std::memory_order_relaxed);
  std::optional<Callback> callback = callback_at(point);
  if (!callback) return;
  Dispatch dispatch;
  switch (*callback) {
    case Callback::kInvalidateRangeStart:
      notify_range_start(dispatch, range);
      if (mutation::active(mutation::Mutant::kEndBeforePteChange)) {
        notify_range_end(dispatch, range);
      }
      break;
    case Callback::kInvalidateRangeEnd:
      notify_range_end(dispatch, range);
      break;
    default:
      notify_single(dispatch, *callback, range);
      break;
  }
  finish(dispatch);
}

// A placement without a start/end pair: its one call opens and closes the
// interval invalidation around the classic subscriptions' callbacks.
void Chain::notify_single(Dispatch& dispatch, Callback callback, const mm::InvalidateRange& range) {
  count_notification(callback);
  if (callback == Callback::kInvalidatePage) {
    trace::emit(Kind::kNotifyInvalidatePage, range.start);
  } else {
    trace::emit(Kind::kNotifyInvalidateRange, range.start, range.end, event_arg(range.event));
  }
  IntervalInvalidation intervals(*this, dispatch, range);
  Target target{range.mm, range.start, range.end};
  for_each_subscription([&](Subscription& subscription) {
    check_sleep(dispatch, callback, subscription.name(), subscription.may_sleep(), target,
                !range.blockable);
    count_call(callback);
    if (callback == Callback::kInvalidatePage) {
      subscription.invalidate_page(range.mm, range.start);
    } else {
      subscription.invalidate_range(range.mm, range.start, range.end, range.event);
    }
  });
}

// __mmu_notifier_invalidate_range_start: intervals first, then the list.
void Chain::notify_range_start(Dispatch& dispatch, const mm::InvalidateRange& range) {
  count_notification(Callback::kInvalidateRangeStart);
  trace::emit(Kind::kNotifyRangeStart, range.start, range.end, event_arg(range.event),
              range.blockable);
  interval_invalidate_start(dispatch, range);
  Target target{range.mm, range.start, range.end};
  for_each_subscription([&](Subscription& subscription) {
    bool atomic = check_sleep(dispatch, Callback::kInvalidateRangeStart, subscription.name(),
                              subscription.may_sleep(), target, /*nonblockable=*/false);
    count_call(Callback::kInvalidateRangeStart);
    int result = subscription.invalidate_range_start(range);
    check_answer(dispatch, Callback::kInvalidateRangeStart, subscription.name(),
                 subscription.may_sleep(), range, result != 0, atomic);
  });
}

// __mmu_notifier_invalidate_range_end: the interval seq goes even first, then
// the list. Only atomic context is checked here: a subscription that declined
// the start gets this end too (see Subscription::invalidate_range_start).
void Chain::notify_range_end(Dispatch& dispatch, const mm::InvalidateRange& range) {
  count_notification(Callback::kInvalidateRangeEnd);
  trace::emit(Kind::kNotifyRangeEnd, range.start, range.end, event_arg(range.event));
  interval_invalidate_end();
  Target target{range.mm, range.start, range.end};
  for_each_subscription([&](Subscription& subscription) {
    check_sleep(dispatch, Callback::kInvalidateRangeEnd, subscription.name(),
                subscription.may_sleep(), target, /*nonblockable=*/false);
    count_call(Callback::kInvalidateRangeEnd);
    subscription.invalidate_range_end(range);
  });
}

// ---- the other callbacks ------------------------------------------------------------------

void Chain::change_pte(mm::Mm* mm, uint64_t addr, mm::Pte pte) {
  if (!forwards_other_callbacks(placement_)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Dispatch dispatch;
  count_notification(Callback::kChangePte);
  trace::emit(Kind::kNotifyChangePte, addr, pte.raw());
  Target target{mm, addr, addr + mm::kPageSize};
  for_each_subscription([&](Subscription& subscription) {
    check_sleep(dispatch, Callback::kChangePte, subscription.name(), subscription.may_sleep(),
                target, false);
    count_call(Callback::kChangePte);
    subscription.change_pte(mm, addr, pte);
  });
  finish(dispatch);
}

void Chain::arch_invalidate_secondary_tlbs(mm::Mm* mm, uint64_t start, uint64_t end) {
  if (!forwards_other_callbacks(placement_)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Dispatch dispatch;
  count_notification(Callback::kArchInvalidateSecondaryTlbs);
  trace::emit(Kind::kNotifySecondaryTlbs, start, end);
  Target target{mm, start, end};
  for_each_subscription([&](Subscription& subscription) {
    check_sleep(dispatch, Callback::kArchInvalidateSecondaryTlbs, subscription.name(),
                subscription.may_sleep(), target, false);
    count_call(Callback::kArchInvalidateSecondaryTlbs);
    subscription.arch_invalidate_secondary_tlbs(mm, start, end);
  });
  finish(dispatch);
}

bool Chain::clear_flush_young(mm::Mm* mm, uint64_t start, uint64_t end) {
  if (!forwards_other_callbacks(placement_)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  Dispatch dispatch;
  count_notification(Callback::kClearFlushYoung);
  bool young = false;
  for_each_subscription([&](Subscription& subscription) {
    check_sleep(dispatch, Callback::kClearFlushYoung, subscription.name(), subscription.may_sleep(),
                {mm, start, end}, false);
    count_call(Callback::kClearFlushYoung);
    young |= subscription.clear_flush_young(mm, start, end);
  });
  trace::emit(Kind::kNotifyClearFlushYoung, start, end, young);
  finish(dispatch);
  return young;
}

bool Chain::clear_young(mm::Mm* mm, uint64_t start, uint64_t end) {
  if (!forwards_other_callbacks(placement_)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  Dispatch dispatch;
  count_notification(Callback::kClearYoung);
  bool young = false;
  for_each_subscription([&](Subscription& subscription) {
    check_sleep(dispatch, Callback::kClearYoung, subscription.name(), subscription.may_sleep(),
                {mm, start, end}, false);
    count_call(Callback::kClearYoung);
    young |= subscription.clear_young(mm, start, end);
  });
  trace::emit(Kind::kNotifyClearYoung, start, end, young);
  finish(dispatch);
  return young;
}

// __mmu_notifier_test_young: the first young answer is enough.
bool Chain::test_young(mm::Mm* mm, uint64_t addr) {
  if (!forwards_other_callbacks(placement_)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  Dispatch dispatch;
  count_notification(Callback::kTestYoung);
  bool young = false;
  for_each_subscription([&](Subscription& subscription) {
    if (young) return;
    check_sleep(dispatch, Callback::kTestYoung, subscription.name(), subscription.may_sleep(),
                {mm, addr, addr + mm::kPageSize}, false);
    count_call(Callback::kTestYoung);
    young = subscription.test_young(mm, addr);
  });
  trace::emit(Kind::kNotifyTestYoung, addr, young);
  finish(dispatch);
  return young;
}

// __mmu_notifier_release: every interval sees one blockable invalidation of
// the whole address space, every subscription gets ->release, then all are
// detached and the chain waits for walkers, so nothing is called afterwards.
void Chain::release(mm::Mm* mm) {
  if (!forwards_other_callbacks(placement_)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  Dispatch dispatch;
  count_notification(Callback::kRelease);
  trace::emit(Kind::kNotifyRelease);
  {
    IntervalInvalidation intervals(*this, dispatch,
                                   {mm, 0, ~uint64_t{0}, mm::InvalidateEvent::kRelease, true});
  }
  for_each_subscription([&](Subscription& subscription) {
    check_sleep(dispatch, Callback::kRelease, subscription.name(), subscription.may_sleep(),
                {mm, 0, 0}, false);
    count_call(Callback::kRelease);
    subscription.release(mm);
  });
  detach_all();
  finish(dispatch);
}

// ---- stats ----------------------------------------------------------------------------------

ChainStats Chain::stats() const {
  ChainStats stats;
  stats.placement = placement_;
  for (size_t i = 0; i < points_.size(); ++i) stats.points[i] = points_[i].load();
  for (size_t i = 0; i < calls_.size(); ++i) {
    stats.notifications[i] = notifications_[i].load();
    stats.calls[i] = calls_[i].load();
  }
  stats.dropped = dropped_.load();
  stats.violations = violation_count_.load();
  stats.sleep_in_atomic = sleep_in_atomic_.load();
  stats.sleep_in_nonblockable = sleep_in_nonblockable_.load();
  stats.declined = declined_.load();
  stats.grace_periods = srcu_.grace_periods();
  return stats;
}

void Chain::reset_stats() {
  for (auto& counter : points_) counter.store(0);
  for (auto& counter : notifications_) counter.store(0);
  for (auto& counter : calls_) counter.store(0);
  dropped_.store(0);
  violation_count_.store(0);
  sleep_in_atomic_.store(0);
  sleep_in_nonblockable_.store(0);
  declined_.store(0);
}

}  // namespace sptelab::mmu_notifier
