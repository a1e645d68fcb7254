// `sptelab conform` live, stopped by SIGINT and SIGTERM: exit 130/143, the
// ops finished before the signal printed, and nothing left in tracefs.

#include <dirent.h>
#include <signal.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <tuple>

#include "tests/hypervisor/kvm_env.h"
#include "tests/hypervisor/test_guests.h"
#include "tests/tools/cli.h"

namespace sptelab::conform {
namespace {

using ::testing::HasSubstr;
using tools::testing::CliControl;
using tools::testing::run_sptelab;

// A script of a few seconds: 3000 ops over the whole anonymous slot.
std::string long_script() {
  const std::string path = hypervisor::testing::make_temp_dir() + "/long.ops";
  std::ofstream out(path);
  for (int i = 0; i < 1500; ++i) out << "touch anon 0 1024\ndontneed anon 0 1024\n";
  return path;
}

bool instance_left_by(int pid) {
  const std::string prefix = "sptelab-" + std::to_string(pid) + "-";
  bool found = false;
  if (DIR* dir = opendir("/sys/kernel/tracing/instances")) {
    while (dirent* entry = readdir(dir)) found |= std::string(entry->d_name).rfind(prefix, 0) == 0;
    closedir(dir);
  }
  return found;
}

TEST(ConformCliKvm, AStopSignalPrintsTheFinishedOpsAndLeavesNothingInTracefs) {
  SPTELAB_REQUIRE_KVM();
  const std::string script = long_script();
  for (const auto& [stop, status, name] :
       {std::tuple{SIGINT, 130, "SIGINT"}, std::tuple{SIGTERM, 143, "SIGTERM"}}) {
    CliControl control;
    control.signal = stop;
    control.signal_after_ms = 1000;  // the script takes about 4 s
    auto result = run_sptelab({"conform", "--ops", script}, {}, control);
    if (result.status == 3) GTEST_SKIP() << "no kernel capture here: " << result.err;
    EXPECT_EQ(result.status, status) << result.err;
    EXPECT_THAT(result.out, HasSubstr(std::string("interrupted by ") + name));
    EXPECT_THAT(result.out, HasSubstr("touch anon 0 1024"));  // finished ops are printed
    EXPECT_FALSE(instance_left_by(result.pid)) << name;
  }
}

}  // namespace
}  // namespace sptelab::conform
