// Guided races: the explorer's counterexample turned into delays, and those
// delays driving a real (software-vCPU) race into the window they stand for.
#include <gtest/gtest.h>

#include <algorithm>

#include "explore/guide.h"
#include "scenarios/race.h"
#include "tests/explore/cells.h"

namespace sptelab::explore {
namespace {

using testing::cell;

using scenarios::DelayPoint;
using scenarios::DelayUntil;
using scenarios::HostOp;
using scenarios::Role;
using scenarios::ScenarioKind;

constexpr uint32_t kBoundNs = 200000;

bool has_delay(const Guide& guide, inject::Point point, Role role, DelayUntil until) {
  return std::any_of(guide.delays.begin(), guide.delays.end(), [&](const DelayPoint& delay) {
    return delay.point == point && delay.role == role && delay.until == until;
  });
}

// ptl-page+naive: the fault's GUP straddles the whole write-protect.
TEST(Guide, HoldsTheFaultAfterGupUntilTheRemapperMoved) {
  Guide guide = guide_for(cell("ptl-page+naive", HostOp::kMprotect), kBoundNs);
  EXPECT_EQ(guide.preemptions, 1);
  EXPECT_TRUE(
      has_delay(guide, inject::Point::kSpteFaultAfterGup, Role::kVcpu, DelayUntil::kHostProgress))
      << guide.description;
}

// range-before: the remapper is held between its early invalidation and the
// PTE change while the vCPU faults the old page back in.
TEST(Guide, HoldsTheRemapperBeforeThePtlUntilTheVcpuFaulted) {
  Guide guide = guide_for(cell("range-before+seq", HostOp::kRemap), kBoundNs);
  EXPECT_EQ(guide.property, "stale-spte");
  EXPECT_TRUE(
      has_delay(guide, inject::Point::kHostBeforePtl, Role::kRemapper, DelayUntil::kGuestProgress))
      << guide.description;
  for (const DelayPoint& delay : guide.delays) {
    EXPECT_LE(delay.delay_ns, kBoundNs);
    EXPECT_EQ(delay.per_mille, 1000u);
  }
}

TEST(Guide, ACoherentCellHasNoDelays) {
  Guide guide = guide_for(cell("start-end+seq-count", HostOp::kRemap), kBoundNs);
  EXPECT_TRUE(guide.delays.empty());
  EXPECT_TRUE(guide.description.empty());
}

TEST(Guide, RaceScenariosMapToTheExplorersRoles) {
  EXPECT_EQ(explorer_scenario(ScenarioKind::kLockfree), ScenarioKind::kCoherence);
  EXPECT_EQ(explorer_scenario(ScenarioKind::kCoherence), ScenarioKind::kCoherence);
  EXPECT_EQ(explorer_scenario(ScenarioKind::kStaleSpte), ScenarioKind::kStaleSpte);
}

// The guide's delays, and only they, make the soft race hit the window.
TEST(Guide, GuidedSoftRaceFindsTheCellsViolation) {
  scenarios::RaceConfig config;
  config.scenario = ScenarioKind::kLockfree;
  config.scheme = *spte::parse_scheme("ptl-page+naive");
  config.op = HostOp::kMprotect;
  config.backend = scenarios::Backend::kSoft;
  config.operations = 300;
  config.max_seconds = 60;
  config.delays = guide_for(cell("ptl-page+naive", HostOp::kMprotect), kBoundNs).delays;
  ASSERT_FALSE(config.delays.empty());
  scenarios::RaceResult result = scenarios::run_race(config);
  EXPECT_GT(result.violations, 0u);
}

}  // namespace
}  // namespace sptelab::explore
