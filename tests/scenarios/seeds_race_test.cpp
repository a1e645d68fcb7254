// The seed races as `sptelab race` runs them: real threads, round after
// round. The buggy variant must show its violation (the run stops at the
// first one, with the violating round's events); the fixed variant must run
// its rounds clean. No timing is asserted: the round budget is the bound.
#include <gtest/gtest.h>

#include <string>

#include "scenarios/seeds.h"

namespace sptelab::scenarios {
namespace {

class SeedRaced : public ::testing::TestWithParam<SeedRace> {};

TEST_P(SeedRaced, BuggyShowsItsViolationWithTheRound) {
  SeedRaceConfig config;
  config.race = GetParam();
  config.variant = Variant::kBuggy;
  config.rounds = 2000000;
  config.max_seconds = 600;  // a safety limit only
  const SeedRaceResult result = run_seed_race(config);
  ASSERT_GE(result.violations, 1u)
      << seed_race_name(config.race) << ": " << result.rounds << " rounds";
  EXPECT_FALSE(result.property.empty());
  EXPECT_FALSE(result.counterexample.empty());
  EXPECT_NE(seed_race_json(result).find("\"variant\": \"buggy\""), std::string::npos);
}

TEST_P(SeedRaced, FixedRunsItsRoundsClean) {
  SeedRaceConfig config;
  config.race = GetParam();
  config.variant = Variant::kFixed;
  config.rounds = 5000;
  config.max_seconds = 600;
  const SeedRaceResult result = run_seed_race(config);
  EXPECT_EQ(result.violations, 0u) << result.property << ": " << result.detail << "\n"
                                   << result.counterexample;
  EXPECT_EQ(result.rounds, config.rounds);
}

INSTANTIATE_TEST_SUITE_P(Race, SeedRaced, ::testing::ValuesIn(all_seed_races()),
                         [](const ::testing::TestParamInfo<SeedRace>& param_info) {
                           std::string name = seed_race_name(param_info.param);
                           for (char& c : name) c = c == '-' ? '_' : c;
                           return name;
                         });

}  // namespace
}  // namespace sptelab::scenarios
