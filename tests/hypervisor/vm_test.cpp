// Whole runs of guests on real KVM: the ABI, the exit statuses, crashes,
// timeouts and stops.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include <fmt/core.h>

#include "base/error.h"
#include "guest/sptelab_abi.h"
#include "tests/hypervisor/elf_builder.h"
#include "tests/hypervisor/kvm_env.h"
#include "tests/hypervisor/test_guests.h"
#include "tests/hypervisor/vm_rig.h"
#include "trace/trace.h"

namespace sptelab::hypervisor {
namespace {

using testing::Backing;
using ::testing::HasSubstr;
using testing::VmRig;

constexpr uint64_t kVmRam = 16ull << 20;

VmConfig config(uint32_t vcpus, double timeout = 60) {
  VmConfig c;
  c.vcpus = vcpus;
  c.timeout_seconds = timeout;
  return c;
}

TEST(VmTest, HelloPrintsItsGreetingAndExitsZero) {
  SPTELAB_REQUIRE_KVM();
  VmRig rig(kVmRam, config(1), Backing::kDirect);
  RunResult result = rig.run(testing::builtin_guest("hello"));
  EXPECT_EQ(result.exit_status, 0);
  EXPECT_EQ(result.end, RunEnd::kGuestExit);
  EXPECT_EQ(result.guest_exit_value, 0u);
  EXPECT_EQ(rig.console(), "Hello from the sptelab toy guest: vCPU 0 of 1, 16 MiB of RAM.\n");
  EXPECT_TRUE(result.dump.empty());
  EXPECT_GT(result.stats.io_exits, 0u);
}

TEST(VmTest, ExternalGuestWithOneVcpuExitsWithItsValue) {
  SPTELAB_REQUIRE_KVM();
  VmRig rig(kVmRam, config(1));
  RunResult result = rig.run(testing::external_guest());
  EXPECT_EQ(result.end, RunEnd::kGuestExit);
  EXPECT_EQ(result.exit_status, 41);
  EXPECT_EQ(rig.console(), "external guest: vCPU 0 of 1\n");
}

TEST(VmTest, ExternalGuestWithFourVcpusExitsWithItsValue) {
  SPTELAB_REQUIRE_KVM();
  VmRig rig(kVmRam, config(4));
  RunResult result = rig.run(testing::external_guest());
  EXPECT_EQ(result.exit_status, 44);
  // Lines of different vCPUs may come in any order but never mix.
  std::string console = rig.console();
  for (int vcpu = 0; vcpu < 4; ++vcpu) {
    EXPECT_THAT(console, HasSubstr(fmt::format("external guest: vCPU {} of 4\n", vcpu)));
  }
  EXPECT_EQ(std::count(console.begin(), console.end(), '\n'), 4);
}

TEST(VmTest, AllVcpusHaltingEndsWithZero) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = config(3);
  c.guest_args = {5};  // probe: every vCPU halts
  VmRig rig(kVmRam, c);
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.end, RunEnd::kAllHalted);
  EXPECT_EQ(result.exit_status, 0);
  EXPECT_EQ(result.stats.hlt_exits, 3u);
}

TEST(VmTest, TripleFaultEndsWithADumpNotAHang) {
  SPTELAB_REQUIRE_KVM();
  VmRig rig(kVmRam, config(1));
  RunResult result = rig.run(testing::test_guest("triple_fault"));
  EXPECT_EQ(result.end, RunEnd::kGuestError);
  EXPECT_EQ(result.exit_status, 2);
  EXPECT_THAT(result.message, HasSubstr("triple-faulted"));
  EXPECT_THAT(result.dump, HasSubstr("KVM_EXIT_SHUTDOWN"));
  EXPECT_THAT(result.dump, HasSubstr("rip="));
  EXPECT_THAT(result.dump, HasSubstr("code around rip"));
  EXPECT_THAT(result.dump, HasSubstr("ud2"));
  EXPECT_THAT(result.dump, HasSubstr("page walk for"));
  EXPECT_THAT(result.dump, HasSubstr("idt base=0x0 limit=0x0"));
  EXPECT_EQ(rig.console(), "triple_fault: loading an empty IDT\n");
}

TEST(VmTest, GuestExceptionIsReportedWithTheFaultingContext) {
  SPTELAB_REQUIRE_KVM();
  VmRig rig(kVmRam, config(1));
  RunResult result = rig.run(testing::test_guest("ud2"));
  EXPECT_EQ(result.exit_status, 2);
  EXPECT_THAT(result.message, HasSubstr("#UD invalid opcode"));
  // The dump shows the guest's registers at the ud2, not the stub's.
  EXPECT_THAT(result.dump, HasSubstr("rbx=0x0000000000001234"));
  EXPECT_THAT(result.dump, HasSubstr("=> "));
  EXPECT_THAT(result.dump, HasSubstr("ud2"));
}

TEST(VmTest, ReadingBeyondRamEndsWithTheAddress) {
  SPTELAB_REQUIRE_KVM();
  VmRig rig(kVmRam, config(1));
  RunResult result = rig.run(testing::test_guest("beyond_ram"));
  EXPECT_EQ(result.exit_status, 2);
  EXPECT_THAT(
      result.message,
      HasSubstr(fmt::format("guest touched memory it has not got: gpa={:#x}", kVmRam + 0x1008)));
}

TEST(VmTest, WritingBeyondRamEndsWithTheAddress) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = config(1);
  c.guest_args = {1};
  VmRig rig(kVmRam, c);
  RunResult result = rig.run(testing::test_guest("beyond_ram"));
  EXPECT_EQ(result.exit_status, 2);
  EXPECT_THAT(result.message, HasSubstr(fmt::format("gpa={:#x}", kVmRam + 0x1008)));
  EXPECT_THAT(result.dump, HasSubstr("(write)"));
}

TEST(VmTest, MemslotHoleEndsTheRunWithTheAddress) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = config(1);
  c.guest_args = {0, 0, 1};  // memtouch: all pages, in order, one pass
  VmRig rig(kVmRam, c);
  rig.fake().set_memslot_limit(0x800);  // RAM above 8 MiB is a hole
  RunResult result = rig.run(testing::builtin_guest("memtouch"));
  EXPECT_EQ(result.exit_status, 2);
  EXPECT_THAT(result.message, HasSubstr("guest touched memory it has not got: gpa=0x800"));
}

TEST(VmTest, TimeoutKicksSpinningVcpus) {
  SPTELAB_REQUIRE_KVM();
  VmRig rig(kVmRam, config(2, 0.5));
  RunResult result = rig.run(testing::test_guest("spin"));
  EXPECT_EQ(result.end, RunEnd::kTimeout);
  EXPECT_EQ(result.exit_status, 4);
  EXPECT_THAT(result.message, HasSubstr("did not finish within 0.5 s"));
  EXPECT_THAT(result.message, HasSubstr("vcpu1 at rip="));
}

TEST(VmTest, RequestStopFromAnotherThread) {
  SPTELAB_REQUIRE_KVM();
  VmRig rig(kVmRam, config(2, 0));
  std::atomic<bool> started = false;
  rig.vm().load(read_elf_file(testing::test_guest("spin"), kVmRam));
  std::thread stopper([&] {
    while (!started.load()) std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    rig.vm().request_stop(7, "stopped by the test");
  });
  started = true;
  RunResult result = rig.vm().run();
  stopper.join();
  EXPECT_EQ(result.end, RunEnd::kStopped);
  EXPECT_EQ(result.exit_status, 7);
  EXPECT_EQ(result.message, "stopped by the test");
}

TEST(VmTest, ArgumentsAndReportsReachBothSides) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = config(2);
  c.guest_args = {100, 1, 2, 7};  // memtouch: 100 pages, random, 2 passes, seed 7
  std::atomic<int> observed = 0;
  c.on_report = [&](const GuestReport&) { observed.fetch_add(1); };
  VmRig rig(kVmRam, c);
  RunResult result = rig.run(testing::builtin_guest("memtouch"));
  EXPECT_EQ(result.exit_status, 0) << result.message << rig.console();
  EXPECT_THAT(rig.console(), HasSubstr("memtouch: 100 pages in random order, 2 pass(es)"));
  uint32_t touched = 0;
  for (const GuestReport& report : result.reports) {
    if (report.key == SPTELAB_REPORT_MEMTOUCH_PAGES) touched += report.value;
    if (report.key == SPTELAB_REPORT_MEMTOUCH_ERRORS) {
      EXPECT_EQ(report.value, 0u);
    }
  }
  EXPECT_EQ(touched, 200u);  // 100 pages x 2 passes, split between the vCPUs
  EXPECT_EQ(observed.load(), 4);
}

TEST(VmTest, ScenarioPortWithoutAScenarioEndsTheRun) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = config(1);
  c.guest_args = {1};  // probe: asks the host on port 0x100
  VmRig rig(kVmRam, c);
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.exit_status, 2);
  EXPECT_THAT(result.message, HasSubstr("I/O port it has not got: out to port 0x100"));
}

TEST(VmTest, TraceRecordsEveryExitOnTheVcpusTrack) {
  SPTELAB_REQUIRE_KVM();
  trace::Session session;
  VmRig rig(kVmRam, config(1), Backing::kDirect);
  RunResult result = rig.run(testing::builtin_guest("hello"));
  trace::Snapshot snapshot = trace::snapshot();
  uint64_t exits = 0;
  for (const trace::Event& event : snapshot.events) {
    if (event.kind != trace::Kind::kVcpuExit) continue;
    ++exits;
    EXPECT_EQ(event.args[0], 0u);         // vcpu
    EXPECT_GE(event.args[2], 0x400000u);  // rip inside the image
  }
  EXPECT_EQ(exits, result.stats.exits);
  bool named = std::any_of(snapshot.threads.begin(), snapshot.threads.end(),
                           [](const trace::ThreadInfo& t) { return t.name == "vcpu0"; });
  EXPECT_TRUE(named);
}

TEST(VmTest, LoadRejectsAnImageWithNoRoomBelowIt) {
  SPTELAB_REQUIRE_KVM();
  testing::ElfSpec spec;
  spec.segments = {{0x10000, 16, 16, PF_R | PF_X}};
  spec.entry = 0x10000;
  ElfImage image = parse_elf("low.elf", testing::build_elf(spec), kVmRam);
  VmRig rig(kVmRam, config(2));
  try {
    rig.vm().load(image);
    FAIL() << "loaded an image over the page tables";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    EXPECT_THAT(error.what(), HasSubstr("but the image starts at 0x10000"));
  }
  // The VM is destroyed without ever running: nothing to kick, no hang.
}

TEST(VmTest, MissingKvmDeviceIsAnEnvironmentError) {
  // No SPTELAB_REQUIRE_KVM: this must work without KVM too.
  mm::PhysMem phys(16);
  DirectMemory memory(phys, 16);
  GuestWindow window(phys, 16);
  VmConfig c;
  c.kvm_device = "/nonexistent/kvm";
  try {
    Vm vm(c, memory, window);
    FAIL() << "created a VM without a device";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kEnvironment);
    EXPECT_THAT(error.what(), HasSubstr("/nonexistent/kvm"));
  }
}

}  // namespace
}  // namespace sptelab::hypervisor
