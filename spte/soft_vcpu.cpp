#include "spte/soft_vcpu.h"

#include <mutex>
#include <string>
#include <thread>

#include "mm/phys_mem.h"
#include "spte/mmu.h"
#include "spte/violations.h"

namespace sptelab::spte {
namespace {

uint64_t* word_at(uint8_t* frame, uint64_t gpa) {
  return reinterpret_cast<uint64_t*>(frame + (gpa & (mm::kPageSize - 1) & ~uint64_t{7}));
}

}  // namespace

GuestFault::GuestFault(uint64_t gpa, FaultOutcome outcome)
    : std::runtime_error("guest access to gpa 0x" +
                         [gpa] {
                           char buf[32];
                           snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(gpa));
                           return std::string(buf);
                         }() +
                         " failed: " + fault_outcome_name(outcome)),
      gpa_(gpa),
      outcome_(outcome) {}

SoftVcpu::SoftVcpu(SoftMachine& machine, uint32_t index) : machine_(machine), index_(index) {}

// Every access: look the gfn up in the TLB under the TLB lock and perform the
// operation while still holding it. A miss or a missing permission releases
// the lock, walks (or faults) and tries again.
template <typename Op>
uint64_t SoftVcpu::access(uint64_t gpa, bool write, Op&& op) {
  const Gfn gfn = gpa >> mm::kPageShift;
  accesses_.fetch_add(1, std::memory_order_relaxed);
  for (;;) {
    {
      std::lock_guard lock(tlb_lock_);
      TlbEntry& entry = tlb_[gfn % kTlbEntries];
      if (entry.gfn == gfn && (!write || (entry.writable && entry.dirty))) {
        mm::PhysMem& phys = machine_.phys();
        if (phys.generation(entry.pfn) != entry.generation) {
          // Report, and do not let the access land: the frame may already
          // hold an emulated page table, and corrupting the emulator would
          // hide the very race it is reporting.
          machine_.violations().report(
              {ViolationKind::kUseAfterFree, gfn, entry.pfn, 0,
               "vCPU " + std::to_string(index_) + " accessed a freed or reused frame"});
          throw GuestFault(gpa, FaultOutcome::kUseAfterFree);
        }
        return op(word_at(phys.direct_map(entry.pfn), gpa));
      }
    }
    tlb_misses_.fetch_add(1, std::memory_order_relaxed);
    if (fill(gfn, write)) continue;
    faults_.fetch_add(1, std::memory_order_relaxed);
    FaultOutcome outcome = machine_.mmu().fault(gfn, write, index_);
    if (outcome == FaultOutcome::kRetry) {
      retries_.fetch_add(1, std::memory_order_relaxed);
      sched::relax(this, "fault_retry");
    } else if (outcome != FaultOutcome::kFixed) {
      throw GuestFault(gpa, outcome);
    }
  }
}

// TLB fill: the spte is read and the entry written under mmu_lock, so a zap
// (which flushes TLBs under mmu_lock) cannot slip between the two.
bool SoftVcpu::fill(Gfn gfn, bool write) {
  return machine_.mmu().read_spte(gfn, write, [&](Spte spte, uint64_t generation) {
    std::lock_guard lock(tlb_lock_);
    tlb_[gfn % kTlbEntries] = {gfn, spte.pfn(), generation, spte.writable(), spte.dirty()};
  });
}

void SoftVcpu::flush(Gfn gfn, uint64_t count) {
  std::lock_guard lock(tlb_lock_);
  for (TlbEntry& entry : tlb_) {
    if (entry.gfn >= gfn && entry.gfn - gfn < count) entry = TlbEntry{};
  }
}

uint64_t SoftVcpu::load64(uint64_t gpa) {
  return access(gpa, false, [](uint64_t* word) { return __atomic_load_n(word, __ATOMIC_ACQUIRE); });
}

void SoftVcpu::store64(uint64_t gpa, uint64_t value) {
  access(gpa, true, [value](uint64_t* word) {
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
    return uint64_t{0};
  });
}

uint64_t SoftVcpu::fetch_add64(uint64_t gpa, uint64_t delta) {
  return access(gpa, true, [delta](uint64_t* word) {
    return __atomic_fetch_add(word, delta, __ATOMIC_ACQ_REL);
  });
}

bool SoftVcpu::compare_exchange64(uint64_t gpa, uint64_t& expected, uint64_t desired) {
  return access(gpa, true, [&](uint64_t* word) {
    return static_cast<uint64_t>(__atomic_compare_exchange_n(word, &expected, desired, false,
                                                             __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE));
  });
}

SoftVcpuStats SoftVcpu::stats() const {
  return {accesses_.load(), tlb_misses_.load(), faults_.load(), retries_.load()};
}

SoftMachine::SoftMachine(Mmu& mmu, mm::PhysMem& phys, ViolationLog& violations, uint32_t vcpus)
    : mmu_(mmu), phys_(phys), violations_(violations) {
  for (uint32_t i = 0; i < vcpus; ++i) vcpus_.push_back(std::make_unique<SoftVcpu>(*this, i));
  mmu_.set_mirror(this);
}

SoftMachine::~SoftMachine() {
  mmu_.set_mirror(nullptr);
}

// Mapping needs nothing (TLBs fill on demand); any change that removes or
// narrows access must flush, and so must a remap to another frame.
void SoftMachine::update(const MirrorUpdate& update) {
  for (auto& vcpu : vcpus_) vcpu->flush(update.gfn, update.count);
}

}  // namespace sptelab::spte
