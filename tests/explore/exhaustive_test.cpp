// The explorer's exhaustive searches: whole rows of the table at bound 2,
// cells that are coherent only in some kernel eras, and the reduction
// compared with the full search. Label `search`: they take
// minutes, so the plain build runs them and the sanitizer and Debug builds
// in CI (label `unit`) do not; scripts/check-schemes-doc re-derives the
// whole table in CI as well.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "explore/campaign.h"
#include "tests/explore/cells.h"

namespace sptelab::explore {
namespace {

using testing::cell;
using testing::cell_in;
using testing::explore;

using host::HostOp;
using scenarios::ScenarioKind;

// change_pte went in 6.10: start-end+seq kept cow and ksm coherent only
// through it (docs/schemes.md), and loses both without it.
TEST(Explore, StartEndSeqNeededChangePteOnCowAndKsm) {
  for (HostOp op : {HostOp::kCow, HostOp::kKsm}) {
    EXPECT_FALSE(explore(cell_in(mm::KernelEra::k6_6, "start-end+seq", op)).violated)
        << host::host_op_name(op);
    CellResult result = explore(cell("start-end+seq", op));
    EXPECT_TRUE(result.violated) << host::host_op_name(op);
    EXPECT_EQ(result.preemptions, 1) << host::host_op_name(op);
  }
}

// The designs the docs argue correct: every op, both scenarios, exhausted at
// bound 2 without a violation and without hitting the execution limit.
class CorrectScheme : public ::testing::TestWithParam<const char*> {};

TEST_P(CorrectScheme, IsExhaustedAtBoundTwoForEveryOp) {
  for (HostOp op : host::all_host_ops()) {
    for (ScenarioKind scenario : {ScenarioKind::kCoherence, ScenarioKind::kStaleSpte}) {
      CellResult result = explore(cell(GetParam(), op, scenario));
      EXPECT_FALSE(result.violated) << result.cell.key() << ": " << result.detail;
      EXPECT_TRUE(result.complete) << result.cell.key();
      EXPECT_GT(result.schedules, 10u) << result.cell.key();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Docs, CorrectScheme,
                         ::testing::Values("ptl-page+seq", "ptl-page+seq-count",
                                           "ptl-page+interval", "start-end+seq-count",
                                           "start-end+interval", "ptl-page+sva", "start-end+sva"));

// Verdicts and the fewest preemptions. start-end+naive/ksm/stale-spte is
// racy at bound 2 only if the remapper goes first and the vCPU preempts it:
// sleep sets that let the vCPU's explored start sleep there called it
// coherent.
TEST(Explore, SleepSetsPruneWithoutChangingVerdicts) {
  for (const Cell& c :
       {cell("start-end+seq-count", HostOp::kRemap), cell("ptl-page+seq", HostOp::kCow),
        // Racy on 2.6.27's remap; coherent on 6.18's, whose search without
        // sleep sets is far longer.
        cell_in(mm::KernelEra::k2_6_27, "range-after+seq", HostOp::kRemap),
        cell("start-end+seq", HostOp::kMkclean),
        cell("start-end+naive", HostOp::kKsm, ScenarioKind::kStaleSpte)}) {
    CellResult reduced = explore(c, true);
    CellResult full = explore(c, false);
    EXPECT_EQ(reduced.violated, full.violated) << c.key();
    EXPECT_EQ(reduced.property, full.property) << c.key();
    EXPECT_EQ(reduced.preemptions, full.preemptions) << c.key();
    if (!reduced.violated) {
      EXPECT_LT(reduced.schedules, full.schedules) << c.key();
    }
  }
}

TEST(Explore, ShardsMergedEqualTheWholeRun) {
  // Racy on the 2.6.27 remap, coherent on mprotect: the three shards hold
  // the two racy cells in the opposite order; the era survives the merge.
  std::vector<Cell> cells =
      cells_of({*spte::parse_scheme("range-after+seq"), *spte::parse_scheme("start-end+seq")},
               {HostOp::kMprotect, HostOp::kRemap}, {ScenarioKind::kCoherence});
  for (Cell& c : cells) c.era = mm::KernelEra::k2_6_27;
  CampaignOptions options;
  std::vector<CellResult> whole = run_campaign(cells, options);
  std::vector<std::string> docs;
  for (size_t i = 0; i < 3; ++i)
    docs.push_back(format_json(run_campaign(shard(cells, i, 3), options), 2));
  auto [bound, merged] = parse_json_results(docs);
  EXPECT_EQ(bound, 2);
  EXPECT_EQ(format_table(merged, bound), format_table(whole, 2));
  // The per-cell lines too, in the unsharded order (scripts/check-schemes-doc
  // merges shards run in parallel).
  EXPECT_EQ(format_markdown(merged, bound), format_markdown(whole, 2));
}

}  // namespace
}  // namespace sptelab::explore
