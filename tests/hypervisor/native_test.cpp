// Native mode on real KVM: the probe guest enters CPL3 and its accesses to
// pages the FakeMemory double zaps come back as EFAULTs that the exit loop
// resolves by decoding the instruction (hypervisor/native_fault.h).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "tests/hypervisor/kvm_env.h"
#include "tests/hypervisor/test_guests.h"
#include "tests/hypervisor/vm_rig.h"

namespace sptelab::hypervisor {
namespace {

using testing::VmRig;

constexpr uint64_t kNativeRam = 16ull << 20;
constexpr uint32_t kNative = 16;

VmConfig native_probe(uint32_t mode, uint32_t arg = 0) {
  VmConfig c;
  c.vcpus = 1;
  c.timeout_seconds = 120;
  c.guest_args = {mode | kNative, arg};
  c.system_memslot = true;
  return c;
}

TEST(NativeModeTest, LockedIncrementsStayExactWhileThePageIsZapped) {
  SPTELAB_REQUIRE_KVM();
  constexpr uint32_t kIncrements = 200000;
  VmConfig c = native_probe(6, kIncrements);
  std::atomic<uint64_t> locked_gfn = 0;
  VmRig* rig_pointer = nullptr;
  c.on_report = [&](const GuestReport& report) {
    if (report.key == 2) {
      locked_gfn = report.value >> 12;
      rig_pointer->fake().zap(locked_gfn);  // at least once, whatever the zapper manages
    }
    if (report.key == 3) rig_pointer->fake().zap(report.value >> 12);
  };
  VmRig rig(kNativeRam, c);
  rig_pointer = &rig;
  std::atomic<bool> done = false;
  std::atomic<uint64_t> zaps = 0;
  std::thread zapper([&] {
    while (!done.load()) {
      if (uint64_t gfn = locked_gfn.load()) {
        rig.fake().zap(gfn);
        zaps.fetch_add(1);
      }
      std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  });
  RunResult result = rig.run(testing::test_guest("probe"));
  done = true;
  zapper.join();
  EXPECT_EQ(result.exit_status, 0) << result.message << result.dump;
  // The locked page once, the straddled page twice, the string copy's page.
  EXPECT_GE(result.stats.native_faults, 4u);
  EXPECT_EQ(result.stats.native_unmatched, 0u);
  RecordProperty("zapper_zaps", static_cast<int>(zaps.load()));
}

TEST(NativeModeTest, CodePageZappedUnderTheVcpuIsFetchedBackIn) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = native_probe(3);
  VmRig* rig_pointer = nullptr;
  c.scenario_ports = [&](PortAccess& access) {
    if (access.port != 0x101) return PortResult::kUnhandled;
    rig_pointer->fake().zap(access.value >> 12);
    return PortResult::kHandled;
  };
  VmRig rig(kNativeRam, c);
  rig_pointer = &rig;
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.exit_status, 42) << result.message << result.dump;
  EXPECT_GE(result.stats.native_faults, 1u);
}

TEST(NativeModeTest, PushesIntoAZappedStackInRam) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = native_probe(4);
  c.system_memslot = false;  // the stack is in RAM, where zaps reach it
  VmRig* rig_pointer = nullptr;
  c.scenario_ports = [&](PortAccess& access) {
    if (access.port != 0x102) return PortResult::kUnhandled;
    uint64_t gfn = access.value >> 12;
    rig_pointer->fake().zap(gfn);
    rig_pointer->fake().zap(gfn - 1);
    return PortResult::kHandled;
  };
  VmRig rig(kNativeRam, c);
  rig_pointer = &rig;
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.exit_status, 43) << result.message << result.dump;
  EXPECT_GE(result.stats.native_faults, 1u);
}

TEST(NativeModeTest, HltAtCpl3StopsTheVcpu) {
  SPTELAB_REQUIRE_KVM();
  VmConfig c = native_probe(5);
  c.vcpus = 2;
  VmRig rig(kNativeRam, c);
  RunResult result = rig.run(testing::test_guest("probe"));
  EXPECT_EQ(result.end, RunEnd::kAllHalted) << result.message << result.dump;
  EXPECT_EQ(result.stats.native_halts, 2u);
}

}  // namespace
}  // namespace sptelab::hypervisor
