// The explorer over the real emulator: the 2008 verdicts found unaided, the
// correct schemes exhausted, determinism, replay, reduction, shards.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "base/sched.h"
#include "explore/campaign.h"
#include "explore/search.h"
#include "tests/explore/cells.h"

namespace sptelab::explore {
namespace {

using testing::cell;
using testing::cell_in;
using testing::explore;

using host::HostOp;
using scenarios::ScenarioKind;
using ::testing::HasSubstr;

// The 2008 thread's verdicts for remap (populate_range over a present PTE:
// era 2.6.27), found by a search that is not told the interleaving.
TEST(Explore, RangeAfterLosesTheThirdThreadsWriteOnRemap) {
  for (const char* scheme : {"range-after+seq", "range-after+seq-count", "range-after+interval"}) {
    CellResult result = explore(cell_in(mm::KernelEra::k2_6_27, scheme, HostOp::kRemap));
    EXPECT_TRUE(result.violated) << scheme;
    EXPECT_EQ(result.property, "lost-write") << scheme;
    EXPECT_LE(result.preemptions, 3) << scheme;
  }
}

TEST(Explore, RangeBeforeAndStartEndWithoutCountLeaveAStaleSpte) {
  for (const char* scheme : {"range-before+seq", "start-end+seq", "ptl-page+naive"}) {
    CellResult result = explore(cell_in(mm::KernelEra::k2_6_27, scheme, HostOp::kRemap));
    EXPECT_TRUE(result.violated) << scheme;
    EXPECT_EQ(result.property, "stale-spte") << scheme;
    EXPECT_LE(result.preemptions, 3) << scheme;
  }
}

// Since 4.0 remap_file_pages is mmap(MAP_FIXED) under mmap_lock for write
// plus a populate fault: the old PTE is zapped (range-after invalidates at
// the end of that zap) before any fault can map the new page, so no write
// can land on the old page while the host maps the new one. start-end
// without the open-range check still leaves a stale spte.
TEST(Explore, RemapAsMmapSince40) {
  for (const char* scheme : {"range-after+seq", "range-after+interval"}) {
    EXPECT_FALSE(explore(cell(scheme, HostOp::kRemap)).violated) << scheme;
  }
  CellResult result = explore(cell("start-end+seq", HostOp::kRemap));
  EXPECT_TRUE(result.violated);
  EXPECT_EQ(result.property, "stale-spte");
}

// fallocate(PUNCH_HOLE) frees the page once it has left the page cache,
// after the zap's whole bracket: start-end+seq lets a fault that runs inside
// the bracket install an spte the page is then freed under; seq-count holds
// that fault off, and range-after's late invalidation still comes before
// the free (docs/schemes.md). Each word must end zero or its write.
TEST(Explore, PunchHoleFreesThePageUnderAnSpteOnlyWhereTheBracketLetsAFaultIn) {
  CellResult racy = explore(cell("start-end+seq", HostOp::kPunchHole));
  EXPECT_TRUE(racy.violated);
  EXPECT_EQ(racy.property, "use-after-free");
  EXPECT_EQ(racy.preemptions, 1);
  for (ScenarioKind scenario : {ScenarioKind::kCoherence, ScenarioKind::kStaleSpte}) {
    CellResult coherent = explore(cell("start-end+seq-count", HostOp::kPunchHole, scenario));
    EXPECT_FALSE(coherent.violated) << coherent.property << ": " << coherent.detail;
    EXPECT_TRUE(coherent.complete);
  }
  EXPECT_FALSE(explore(cell("range-after+seq", HostOp::kPunchHole)).violated);
}

// Found when the real guest (which writes all the time) disagreed: a fault
// inside mprotect's start..PTE-change window installs a writable spte that
// outlives mprotect's return. The single store of the explorer's vCPU may
// land before the return, so the window itself is audited.
TEST(Explore, WritableSpteAfterMprotectReturnsIsFoundEvenWithoutALaterWrite) {
  for (const char* scheme : {"start-end+seq", "range-before+seq", "range-before+seq-count"}) {
    CellResult result = explore(cell(scheme, HostOp::kMprotect));
    EXPECT_TRUE(result.violated) << scheme;
    EXPECT_EQ(result.property, "stale-spte") << scheme;
    EXPECT_THAT(result.detail, HasSubstr("writable but the host PTE is read-only")) << scheme;
  }
  EXPECT_FALSE(explore(cell("start-end+seq-count", HostOp::kMprotect)).violated);
}

TEST(Explore, NoInvalidationIsRacyForEveryOp) {
  for (HostOp op : host::all_host_ops()) {
    CellResult result = explore(cell("none+seq", op));
    EXPECT_TRUE(result.violated) << host::host_op_name(op);
  }
}

// The IOMMU-SVA device: without arch_invalidate_secondary_tlbs (placement
// none, a kernel without MMU notifiers) nothing ever flushes its IOTLB, and
// the search finds that on every op without a preemption.
TEST(Explore, SvaWithoutNotifiersIsRacyForEveryOp) {
  for (HostOp op : host::all_host_ops()) {
    CellResult result = explore(cell("none+sva", op));
    EXPECT_TRUE(result.violated) << host::host_op_name(op);
    EXPECT_EQ(result.preemptions, 0) << host::host_op_name(op);
  }
}

// With the flush forwarded, the placement does not matter: the IOTLB hears
// only the host's TLB flush, which every op issues before it frees or
// reuses a page. exhaustive_test searches ptl-page+sva and start-end+sva on
// every op and scenario; here the two placements whose shadow schemes are
// racy on these ops.
TEST(Explore, SvaIsCoherentWhereTheSamePlacementsShadowSchemesAreNot) {
  for (const char* scheme : {"range-before+sva", "range-after+sva"}) {
    for (HostOp op : {HostOp::kRemap, HostOp::kDontneed}) {
      CellResult result = explore(cell(scheme, op, ScenarioKind::kStaleSpte));
      EXPECT_FALSE(result.violated) << result.cell.key() << ": " << result.detail;
      EXPECT_TRUE(result.complete) << result.cell.key();
    }
  }
  EXPECT_TRUE(
      explore(cell("range-before+seq-count", HostOp::kRemap, ScenarioKind::kStaleSpte)).violated);
  EXPECT_TRUE(
      explore(cell("range-after+seq", HostOp::kDontneed, ScenarioKind::kStaleSpte)).violated);
}

TEST(Explore, SvaNeedsAHostOfSixSixOrLater) {
  EXPECT_THROW(explore(cell_in(mm::KernelEra::k6_1, "start-end+sva", HostOp::kRemap)), Error);
}

TEST(Explore, TheSameSearchGivesTheSameCounterexample) {
  const Cell racy = cell("range-before+seq", HostOp::kMigrate);
  CellResult first = explore(racy);
  CellResult second = explore(racy);
  ASSERT_TRUE(first.violated);
  EXPECT_EQ(first.counterexample, second.counterexample);
  EXPECT_EQ(first.schedules, second.schedules);
  EXPECT_EQ(first.detail, second.detail);
}

TEST(Explore, EverySavedCounterexampleReplaysItsViolation) {
  for (const Cell& racy : {cell_in(mm::KernelEra::k2_6_27, "range-after+seq", HostOp::kRemap),
                           cell("start-end+seq", HostOp::kMigrate),
                           cell("range-before+interval", HostOp::kRemap, ScenarioKind::kStaleSpte),
                           cell("none+naive", HostOp::kMkclean)}) {
    CellResult result = explore(racy);
    ASSERT_TRUE(result.violated) << racy.key();
    SavedSchedule saved = parse_schedule(result.counterexample);
    EXPECT_EQ(saved.cell.key(), racy.key());
    Replayed replayed = replay_schedule(saved);
    EXPECT_TRUE(replayed.outcome.violated) << racy.key();
    EXPECT_EQ(replayed.outcome.property, result.property) << racy.key();
    EXPECT_EQ(replayed.preemptions, result.preemptions) << racy.key();
    EXPECT_THAT(replayed.timeline, HasSubstr("remapper")) << racy.key();
  }
}

// Two threads: b writes 1 then 2 to x, a reads x once and must not see 1.
// With b first, one preemption (after b's first write) shows it; with a
// first it takes two (a starts, b preempts it, a preempts b). Sleep sets
// must not put a to sleep in the b-first branch just because a's start
// was explored: its reordering there needs a preemption more than the
// bound allows.
TEST(Explore, SleepSetsKeepTheFewestPreemptionsUnderTheBound) {
  const RunFn run = [](sched::Chooser& chooser) {
    int x = 0;
    int seen = -1;
    sched::Execution execution(chooser, 100);
    execution.add_thread("a", [&] {
      sched::point(sched::Step{.kind = sched::Kind::kRead, .object = &x, .label = "read x"});
      seen = x;
    });
    execution.add_thread("b", [&] {
      sched::point(sched::Step{.kind = sched::Kind::kWrite, .object = &x, .label = "write x"});
      x = 1;
      sched::point(sched::Step{.kind = sched::Kind::kWrite, .object = &x, .label = "write x"});
      x = 2;
    });
    execution.run();
    Outcome outcome;
    outcome.violated = seen == 1;
    if (outcome.violated) outcome.property = "intermediate-read";
    return outcome;
  };
  for (bool reduction : {false, true}) {
    SearchResult result = search_bounded(run, SearchOptions{.bound = 2, .reduction = reduction});
    EXPECT_TRUE(result.violated) << "reduction " << reduction;
    EXPECT_EQ(result.preemptions, 1) << "reduction " << reduction;
    SearchResult at_one = search_bounded(run, SearchOptions{.bound = 1, .reduction = reduction});
    EXPECT_TRUE(at_one.violated) << "bound 1, reduction " << reduction;
  }
}

TEST(Explore, MalformedSchedulesAreBadInput) {
  EXPECT_THROW(parse_schedule("scheme nosuch+seq\nop remap\nscenario coherence\nschedule 0\n"),
               sptelab::Error);
  EXPECT_THROW(parse_schedule("scheme start-end+seq\nop remap\nschedule 0\n"), sptelab::Error);
  EXPECT_THROW(parse_schedule("scheme start-end+seq\nop remap\nscenario coherence\nschedule -1\n"),
               sptelab::Error);
  EXPECT_THROW(parse_schedule("scheme start-end+seq\nbogus 1\n"), sptelab::Error);
  // A schedule that does not fit the cell.
  SavedSchedule wrong =
      parse_schedule("scheme start-end+seq\nop remap\nscenario stale-spte\nschedule 2 2 2 2\n");
  EXPECT_THROW(replay_schedule(wrong), sptelab::Error);
}

TEST(Explore, PctFindsTheThirdThreadRace) {
  CampaignOptions options;
  options.pct = PctOptions{.runs = 2000, .depth = 3, .seed = 1};
  CellResult result =
      explore_cell(cell_in(mm::KernelEra::k2_6_27, "range-after+seq", HostOp::kRemap), options);
  EXPECT_TRUE(result.violated);
  CellResult correct = explore_cell(cell("start-end+seq-count", HostOp::kRemap), options);
  EXPECT_FALSE(correct.violated) << correct.detail;
}

}  // namespace
}  // namespace sptelab::explore
