// The counter guest while a host thread keeps moving its page to new frames
// (the acceptance run; with spte::Mmu the lead repeats it under real
// migration with start-end+seq-count). Every move makes the window page
// inaccessible before the copy, so an increment lost anywhere in the exit
// loop shows up in the total.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <iostream>
#include <thread>

#include "guest/sptelab_abi.h"
#include "hypervisor/guest_physical.h"
#include "tests/hypervisor/kvm_env.h"
#include "tests/hypervisor/test_guests.h"
#include "tests/hypervisor/vm_rig.h"

namespace sptelab::hypervisor {
namespace {

using ::testing::HasSubstr;
using testing::VmRig;

constexpr uint64_t kCounterRam = 16ull << 20;

struct Totals {
  RunResult result;
  uint64_t migrations = 0;
  uint64_t faults = 0;
  std::string console;
  sptelab_counter_page page{};
};

// Runs the counter guest on 2 vCPUs and migrates its page every `pause`
// until the guest is done.
Totals run_counter_under_migration(uint32_t iterations, uint32_t mode,
                                   std::chrono::microseconds pause) {
  std::atomic<uint64_t> counter_gfn = 0;
  VmConfig c;
  c.vcpus = 2;
  c.timeout_seconds = 600;  // the guest runs emulated here: be generous, never flaky
  c.guest_args = {iterations, mode};
  c.on_report = [&](const GuestReport& report) {
    if (report.key == SPTELAB_REPORT_COUNTER_PAGE) counter_gfn = report.value >> 12;
  };
  VmRig rig(kCounterRam, c, testing::Backing::kFake, 4096);
  std::atomic<bool> done = false;
  std::thread migrator([&] {
    while (!done.load()) {
      if (uint64_t gfn = counter_gfn.load(); gfn != 0) rig.fake().migrate(gfn);
      std::this_thread::sleep_for(pause);
    }
  });
  Totals totals;
  totals.result = rig.run(testing::builtin_guest("counter"));
  done = true;
  migrator.join();
  totals.migrations = rig.fake().migrations();
  totals.faults = rig.fake().faults(counter_gfn.load());
  totals.console = rig.console();
  // The page as the host sees it now (faulted back in if the last move left
  // it absent).
  GuestPhysical host(rig.memory(), 0);
  EXPECT_FALSE(host.read(counter_gfn.load() << 12, &totals.page, sizeof(totals.page)));
  std::cout << "migrations " << totals.migrations << ", faults on the counter page "
            << totals.faults << ", exits " << totals.result.stats.exits << ", emulation retries "
            << totals.result.stats.emulation_retries << "\n";
  return totals;
}

TEST(CounterTest, MillionLockedIncrementsPerVcpuSurviveContinuousMigration) {
  SPTELAB_REQUIRE_KVM();
  constexpr uint32_t kIterations = 1000000;
  Totals totals = run_counter_under_migration(kIterations, 2, std::chrono::microseconds(500));
  EXPECT_EQ(totals.result.exit_status, 0) << totals.result.message << totals.console;
  EXPECT_THAT(totals.console, HasSubstr("atomic 2000000 of 2000000: exact"));
  EXPECT_EQ(totals.page.atomic_count, 2u * kIterations);
  // The page really moved, and the guest really faulted it back each time.
  EXPECT_GE(totals.migrations, 10u);
  EXPECT_GE(totals.faults, 10u);
}

TEST(CounterTest, SpinlockCounterSurvivesContinuousMigration) {
  SPTELAB_REQUIRE_KVM();
  constexpr uint32_t kIterations = 20000;
  Totals totals = run_counter_under_migration(kIterations, 3, std::chrono::microseconds(300));
  EXPECT_EQ(totals.result.exit_status, 0) << totals.result.message << totals.console;
  EXPECT_EQ(totals.page.locked_count, 2u * kIterations);
  EXPECT_EQ(totals.page.atomic_count, 2u * kIterations);
  EXPECT_EQ(totals.page.lock, 0u);
  EXPECT_GE(totals.migrations, 10u);
}

}  // namespace
}  // namespace sptelab::hypervisor
