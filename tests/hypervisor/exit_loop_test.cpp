// The exit loop's rules (hypervisor/README.md) on real KVM, each forced with
// the FakeMemory double: RAM faults completed from the frame, emulation
// failures and spurious page faults after zaps, stores into zapped stacks.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <thread>

#include "tests/hypervisor/kvm_env.h"
#include "tests/hypervisor/test_guests.h"
#include "tests/hypervisor/vm_rig.h"

namespace sptelab::hypervisor {
namespace {

using ::testing::HasSubstr;
using testing::VmRig;

constexpr uint64_t kExitLoopRam = 16ull << 20;

VmConfig probe(uint32_t mode, uint32_t arg = 0) {
  VmConfig c;
  c.vcpus = 1;
  c.timeout_seconds = 120;
  c.guest_args = {mode, arg};
  return c;
}

TEST(ExitLoopTest, FirstTouchesAreRamFaultsCompletedOnTheFrame) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c;
  c.vcpus = 2;
  c.guest_args = {300, 0, 2};  // memtouch: 300 pages, in order, 2 passes
  VmRig rig(kExitLoopRam, c);
  RunResult result = rig.run(testing::builtin_guest("memtouch"));
  EXPECT_EQ(result.exit_status, 0) << result.message;
  // Untouched RAM is absent in the double: the first access to each page is
  // an MMIO exit that the loop resolves as an spte fault.
  EXPECT_GE(result.stats.mmio_exits, 300u);
  EXPECT_GE(result.stats.ram_faults, 300u);
  EXPECT_GE(result.stats.mmio_writes, 1u);
}

TEST(ExitLoopTest, ZapsDuringTheRunNeverLoseData) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c;
  c.vcpus = 2;
  c.guest_args = {400, 1, 3, 11};  // memtouch: 400 pages, random, 3 passes
  VmRig rig(kExitLoopRam, c);
  std::atomic<bool> done = false;
  std::atomic<uint64_t> zaps = 0;
  // Zap pages the guest is touching (above the image) while it runs: each
  // comes back through a fault, with the frame's content.
  std::thread zapper([&] {
    std::mt19937_64 random(5);
    while (!done.load()) {
      rig.fake().zap(0x406 + random() % 400);
      zaps.fetch_add(1);
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  RunResult result = rig.run(testing::builtin_guest("memtouch"));
  done = true;
  zapper.join();
  EXPECT_EQ(result.exit_status, 0) << result.message << rig.console();
  EXPECT_THAT(rig.console(), HasSubstr(": 0 error(s)"));
  EXPECT_GT(zaps.load(), 0u);
}

TEST(ExitLoopTest, ZappedPageTablePageGivesASpuriousPageFaultThatIsResumed) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = probe(1);
  VmRig* rig_pointer = nullptr;
  c.scenario_ports = [&](PortAccess& access) {
    if (access.port != 0x100) return PortResult::kUnhandled;
    VmRig& rig = *rig_pointer;
    uint64_t gfn = access.value >> 12;
    uint64_t table_gpa = rig.vm().layout().pts + (gfn / 512) * 4096;
    rig.fake().zap(table_gpa >> 12);
    rig.fake().zap(gfn);
    return PortResult::kHandled;
  };
  VmRig rig(kExitLoopRam, c);
  rig_pointer = &rig;
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.exit_status, 0) << result.message << result.dump;
  EXPECT_GE(result.stats.spurious_page_faults, 1u);
}

TEST(ExitLoopTest, SystemMemslotKeepsPageTablesOutOfTheZapsReach) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = probe(1);
  c.system_memslot = true;
  VmRig* rig_pointer = nullptr;
  c.scenario_ports = [&](PortAccess& access) {
    if (access.port != 0x100) return PortResult::kUnhandled;
    VmRig& rig = *rig_pointer;
    // Zap every page of RAM below the image: with the system area in its
    // own memslot, none of it is what the guest's MMU walks or stacks on.
    for (uint64_t gfn = 0; gfn < rig.vm().system_bytes() / 4096; ++gfn) rig.fake().zap(gfn);
    rig.fake().zap(access.value >> 12);
    return PortResult::kHandled;
  };
  VmRig rig(kExitLoopRam, c);
  rig_pointer = &rig;
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.exit_status, 0) << result.message << result.dump;
  EXPECT_GT(rig.vm().system_bytes(), 0u);
  EXPECT_EQ(result.stats.spurious_page_faults, 0u);
}

TEST(ExitLoopTest, LockedRmwOnAPageZappedBeforeReentryIsRetried) {
  SPTELAB_REQUIRE_KVM();
  constexpr uint32_t kIncrements = 50;
  VmConfig c = probe(2, kIncrements);
  std::atomic<uint64_t> locked_gfn = ~0ull;
  VmRig* rig_pointer = nullptr;
  // The guest names its counter page (key 2): zap it, and zap it again
  // right after every host access to it. The read exit of a lock xadd then
  // completes, KVM finds the page gone when it emulates the write half and
  // reports an emulation failure, and the loop faults the page back in.
  c.on_report = [&](const GuestReport& report) {
    if (report.key != 2) return;
    locked_gfn = report.value >> 12;
    rig_pointer->fake().zap(locked_gfn);
  };
  VmRig rig(kExitLoopRam, c);
  rig_pointer = &rig;
  rig.fake().set_after_access([&](spte::Gfn gfn, bool write) {
    if (!write && gfn == locked_gfn.load()) rig.fake().zap(gfn);
  });
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.exit_status, 0) << result.message << result.dump;
  ASSERT_FALSE(result.reports.empty());
  EXPECT_EQ(result.reports.back().key, 1u);
  EXPECT_EQ(result.reports.back().value, kIncrements);
  EXPECT_GE(result.stats.emulation_retries, 1u);
}

TEST(ExitLoopTest, CodePageZappedUnderTheVcpuIsFaultedBackIn) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = probe(3);
  VmRig* rig_pointer = nullptr;
  c.scenario_ports = [&](PortAccess& access) {
    if (access.port != 0x101) return PortResult::kUnhandled;
    rig_pointer->fake().zap(access.value >> 12);
    return PortResult::kHandled;
  };
  VmRig rig(kExitLoopRam, c);
  rig_pointer = &rig;
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.exit_status, 42) << result.message << result.dump;
  EXPECT_GE(result.stats.emulation_retries, 1u);
}

TEST(ExitLoopTest, StoresIntoAZappedStackArePerformedOnTheFrame) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = probe(4);
  VmRig* rig_pointer = nullptr;
  c.scenario_ports = [&](PortAccess& access) {
    if (access.port != 0x102) return PortResult::kUnhandled;
    uint64_t gfn = access.value >> 12;
    // The page the stack pointer is on and the one below it (where the
    // next pushes go).
    rig_pointer->fake().zap(gfn);
    rig_pointer->fake().zap(gfn - 1);
    return PortResult::kHandled;
  };
  VmRig rig(kExitLoopRam, c);
  rig_pointer = &rig;
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.exit_status, 43) << result.message << result.dump;
  EXPECT_GE(result.stats.mmio_writes, 1u);
}

}  // namespace
}  // namespace sptelab::hypervisor
