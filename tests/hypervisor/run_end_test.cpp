// The exit statuses a run's end maps to (hypervisor/vm.h): the CLI contract's
// numbers come from the end, not from each crash site.
#include <gtest/gtest.h>

#include "base/error.h"
#include "hypervisor/vm.h"

namespace sptelab::hypervisor {
namespace {

TEST(RunEnd, EachEndThatDecidesItsStatusMapsToTheCliContract) {
  EXPECT_EQ(exit_status_of(RunEnd::kAllHalted), ExitStatus::kOk);
  EXPECT_EQ(exit_status_of(RunEnd::kGuestError), ExitStatus::kBadInput);
  EXPECT_EQ(exit_status_of(RunEnd::kNoMemory), ExitStatus::kEnvironment);
  EXPECT_EQ(exit_status_of(RunEnd::kTimeout), ExitStatus::kInternal);
  EXPECT_EQ(exit_status_of(RunEnd::kInternal), ExitStatus::kInternal);
}

TEST(RunEnd, AGuestExitOrAStopHasItsStatusGiven) {
  for (RunEnd end : {RunEnd::kGuestExit, RunEnd::kStopped}) {
    try {
      exit_status_of(end);
      ADD_FAILURE() << run_end_name(end) << " got a status of its own";
    } catch (const Error& error) {
      EXPECT_EQ(error.status(), ExitStatus::kInternal);
      EXPECT_NE(std::string(error.what()).find(run_end_name(end)), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace sptelab::hypervisor
