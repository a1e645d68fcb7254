// The chain's context checks: a subscription that may sleep must not be
// called where the host holds a spinlock, nor for a non-blockable range.
#include <gtest/gtest.h>

#include <mutex>

#include "base/error.h"
#include "base/spinlock.h"
#include "mmu_notifier/chain.h"
#include "tests/mmu_notifier/recorder.h"
#include "trace/trace.h"

namespace sptelab::mmu_notifier {
namespace {

using testing::fake_mm;
using testing::IntervalRecorder;
using testing::range;
using testing::Recorder;

// One mm operation on the page at 0x5000, taking a SpinLock (the PTL) around
// the in-PTL point exactly as mm/notifier_hooks.h orders it.
void operation_with_ptl(Chain& chain, SpinLock& ptl) {
  auto op = range(0x5000, 0x6000);
  chain.before_change(op);
  {
    std::lock_guard hold(ptl);
    chain.in_ptl_cleared(op);
    chain.change_pte(fake_mm(), 0x5000, mm::Pte::make(9, false));
  }
  chain.after_unlock(op);
  chain.after_release(op);
}

TEST(SleepCheck, PtlPageWithASleepingSubscriberIsReported) {
  trace::Session session;
  Chain chain(Placement::kPtlPage);
  Recorder gru("gru", /*sleeps=*/true);
  chain.register_subscription(&gru);
  SpinLock ptl;
  operation_with_ptl(chain, ptl);

  std::vector<Violation> found = chain.violations();
  ASSERT_EQ(found.size(), 2u);  // invalidate_page and change_pte, both inside the PTL
  EXPECT_EQ(found[0].kind, ViolationKind::kSleepInAtomic);
  EXPECT_EQ(found[0].callback, Callback::kInvalidatePage);
  EXPECT_EQ(found[0].subscription, "gru");
  EXPECT_EQ(found[0].mm, fake_mm());
  EXPECT_EQ(found[0].start, 0x5000u);
  EXPECT_EQ(found[0].atomic_depth, 1);
  EXPECT_NE(found[0].describe().find("invalidate_page"), std::string::npos);
  EXPECT_EQ(found[1].callback, Callback::kChangePte);
  EXPECT_EQ(chain.stats().sleep_in_atomic, 2u);
  // The callback still ran: the emulator records what the kernel would have
  // done wrong, it does not change the outcome.
  EXPECT_EQ(gru.take().size(), 2u);

  size_t sleep_events = 0;
  for (const auto& event : trace::snapshot().events) {
    if (event.kind != trace::Kind::kSleepInAtomic) continue;
    EXPECT_EQ(event.args[1], 1u);  // depth
    sleep_events++;
  }
  EXPECT_EQ(sleep_events, 2u);
  EXPECT_EQ(trace::snapshot().events.size(), 4u);  // + invalidate_page + change_pte
}

TEST(SleepCheck, StartEndCallsASleepingSubscriberOutsideThePtl) {
  Chain chain(Placement::kStartEnd);
  Recorder gru("gru", /*sleeps=*/true);
  chain.register_subscription(&gru);
  SpinLock ptl;
  auto op = range(0x5000, 0x6000);
  chain.before_change(op);
  {
    std::lock_guard hold(ptl);
    chain.in_ptl_cleared(op);
  }
  chain.after_unlock(op);
  chain.after_release(op);
  EXPECT_EQ(gru.take().size(), 2u);
  EXPECT_TRUE(chain.violations().empty());
  EXPECT_EQ(chain.stats().violations, 0u);
}

TEST(SleepCheck, NonSleepingSubscriberMayBeCalledInsideThePtl) {
  Chain chain(Placement::kPtlPage);
  Recorder kvm("kvm", /*sleeps=*/false);
  chain.register_subscription(&kvm);
  SpinLock ptl;
  operation_with_ptl(chain, ptl);
  EXPECT_EQ(kvm.take().size(), 2u);
  EXPECT_TRUE(chain.violations().empty());
}

TEST(SleepCheck, SleepingIntervalOwnerInsideThePtlIsReported) {
  Chain chain(Placement::kPtlPage);
  IntervalRecorder hmm(0x0, 0x10000, "hmm", /*sleeps=*/true);
  chain.register_interval(&hmm);
  SpinLock ptl;
  operation_with_ptl(chain, ptl);
  chain.unregister_interval(&hmm);
  std::vector<Violation> found = chain.violations();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].callback, Callback::kIntervalInvalidate);
  EXPECT_EQ(found[0].subscription, "hmm");
}

TEST(SleepCheck, StrictModeThrowsAfterTheDispatchCompletes) {
  Chain chain(Placement::kPtlPage);
  chain.set_strict(true);
  Recorder gru("gru", /*sleeps=*/true);
  Recorder kvm("kvm", /*sleeps=*/false);
  chain.register_subscription(&gru);
  chain.register_subscription(&kvm);
  IntervalRecorder interval(0x0, 0x10000);
  chain.register_interval(&interval);
  SpinLock ptl;
  try {
    std::lock_guard hold(ptl);
    chain.in_ptl_cleared(range(0x5000, 0x6000));
    FAIL() << "no exception";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kViolation);
    EXPECT_NE(std::string(error.what()).find("sleep-in-atomic"), std::string::npos);
  }
  EXPECT_FALSE(AtomicContext::active());
  EXPECT_EQ(kvm.take().size(), 1u) << "later subscriptions were still called";
  EXPECT_EQ(chain.invalidate_seq() % 2, 0u) << "the interval invalidation was closed";
  chain.unregister_interval(&interval);
}

TEST(SleepCheck, NonBlockableRanges) {
  Chain chain(Placement::kStartEnd);
  Recorder accepts("accepts", /*sleeps=*/true);
  Recorder declines("declines", /*sleeps=*/true);
  declines.start_answer = kWouldBlock;
  Recorder quick("quick", /*sleeps=*/false);
  chain.register_subscription(&accepts);
  chain.register_subscription(&declines);
  chain.register_subscription(&quick);

  auto oom = range(0x1000, 0x9000, mm::InvalidateEvent::kUnmap, /*blockable=*/false);
  chain.before_change(oom);
  chain.after_unlock(oom);
  std::vector<Violation> found = chain.violations();
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[0].kind, ViolationKind::kSleepInNonBlockable);
  EXPECT_EQ(found[0].subscription, "accepts");
  EXPECT_EQ(found[1].kind, ViolationKind::kDeclineIgnored);
  EXPECT_EQ(found[1].subscription, "declines");
  EXPECT_EQ(chain.stats().declined, 1u);
  EXPECT_EQ(chain.stats().sleep_in_nonblockable, 1u);

  // Declining a blockable range is the subscription's bug.
  chain.clear_violations();
  chain.unregister_subscription(&accepts);
  chain.before_change(range(0x1000, 0x2000));
  chain.after_unlock(range(0x1000, 0x2000));
  found = chain.violations();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].kind, ViolationKind::kWouldBlockInBlockable);
}

TEST(SleepCheck, NonBlockableSingleCallCannotBeDeclined) {
  Chain chain(Placement::kRangeBefore);
  Recorder gru("gru", /*sleeps=*/true);
  chain.register_subscription(&gru);
  chain.before_change(range(0x1000, 0x2000, mm::InvalidateEvent::kUnmap, /*blockable=*/false));
  std::vector<Violation> found = chain.violations();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].kind, ViolationKind::kSleepInNonBlockable);
  EXPECT_EQ(found[0].callback, Callback::kInvalidateRange);
}

}  // namespace
}  // namespace sptelab::mmu_notifier
