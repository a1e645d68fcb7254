// One enum for the host's operations: a race's --op is an mm::MmOp, spelled
// as the CLI spells it (HostOp used to be a second enum that listed the same
// operations in another order and under other names).
#include "host/host_ops.h"

#include <gtest/gtest.h>

#include <string>
#include <type_traits>
#include <vector>

#include "base/error.h"
#include "mm/types.h"

namespace sptelab::host {
namespace {

static_assert(std::is_same_v<HostOp, mm::MmOp>);

TEST(HostOps, AreMmOpsUnderTheirCliNames) {
  std::vector<std::string> names;
  for (HostOp op : all_host_ops()) names.push_back(host_op_name(op));
  EXPECT_EQ(names, (std::vector<std::string>{"migrate", "remap", "cow", "dontneed", "mprotect",
                                             "mkclean", "ksm", "punch-hole"}));
  // The cycles are named by the step a secondary MMU must see.
  EXPECT_EQ(parse_host_op("cow"), mm::MmOp::kBreakCow);
  EXPECT_EQ(parse_host_op("ksm"), mm::MmOp::kKsmMerge);
  EXPECT_STREQ(mm::mm_op_name(HostOp::kCow), "break_cow");
  EXPECT_EQ(parse_host_op("break_cow"), std::nullopt);  // the CLI keeps its names
  EXPECT_EQ(parse_host_op("punch-hole"), mm::MmOp::kPunchHole);
  // A hole needs a file to punch, and discards the content either way.
  EXPECT_EQ(backing_for(HostOp::kPunchHole, true), Backing::kSharedFile);
  EXPECT_EQ(backing_for(HostOp::kPunchHole, false), Backing::kSharedFile);
}

TEST(HostOps, AnMmOpNoRaceAppliesIsAnInternalError) {
  EXPECT_THROW(describe(mm::MmOp::kFork), Error);
  EXPECT_THROW(backing_for(mm::MmOp::kExit), Error);
}

}  // namespace
}  // namespace sptelab::host
