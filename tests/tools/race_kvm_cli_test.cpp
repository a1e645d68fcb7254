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

}  // namespace
}  // namespace sptelab::tools
