// The worker protocols of the race scenarios, written once for any CPU that
// offers 64-bit load/store/cas/fetch-add on guest-physical addresses: a
// software vCPU directly, the host thread through its HostCpu. The KVM
// backend's `race` guest runs the same protocol in C (guest/race.c).
#pragma once

#include <cstddef>
#include <cstdint>
#include <thread>

#include "base/sched.h"
#include "base/spinlock.h"
#include "mm/host_cpu.h"
#include "spte/soft_vcpu.h"

extern "C" {
#include "guest/sptelab_race.h"
}

namespace sptelab::scenarios {

inline constexpr uint64_t control_word(size_t offset) {
  return offset;
}

// Guest-physical addresses of the race pages.
struct RaceLayout {
  uint64_t control_gpa = 0;
  uint64_t target_gpa = 0;
  uint64_t version_gpa = 0;  // first version page

  uint64_t control(size_t field_offset) const { return control_gpa + field_offset; }
  uint64_t lock() const { return target_gpa + offsetof(sptelab_race_target, lock); }
  uint64_t counter() const { return target_gpa + offsetof(sptelab_race_target, counter); }
  uint64_t count(uint32_t worker) const {
    return target_gpa + offsetof(sptelab_race_target, counts) + 8 * worker;
  }
  uint64_t done(uint32_t worker) const {
    return control(offsetof(sptelab_race_control, done) + 8 * worker);
  }
  uint64_t published(uint32_t page) const {
    return control(offsetof(sptelab_race_control, published) + 8 * page);
  }
  uint64_t version_page(uint32_t page) const { return version_gpa + page * 4096ull; }
};

// A software vCPU seen through guest-physical addresses.
struct SoftCpu {
  spte::SoftVcpu& vcpu;
  uint64_t load(uint64_t gpa) { return vcpu.load64(gpa); }
  void store(uint64_t gpa, uint64_t value) { vcpu.store64(gpa, value); }
  bool cas(uint64_t gpa, uint64_t expected, uint64_t desired) {
    return vcpu.compare_exchange64(gpa, expected, desired);
  }
  uint64_t add(uint64_t gpa, uint64_t delta) { return vcpu.fetch_add64(gpa, delta); }
};

// The host thread: the same guest-physical layout through guest RAM's host
// mapping (hva = ram_hva + gpa), like a VMM thread touching guest memory. An
// access that finds the page protected (the mprotect operation's read-only
// moment) waits for the permission to come back, as a VMM's write-protect
// fault handler (userfaultfd) would, instead of dying of SIGSEGV.
// Bounded: memory that never comes back is a real SIGSEGV.
template <typename Fn>
decltype(auto) retrying(Fn&& fn) {
  constexpr int kAttempts = 1000000;
  for (int attempt = 1;; ++attempt) {
    try {
      return fn();
    } catch (const mm::SegFault&) {
      if (attempt == kAttempts) throw;
      sched::relax(nullptr, "host_access_retry");  // yields, or lets a scheduled run go on
    }
  }
}

struct HostThreadCpu {
  mm::HostCpu& cpu;
  uint64_t ram_hva;

  uint64_t load(uint64_t gpa) {
    return retrying([&] { return cpu.load64(ram_hva + gpa); });
  }
  void store(uint64_t gpa, uint64_t value) {
    retrying([&] {
      cpu.store64(ram_hva + gpa, value);
      return 0;
    });
  }
  bool cas(uint64_t gpa, uint64_t expected, uint64_t desired) {
    return retrying([&] {
      uint64_t seen = expected;
      return cpu.compare_exchange64(ram_hva + gpa, seen, desired);
    });
  }
  uint64_t add(uint64_t gpa, uint64_t delta) {
    return retrying([&] { return cpu.fetch_add64(ram_hva + gpa, delta); });
  }
};

inline bool stop_requested(auto& cpu, const RaceLayout& layout) {
  return cpu.load(layout.control(offsetof(sptelab_race_control, stop))) != 0;
}

// Takes the target page's spinlock; false if the run was stopped meanwhile.
// Spins a little, then yields: on two cores the holder may be waiting for
// the very CPU this thread is spinning on.
inline bool take_lock(auto& cpu, const RaceLayout& layout, uint64_t owner) {
  for (unsigned spins = 1; !cpu.cas(layout.lock(), 0, owner); ++spins) {
    if (stop_requested(cpu, layout)) return false;
    if (spins % 16 == 0) sched::relax(nullptr, "take_lock");
  }
  return true;
}

// The remapper's variant: gives up after `attempts` tries, because the
// holder may be a vCPU that was stopped for reaching a freed frame and will
// never release the lock.
// Spins between attempts and yields only every 256: the holder is usually a
// vCPU on the other core (natively it holds the lock for ~100 ns), and on a
// loaded machine each yield gives this core away for a whole slice.
inline bool try_take_lock(auto& cpu, const RaceLayout& layout, uint64_t owner, uint64_t attempts) {
  for (uint64_t i = 1; i <= attempts; ++i) {
    if (cpu.cas(layout.lock(), 0, owner)) return true;
    if (i % 256 == 0) {
      sched::relax(nullptr, "try_take_lock");
    } else {
      cpu_relax();
    }
  }
  return false;
}

// Marks entry into the critical section in the control page; a second holder
// is the mutual-exclusion violation.
inline bool enter_critical(auto& cpu, const RaceLayout& layout) {
  uint64_t others = cpu.add(layout.control(offsetof(sptelab_race_control, holders)), 1);
  if (others == 0) return true;
  cpu.add(layout.control(offsetof(sptelab_race_control, double_holders)), 1);
  return false;
}

inline void leave_critical(auto& cpu, const RaceLayout& layout) {
  cpu.add(layout.control(offsetof(sptelab_race_control, holders)), ~uint64_t{0});
}

// coherence: lock, read-modify-write the counter, unlock, count it.
inline void coherence_worker(auto& cpu, const RaceLayout& layout, uint32_t id) {
  uint64_t done = 0;
  while (!stop_requested(cpu, layout)) {
    if (!take_lock(cpu, layout, id + 1)) break;
    enter_critical(cpu, layout);
    cpu.store(layout.counter(), cpu.load(layout.counter()) + 1);
    leave_critical(cpu, layout);
    cpu.store(layout.lock(), 0);
    cpu.store(layout.done(id), ++done);
  }
}

// coherence-lockfree: no lock; an atomic increment of this worker's own
// slot in the target page, then count it; `between_bursts` runs after every
// kLockfreeBurst increments.
inline constexpr uint64_t kLockfreeBurst = 256;
inline void lockfree_worker(auto& cpu, const RaceLayout& layout, uint32_t id,
                            auto&& between_bursts) {
  uint64_t done = 0;
  while (!stop_requested(cpu, layout)) {
    cpu.add(layout.count(id), 1);
    cpu.store(layout.done(id), ++done);
    if (done % kLockfreeBurst == 0) between_bursts();
  }
}
inline void lockfree_worker(auto& cpu, const RaceLayout& layout, uint32_t id) {
  lockfree_worker(cpu, layout, id, [] {});
}

// stale-spte: read a page's version inside one stable epoch of its published
// value (a seqlock read); the host wrote the version through its own mapping
// before publishing it, so any other value means this vCPU reads a frame the
// host no longer maps.
inline void stale_reader(auto& cpu, const RaceLayout& layout, uint32_t id, uint64_t seed) {
  uint64_t done = 0;
  uint64_t state = seed;
  while (!stop_requested(cpu, layout)) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    uint32_t page = static_cast<uint32_t>((state >> 33) % SPTELAB_RACE_VERSION_PAGES);
    // The page is read even while it changes: faults in that window are
    // exactly the ones a racy scheme gets wrong.
    uint64_t before = cpu.load(layout.published(page));
    uint64_t seen = cpu.load(layout.version_page(page));
    uint64_t after = cpu.load(layout.published(page));
    if (after == before && !(before & SPTELAB_RACE_TRANSIENT) && seen != before) {
      cpu.add(layout.control(offsetof(sptelab_race_control, stale_reads)), 1);
    }
    cpu.store(layout.done(id), ++done);
  }
}

}  // namespace sptelab::scenarios
