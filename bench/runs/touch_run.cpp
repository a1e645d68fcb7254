#include "bench/runs/touch_run.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <mutex>

#include <fmt/format.h>

#include "base/error.h"
#include "bench/runs/cpu_clock.h"
#include "bench/runs/touch_abi.h"
#include "hypervisor/elf.h"

namespace sptelab::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The reports of every vCPU, with both clocks read on arrival (on the
// reporting vCPU's thread).
class PassClock {
 public:
  PassClock(uint32_t vcpus, uint32_t passes)
      : vcpus_(vcpus), begin_(passes, std::vector<Stamp>(vcpus)), end_(begin_) {}

  void record(const hypervisor::GuestReport& report) {
    Stamp stamp{Clock::now(), thread_cpu_seconds(), true};
    std::lock_guard lock(mutex_);
    if (report.vcpu >= vcpus_) return;
    switch (report.key) {
      case BENCH_TOUCH_REPORT_PAGES:
        pages_ += report.value;
        break;
      case BENCH_TOUCH_REPORT_PASS_BEGIN:
        if (report.value < begin_.size()) begin_[report.value][report.vcpu] = stamp;
        break;
      case BENCH_TOUCH_REPORT_PASS_END:
        if (report.value < end_.size()) end_[report.value][report.vcpu] = stamp;
        break;
      default:
        break;
    }
  }

  // Fills the per-pass times of `run`.
  void passes(TouchRun& run) const {
    std::lock_guard lock(mutex_);
    for (size_t pass = 0; pass < begin_.size(); ++pass) {
      Clock::time_point first = Clock::time_point::max();
      Clock::time_point last = Clock::time_point::min();
      double cpu = 0;
      for (uint32_t vcpu = 0; vcpu < vcpus_; ++vcpu) {
        const Stamp& begin = begin_[pass][vcpu];
        const Stamp& end = end_[pass][vcpu];
        if (!begin.seen || !end.seen) {
          throw_internal(fmt::format("benchtouch: vCPU {} did not report pass {}", vcpu, pass));
        }
        first = std::min(first, begin.wall);
        last = std::max(last, end.wall);
        cpu += end.cpu_seconds - begin.cpu_seconds;
      }
      run.pass_seconds.push_back(cpu);
      run.pass_wall_seconds.push_back(std::chrono::duration<double>(last - first).count());
    }
    run.pages = pages_;
  }

 private:
  struct Stamp {
    Clock::time_point wall;
    double cpu_seconds = 0;
    bool seen = false;
  };
  const uint32_t vcpus_;
  mutable std::mutex mutex_;
  std::vector<std::vector<Stamp>> begin_;  // [pass][vcpu]
  std::vector<std::vector<Stamp>> end_;
  uint64_t pages_ = 0;
};

}  // namespace

TouchRun run_touch(const TouchConfig& config, const StackBuilder& build, const StackHook& before,
                   const StackHook& after) {
  if (config.pages > std::numeric_limits<uint32_t>::max() || config.passes == 0) {
    throw_internal("benchtouch: pages must fit 32 bits and passes be at least 1");
  }
  hypervisor::ElfImage image = hypervisor::read_elf_file(config.guest_path, config.ram_bytes);
  auto clock = std::make_shared<PassClock>(config.vcpus, config.passes);
  hypervisor::VmConfig vm;
  vm.vcpus = config.vcpus;
  vm.timeout_seconds = config.timeout_seconds;
  vm.guest_args.resize(6);
  vm.guest_args[BENCH_TOUCH_ARG_PAGES] = static_cast<uint32_t>(config.pages);
  vm.guest_args[BENCH_TOUCH_ARG_MODE] = config.port_loop ? BENCH_TOUCH_PORT_LOOP
                                        : config.random  ? BENCH_TOUCH_RANDOM
                                                         : BENCH_TOUCH_SEQUENTIAL;
  vm.guest_args[BENCH_TOUCH_ARG_NATIVE] = config.native ? 1 : 0;
  vm.scenario_ports = [](hypervisor::PortAccess& access) {
    return access.port == BENCH_TOUCH_PORT ? hypervisor::PortResult::kHandled
                                           : hypervisor::PortResult::kUnhandled;
  };
  vm.guest_args[BENCH_TOUCH_ARG_STRIDE] = config.stride;
  vm.guest_args[BENCH_TOUCH_ARG_PASSES] = config.passes;
  vm.guest_args[BENCH_TOUCH_ARG_SEED] = config.seed;
  vm.console = [](uint32_t, std::string_view) {};  // benchtouch prints nothing useful
  vm.on_report = [clock](const hypervisor::GuestReport& report) { clock->record(report); };

  std::unique_ptr<host::RunStack> stack = build(vm);
  if (before) before(*stack);
  stack->vm().load(image);
  hypervisor::RunResult result = stack->vm().run();
  if (result.exit_status != 0) {
    throw_internal(fmt::format("benchtouch ended with status {}: {}{}", result.exit_status,
                               result.message, result.dump.empty() ? "" : "\n" + result.dump));
  }
  if (after) after(*stack);

  TouchRun run;
  clock->passes(run);
  run.vm_stats = result.stats;
  if (config.pages != 0 && run.pages != config.pages) {
    throw_internal(
        fmt::format("benchtouch touched {} pages per pass, not the {} asked for: "
                    "give it more RAM",
                    run.pages, config.pages));
  }
  return run;
}

uint64_t touch_first_gfn(const std::string& guest_path, uint64_t ram_bytes) {
  hypervisor::ElfImage image = hypervisor::read_elf_file(guest_path, ram_bytes);
  return (image.end_address() + 4095) / 4096;
}

}  // namespace sptelab::bench
