// `sptelab race --guided` on real KVM: the explorer's counterexample placed
// as delays drives a native guest into a window it rarely hits free-running.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/hypervisor/kvm_env.h"
#include "tests/tools/cli.h"

namespace sptelab::tools {
namespace {

using ::testing::HasSubstr;
using testing::run_sptelab;

// ptl-page+naive breaks only when a fault's GUP straddles a whole
// write-protect (explore: 1 preemption).
TEST(RaceGuidedKvm, CatchesTheNarrowWindowTheExplorerFound) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"race", "coherence-lockfree", "--op", "mprotect", "--scheme",
                             "ptl-page+naive", "--guided", "--iterations", "3000", "--json"});
  EXPECT_EQ(result.status, 1) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("\"guided\": true"));
  EXPECT_THAT(result.out, HasSubstr("spte_fault_after_gup"));
}

TEST(RaceGuidedKvm, ACoherentSchemeRunsFreeAndStaysClean) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"race", "coherence-lockfree", "--op", "mprotect", "--scheme",
                             "ptl-page+seq", "--guided", "--iterations", "3000", "--json"});
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("\"guided\": false"));
  EXPECT_THAT(result.out, HasSubstr("\"violations\": 0"));
}

TEST(RaceGuidedKvm, OwnDelaysAndGuidedDoNotMix) {
  auto result = run_sptelab({"race", "coherence-lockfree", "--guided", "--no-delays"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--guided places its own delays"));
}

// The explorer's verdicts on the real guest: a racy cell found, a coherent
// one clean, one JSON document on stdout and progress on stderr.
TEST(CrosscheckKvm, AgreesWithTheExplorerOnARacyAndACoherentCell) {
  SPTELAB_REQUIRE_KVM();
  // The 2008 remap (2.6.27): range-after+seq-count is coherent on 6.18's.
  auto result = run_sptelab({"crosscheck", "--era", "2.6.27", "--scheme",
                             "range-after+seq-count,start-end+seq-count", "--op", "remap",
                             "--seeds", "3", "--coherent-ops", "20000", "--json"});
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_EQ(result.out.front(), '{');
  EXPECT_THAT(result.out, HasSubstr("\"scheme\": \"range-after+seq-count\", \"op\": \"remap\", "
                                    "\"explorer\": {\"racy\": true"));
  EXPECT_THAT(result.out, HasSubstr("\"operations\": 20000, \"violations\": 0, \"agrees\": true"));
  EXPECT_THAT(result.err, HasSubstr("crosscheck [2/2]"));
}

TEST(CrosscheckCli, BadNumbersAreExitTwo) {
  for (const char* bad : {"0", "101", "x"}) {
    auto result = run_sptelab({"crosscheck", "--backend", "soft", "--seeds", bad});
    EXPECT_EQ(result.status, 2) << bad;
    EXPECT_THAT(result.err, HasSubstr("--seeds wants a whole number from 1 to 100"));
  }
  auto op = run_sptelab({"crosscheck", "--backend", "soft", "--op", "nosuch"});
  EXPECT_EQ(op.status, 2);
  EXPECT_THAT(op.err, HasSubstr("no op matches 'nosuch'"));
}

}  // namespace
}  // namespace sptelab::tools
