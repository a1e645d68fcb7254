// Deliberately broken protocols: the search must find each on a scheme that
// is coherent without it. A mutant no test catches is a missing test.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "explore/campaign.h"

namespace sptelab::explore {
namespace {

using host::HostOp;
using mutation::Mutant;
using scenarios::ScenarioKind;

struct MutantCase {
  Mutant mutant;
  const char* scheme;
  HostOp op;
};

class MutantFound : public ::testing::TestWithParam<MutantCase> {};

TEST_P(MutantFound, OnASchemeThatIsCoherentWithoutIt) {
  const MutantCase& c = GetParam();
  Cell healthy{*spte::parse_scheme(c.scheme), c.op, ScenarioKind::kCoherence};
  CampaignOptions options;
  EXPECT_FALSE(explore_cell(healthy, options).violated) << healthy.key();
  Cell broken = healthy;
  broken.mutant = c.mutant;
  CellResult result = explore_cell(broken, options);
  EXPECT_TRUE(result.violated) << broken.key();
  EXPECT_LE(result.preemptions, 3) << broken.key();
  // The counterexample names the mutant and replays under it.
  Replayed replayed = replay_schedule(parse_schedule(result.counterexample));
  EXPECT_TRUE(replayed.outcome.violated) << broken.key();
}

INSTANTIATE_TEST_SUITE_P(
    Explore, MutantFound,
    ::testing::Values(
        MutantCase{Mutant::kSeqCountIgnoresOpenRange, "start-end+seq-count", HostOp::kRemap},
        MutantCase{Mutant::kIntervalSkipsSeqCheck, "start-end+interval", HostOp::kRemap},
        MutantCase{Mutant::kEndBeforePteChange, "start-end+seq-count", HostOp::kRemap},
        MutantCase{Mutant::kEndKeepsSeq, "start-end+seq-count", HostOp::kRemap},
        MutantCase{Mutant::kZapForgetsMirror, "ptl-page+seq", HostOp::kRemap},
        MutantCase{Mutant::kShootdownNoAck, "start-end+seq-count", HostOp::kMigrate},
        MutantCase{Mutant::kSvaSkipsIotlbFlush, "start-end+sva", HostOp::kMigrate}),
    [](const ::testing::TestParamInfo<MutantCase>& param_info) {
      std::string name = mutation::name(param_info.param.mutant);
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

// A half fix of the pagewalk-ptl seed race: the walker takes the PTL, but
// rewrites each PTE from the copy it read before taking it, so a zap in
// between is still undone. Found on the race's fixed variant, which is
// coherent without it (SeedExplored.FixedIsCoherentAtBoundTwo).
TEST(MutantFound, WalkReadsBeforePtlOnThePagewalkSeedRace) {
  Cell cell{scenarios::default_seed_scheme()};
  cell.race = scenarios::SeedRace::kPagewalkPtl;
  cell.variant = scenarios::Variant::kFixed;
  cell.mutant = Mutant::kWalkReadsBeforePtl;
  const CellResult result = explore_cell(cell, CampaignOptions{});
  ASSERT_TRUE(result.violated) << cell.key();
  EXPECT_EQ(result.property, "mm-audit");
  EXPECT_LE(result.preemptions, 3);
  const Replayed replayed = replay_schedule(parse_schedule(result.counterexample));
  EXPECT_TRUE(replayed.outcome.violated) << cell.key();
}

// GUP-fast without its re-check is masked by every fault protocol that
// checks the invalidation sequence under mmu_lock: a finding, kept as a test
// so that a change in the masking is noticed.
TEST(MutantMasked, GupFastWithoutRecheckIsMaskedBySequenceProtocols) {
  Cell cell{*spte::parse_scheme("start-end+seq-count"), HostOp::kMigrate, ScenarioKind::kCoherence,
            Mutant::kGupFastNoRecheck};
  EXPECT_FALSE(explore_cell(cell, CampaignOptions{}).violated);
}

}  // namespace
}  // namespace sptelab::explore
