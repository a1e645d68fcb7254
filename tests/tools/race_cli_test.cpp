// `sptelab race`, `explore` and `list` as a user runs them: exit statuses of
// the CLI contract, the JSON document, the table.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "tests/tools/cli.h"

namespace sptelab::tools {
namespace {

using ::testing::HasSubstr;
using testing::run_sptelab;

TEST(RaceCli, CorrectSchemeIsExitZeroAndOneJsonDocument) {
  auto result =
      run_sptelab({"race", "coherence", "--backend", "soft", "--scheme", "start-end+seq-count",
                   "--op", "migrate", "--iterations", "50", "--json"});
  EXPECT_EQ(result.status, 0) << result.err;
  ASSERT_FALSE(result.out.empty());
  EXPECT_EQ(result.out.front(), '{');
  EXPECT_EQ(result.out[result.out.find_last_not_of('\n')], '}');
  EXPECT_THAT(result.out, HasSubstr("\"results\": [{\"scenario\": \"coherence\""));
  EXPECT_THAT(result.out, HasSubstr("\"violations\": 0"));
  EXPECT_TRUE(result.err.empty()) << result.err;  // --json: nothing else, no progress
}

TEST(RaceCli, RacySchemeIsExitOneWithTheCounterexample) {
  auto result = run_sptelab(
      {"race", "stale-spte", "--backend", "soft", "--scheme", "none+seq", "--iterations", "100"});
  EXPECT_EQ(result.status, 1) << result.err;
  EXPECT_THAT(result.out, HasSubstr("none+seq"));
  EXPECT_THAT(result.out, HasSubstr("counterexample"));
  EXPECT_THAT(result.out, HasSubstr("violation: detector="));
}

TEST(RaceCli, BadInputIsExitTwoWithAMessage) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"race", "nonsense"},
        std::vector<std::string>{"race", "coherence", "--scheme", "middle+seq"},
        std::vector<std::string>{"race", "coherence", "--op", "shred"},
        std::vector<std::string>{"race", "coherence", "--backend", "qemu"},
        std::vector<std::string>{"race", "coherence", "--iterations", "0"},
        std::vector<std::string>{"race", "coherence", "--delay", "no_such_point=5"},
        std::vector<std::string>{"race", "coherence", "--kernel"},
        std::vector<std::string>{"race"}}) {
    auto result = run_sptelab(args);
    EXPECT_EQ(result.status, 2) << args[1];
    EXPECT_THAT(result.err, HasSubstr("sptelab"));
  }
}

TEST(RaceCli, MissingKvmIsExitThreeAndSuggestsSoft) {
  auto result = run_sptelab({"race", "coherence", "--scheme", "start-end+seq-count"},
                            {{"SPTELAB_KVM_DEVICE", "/nonexistent/kvm"}});
  EXPECT_EQ(result.status, 3) << result.err;
  EXPECT_THAT(result.err, HasSubstr("--backend soft"));
}

TEST(ExploreCli, CoherentSchemeIsZeroRacyIsOne) {
  auto good = run_sptelab({"explore", "--scheme", "ptl-page+seq", "--op", "remap"});
  EXPECT_EQ(good.status, 0) << good.err;
  EXPECT_THAT(good.out, HasSubstr("ok/2"));
  EXPECT_THAT(good.err, HasSubstr("[2/2]"));  // progress, one line per cell
  auto bad = run_sptelab({"explore", "--scheme", "range-after+seq", "--op", "remap", "--scenario",
                          "coherence", "--json"});
  EXPECT_EQ(bad.status, 1) << bad.err;
  EXPECT_THAT(bad.out, HasSubstr("\"verdict\": \"racy\""));
  EXPECT_THAT(bad.out, HasSubstr("\"property\": \"lost-write\""));
}

TEST(ExploreCli, SavedCounterexampleReplaysItsViolation) {
  const std::string path = ::testing::TempDir() + "/explore_cli_schedule.txt";
  auto found = run_sptelab({"explore", "--scheme", "range-after+seq", "--op", "remap", "--scenario",
                            "coherence", "--save", path});
  ASSERT_EQ(found.status, 1) << found.err;
  EXPECT_THAT(found.err, HasSubstr(path));
  auto replayed = run_sptelab({"explore", "--replay", path});
  EXPECT_EQ(replayed.status, 1) << replayed.err;
  EXPECT_THAT(replayed.out, HasSubstr("lost-write"));
  EXPECT_THAT(replayed.out, HasSubstr("remapper"));
}

TEST(ExploreCli, BadInputIsExitTwoWithTheValidChoices) {
  auto bound = run_sptelab({"explore", "--bound", "-1"});
  EXPECT_EQ(bound.status, 2);
  EXPECT_THAT(bound.err, HasSubstr("0 to 6"));
  auto op = run_sptelab({"explore", "--op", "nosuch"});
  EXPECT_EQ(op.status, 2);
  EXPECT_THAT(op.err, HasSubstr("migrate, remap"));
  auto scheme = run_sptelab({"explore", "--scheme", "nosuch+seq"});
  EXPECT_EQ(scheme.status, 2);
  auto missing = run_sptelab({"explore", "--replay", "/nonexistent/schedule"});
  EXPECT_EQ(missing.status, 2);
  const std::string path = ::testing::TempDir() + "/explore_cli_bad_schedule.txt";
  FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  std::fputs("scheme start-end+seq\nop remap\nscenario coherence\nschedule 0 1 x\n", file);
  std::fclose(file);
  auto malformed = run_sptelab({"explore", "--replay", path});
  EXPECT_EQ(malformed.status, 2);
  EXPECT_THAT(malformed.err, HasSubstr("line 4"));
}

TEST(ListCli, ListsTheTwentySchemesAndTheOps) {
  auto schemes = run_sptelab({"list", "schemes"});
  EXPECT_EQ(schemes.status, 0);
  EXPECT_EQ(std::count(schemes.out.begin(), schemes.out.end(), '\n'), 20);
  auto ops = run_sptelab({"list", "ops"});
  for (const char* op : {"migrate", "remap", "cow", "dontneed", "mprotect", "mkclean", "ksm"}) {
    EXPECT_THAT(ops.out, HasSubstr(op));
  }
  EXPECT_EQ(run_sptelab({"list", "scenarios"}).status, 0);
  EXPECT_EQ(run_sptelab({"list", "points"}).status, 0);
}

}  // namespace
}  // namespace sptelab::tools
