// The stack `sptelab run` runs a guest on, built in one place: physical
// memory, the secondary MMU that the scheme selects, the guest window and
// the VM. The emulated host MM, its notifier chain and spte::Mmu are plugged
// in here and nowhere else.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "hypervisor/vm.h"
#include "spte/mirror.h"

namespace sptelab {
namespace scenarios {
class Lab;
}

namespace tools {

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
  hypervisor::VmConfig vm;
};

class RunStack {
 public:
  virtual ~RunStack() = default;
  virtual hypervisor::Vm& vm() = 0;
  virtual spte::GuestMemory& memory() = 0;
  // The emulated host behind an emulated scheme; nullptr for direct.
  virtual scenarios::Lab* lab() { return nullptr; }
};

// Throws Error: kEnvironment if KVM or memory is missing, kInternal for a
// scheme whose secondary MMU is not connected to `run` yet.
std::unique_ptr<RunStack> build_run_stack(const StackConfig& config);

}  // namespace tools
}  // namespace sptelab
