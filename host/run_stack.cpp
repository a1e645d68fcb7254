#include "host/run_stack.h"

#include <fmt/core.h>

#include "base/error.h"
#include "host/lab.h"
#include "hypervisor/direct_memory.h"
#include "hypervisor/guest_window.h"
#include "mm/phys_mem.h"
#include "mmu_notifier/placement.h"
#include "spte/scheme.h"

namespace sptelab::host {
namespace {

// Guest RAM as one fixed run of frames, mapped once: the real KVM faults
// pages in by itself and no emulated spte ever changes.
class DirectStack final : public RunStack {
 public:
  explicit DirectStack(const StackConfig& config)
      : phys_(config.ram_bytes >> mm::kPageShift),
        memory_(phys_, config.ram_bytes >> mm::kPageShift),
        window_(phys_, config.ram_bytes >> mm::kPageShift),
        vm_(config.vm, memory_, window_) {}

  hypervisor::Vm& vm() override { return vm_; }
  spte::GuestMemory& memory() override { return memory_; }

 private:
  // Destroyed bottom-up: the VM first, physical memory last.
  mm::PhysMem phys_;
  hypervisor::DirectMemory memory_;
  hypervisor::GuestWindow window_;
  hypervisor::Vm vm_;
};

// Guest RAM as anonymous memory of an emulated host address space, mapped
// into the guest through spte::Mmu under the scheme: every guest page the
// real KVM sees comes from an emulated spte.
class EmulatedStack final : public RunStack {
 public:
  EmulatedStack(const StackConfig& config, const spte::Scheme& scheme)
      : lab_(LabConfig{.scheme = scheme,
                       .guest_pages = config.ram_bytes >> mm::kPageShift,
                       .backing = config.op ? backing_for(*config.op) : Backing::kAnon,
                       .fault_around = config.fault_around,
                       // A run audits sptes (generations catch a stale one),
                       // never free frames: Linux's free, no poison write.
                       .freed_frames = mm::FreedFrames::kAsIs}),
        window_(lab_.phys, config.ram_bytes >> mm::kPageShift),
        vm_(config.vm, *lab_.mmu, window_) {
    // Every spte the MMU installs is usable by the guest at once, as on
    // hardware (GuestWindow::set_populate); nothing is mapped before load().
    window_.set_populate(true);
  }

  hypervisor::Vm& vm() override { return vm_; }
  spte::GuestMemory& memory() override { return *lab_.mmu; }
  Lab* lab() override { return &lab_; }

 private:
  Lab lab_;
  hypervisor::GuestWindow window_;
  hypervisor::Vm vm_;
};

}  // namespace

void check_run_scheme(std::string_view scheme) {
  if (auto parsed = spte::parse_scheme(scheme);
      parsed && parsed->protocol == spte::Protocol::kSva) {
    throw_bad_input(fmt::format(
        "run: {} models an IOMMU device sharing the host page table, but `run` executes the "
        "guest on KVM, whose own MMU maps guest memory; race it on software vCPUs instead "
        "(sptelab race coherence --backend soft --scheme {})",
        scheme, scheme));
  }
  if (scheme == kDirectScheme || spte::parse_scheme(scheme)) return;
  std::string protocols;
  for (spte::Protocol protocol : spte::all_protocols()) {
    protocols += protocols.empty() ? "" : ", ";
    protocols += spte::protocol_name(protocol);
  }
  throw_bad_input(fmt::format(
      "run: unknown scheme '{}'; a scheme is PLACEMENT+PROTOCOL with PLACEMENT one of {} and "
      "PROTOCOL one of {} (e.g. start-end+seq-count), or '{}' for the plain memslot baseline",
      scheme, mmu_notifier::placement_list(), protocols, kDirectScheme));
}

std::unique_ptr<RunStack> build_run_stack(const StackConfig& config) {
  check_run_scheme(config.scheme);
  if (config.scheme == kDirectScheme) return std::make_unique<DirectStack>(config);
  return std::make_unique<EmulatedStack>(config, *spte::parse_scheme(config.scheme));
}

}  // namespace sptelab::host
