// The seed races under the explorer: the buggy variant is found with a
// counterexample of at most 3 preemptions that replays, the fixed variant is
// coherent with the search complete at bound 2 (their scheme tables are in
// seed_tables_test.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "explore/campaign.h"

namespace sptelab::explore {
namespace {

using scenarios::SeedRace;
using scenarios::Variant;

Cell seed_cell(SeedRace race, Variant variant) {
  Cell cell{scenarios::default_seed_scheme()};
  cell.race = race;
  cell.variant = variant;
  return cell;
}

class SeedExplored : public ::testing::TestWithParam<SeedRace> {};

TEST_P(SeedExplored, BuggyIsFoundWithAReplayableCounterexample) {
  const Cell cell = seed_cell(GetParam(), Variant::kBuggy);
  CampaignOptions options;
  options.search.bound = 3;
  const CellResult result = explore_cell(cell, options);
  ASSERT_TRUE(result.violated) << cell.key();
  EXPECT_LE(result.preemptions, 3) << cell.key();
  const SavedSchedule saved = parse_schedule(result.counterexample);
  EXPECT_EQ(saved.cell.key(), cell.key());
  const Replayed replayed = replay_schedule(saved);
  EXPECT_TRUE(replayed.outcome.violated) << cell.key();
  EXPECT_EQ(replayed.outcome.property, result.property);
  EXPECT_EQ(replayed.preemptions, result.preemptions);
  EXPECT_FALSE(replayed.timeline.empty());
}

TEST_P(SeedExplored, FixedIsCoherentAtBoundTwo) {
  const Cell cell = seed_cell(GetParam(), Variant::kFixed);
  const CellResult result = explore_cell(cell, CampaignOptions{});
  EXPECT_FALSE(result.violated) << cell.key() << ": " << result.property << " " << result.detail;
  EXPECT_TRUE(result.complete) << cell.key();
}

INSTANTIATE_TEST_SUITE_P(Explore, SeedExplored, ::testing::ValuesIn(scenarios::all_seed_races()),
                         [](const ::testing::TestParamInfo<SeedRace>& param_info) {
                           std::string name = scenarios::seed_race_name(param_info.param);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace sptelab::explore
