// A host CPU running a thread of one address space, with a small software
// TLB. Accesses go through the TLB; a miss walks the page table locklessly
// like hardware, sets the accessed (and on a write the dirty) bit with a
// cmpxchg like hardware, and faults through handle_mm_fault when the PTE does
// not allow the access.
//
// A TLB shootdown (Mm::flush_tlb_range) takes each CPU's lock, so it waits
// for an access in progress and no access can use a removed entry once the
// flush returns. Between a PTE clear and its flush, though, a CPU still uses
// its cached entry: that window is real, as on hardware, and it is what makes
// the stale-TLB races of the 2022 threads reproducible.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "base/spinlock.h"
#include "mm/types.h"

namespace sptelab::mm {

class Mm;

// An access to an address without a VMA or without the permission (SIGSEGV).
class SegFault : public std::runtime_error {
 public:
  SegFault(uint64_t addr, bool write);
  uint64_t addr() const { return addr_; }
  bool write() const { return write_; }

 private:
  uint64_t addr_;
  bool write_;
};

struct HostCpuStats {
  uint64_t tlb_hits = 0;
  uint64_t tlb_misses = 0;
  uint64_t faults = 0;         // handle_mm_fault calls
  uint64_t dirty_assists = 0;  // writes through a clean entry that set the PTE's D bit
  uint64_t shootdowns = 0;     // flush requests received
  uint64_t invalidated = 0;    // entries dropped by them
};

class HostCpu {
 public:
  static constexpr size_t kTlbEntries = 64;

  // Joins mm's cpumask; leaves it on destruction.
  HostCpu(Mm& mm, int id);
  ~HostCpu();
  HostCpu(const HostCpu&) = delete;
  HostCpu& operator=(const HostCpu&) = delete;

  int id() const { return id_; }
  Mm& mm() const { return mm_; }

  // 64-bit accesses need 8-byte aligned addresses (Error kBadInput if not).
  // All throw SegFault for a bad access, Error(kEnvironment) when the host
  // is out of frames.
  uint64_t load64(uint64_t addr);
  void store64(uint64_t addr, uint64_t value);
  uint64_t fetch_add64(uint64_t addr, uint64_t value);
  bool compare_exchange64(uint64_t addr, uint64_t& expected, uint64_t desired);
  void read(uint64_t addr, void* out, size_t size);
  void write(uint64_t addr, const void* data, size_t size);

  // Whether the TLB holds a translation for addr (tests).
  bool tlb_cached(uint64_t addr) const;
  // Drops every entry of this CPU only (a context switch away, say).
  void flush_local();
  // One CPU's part of a shootdown; Mm::flush_tlb_range calls it.
  void shootdown(uint64_t start, uint64_t end);
  // The shootdown-no-ack mutant: the flusher does not wait; this CPU drops
  // the entries only after its next access through the TLB.
  void shootdown_later(uint64_t start, uint64_t end);
  HostCpuStats stats() const;

 private:
  struct TlbEntry {
    uint64_t vpn = ~uint64_t{0};
    Pfn pfn = kNoPfn;
    bool writable = false;
    bool dirty = false;
  };

  // Runs fn(frame byte pointer) with the translation of addr held stable.
  template <typename Fn>
  void access(uint64_t addr, bool write, Fn&& fn);
  bool fill_locked(uint64_t addr, bool write, TlbEntry& entry);
  bool set_dirty_locked(uint64_t addr, TlbEntry& entry);
  void fault(uint64_t addr, bool write);
  void drop_late_locked();

  Mm& mm_;
  int id_;
  mutable SpinLock lock_{"host_cpu_tlb"};
  std::array<TlbEntry, kTlbEntries> tlb_{};
  uint64_t late_start_ = 0, late_end_ = 0;  // shootdown_later's range, under lock_
  HostCpuStats stats_;                      // under lock_
};

}  // namespace sptelab::mm
