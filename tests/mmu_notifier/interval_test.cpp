// Interval subscriptions (mmu_interval_notifier), single-threaded.
#include <gtest/gtest.h>

#include "base/error.h"
#include "mmu_notifier/chain.h"
#include "tests/mmu_notifier/recorder.h"
#include "trace/trace.h"

namespace sptelab::mmu_notifier {
namespace {

using testing::fake_mm;
using testing::IntervalRecorder;
using testing::range;

// Unregisters on scope exit so a failing assertion does not abort the run
// through the "destroyed while registered" check.
struct Registered {
  Registered(Chain& chain, IntervalSubscription& interval) : chain_(chain), interval_(interval) {
    chain_.register_interval(&interval_);
  }
  ~Registered() {
    if (interval_.registered()) chain_.unregister_interval(&interval_);
  }
  Chain& chain_;
  IntervalSubscription& interval_;
};

TEST(Interval, SeqIsOddWhileAStartEndInvalidationIsOpenAndEvenAfter) {
  Chain chain(Placement::kStartEnd);
  IntervalRecorder interval(0x10000, 0x20000);
  Registered registered(chain, interval);
  uint64_t idle = chain.invalidate_seq();
  EXPECT_EQ(idle % 2, 0u);
  EXPECT_FALSE(interval.invalidating());
  uint64_t before = interval.read_begin();  // not invalidating: returns at once

  auto op = range(0x18000, 0x28000);
  chain.before_change(op);
  ASSERT_EQ(interval.seqs.size(), 1u);
  uint64_t open = interval.seqs[0];
  EXPECT_EQ(open % 2, 1u);
  EXPECT_EQ(chain.invalidate_seq(), open);
  EXPECT_EQ(interval.seq(), open);
  EXPECT_TRUE(interval.invalidating());
  EXPECT_TRUE(interval.read_retry(before));
  EXPECT_TRUE(interval.check_retry(before));

  chain.after_unlock(op);
  EXPECT_EQ(chain.invalidate_seq(), open + 1);
  EXPECT_EQ(chain.invalidate_seq() % 2, 0u);
  EXPECT_FALSE(interval.invalidating());
  EXPECT_EQ(interval.seqs.size(), 1u) << "range_end does not call the interval again";
  uint64_t after = interval.read_begin();
  EXPECT_EQ(after, open);
  EXPECT_FALSE(interval.read_retry(after));
}

TEST(Interval, SingleCallPlacementsOpenAndCloseAroundTheirOneCall) {
  for (Placement placement :
       {Placement::kPtlPage, Placement::kRangeBefore, Placement::kRangeAfter}) {
    SCOPED_TRACE(placement_name(placement));
    Chain chain(placement);
    IntervalRecorder interval(0x10000, 0x20000);
    Registered registered(chain, interval);
    uint64_t seq = interval.read_begin();
    auto op = range(0x11000, 0x12000);
    chain.before_change(op);
    chain.in_ptl_cleared(op);
    chain.after_unlock(op);
    chain.after_release(op);
    ASSERT_EQ(interval.seqs.size(), 1u);
    EXPECT_EQ(interval.seqs[0] % 2, 1u);
    EXPECT_EQ(chain.invalidate_seq(), interval.seqs[0] + 1);
    EXPECT_FALSE(interval.invalidating());
    EXPECT_TRUE(interval.read_retry(seq));
  }
}

TEST(Interval, ReadRetryDetectsOnlyAnOverlappingInvalidationInBetween) {
  Chain chain(Placement::kStartEnd);
  IntervalRecorder interval(0x10000, 0x20000);
  Registered registered(chain, interval);

  uint64_t seq = interval.read_begin();
  EXPECT_FALSE(interval.read_retry(seq));
  // Touches the interval's end exactly: [0x20000, ...) does not overlap.
  chain.before_change(range(0x20000, 0x30000));
  chain.after_unlock(range(0x20000, 0x30000));
  EXPECT_FALSE(interval.read_retry(seq));
  EXPECT_EQ(chain.invalidate_seq() % 2, 0u) << "a non-overlapping range leaves the seq even";

  chain.before_change(range(0x1f000, 0x20000));
  chain.after_unlock(range(0x1f000, 0x20000));
  EXPECT_TRUE(interval.read_retry(seq));
  uint64_t again = interval.read_begin();
  EXPECT_FALSE(interval.read_retry(again));
}

TEST(Interval, OnlyOverlappingIntervalsAreCalled) {
  Chain chain(Placement::kRangeBefore);
  IntervalRecorder low(0x0, 0x10000, "low"), mid(0x10000, 0x20000, "mid"),
      high(0x20000, 0x30000, "high");
  Registered r1(chain, low), r2(chain, mid), r3(chain, high);
  trace::Session session;
  chain.before_change(range(0xf000, 0x11000));
  EXPECT_EQ(low.ranges.size(), 1u);
  EXPECT_EQ(mid.ranges.size(), 1u);
  EXPECT_TRUE(high.ranges.empty());
  EXPECT_EQ(low.ranges[0], (std::pair<uint64_t, uint64_t>{0xf000, 0x11000}));
  EXPECT_EQ(low.seqs[0], mid.seqs[0]) << "one mm-wide seq per invalidation";

  size_t interval_events = 0;
  for (const auto& event : trace::snapshot().events) {
    if (event.kind == trace::Kind::kIntervalInvalidate) {
      ++interval_events;
      EXPECT_EQ(event.args[2], low.seqs[0]);
    }
  }
  EXPECT_EQ(interval_events, 2u);
  EXPECT_EQ(chain.stats().called(Callback::kIntervalInvalidate), 2u);
}

TEST(Interval, PlacementNoneNeverInvalidatesIntervals) {
  Chain chain(Placement::kNone);
  IntervalRecorder interval(0, 0x100000);
  Registered registered(chain, interval);
  uint64_t seq = interval.read_begin();
  auto op = range(0x1000, 0x2000);
  chain.before_change(op);
  chain.in_ptl_cleared(op);
  chain.after_unlock(op);
  chain.after_release(op);
  chain.release(fake_mm());
  EXPECT_TRUE(interval.seqs.empty());
  EXPECT_FALSE(interval.read_retry(seq));
}

TEST(Interval, RegisteredDuringAnOpenInvalidationCountsAsInvalidated) {
  Chain chain(Placement::kStartEnd);
  IntervalRecorder existing(0x0, 0x1000, "existing");
  Registered r1(chain, existing);

  // Open range that overlaps nothing: seq stays even until a new interval
  // joins, which must assume the open range covers it.
  auto far = range(0x100000, 0x200000);
  chain.before_change(far);
  EXPECT_EQ(chain.invalidate_seq() % 2, 0u);
  IntervalRecorder joined(0x100000, 0x101000, "joined");
  Registered r2(chain, joined);
  EXPECT_EQ(chain.invalidate_seq() % 2, 1u);
  EXPECT_TRUE(joined.invalidating());
  EXPECT_TRUE(joined.seqs.empty()) << "not called: it joined after the range started";

  // Now the set is frozen (seq odd): this insert is deferred to the end.
  IntervalRecorder deferred(0x100000, 0x101000, "deferred");
  Registered r3(chain, deferred);
  EXPECT_TRUE(deferred.invalidating());
  EXPECT_EQ(chain.interval_count(), 3u);

  chain.after_unlock(far);
  EXPECT_FALSE(joined.invalidating());
  EXPECT_FALSE(deferred.invalidating());
  EXPECT_EQ(chain.invalidate_seq() % 2, 0u);

  // The deferred one is in the set now: the next overlapping range calls it.
  chain.before_change(far);
  chain.after_unlock(far);
  EXPECT_EQ(deferred.seqs.size(), 1u);
  EXPECT_EQ(joined.seqs.size(), 1u);
  EXPECT_TRUE(existing.seqs.empty());
}

TEST(Interval, RemovingADeferredInsertDoesNotWait) {
  Chain chain(Placement::kStartEnd);
  IntervalRecorder existing(0x0, 0x1000, "existing");
  Registered r1(chain, existing);
  auto op = range(0x0, 0x1000);
  chain.before_change(op);  // seq odd: the set is frozen
  IntervalRecorder late(0x0, 0x1000, "late");
  chain.register_interval(&late);
  chain.unregister_interval(&late);  // cancels the deferred insert, returns at once
  EXPECT_EQ(chain.interval_count(), 1u);
  chain.after_unlock(op);
  chain.before_change(op);
  chain.after_unlock(op);
  EXPECT_TRUE(late.seqs.empty());
  EXPECT_EQ(existing.seqs.size(), 2u);
}

TEST(Interval, ReleaseInvalidatesEveryIntervalOverTheWholeSpace) {
  Chain chain(Placement::kStartEnd);
  IntervalRecorder a(0x1000, 0x2000, "a"), b(0x7f0000000000, 0x7f0000001000, "b");
  Registered r1(chain, a), r2(chain, b);
  chain.release(fake_mm());
  for (IntervalRecorder* interval : {&a, &b}) {
    ASSERT_EQ(interval->events.size(), 1u);
    EXPECT_EQ(interval->events[0], mm::InvalidateEvent::kRelease);
    EXPECT_EQ(interval->ranges[0], (std::pair<uint64_t, uint64_t>{0, ~uint64_t{0}}));
  }
  EXPECT_EQ(chain.invalidate_seq() % 2, 0u);
}

TEST(Interval, ApiMisuseIsAnInternalError) {
  Chain chain(Placement::kStartEnd);
  IntervalRecorder interval(0x1000, 0x2000);
  EXPECT_THROW(interval.read_begin(), Error);
  EXPECT_THROW(chain.unregister_interval(&interval), Error);
  chain.register_interval(&interval);
  EXPECT_THROW(chain.register_interval(&interval), Error);
  chain.unregister_interval(&interval);
  IntervalRecorder empty(0x2000, 0x2000);
  EXPECT_THROW(chain.register_interval(&empty), Error);
}

TEST(IntervalDeathTest, DestroyingARegisteredIntervalAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Chain chain(Placement::kStartEnd);
        auto* interval = new IntervalRecorder(0x1000, 0x2000, "leaky");
        chain.register_interval(interval);
        delete interval;
      },
      "\\[0x1000, 0x2000\\) destroyed while still registered");
}

}  // namespace
}  // namespace sptelab::mmu_notifier
