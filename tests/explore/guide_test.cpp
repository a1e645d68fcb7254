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

using host::HostOp;
using scenarios::DelayPoint;
using scenarios::DelayUntil;
using scenarios::Role;
using scenarios::ScenarioKind;

constexpr uint32_t kBoundNs = 200000;

bool has_delay(const Guide& guide, inject::Point point, Role role, DelayUntil until) {
  return std::any_of(guide.delays.begin(), guide.delays.end(), [&](const DelayPoint& delay) {
    return delay.point == point && delay.role == role && delay.until == until;
  });
}

// A delay that ends when `until_role` passes `until_point`.
bool has_wait_for_pass(const Guide& guide, inject::Point point, Role role, Role until_role) {
  return std::any_of(guide.delays.begin(), guide.delays.end(), [&](const DelayPoint& delay) {
    return delay.point == point && delay.role == role && delay.until == DelayUntil::kPassed &&
           delay.until_role == until_role;
  });
}

// ptl-page+naive: the fault's GUP straddles the whole write-protect; the
// vCPU waits until the remapper has passed a point after its PTE change.
TEST(Guide, HoldsTheFaultAfterGupUntilTheRemapperMoved) {
  Guide guide = guide_for(cell("ptl-page+naive", HostOp::kMprotect), kBoundNs);
  EXPECT_EQ(guide.preemptions, 1);
  EXPECT_TRUE(
      has_wait_for_pass(guide, inject::Point::kSpteFaultAfterGup, Role::kVcpu, Role::kRemapper))
      << guide.description;
}

// range-before: the remapper is held between its early invalidation and the
// PTE change while the vCPU faults the old page back in.
TEST(Guide, HoldsTheRemapperBeforeThePtlUntilTheVcpuFaulted) {
  Guide guide = guide_for(cell("range-before+seq", HostOp::kRemap), kBoundNs);
  EXPECT_EQ(guide.property, "stale-spte");
  const bool waits_for_vcpu =
      has_delay(guide, inject::Point::kHostBeforePtl, Role::kRemapper,
                DelayUntil::kGuestProgress) ||
      has_wait_for_pass(guide, inject::Point::kHostBeforePtl, Role::kRemapper, Role::kVcpu);
  EXPECT_TRUE(waits_for_vcpu) << guide.description;
  for (const DelayPoint& delay : guide.delays) {
    EXPECT_LE(delay.delay_ns, kBoundNs);
    EXPECT_EQ(delay.per_mille, kGuidePerMille);
  }
}

// range-before+seq-count/ksm: the window is the host's COW break of the
// merged page, whose invalidation comes before the PTE change and nothing
// after it. The vCPU's wait must end on a point of that fault, not on the
// next invalidation (which would make the held fault retry).
TEST(Guide, WaitsForTheRemappersPointNotItsNextInvalidation) {
  // Up to 6.9 (change_pte still sent) the window needs two preemptions; a
  // 6.18 host loses the page in one (docs/schemes.md).
  Cell ksm = cell("range-before+seq-count", HostOp::kKsm, ScenarioKind::kStaleSpte);
  ksm.era = mm::KernelEra::k6_6;
  Guide guide = guide_for(ksm, kBoundNs);
  EXPECT_EQ(guide.preemptions, 2);
  EXPECT_TRUE(
      has_wait_for_pass(guide, inject::Point::kSpteFaultAfterGup, Role::kVcpu, Role::kRemapper))
      << guide.description;
  EXPECT_FALSE(
      has_delay(guide, inject::Point::kSpteFaultAfterGup, Role::kVcpu, DelayUntil::kHostProgress))
      << guide.description;
}

// range-after+interval/ksm: the vCPU was preempted in the middle of its
// guest accesses (which a native vCPU makes all the time: no delay for it),
// and the remapper, blocked behind that access in the explorer, must be held
// between its PTE write-protect and its late invalidation while the host
// thread breaks COW and the vCPU writes.
TEST(Guide, HoldsTheThreadABlockedSwitchStoppedNotAVcpuMidAccess) {
  Guide guide = guide_for(cell("range-after+interval", HostOp::kKsm), kBoundNs);
  const auto at = [&](inject::Point point, Role role) {
    return std::any_of(guide.delays.begin(), guide.delays.end(), [&](const DelayPoint& delay) {
      return delay.point == point && delay.role == role;
    });
  };
  EXPECT_TRUE(at(inject::Point::kHostAfterPtlUnlock, Role::kRemapper)) << guide.description;
  EXPECT_FALSE(at(inject::Point::kSpteFaultAfterGup, Role::kVcpu)) << guide.description;
}

// range-after+naive/migrate: the remapper must be held after its late
// invalidation (at its deferred flush, since 6.3 outside the PTL, or at its
// refcount freeze) while the vCPU installs the spte it faulted from the old
// page; under ptep_clear_flush (2.6.27) the flush is inside the PTL and no
// delay may stand there. Whether a point is inside a lock comes from the
// replay, not from the point's name: a delay moved back to the remapper's
// PTL unlock (before its invalidation) let the invalidation zap the stale
// spte, and the real guest missed the cell in 4 of 5 seeds.
TEST(Guide, HoldsTheRemapperAtAFlushOnlyWhereItIsOutsideThePtl) {
  Guide deferred = guide_for(cell("range-after+naive", HostOp::kMigrate), kBoundNs);
  EXPECT_EQ(deferred.property, "use-after-free");
  const auto held_at = [&](inject::Point point) {
    return has_delay(deferred, point, Role::kRemapper, DelayUntil::kGuestProgress) ||
           has_wait_for_pass(deferred, point, Role::kRemapper, Role::kVcpu);
  };
  EXPECT_TRUE(held_at(inject::Point::kTlbBeforeFlush) ||
              held_at(inject::Point::kHostBeforeRefFreeze))
      << deferred.description;
  EXPECT_FALSE(held_at(inject::Point::kHostAfterPtlUnlock)) << deferred.description;
  Cell in_ptl = cell("ptl-page+naive", HostOp::kRemap);
  in_ptl.era = mm::KernelEra::k2_6_27;
  Guide guide = guide_for(in_ptl, kBoundNs);
  ASSERT_FALSE(guide.delays.empty()) << guide.description;
  for (const DelayPoint& delay : guide.delays) {
    EXPECT_NE(delay.point, inject::Point::kTlbBeforeFlush) << guide.description;
    EXPECT_NE(delay.point, inject::Point::kHostAfterPteClear) << guide.description;
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
