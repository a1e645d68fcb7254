// The "plain memslot" baseline: guest RAM as KVM users normally have it. Every
// gfn is backed by a fixed frame allocated up front, the whole RAM is mapped
// into the mirror (the guest window) as soon as the mirror is attached, and
// nothing is ever zapped, so the real KVM faults pages in by itself and the
// exit loop never sees a RAM fault. Benchmarks compare the emulated
// secondary MMU against it; `sptelab run --scheme direct` uses it.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "mm/phys_mem.h"
#include "spte/mirror.h"

namespace sptelab::hypervisor {

class DirectMemory final : public spte::GuestMemory {
 public:
  // Allocates gfn_count frames, as contiguous as PhysMem can give them (each
  // run of consecutive frames is one window mapping). Throws
  // Error(kEnvironment) if physical memory has fewer free frames.
  DirectMemory(mm::PhysMem& phys, uint64_t gfn_count);
  ~DirectMemory() override;
  DirectMemory(const DirectMemory&) = delete;
  DirectMemory& operator=(const DirectMemory&) = delete;

  // Every gfn below gfn_count() is always present and writable: fault()
  // re-asserts the mapping (an idempotent mirror update) and returns kFixed.
  spte::FaultOutcome fault(spte::Gfn gfn, bool write, uint32_t vcpu) override;
  bool access(spte::Gfn gfn, bool write, const std::function<void(uint8_t*)>& fn) override;
  // Maps all of RAM into the mirror, one update per run of consecutive frames.
  void set_mirror(spte::Mirror* mirror) override;
  uint64_t gfn_count() const override { return frames_.size(); }

  mm::Pfn pfn(spte::Gfn gfn) const { return frames_.at(gfn); }
  uint64_t fault_count() const { return faults_.load(std::memory_order_relaxed); }

 private:
  mm::PhysMem& phys_;
  std::vector<mm::Pfn> frames_;
  spte::Mirror* mirror_ = nullptr;
  std::atomic<uint64_t> faults_{0};
};

}  // namespace sptelab::hypervisor
