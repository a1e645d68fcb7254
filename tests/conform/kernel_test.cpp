// The default script live on this machine's kernel (KVM and tracefs), against
// the emulator: every op must agree, and nothing may be left in tracefs.

#include <dirent.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>

#include "conform/emulator.h"
#include "conform/kernel.h"
#include "conform/report.h"
#include "tests/hypervisor/kvm_env.h"
#include "trace/kernel.h"

namespace sptelab::conform {
namespace {

// Empty if a tracefs capture of kvm:kvm_unmap_hva_range works here.
std::string capture_problem() {
  trace::KernelCaptureOptions options;
  options.events = {"kvm:kvm_unmap_hva_range"};
  trace::KernelCapture capture(options);
  std::string problem = capture.active() ? "" : capture.problem();
  capture.stop();
  return problem;
}

// This process's tracefs instances ("sptelab-PID-N") under /sys/kernel/tracing.
size_t own_instances() {
  const std::string prefix = "sptelab-" + std::to_string(getpid()) + "-";
  size_t count = 0;
  if (DIR* dir = opendir("/sys/kernel/tracing/instances")) {
    while (dirent* entry = readdir(dir)) count += std::string(entry->d_name).rfind(prefix, 0) == 0;
    closedir(dir);
  }
  return count;
}

TEST(ConformKernel, TheDefaultScriptAgreesWithTheRunningKernel) {
  SPTELAB_REQUIRE_KVM();
  if (const std::string problem = capture_problem(); !problem.empty()) {
    GTEST_SKIP() << "no tracefs capture here: " << problem;
  }
  const Script script = parse_script(default_script());
  KernelSide kernel;
  EmulatorSide emulator(mm::KernelEra::k6_18);
  const Report report = compare(script, kernel, emulator);
  ASSERT_EQ(report.ops.size(), script.ops.size());
  for (const OpResult& result : report.ops) {
    EXPECT_TRUE(result.agrees()) << "line " << result.op.line << " " << result.op.text
                                 << ": kernel " << format_ranges(result.kernel) << ", emulator "
                                 << format_ranges(result.emulator);
  }
  EXPECT_EQ(own_instances(), 0u);
}

}  // namespace
}  // namespace sptelab::conform
