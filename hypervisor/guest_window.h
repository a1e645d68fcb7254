// The guest window: the virtual range that backs the VM's one memslot. Page
// gfn of the window maps frame pfn of the physical-memory memfd exactly while
// the emulated spte for gfn is present (read-only while it is read-only) and
// is inaccessible otherwise. Because every change is an mmap or mprotect, the
// real kernel's MMU notifier zaps the real shadow PTEs before update()
// returns: the real shadow MMU stays a cache of sptelab's emulated sptes.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "base/mutex.h"
#include "mm/phys_mem.h"
#include "spte/mirror.h"

namespace sptelab::hypervisor {

struct GuestWindowStats {
  uint64_t maps = 0;      // mmap(MAP_FIXED|MAP_SHARED) of a frame run
  uint64_t protects = 0;  // mprotect of a run already backed by the right frames
  uint64_t unmaps = 0;    // runs made inaccessible
  uint64_t skipped = 0;   // updates that changed nothing
};

class GuestWindow final : public spte::Mirror {
 public:
  // Reserves gfn_count pages, all inaccessible. Throws Error(kEnvironment)
  // if the address space cannot be reserved.
  GuestWindow(const mm::PhysMem& phys, uint64_t gfn_count);
  ~GuestWindow() override;
  GuestWindow(const GuestWindow&) = delete;
  GuestWindow& operator=(const GuestWindow&) = delete;

  // Takes effect before returning. A run of consecutive frames becomes one
  // mapping (the kernel merges neighbouring runs whose frames are contiguous
  // too), so a window of contiguous frames costs a handful of VMAs however
  // often it changes (vm.max_map_count is 65530). Throws Error(kEnvironment)
  // if the kernel refuses the mapping (out of VMAs) and Error(kInternal) for
  // a range outside the window or a frame outside physical memory.
  void update(const spte::MirrorUpdate& update) override;

  // Whether mapping a run also fills the window's host page table for it
  // (MAP_POPULATE). An spte that a fault installs (or prefetches) is usable
  // by real hardware at once; with the window as that hardware, populating
  // is what makes it so, instead of leaving one real page fault per page to
  // the kernel. Off by default, and for the plain-memslot baseline
  // (DirectMemory), whose point is that the real KVM faults pages in itself.
  // Set before the first update.
  void set_populate(bool on);

  uint8_t* base() const { return base_; }
  uint64_t gfn_count() const { return gfn_count_; }
  uint64_t size_bytes() const { return gfn_count_ << mm::kPageShift; }

  // What the window allows on gfn now, and the frame behind it (kNoPfn if
  // it was never mapped). Diagnostics and tests.
  spte::Access access(spte::Gfn gfn) const;
  mm::Pfn pfn(spte::Gfn gfn) const;
  GuestWindowStats stats() const;

  // Copies guest memory the window maps now from its frames' direct map,
  // under the window's lock so no update can unmap (and the host free) a
  // frame meanwhile. Never faults and changes no spte: for tracing. False
  // if any page of the range is inaccessible.
  bool read_mapped(uint64_t gpa, void* out, size_t len) const;

 private:
  // Callers hold mutex_.
  bool already(const spte::MirrorUpdate& update) const;
  bool backed_by(const spte::MirrorUpdate& update) const;
  void protect(uint64_t gfn, uint64_t count, int prot);
  void map(const spte::MirrorUpdate& update, int prot);

  const mm::PhysMem& phys_;
  uint64_t gfn_count_;
  uint8_t* base_ = nullptr;

  // Both arrays under mutex_. A page made inaccessible keeps its frame
  // mapped with PROT_NONE, so mapping the same frame again is an mprotect.
  // Last in the lock order: updates arrive under mmu_lock.
  mutable Mutex mutex_{"guest_window", LockRank::kMirror};
  std::vector<mm::Pfn> backing_;
  std::vector<spte::Access> access_;
  bool populate_ = false;

  std::atomic<uint64_t> maps_{0}, protects_{0}, unmaps_{0}, skipped_{0};
};

}  // namespace sptelab::hypervisor
