// The stack a guest runs on outside a race scenario (`sptelab run`, the
// whole-run benchmarks): physical memory, the secondary MMU the scheme
// selects, the guest window and the VM, built in one place. The emulated host
// MM, its notifier chain and spte::Mmu are plugged in here and nowhere else.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "host/host_ops.h"
#include "hypervisor/vm.h"
#include "spte/mirror.h"

namespace sptelab::host {

class Lab;

// The "plain memslot" baseline: hypervisor::DirectMemory, no emulated host.
inline constexpr std::string_view kDirectScheme = "direct";
// What `sptelab run` uses without --scheme.
inline constexpr std::string_view kDefaultRunScheme = kDirectScheme;

// Error(kBadInput) naming the valid schemes if `scheme` is none of them.
void check_run_scheme(std::string_view scheme);

struct StackConfig {
  uint64_t ram_bytes = 0;
  uint32_t fault_around = 0;  // emulated schemes: pages prefetched per fault
  std::string scheme = std::string(kDefaultRunScheme);
  // The host op a remapper will apply during the run (run --op): guest RAM
  // gets the backing it needs (a shared file for remap and mkclean).
  std::optional<HostOp> op;
  hypervisor::VmConfig vm;
};

class RunStack {
 public:
  virtual ~RunStack() = default;
  virtual hypervisor::Vm& vm() = 0;
  virtual spte::GuestMemory& memory() = 0;
  // The emulated host behind an emulated scheme; nullptr for direct.
  virtual Lab* lab() { return nullptr; }
};

// Throws Error: kBadInput for an unknown scheme, kEnvironment if KVM or
// memory is missing.
std::unique_ptr<RunStack> build_run_stack(const StackConfig& config);

}  // namespace sptelab::host
