#include "bench/runs/stacks.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "base/error.h"
#include "host/lab.h"
#include "hypervisor/guest_window.h"
#include "mm/fault.h"
#include "mm/mm.h"

namespace sptelab::bench {
namespace {

// Guest RAM that is the window's own address range, turned into private
// anonymous memory: the memslot then is ordinary anonymous memory and the
// real kernel does everything. Nothing goes through the Mirror interface
// (nothing here is an emulated spte); the GuestMemory face only serves the
// image loader and crash dumps.
class AnonymousMemory final : public spte::GuestMemory {
 public:
  explicit AnonymousMemory(hypervisor::GuestWindow& window)
      : base_(window.base()), pages_(window.gfn_count()) {
    void* got = mmap(base_, window.size_bytes(), PROT_READ | PROT_WRITE,
                     MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (got == MAP_FAILED) {
      throw_environment(fmt::format("cannot map {} bytes of anonymous guest RAM: {}",
                                    window.size_bytes(), std::strerror(errno)));
    }
  }

  spte::FaultOutcome fault(spte::Gfn gfn, bool, uint32_t) override {
    return gfn < pages_ ? spte::FaultOutcome::kFixed : spte::FaultOutcome::kNoMemslot;
  }
  bool access(spte::Gfn gfn, bool, const std::function<void(uint8_t*)>& fn) override {
    if (gfn >= pages_) return false;
    fn(base_ + (gfn << mm::kPageShift));
    return true;
  }
  void set_mirror(spte::Mirror*) override {}
  uint64_t gfn_count() const override { return pages_; }
  uint8_t* base() const { return base_; }

 private:
  uint8_t* base_;
  uint64_t pages_;
};

class AnonymousStack final : public host::RunStack {
 public:
  AnonymousStack(uint64_t ram_bytes, const hypervisor::VmConfig& vm)
      : phys_(1),
        window_(phys_, ram_bytes >> mm::kPageShift),
        memory_(window_),
        vm_(vm, memory_, window_) {}
  hypervisor::Vm& vm() override { return vm_; }
  spte::GuestMemory& memory() override { return memory_; }
  uint8_t* ram() const { return memory_.base(); }

 private:
  mm::PhysMem phys_;  // the window needs one; no frame of it backs guest RAM
  hypervisor::GuestWindow window_;
  AnonymousMemory memory_;
  hypervisor::Vm vm_;
};

// -mem-prealloc for the emulated host: a write fault on every page of guest
// RAM, in order, so the frames come out contiguous (apart from the page-table
// frame every 2 MiB).
void preallocate(host::Lab& lab) {
  mm::MmapReadGuard guard(*lab.mm);
  for (uint64_t gfn = 0; gfn < lab.config().guest_pages; ++gfn) {
    mm::FaultResult result = mm::handle_mm_fault(*lab.mm, lab.hva_of(gfn), true);
    if (result != mm::FaultResult::kOk) {
      throw_environment(fmt::format("preallocating guest RAM failed at gfn {:#x}: {}", gfn,
                                    mm::fault_result_name(result)));
    }
  }
}

}  // namespace

StackBuilder direct_stack(uint64_t ram_bytes) {
  return [ram_bytes](const hypervisor::VmConfig& vm) {
    host::StackConfig config;
    config.ram_bytes = ram_bytes;
    config.scheme = std::string(host::kDirectScheme);
    config.vm = vm;
    return host::build_run_stack(config);
  };
}

StackBuilder anonymous_stack(uint64_t ram_bytes) {
  return [ram_bytes](const hypervisor::VmConfig& vm) -> std::unique_ptr<host::RunStack> {
    return std::make_unique<AnonymousStack>(ram_bytes, vm);
  };
}

StackBuilder emulated_stack(uint64_t ram_bytes, const spte::Scheme& scheme, uint32_t fault_around,
                            HostMemory host) {
  return [=](const hypervisor::VmConfig& vm) {
    host::StackConfig config;
    config.ram_bytes = ram_bytes;
    config.scheme = scheme.name();
    config.fault_around = fault_around;
    config.vm = vm;
    std::unique_ptr<host::RunStack> stack = host::build_run_stack(config);
    if (host == HostMemory::kPreallocated) preallocate(*stack->lab());
    return stack;
  };
}

uint8_t* anonymous_ram(host::RunStack& stack) {
  auto* anonymous = dynamic_cast<AnonymousStack*>(&stack);
  if (anonymous == nullptr) throw_internal("anonymous_ram: not an anonymous stack");
  return anonymous->ram();
}

}  // namespace sptelab::bench
