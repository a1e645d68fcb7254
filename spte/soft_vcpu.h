// Software vCPUs: run guest programs written in C++ whose loads, stores and
// atomic read-modify-writes on guest-physical addresses go through a small
// software TLB of sptes, like hardware through a shadow MMU. A miss walks the
// spte (setting accessed/dirty); a missing or read-only spte takes the fault
// path; a zap flushes every vCPU's TLB before the zap returns, and an access
// holds its vCPU's TLB lock so that no access is still in flight through a
// translation once the zap has returned.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <vector>

#include "base/spinlock.h"
#include "spte/mirror.h"

namespace sptelab::mm {
class PhysMem;
}

namespace sptelab::spte {

class Mmu;
class ViolationLog;

// The guest did something the secondary MMU cannot satisfy (no memslot, write
// to read-only memory, host out of memory).
class GuestFault : public std::runtime_error {
 public:
  GuestFault(uint64_t gpa, FaultOutcome outcome);
  uint64_t gpa() const { return gpa_; }
  FaultOutcome outcome() const { return outcome_; }

 private:
  uint64_t gpa_;
  FaultOutcome outcome_;
};

struct SoftVcpuStats {
  uint64_t accesses = 0;
  uint64_t tlb_misses = 0;
  uint64_t faults = 0;
  uint64_t retries = 0;
};

class SoftMachine;

class SoftVcpu {
 public:
  SoftVcpu(SoftMachine& machine, uint32_t index);

  uint64_t load64(uint64_t gpa);
  void store64(uint64_t gpa, uint64_t value);
  uint64_t fetch_add64(uint64_t gpa, uint64_t delta);
  bool compare_exchange64(uint64_t gpa, uint64_t& expected, uint64_t desired);

  uint32_t index() const { return index_; }
  SoftVcpuStats stats() const;
  // Invalidates TLB entries for gfn .. gfn+count-1 (called by the machine's mirror).
  void flush(Gfn gfn, uint64_t count);

 private:
  struct TlbEntry {
    Gfn gfn = ~Gfn{0};
    mm::Pfn pfn = mm::kNoPfn;
    uint64_t generation = 0;
    bool writable = false;
    bool dirty = false;  // the spte's dirty bit was set by this entry's walk
  };
  static constexpr size_t kTlbEntries = 64;

  template <typename Op>
  uint64_t access(uint64_t gpa, bool write, Op&& op);
  bool fill(Gfn gfn, bool write);

  SoftMachine& machine_;
  uint32_t index_;
  SpinLock tlb_lock_{"vcpu_tlb"};
  std::array<TlbEntry, kTlbEntries> tlb_{};
  std::atomic<uint64_t> accesses_{0}, tlb_misses_{0}, faults_{0}, retries_{0};
};

// The set of software vCPUs sharing one secondary MMU; it is that MMU's mirror.
class SoftMachine final : public Mirror {
 public:
  SoftMachine(Mmu& mmu, mm::PhysMem& phys, ViolationLog& violations, uint32_t vcpus);
  ~SoftMachine() override;
  SoftVcpu& vcpu(uint32_t index) { return *vcpus_.at(index); }
  uint32_t vcpu_count() const { return static_cast<uint32_t>(vcpus_.size()); }
  void update(const MirrorUpdate& update) override;

  Mmu& mmu() { return mmu_; }
  mm::PhysMem& phys() { return phys_; }
  ViolationLog& violations() { return violations_; }

 private:
  Mmu& mmu_;
  mm::PhysMem& phys_;
  ViolationLog& violations_;
  std::vector<std::unique_ptr<SoftVcpu>> vcpus_;
};

}  // namespace sptelab::spte
