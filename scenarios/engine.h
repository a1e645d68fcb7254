// What runs the guest side of a race: software vCPUs (soft) or the built-in
// race guest on real KVM (kvm). The runner owns the lab, the host thread and
// the remapper; an engine only starts and stops the vCPUs.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "host/lab.h"
#include "scenarios/workers.h"

namespace sptelab::scenarios {

struct RaceConfig;

class GuestEngine {
 public:
  virtual ~GuestEngine() = default;
  // Starts the vCPUs; returns once they run the worker protocol.
  virtual void start() = 0;
  // The host has set control.stop: wait for every vCPU to finish.
  virtual void join() = 0;
  // Something went wrong that is not a violation (guest crashed, ...):
  // empty when all is well.
  virtual std::string failure() const = 0;
  // The vCPUs' bodies, to run on threads the caller makes instead of
  // start()/join() (a scheduled race runs them under sched::Execution).
  // Empty where the vCPUs cannot run that way (a KVM vCPU runs in KVM_RUN).
  virtual std::vector<std::function<void()>> vcpu_bodies() { return {}; }
};

std::unique_ptr<GuestEngine> make_soft_engine(host::Lab& lab, const RaceConfig& config,
                                              const RaceLayout& layout);

std::unique_ptr<GuestEngine> make_kvm_engine(host::Lab& lab, const RaceConfig& config,
                                             const RaceLayout& layout);

// Guest RAM for a backend: the soft backend needs a few pages; the kvm one
// holds the guest image (linked at 4 MiB), its page tables and stacks.
uint64_t guest_pages_for(const RaceConfig& config);

}  // namespace sptelab::scenarios
