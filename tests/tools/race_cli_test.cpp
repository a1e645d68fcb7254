// `sptelab race`, `explore` and `list` as a user runs them: exit statuses of
// the CLI contract, the JSON document, the table.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

TEST(RaceCli, LockfreeVariantIsNamedAndReportsThroughput) {
  auto result = run_sptelab({"race", "coherence-lockfree", "--backend", "soft", "--scheme",
                             "start-end+seq-count", "--iterations", "50"});
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("race coherence-lockfree --op remap --backend soft"));
  EXPECT_THAT(result.out, HasSubstr("guest/s"));
  EXPECT_THAT(result.out, HasSubstr("ops/s"));
  auto json = run_sptelab({"race", "coherence-lockfree", "--backend", "soft", "--scheme",
                           "start-end+seq-count", "--duration", "0.3", "--json"});
  EXPECT_EQ(json.status, 0) << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"scenario\": \"coherence-lockfree\""));
  EXPECT_THAT(json.out, HasSubstr("\"guest_work_per_s\": "));
  EXPECT_THAT(json.out, HasSubstr("\"timed_out\": false"));  // free-running for the duration
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
  auto good = run_sptelab({"explore", "--scheme", "ptl-page+seq"});
  EXPECT_EQ(good.status, 0) << good.err;
  EXPECT_THAT(good.out, HasSubstr("coherent in every interleaving"));
  auto bad = run_sptelab({"explore", "--scheme", "range-after+seq", "--json"});
  EXPECT_EQ(bad.status, 1) << bad.err;
  EXPECT_THAT(bad.out, HasSubstr("\"lost_write\": true"));
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
