// crosscheck: the explorer's verdicts against real runs (software vCPUs
// here; tests/tools/race_kvm_cli_test.cpp runs it on KVM).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "explore/crosscheck.h"

namespace sptelab::explore {
namespace {

using host::HostOp;
using ::testing::HasSubstr;

CrosscheckOptions soft_options() {
  CrosscheckOptions options;
  options.backend = scenarios::Backend::kSoft;
  options.seeds = 3;
  options.attempt_seconds = 10;
  options.coherent_operations = 400;
  return options;
}

// The 2008 remap (populate over a present PTE, era 2.6.27): range-after
// loses the third thread's write. Since 4.0 remap is mmap under mmap_lock
// for write and the explorer finds range-after+seq coherent on it.
TEST(Crosscheck, ARacyCellIsFoundOnTheRealRun) {
  CrosscheckOptions options = soft_options();
  options.era = mm::KernelEra::k2_6_27;
  CrosscheckResult cell =
      crosscheck_cell(*spte::parse_scheme("range-after+seq"), HostOp::kRemap, options);
  EXPECT_TRUE(cell.explorer_racy);
  EXPECT_EQ(cell.property, "lost-write");
  EXPECT_EQ(cell.race_scenario, ScenarioKind::kLockfree);
  ASSERT_EQ(cell.attempts.size(), 3u);
  EXPECT_GE(cell.median_ms(), 0);
  EXPECT_TRUE(cell.agrees());
}

TEST(Crosscheck, ACoherentCellRunsItsOperationsClean) {
  CrosscheckResult cell =
      crosscheck_cell(*spte::parse_scheme("start-end+seq-count"), HostOp::kMigrate, soft_options());
  EXPECT_FALSE(cell.explorer_racy);
  EXPECT_TRUE(cell.attempts.empty());
  EXPECT_EQ(cell.operations, 400u);
  EXPECT_EQ(cell.violations, 0u);
  EXPECT_TRUE(cell.agrees());
}

// The verdict logic: a median over the seeds, a miss counts as never.
TEST(Crosscheck, MissesAndCoherentViolationsAreDisagreements) {
  CrosscheckResult racy;
  racy.explorer_racy = true;
  racy.attempts = {{1, false, true, 5.0, 10}, {2, false, false, -1, 99}, {3, true, true, 40.0, 3}};
  EXPECT_DOUBLE_EQ(racy.median_ms(), 40.0);
  EXPECT_EQ(racy.guided_seeds(), 1u);
  EXPECT_TRUE(racy.agrees());
  racy.attempts[2].found = false;
  EXPECT_LT(racy.median_ms(), 0);
  EXPECT_FALSE(racy.agrees());

  CrosscheckResult coherent;
  coherent.operations = 100000;
  EXPECT_TRUE(coherent.agrees());
  coherent.violations = 1;
  EXPECT_FALSE(coherent.agrees());
  coherent.scheme = *spte::parse_scheme("start-end+seq-count");
  EXPECT_THAT(format_crosscheck_table({coherent}, soft_options()), HasSubstr("RACY"));
  EXPECT_THAT(format_crosscheck_markdown({coherent}, soft_options()), HasSubstr("DISAGREES"));
  // Found beyond the table's bound: the explorer confirms it at bound 3.
  coherent.deeper_searched = true;
  coherent.deeper_racy = true;
  coherent.deeper_property = "use-after-free";
  coherent.deeper_preemptions = 3;
  EXPECT_TRUE(coherent.agrees());
  EXPECT_THAT(format_crosscheck_table({coherent}, soft_options()), HasSubstr("racy p3"));
}

}  // namespace
}  // namespace sptelab::explore
