// `sptelab run` end to end on real KVM, as a user runs it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <dirent.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iterator>

#include "tests/hypervisor/kvm_env.h"
#include "tests/hypervisor/test_guests.h"
#include "tests/tools/cli.h"

namespace sptelab::tools {
namespace {

using ::testing::HasSubstr;
using testing::run_sptelab;

TEST(RunTest, HelloPrintsItsGreetingAndExitsZero) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", "hello"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "Hello from the sptelab toy guest: vCPU 0 of 1, 64 MiB of RAM.\n");
  // Only the statistics line, and it never goes to stdout.
  EXPECT_THAT(result.err, ::testing::MatchesRegex("sptelab: direct: [0-9]+ VM exits [^\n]*\n"));
}

TEST(RunTest, EmulatedSchemePrintsItsStatisticsOnStderr) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", "memtouch", "--scheme", "start-end+seq-count"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.err, ::testing::ContainsRegex(
                              "sptelab: start-end\\+seq-count: [0-9]+ VM exits .*; [1-9][0-9]* "
                              "spte faults \\([0-9]+ retries\\), [1-9][0-9]* installed"));
  EXPECT_THAT(result.out, ::testing::Not(HasSubstr("spte faults")));
}

TEST(RunTest, ExternalGuestsExitStatusIsSptelabs) {
  SPTELAB_REQUIRE_KVM();
  const std::string& image = hypervisor::testing::external_guest();
  auto one = run_sptelab({"run", image});
  EXPECT_EQ(one.status, 41) << one.err;
  EXPECT_EQ(one.out, "external guest: vCPU 0 of 1\n");
  auto four = run_sptelab({"run", image, "--vcpus", "4", "--mem", "32M"});
  EXPECT_EQ(four.status, 44) << four.err;
  EXPECT_THAT(four.out, HasSubstr("external guest: vCPU 3 of 4\n"));
}

// run --op: a remapper during a plain run, so its trace has invalidations
// (the README's tracing example had none).
TEST(RunTest, OpRunsARemapperWhoseInvalidationsAreTraced) {
  SPTELAB_REQUIRE_KVM();
  const std::string path = hypervisor::testing::make_temp_dir() + "/op.bin";
  auto result = run_sptelab({"run", "memtouch", "--scheme", "start-end+seq-count", "--op",
                             "migrate", "--trace", path, "--trace-events", "2000000"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr(": 0 error(s)"));  // the guest saw its data throughout
  EXPECT_THAT(result.err, ::testing::ContainsRegex("remapper: [1-9][0-9]* migrate ops"));
  auto summary = run_sptelab({"trace", path, "--summary"});
  EXPECT_EQ(summary.status, 0) << summary.err;
  EXPECT_THAT(summary.out, HasSubstr("mmu_notifier_invalidate_range_start"));
  EXPECT_THAT(summary.out, ::testing::ContainsRegex("invalidation +[1-9][0-9]* +[0-9]"));
  EXPECT_THAT(summary.out, ::testing::ContainsRegex("vCPU exit +[1-9][0-9]* +[0-9]"));
  auto direct = run_sptelab({"run", "memtouch", "--op", "migrate"});
  EXPECT_EQ(direct.status, 2);
  EXPECT_THAT(direct.err, HasSubstr("--op needs an emulated --scheme"));
  auto ring = run_sptelab({"run", "hello", "--trace-events", "4096"});
  EXPECT_EQ(ring.status, 2);
  EXPECT_THAT(ring.err, HasSubstr("give --trace too"));
}

TEST(RunTest, ExitStatusSptelabKeepsTheGuestsValueOutOfTheStatus) {
  SPTELAB_REQUIRE_KVM();
  const std::string& image = hypervisor::testing::external_guest();
  auto result = run_sptelab({"run", image, "--exit-status", "sptelab"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.err, HasSubstr("guest exited with value 41"));
  auto crash = run_sptelab(
      {"run", hypervisor::testing::test_guest("triple_fault"), "--exit-status", "sptelab"});
  EXPECT_EQ(crash.status, 2) << crash.err;  // sptelab's own statuses stay
  auto bad = run_sptelab({"run", image, "--exit-status", "mine"});
  EXPECT_EQ(bad.status, 2);
  EXPECT_THAT(bad.err, HasSubstr("--exit-status 'mine': choose guest or sptelab"));
}

TEST(RunTest, TripleFaultPrintsADumpAndExitsTwo) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", hypervisor::testing::test_guest("triple_fault")});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("sptelab: vcpu0: the guest triple-faulted"));
  EXPECT_THAT(result.err, HasSubstr("code around rip"));
  EXPECT_THAT(result.err, HasSubstr("page walk for"));
}

TEST(RunTest, TimeoutIsExitFour) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", hypervisor::testing::test_guest("spin"), "--timeout", "0.3"});
  EXPECT_EQ(result.status, 4);
  EXPECT_THAT(result.err, HasSubstr("did not finish within 0.3 s"));
}

// A run longer than ~2 s shows its progress on stderr, piped too (the
// test's pipe), every 5 s and at its end.
TEST(RunTest, ALongRunShowsItsProgressOnStderr) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", hypervisor::testing::test_guest("spin"), "--timeout", "2.5"});
  EXPECT_EQ(result.status, 4) << result.err;
  EXPECT_THAT(result.err, ::testing::ContainsRegex("run \\[1/1\\] [^\n]*spin[^\n]*: timeout, "
                                                   "[0-9]+ s elapsed\n"));
  EXPECT_TRUE(result.out.empty()) << result.out;
}

// The vCPUs were kicked one at a time, each waited for while the others
// spun on: 31 spinning vCPUs stopped about two seconds past --timeout 2 on
// a two-core machine. Now about 0.2 s (plus the VM's start, 0.4 s).
TEST(RunTest, TimeoutHoldsWithManyVcpus) {
  SPTELAB_REQUIRE_KVM();
  auto start = std::chrono::steady_clock::now();
  auto result = run_sptelab(
      {"run", hypervisor::testing::test_guest("spin"), "--vcpus", "31", "--timeout", "2"});
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(result.status, 4) << result.err;
  EXPECT_THAT(result.err, HasSubstr("did not finish within 2 s"));
  EXPECT_LT(seconds, 3.5);  // 3.8 s before, unloaded
}

TEST(RunTest, CounterWithArgumentsIsExact) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", "counter", "--vcpus", "2", "--arg", "3000"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(result.out, "counter: locked 6000 of 6000, atomic 6000 of 6000: exact\n");
}

TEST(RunTest, TraceFileHasTheVcpuExits) {
  SPTELAB_REQUIRE_KVM();
  std::string path = hypervisor::testing::make_temp_dir() + "/trace.bin";
  auto result = run_sptelab({"run", "hello", "--trace", path});
  EXPECT_EQ(result.status, 0) << result.err;
  auto report = run_sptelab({"trace", path});
  EXPECT_EQ(report.status, 0) << report.err;
  EXPECT_THAT(report.out, HasSubstr("vcpu0"));
  EXPECT_THAT(report.out, HasSubstr("kvm_exit: vcpu=0 reason=IO rip=0x40"));  // port I/O
}

TEST(RunTest, ConsoleOnAFullDeviceIsAnError) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", "hello"}, {}, {.stdout_path = "/dev/full"});
  EXPECT_EQ(result.status, 3) << result.err;
  EXPECT_THAT(result.err, HasSubstr("console output could not be written to stdout"));
}

TEST(RunTest, IntEightyIsTheSameErrorWithEightVcpus) {
  // With 8 vCPUs this was reported as a timeout (exit 4, "raise --timeout").
  SPTELAB_REQUIRE_KVM();
  for (const char* vcpus : {"1", "8"}) {
    auto result = run_sptelab(
        {"run", hypervisor::testing::test_guest("int80"), "--vcpus", vcpus, "--timeout", "30"});
    EXPECT_EQ(result.status, 2) << vcpus << ": " << result.err;
    EXPECT_THAT(result.err, HasSubstr("cannot emulate the instruction at rip="));
    EXPECT_THAT(result.err, ::testing::Not(HasSubstr("raise --timeout")));
  }
}

TEST(RunTest, UnmappedLinearAddressIsNotCalledAGpa) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", hypervisor::testing::test_guest("wild")});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("linear address 0xffffffffffffff20"));
  EXPECT_THAT(result.err, ::testing::Not(HasSubstr("gpa=0xffffffffffffff20")));
}

TEST(RunTest, CrashDumpsHeadlineIsPrintedOnce) {
  SPTELAB_REQUIRE_KVM();
  auto result = run_sptelab({"run", hypervisor::testing::test_guest("triple_fault")});
  EXPECT_EQ(result.status, 2);
  const std::string headline = "vcpu0: the guest triple-faulted";
  size_t first = result.err.find(headline);
  ASSERT_NE(first, std::string::npos) << result.err;
  EXPECT_EQ(result.err.find(headline, first + 1), std::string::npos) << result.err;
}

// SIGINT/SIGTERM killed the run silently; --kernel then leaked its tracefs
// instance (and the tracefs mount it made under /tmp).
TEST(RunTest, SignalsStopTheGuestAndTheTraceIsWritten) {
  SPTELAB_REQUIRE_KVM();
  std::string path = hypervisor::testing::make_temp_dir() + "/spin.bin";
  auto result = run_sptelab({"run", hypervisor::testing::test_guest("spin"), "--trace", path}, {},
                            {.signal = SIGINT, .signal_after_ms = 700});
  EXPECT_EQ(result.status, 130) << result.err;
  EXPECT_THAT(result.err, HasSubstr("interrupted by SIGINT"));
  auto report = run_sptelab({"trace", path, "--summary"});
  EXPECT_EQ(report.status, 0) << report.err;
}

// The tracefs mounts sptelab made under /tmp, and the instances of process
// `pid` ("sptelab-PID-N") in every tracefs.
std::vector<std::string> tracefs_leftovers(int pid) {
  std::vector<std::string> found;
  std::ifstream mounts("/proc/mounts");
  std::string device, dir, type, rest;
  const std::string prefix = "sptelab-" + std::to_string(pid) + "-";
  while (mounts >> device >> dir >> type) {
    std::getline(mounts, rest);
    if (type != "tracefs") continue;
    if (dir.find("/sptelab-tracefs-") != std::string::npos) found.push_back(dir);
    std::string instances = dir + "/instances";
    if (DIR* d = opendir(instances.c_str())) {
      while (dirent* entry = readdir(d)) {
        if (std::string(entry->d_name).rfind(prefix, 0) == 0) {
          found.push_back(instances + "/" + entry->d_name);
        }
      }
      closedir(d);
    }
  }
  return found;
}

TEST(RunTest, SigtermWithKernelLeavesNoTracefsInstance) {
  SPTELAB_REQUIRE_KVM();
  std::vector<std::string> before = tracefs_leftovers(0);  // another test's mounts
  std::string path = hypervisor::testing::make_temp_dir() + "/spin.bin";
  auto result =
      run_sptelab({"run", hypervisor::testing::test_guest("spin"), "--trace", path, "--kernel"}, {},
                  {.signal = SIGTERM, .signal_after_ms = 1500});
  EXPECT_EQ(result.status, 143) << result.err;
  std::vector<std::string> after = tracefs_leftovers(result.pid);
  std::erase_if(after, [&](const std::string& p) {
    return std::find(before.begin(), before.end(), p) != before.end();
  });
  EXPECT_EQ(after, std::vector<std::string>{});
  EXPECT_EQ(run_sptelab({"trace", path, "--summary"}).status, 0);
}

}  // namespace
}  // namespace sptelab::tools
