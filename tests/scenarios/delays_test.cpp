// Delay injection: --delay's parser is strict (std::stoul made "abc" an
// internal error, wrapped "-1" to 4294967295 ns and "4294967296" to 0, and
// took "5x", " 5" and "5@1e3"), and no delay outlasts the run's deadline.
#include "scenarios/delays.h"

#include <chrono>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "base/inject.h"
#include "scenarios/gate.h"

namespace sptelab::scenarios {
namespace {

using ::testing::HasSubstr;

class MalformedDelayTest : public ::testing::TestWithParam<std::string> {};

TEST_P(MalformedDelayTest, IsBadInputNamingTheForm) {
  try {
    parse_delay(GetParam());
    FAIL() << "accepted '" << GetParam() << "'";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    EXPECT_THAT(error.what(), HasSubstr("the form is POINT=NS[@PER_MILLE]"));
    EXPECT_THAT(error.what(), HasSubstr("'" + GetParam() + "'"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    FromTheIssue, MalformedDelayTest,
    ::testing::Values("host_before_ptl=abc", "host_before_ptl=", "host_before_ptl=5@",
                      "host_before_ptl=5@abc", "host_before_ptl=99999999999999999999",
                      "host_before_ptl=-1", "host_before_ptl=4294967296", "host_before_ptl=5x",
                      "host_before_ptl= 5", "host_before_ptl=1000@1000@3", "host_before_ptl=5@1e3",
                      "host_before_ptl=5@-1"));

INSTANTIATE_TEST_SUITE_P(Others, MalformedDelayTest,
                         ::testing::Values("host_before_ptl=5@1001", "host_before_ptl=1.5",
                                           "host_before_ptl=+5", "host_before_ptl=0x10",
                                           "host_before_ptl=5 ", "host_before_ptl", "=5",
                                           "no_such_point=5", ""));

TEST(ParseDelay, WellFormedDelays) {
  DelayPoint host = parse_delay("host_before_ptl=1000@500");
  EXPECT_EQ(host.point, inject::Point::kHostBeforePtl);
  EXPECT_EQ(host.role, Role::kRemapper);
  EXPECT_EQ(host.delay_ns, 1000u);
  EXPECT_EQ(host.per_mille, 500u);
  EXPECT_EQ(host.until, DelayUntil::kTime);

  DelayPoint vcpu = parse_delay("spte_fault_after_gup=4294967295");
  EXPECT_EQ(vcpu.point, inject::Point::kSpteFaultAfterGup);
  EXPECT_EQ(vcpu.role, Role::kVcpu);
  EXPECT_EQ(vcpu.delay_ns, 4294967295u);
  EXPECT_EQ(vcpu.per_mille, 1000u);  // always, when not given

  EXPECT_EQ(parse_delay("host_before_ptl=0@0").per_mille, 0u);
}

// A 4 s delay with the run's deadline 100 ms away ran its 4 s: --duration 1
// lasted 4 to 8 s.
TEST(DelayInjector, NoDelayOutlastsTheDeadline) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(100);
  DelayInjector injector({parse_delay("host_before_ptl=4000000000")}, 1, {}, deadline);
  ThreadRole role(Role::kRemapper);
  const Clock::time_point start = Clock::now();
  inject::at(inject::Point::kHostBeforePtl);
  EXPECT_EQ(injector.delays_injected(), 1u);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
}

}  // namespace
}  // namespace sptelab::scenarios
