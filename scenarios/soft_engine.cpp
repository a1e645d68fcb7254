#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "scenarios/engine.h"
#include "scenarios/gate.h"
#include "scenarios/race.h"
#include "spte/soft_vcpu.h"
#include "trace/trace.h"

namespace sptelab::scenarios {
namespace {

class SoftEngine final : public GuestEngine {
 public:
  SoftEngine(host::Lab& lab, const RaceConfig& config, const RaceLayout& layout)
      : lab_(lab),
        config_(config),
        layout_(layout),
        machine_(*lab.mmu, lab.phys, lab.violations, config.vcpus) {}

  ~SoftEngine() override {
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
    lab_.mmu->set_mirror(nullptr);
  }

  void start() override {
    for (auto& body : vcpu_bodies()) threads_.emplace_back(std::move(body));
  }

  std::vector<std::function<void()>> vcpu_bodies() override {
    std::vector<std::function<void()>> bodies;
    for (uint32_t v = 0; v < config_.vcpus; ++v) bodies.emplace_back([this, v] { run_vcpu(v); });
    return bodies;
  }

  void join() override {
    for (auto& thread : threads_) thread.join();
    threads_.clear();
  }

  std::string failure() const override {
    std::lock_guard lock(mutex_);
    return failure_;
  }

 private:
  // A vCPU whose access reached a freed frame was stopped by the software
  // vCPU (the violation is in the log); it simply stops working.
  void run_vcpu(uint32_t v) {
    ThreadRole role(Role::kVcpu);
    trace::name_this_thread("vcpu" + std::to_string(v));
    SoftCpu cpu{machine_.vcpu(v)};
    try {
      if (config_.scenario == ScenarioKind::kCoherence) {
        coherence_worker(cpu, layout_, v);
      } else if (config_.scenario == ScenarioKind::kLockfree) {
        lockfree_worker(cpu, layout_, v);
      } else {
        stale_reader(cpu, layout_, v, config_.seed * 977 + v);
      }
    } catch (const spte::GuestFault& fault) {
      if (fault.outcome() == spte::FaultOutcome::kUseAfterFree) return;
      std::lock_guard lock(mutex_);
      failure_ = std::string("vCPU ") + std::to_string(v) + ": " + fault.what();
    } catch (const std::exception& error) {
      // The emulator itself failed (an internal error): the run reports it.
      std::lock_guard lock(mutex_);
      failure_ = std::string("vCPU ") + std::to_string(v) + ": " + error.what();
    }
  }

  host::Lab& lab_;
  const RaceConfig& config_;
  RaceLayout layout_;
  spte::SoftMachine machine_;
  std::vector<std::thread> threads_;
  mutable std::mutex mutex_;
  std::string failure_;
};

}  // namespace

std::unique_ptr<GuestEngine> make_soft_engine(host::Lab& lab, const RaceConfig& config,
                                              const RaceLayout& layout) {
  return std::make_unique<SoftEngine>(lab, config, layout);
}

}  // namespace sptelab::scenarios
