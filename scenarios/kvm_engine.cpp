#include <fmt/format.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "hypervisor/elf.h"
#include "hypervisor/guest_window.h"
#include "hypervisor/vm.h"
#include "scenarios/engine.h"
#include "scenarios/gate.h"
#include "scenarios/race.h"

namespace sptelab::scenarios {
namespace {

// The built-in race guest on real KVM: its RAM is the lab's guest RAM, its
// window the lab's spte mirror, so every page the real shadow MMU maps comes
// from an emulated spte of the scheme under test.
class KvmEngine final : public GuestEngine {
 public:
  KvmEngine(host::Lab& lab, const RaceConfig& config, const RaceLayout& layout)
      : window_(lab.phys, lab.config().guest_pages),
        vm_(vm_config(config, layout), *lab.mmu, window_) {
    if (config.guest_path.empty()) {
      throw_bad_input("race --backend kvm: no race guest image was given");
    }
    vm_.load(hypervisor::read_elf_file(config.guest_path, vm_.ram_bytes()));
  }

  ~KvmEngine() override {
    if (thread_.joinable()) {
      vm_.request_stop(kStoppedStatus, "race engine destroyed while the guest ran");
      thread_.join();
    }
  }

  void start() override {
    thread_ = std::thread([this] {
      hypervisor::RunResult result = vm_.run();
      std::lock_guard lock(mutex_);
      result_ = std::move(result);
      ended_ = true;
      ended_cv_.notify_all();
    });
  }

  // The stop flag is in guest RAM: a vCPU that reads the control page
  // through a stale spte (a racy scheme's, after fork write-protected guest
  // RAM) never sees it. Stopped from outside after a grace period instead of
  // at the VM's own timeout, a minute later.
  void join() override {
    {
      std::unique_lock lock(mutex_);
      if (!ended_cv_.wait_for(lock, kStopGrace, [this] { return ended_; })) {
        lock.unlock();
        vm_.request_stop(kStoppedStatus,
                         "a vCPU did not see the host's stop flag: its control page was not the "
                         "page the host wrote");
      }
    }
    thread_.join();
  }

  // Every vCPU halts once the host sets control.stop; anything else is a
  // failure of the run itself, not a violation.
  std::string failure() const override {
    std::lock_guard lock(mutex_);
    if (result_.end == hypervisor::RunEnd::kAllHalted) return {};
    return fmt::format("the race guest ended with {} (status {}): {}{}",
                       hypervisor::run_end_name(result_.end), result_.exit_status, result_.message,
                       result_.dump.empty() ? "" : "\n" + result_.dump);
  }

 private:
  static hypervisor::VmConfig vm_config(const RaceConfig& config, const RaceLayout& layout) {
    hypervisor::VmConfig vm;
    vm.vcpus = config.vcpus;
    vm.timeout_seconds = config.max_seconds + 60;
    vm.guest_args = {static_cast<uint32_t>(layout.control_gpa >> 12)};
    // Host operations may reach any page of guest RAM (fork write-protects
    // all of it): the page tables, IDT and stacks must not go with it.
    vm.system_memslot = true;
    vm.console = [](uint32_t, std::string_view text) { fmt::print(stderr, "guest: {}", text); };
    // Delays armed for the vCPU role (spte_* points) fire on these threads.
    vm.on_vcpu_thread = [](uint32_t) { ThreadRole::set_for_this_thread(Role::kVcpu); };
    return vm;
  }

  static constexpr auto kStopGrace = std::chrono::seconds(2);
  // A guest stopped from outside did not end as the race expects.
  static constexpr int kStoppedStatus = static_cast<int>(ExitStatus::kInternal);

  hypervisor::GuestWindow window_;
  hypervisor::Vm vm_;
  std::thread thread_;
  mutable std::mutex mutex_;
  std::condition_variable ended_cv_;
  bool ended_ = false;  // under mutex_
  hypervisor::RunResult result_;
};

}  // namespace

std::unique_ptr<GuestEngine> make_kvm_engine(host::Lab& lab, const RaceConfig& config,
                                             const RaceLayout& layout) {
  return std::make_unique<KvmEngine>(lab, config, layout);
}

}  // namespace sptelab::scenarios
