#include "mm/host_cpu.h"

#include <fmt/format.h>

#include <atomic>
#include <cstring>
#include <mutex>

#include "base/error.h"
#include "mm/fault.h"
#include "mm/mm.h"
#include "trace/trace.h"

namespace sptelab::mm {

SegFault::SegFault(uint64_t addr, bool write)
    : std::runtime_error(
          fmt::format("segmentation fault: {} at {:#x} (no mapping or no permission)",
                      write ? "write" : "read", addr)),
      addr_(addr),
      write_(write) {}

HostCpu::HostCpu(Mm& mm, int id) : mm_(mm), id_(id) {
  mm_.add_cpu(this);
}

HostCpu::~HostCpu() {
  mm_.remove_cpu(this);
}

template <typename Fn>
void HostCpu::access(uint64_t addr, bool write, Fn&& fn) {
  const uint64_t vpn = addr >> kPageShift;
  const uint64_t offset = addr & (kPageSize - 1);
  for (;;) {
    {
      std::lock_guard lock(lock_);
      TlbEntry& entry = tlb_[vpn % kTlbEntries];
      bool hit = entry.vpn == vpn && (!write || entry.writable);
      // A write through a clean entry first sets the PTE's dirty bit, like
      // the hardware's dirty assist; if the PTE changed meanwhile the entry
      // is dropped and the access walks again.
      if (hit && write && !entry.dirty) hit = set_dirty_locked(addr, entry);
      if (hit) {
        ++stats_.tlb_hits;
        fn(mm_.phys().direct_map(entry.pfn) + offset);
        if (late_end_ > late_start_) drop_late_locked();
        return;
      }
      ++stats_.tlb_misses;
      if (fill_locked(addr, write, entry)) {
        fn(mm_.phys().direct_map(entry.pfn) + offset);
        return;
      }
      ++stats_.faults;
    }
    // Never fault while holding the TLB lock: the fault takes the PTL, and a
    // flusher holding a PTL waits for this lock.
    fault(addr, write);
  }
}

// The hardware page walk: lockless, atomic with respect to shootdowns
// because it runs under the CPU lock a flusher must take.
bool HostCpu::fill_locked(uint64_t addr, bool write, TlbEntry& entry) {
  entry.vpn = ~uint64_t{0};
  const Pte pte = mm_.hardware_walk(addr, write, "tlb_walk");
  if (!pte.present()) return false;
  entry.vpn = addr >> kPageShift;
  entry.pfn = pte.pfn();
  entry.writable = pte.writable();
  entry.dirty = pte.dirty();
  trace::emit(trace::Kind::kTlbFill, static_cast<uint64_t>(id_), addr & ~(kPageSize - 1), entry.pfn,
              entry.writable);
  return true;
}

bool HostCpu::set_dirty_locked(uint64_t addr, TlbEntry& entry) {
  ++stats_.dirty_assists;
  PteSlot slot = mm_.walk(addr);
  if (slot) {
    Mm::announce_pte_access(slot, true, "dirty_assist", addr);
    Pte pte = Mm::load_pte(slot);
    if (pte.present() && pte.writable() && pte.pfn() == entry.pfn) {
      uint64_t raw = pte.raw();
      Pte updated = pte.with(Pte::kAccessed | Pte::kDirty);
      if (std::atomic_ref<uint64_t>(*slot.entry)
              .compare_exchange_strong(raw, updated.raw(), std::memory_order_acq_rel)) {
        entry.dirty = true;
        return true;
      }
    }
  }
  entry.vpn = ~uint64_t{0};
  return false;
}

void HostCpu::fault(uint64_t addr, bool write) {
  FaultResult result;
  {
    MmapReadGuard lock(mm_);
    result = handle_mm_fault(mm_, addr, write);
  }
  switch (result) {
    case FaultResult::kOk:
    case FaultResult::kRetry:
      return;
    case FaultResult::kSigSegv:
      throw SegFault(addr, write);
    case FaultResult::kOom:
      throw_environment(
          fmt::format("host CPU {}: out of emulated physical frames faulting {:#x}; "
                      "give the emulated host more memory",
                      id_, addr));
  }
}

namespace {

std::atomic_ref<uint64_t> word(uint8_t* p) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(p));
}

void check_aligned(uint64_t addr) {
  if (addr % 8 != 0) {
    throw_bad_input(fmt::format("64-bit host access at {:#x} is not 8-byte aligned", addr));
  }
}

}  // namespace

uint64_t HostCpu::load64(uint64_t addr) {
  check_aligned(addr);
  uint64_t value = 0;
  access(addr, false, [&](uint8_t* p) { value = word(p).load(std::memory_order_relaxed); });
  return value;
}

void HostCpu::store64(uint64_t addr, uint64_t value) {
  check_aligned(addr);
  access(addr, true, [&](uint8_t* p) { word(p).store(value, std::memory_order_relaxed); });
}

uint64_t HostCpu::fetch_add64(uint64_t addr, uint64_t value) {
  check_aligned(addr);
  uint64_t old = 0;
  access(addr, true,
         [&](uint8_t* p) { old = word(p).fetch_add(value, std::memory_order_acq_rel); });
  return old;
}

bool HostCpu::compare_exchange64(uint64_t addr, uint64_t& expected, uint64_t desired) {
  check_aligned(addr);
  bool exchanged = false;
  // A locked cmpxchg is a write access even when it fails, as on x86.
  access(addr, true, [&](uint8_t* p) {
    exchanged = word(p).compare_exchange_strong(expected, desired, std::memory_order_acq_rel);
  });
  return exchanged;
}

void HostCpu::read(uint64_t addr, void* out, size_t size) {
  auto* dst = static_cast<uint8_t*>(out);
  while (size > 0) {
    size_t chunk = std::min<size_t>(size, kPageSize - (addr & (kPageSize - 1)));
    access(addr, false, [&](uint8_t* p) {
      for (size_t i = 0; i < chunk; ++i) {
        dst[i] = std::atomic_ref<uint8_t>(p[i]).load(std::memory_order_relaxed);
      }
    });
    addr += chunk;
    dst += chunk;
    size -= chunk;
  }
}

void HostCpu::write(uint64_t addr, const void* data, size_t size) {
  const auto* src = static_cast<const uint8_t*>(data);
  while (size > 0) {
    size_t chunk = std::min<size_t>(size, kPageSize - (addr & (kPageSize - 1)));
    access(addr, true, [&](uint8_t* p) {
      for (size_t i = 0; i < chunk; ++i) {
        std::atomic_ref<uint8_t>(p[i]).store(src[i], std::memory_order_relaxed);
      }
    });
    addr += chunk;
    src += chunk;
    size -= chunk;
  }
}

bool HostCpu::tlb_cached(uint64_t addr) const {
  const uint64_t vpn = addr >> kPageShift;
  std::lock_guard lock(lock_);
  return tlb_[vpn % kTlbEntries].vpn == vpn;
}

void HostCpu::flush_local() {
  std::lock_guard lock(lock_);
  for (TlbEntry& entry : tlb_) entry.vpn = ~uint64_t{0};
}

void HostCpu::shootdown(uint64_t start, uint64_t end) {
  const uint64_t first = start >> kPageShift;
  const uint64_t last = (end + kPageSize - 1) >> kPageShift;
  std::lock_guard lock(lock_);
  ++stats_.shootdowns;
  for (TlbEntry& entry : tlb_) {
    if (entry.vpn >= first && entry.vpn < last) {
      entry.vpn = ~uint64_t{0};
      ++stats_.invalidated;
    }
  }
}

void HostCpu::shootdown_later(uint64_t start, uint64_t end) {
  std::lock_guard lock(lock_);
  late_start_ = start;
  late_end_ = end;
}

void HostCpu::drop_late_locked() {
  const uint64_t first = late_start_ >> kPageShift;
  const uint64_t last = (late_end_ + kPageSize - 1) >> kPageShift;
  for (TlbEntry& entry : tlb_) {
    if (entry.vpn >= first && entry.vpn < last) entry.vpn = ~uint64_t{0};
  }
  late_start_ = late_end_ = 0;
}

HostCpuStats HostCpu::stats() const {
  std::lock_guard lock(lock_);
  return stats_;
}

}  // namespace sptelab::mm
