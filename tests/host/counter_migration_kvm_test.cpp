// Issue 4's acceptance run on the real stack: two vCPUs of the counter guest
// do a million lock-prefixed increments each on one counter while a host
// thread migrates that page continuously through the emulated host MM under
// start-end+seq-count. The total must be exact, and the spte fault count must
// show that the page really moved under the guest.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "guest/sptelab_abi.h"
#include "host/lab.h"
#include "host/run_stack.h"
#include "hypervisor/elf.h"
#include "mm/ops.h"
#include "tests/hypervisor/kvm_env.h"

namespace sptelab::host {
namespace {

TEST(CounterMigration, MillionLockedIncrementsPerVcpuSurviveRealMigration) {
  SPTELAB_REQUIRE_KVM();
  constexpr uint64_t kRam = 64ull << 20;
  std::atomic<uint64_t> counter_gpa{0};
  StackConfig config;
  config.ram_bytes = kRam;
  config.scheme = "start-end+seq-count";
  config.vm.vcpus = 2;
  config.vm.timeout_seconds = 300;
  config.vm.guest_args = {1000000, 2};  // a million lock xadd increments per vCPU
  config.vm.console = [](uint32_t, std::string_view) {};
  config.vm.on_report = [&](const hypervisor::GuestReport& report) {
    if (report.key == SPTELAB_REPORT_COUNTER_PAGE) counter_gpa = report.value;
  };
  std::unique_ptr<RunStack> stack = build_run_stack(config);
  Lab* lab = stack->lab();
  ASSERT_NE(lab, nullptr);
  stack->vm().load(
      hypervisor::read_elf_file(std::string(SPTELAB_GUEST_OUTPUT_DIR) + "/counter.elf", kRam));

  std::atomic<bool> finished{false};
  std::atomic<uint64_t> migrations{0};
  std::thread migrator([&] {
    while (!finished) {
      uint64_t gpa = counter_gpa.load();
      if (gpa == 0) {
        std::this_thread::yield();
        continue;
      }
      if (mm::migrate_page(*lab->mm, lab->hva_of(gpa >> mm::kPageShift))) ++migrations;
    }
  });
  hypervisor::RunResult result = stack->vm().run();
  finished = true;
  migrator.join();

  EXPECT_EQ(result.exit_status, 0) << result.message << result.dump;  // 1: increments lost
  EXPECT_NE(counter_gpa.load(), 0u);
  EXPECT_GT(migrations.load(), 100u);
  // Migrations zap the counter's spte and the vCPUs fault it back in, over
  // and over (far fewer faults than migrations: the guest runs emulated here
  // and many migrations pass while no vCPU touches the page).
  spte::MmuStats stats = lab->mmu->stats();
  EXPECT_GT(stats.zaps, 1000u);
  EXPECT_GT(stats.faults, 1000u);
  EXPECT_EQ(lab->mmu->audit(), 0u);
  EXPECT_EQ(lab->violations.count(), 0u);
}

}  // namespace
}  // namespace sptelab::host
