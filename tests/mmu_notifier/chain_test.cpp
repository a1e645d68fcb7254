// The chain's dispatch, driven through the NotifierHooks points directly.
#include "mmu_notifier/chain.h"

#include <gtest/gtest.h>

#include "base/error.h"
#include "tests/mmu_notifier/recorder.h"
#include "trace/trace.h"

namespace sptelab::mmu_notifier {
namespace {

using testing::fake_mm;
using testing::range;
using testing::Recorder;
using Calls = std::vector<std::string>;

// One operation over [0x10000, 0x12000) that clears the page at 0x11000,
// passing every point in the order of mm/notifier_hooks.h. Returns what the
// subscription saw at each point.
struct PointCalls {
  Calls before_change, in_ptl_cleared, after_unlock, after_release;
};

PointCalls drive_operation(Chain& chain, Recorder& recorder) {
  PointCalls seen;
  auto op = range(0x10000, 0x12000);
  chain.before_change(op);
  seen.before_change = recorder.take();
  chain.in_ptl_cleared(range(0x11000, 0x12000));
  seen.in_ptl_cleared = recorder.take();
  chain.after_unlock(op);
  seen.after_unlock = recorder.take();
  chain.after_release(op);
  seen.after_release = recorder.take();
  return seen;
}

class PlacementDispatch : public ::testing::TestWithParam<Placement> {};

TEST_P(PlacementDispatch, CallsExactlyTheDocumentedCallbackAtEachPoint) {
  Chain chain(GetParam());
  Recorder recorder;
  chain.register_subscription(&recorder);
  PointCalls seen = drive_operation(chain, recorder);

  const std::string range_call = "invalidate_range(0x10000,0x12000,event=1)";
  PointCalls expected;
  switch (GetParam()) {
    case Placement::kNone:
      break;
    case Placement::kPtlPage:
      expected.in_ptl_cleared = {"invalidate_page(0x11000)"};
      break;
    case Placement::kRangeBefore:
      expected.before_change = {range_call};
      break;
    case Placement::kRangeAfter:
      expected.after_release = {range_call};
      break;
    case Placement::kStartEnd:
      expected.before_change = {"invalidate_range_start(0x10000,0x12000)"};
      expected.after_unlock = {"invalidate_range_end(0x10000,0x12000)"};
      break;
  }
  EXPECT_EQ(seen.before_change, expected.before_change);
  EXPECT_EQ(seen.in_ptl_cleared, expected.in_ptl_cleared);
  EXPECT_EQ(seen.after_unlock, expected.after_unlock);
  EXPECT_EQ(seen.after_release, expected.after_release);
  EXPECT_FALSE(recorder.wrong_mm_seen());

  ChainStats stats = chain.stats();
  EXPECT_EQ(stats.placement, GetParam());
  for (size_t p = 0; p < static_cast<size_t>(HookPoint::kCount); ++p) {
    EXPECT_EQ(stats.points[p], 1u) << hook_point_name(static_cast<HookPoint>(p));
  }
  uint64_t total_calls = 0;
  for (uint64_t calls : stats.calls) total_calls += calls;
  size_t expected_calls = expected.before_change.size() + expected.in_ptl_cleared.size() +
                          expected.after_unlock.size() + expected.after_release.size();
  EXPECT_EQ(total_calls, expected_calls);
  EXPECT_EQ(stats.violations, 0u);
}

TEST_P(PlacementDispatch, AgingChangePteAndReleaseReachEveryPlacementButNone) {
  Chain chain(GetParam());
  Recorder recorder;
  recorder.young_answer = true;
  chain.register_subscription(&recorder);
  bool forwarded = GetParam() != Placement::kNone;

  EXPECT_EQ(chain.clear_flush_young(fake_mm(), 0x1000, 0x3000), forwarded);
  EXPECT_EQ(chain.clear_young(fake_mm(), 0x1000, 0x3000), forwarded);
  EXPECT_EQ(chain.test_young(fake_mm(), 0x2000), forwarded);
  chain.change_pte(fake_mm(), 0x2000, mm::Pte::make(7, false));
  chain.release(fake_mm());

  Calls expected;
  if (forwarded) {
    expected = {"clear_flush_young(0x1000,0x3000)", "clear_young(0x1000,0x3000)",
                "test_young(0x2000)", "change_pte(0x2000," + testing::hex(0x7005) + ")", "release"};
  }
  EXPECT_EQ(recorder.take(), expected);
  EXPECT_EQ(chain.stats().dropped, forwarded ? 0u : 5u);
}

INSTANTIATE_TEST_SUITE_P(AllPlacements, PlacementDispatch, ::testing::ValuesIn(kAllPlacements),
                         [](const ::testing::TestParamInfo<Placement>& param_info) {
                           std::string name = placement_name(param_info.param);
                           std::erase(name, '-');
                           return name;
                         });

TEST(Chain, AgingOrsAnswersAndTestYoungStopsAtTheFirstYoung) {
  Chain chain(Placement::kStartEnd);
  Recorder old_one("old"), young_one("young"), after("after");
  young_one.young_answer = true;
  chain.register_subscription(&old_one);
  chain.register_subscription(&young_one);
  chain.register_subscription(&after);

  EXPECT_TRUE(chain.clear_young(fake_mm(), 0, 0x1000));
  EXPECT_EQ(after.take().size(), 1u);  // clear_young asks everyone: each clears its own bits
  EXPECT_TRUE(chain.test_young(fake_mm(), 0));
  EXPECT_TRUE(after.take().empty());  // __mmu_notifier_test_young stops at the first young
  EXPECT_EQ(old_one.take().size(), 2u);
  EXPECT_EQ(young_one.take().size(), 2u);

  young_one.young_answer = false;
  EXPECT_FALSE(chain.clear_flush_young(fake_mm(), 0, 0x1000));
}

TEST(Chain, EmitsOneTraceEventPerNotificationWithItsArguments) {
  trace::Session session;
  Chain start_end(Placement::kStartEnd);
  Chain ptl_page(Placement::kPtlPage);
  Chain range_before(Placement::kRangeBefore);
  auto op = range(0x4000, 0x6000, mm::InvalidateEvent::kMigrate, /*blockable=*/true);
  start_end.before_change(op);
  start_end.after_unlock(op);
  ptl_page.in_ptl_cleared(range(0x5000, 0x6000));
  range_before.before_change(op);
  start_end.change_pte(fake_mm(), 0x5000, mm::Pte::make(3, false));
  start_end.test_young(fake_mm(), 0x5000);
  start_end.release(fake_mm());

  trace::Snapshot snap = trace::snapshot();
  ASSERT_EQ(snap.events.size(), 7u);
  const auto& e = snap.events;
  uint64_t migrate = static_cast<uint64_t>(mm::InvalidateEvent::kMigrate);
  EXPECT_EQ(e[0].kind, trace::Kind::kNotifyRangeStart);
  EXPECT_EQ(e[0].args, (std::array<uint64_t, 4>{0x4000, 0x6000, migrate, 1}));
  EXPECT_EQ(e[1].kind, trace::Kind::kNotifyRangeEnd);
  EXPECT_EQ(e[1].args, (std::array<uint64_t, 4>{0x4000, 0x6000, migrate, 0}));
  EXPECT_EQ(e[2].kind, trace::Kind::kNotifyInvalidatePage);
  EXPECT_EQ(e[2].args[0], 0x5000u);
  EXPECT_EQ(e[3].kind, trace::Kind::kNotifyInvalidateRange);
  EXPECT_EQ(e[3].args, (std::array<uint64_t, 4>{0x4000, 0x6000, migrate, 0}));
  EXPECT_EQ(e[4].kind, trace::Kind::kNotifyChangePte);
  EXPECT_EQ(e[4].args[1], mm::Pte::make(3, false).raw());
  EXPECT_EQ(e[5].kind, trace::Kind::kNotifyTestYoung);
  EXPECT_EQ(e[6].kind, trace::Kind::kNotifyRelease);
}

TEST(Chain, UnregisteredSubscriptionIsNeverCalledAgain) {
  Chain chain(Placement::kRangeBefore);
  Recorder stays("stays"), leaves("leaves");
  chain.register_subscription(&stays);
  chain.register_subscription(&leaves);
  EXPECT_EQ(chain.subscription_count(), 2u);
  chain.before_change(range(0, 0x1000));
  EXPECT_TRUE(chain.unregister_subscription(&leaves));
  EXPECT_FALSE(chain.unregister_subscription(&leaves));
  chain.before_change(range(0x1000, 0x2000));
  EXPECT_EQ(leaves.take().size(), 1u);
  EXPECT_EQ(stays.take().size(), 2u);
  EXPECT_EQ(chain.subscription_count(), 1u);
  EXPECT_GE(chain.stats().grace_periods, 1u);
}

TEST(Chain, DoubleRegistrationIsAnInternalError) {
  Chain chain(Placement::kStartEnd);
  Recorder recorder;
  chain.register_subscription(&recorder);
  try {
    chain.register_subscription(&recorder);
    FAIL() << "no exception";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kInternal);
  }
  EXPECT_EQ(chain.subscription_count(), 1u);
}

TEST(Chain, ReleaseDetachesEverySubscription) {
  Chain chain(Placement::kStartEnd);
  Recorder first("first"), second("second");
  chain.register_subscription(&first);
  chain.register_subscription(&second);
  chain.release(fake_mm());
  EXPECT_EQ(first.take(), Calls{"release"});
  EXPECT_EQ(second.take(), Calls{"release"});
  EXPECT_EQ(chain.subscription_count(), 0u);
  // exit_mmap goes on to unmap everything: nobody is told any more.
  chain.before_change(range(0, 0x1000));
  chain.after_unlock(range(0, 0x1000));
  EXPECT_TRUE(first.take().empty());
  EXPECT_FALSE(chain.unregister_subscription(&first));
}

TEST(Chain, StatsCountNotificationsAndCallsPerCallback) {
  Chain chain(Placement::kPtlPage);
  Recorder a("a"), b("b");
  chain.in_ptl_cleared(range(0, 0x1000));  // nobody subscribed yet: still a notification
  chain.register_subscription(&a);
  chain.register_subscription(&b);
  for (uint64_t page = 0; page < 3; ++page) {
    chain.in_ptl_cleared(range(page << 12, (page + 1) << 12));
  }
  ChainStats stats = chain.stats();
  EXPECT_EQ(stats.point(HookPoint::kInPtlCleared), 4u);
  EXPECT_EQ(stats.notified(Callback::kInvalidatePage), 4u);
  EXPECT_EQ(stats.called(Callback::kInvalidatePage), 6u);
  EXPECT_EQ(stats.called(Callback::kInvalidateRange), 0u);
  chain.reset_stats();
  EXPECT_EQ(chain.stats().called(Callback::kInvalidatePage), 0u);
}

}  // namespace
}  // namespace sptelab::mmu_notifier
