#include "mm/phys_mem.h"

#include <fmt/format.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "base/error.h"
#include "trace/trace.h"

namespace sptelab::mm {

using trace::Kind;

PhysMem::PhysMem(size_t frames, FreedFrames freed) : freed_(freed), pages_(frames) {
  if (frames == 0) {
    throw_bad_input("physical memory needs at least one frame: pass a size of 4 KiB or more");
  }
  bytes_ = frames * kPageSize;
  memfd_ = memfd_create("sptelab-physmem", MFD_CLOEXEC);
  if (memfd_ < 0) {
    throw_environment(fmt::format("memfd_create failed: {}; sptelab needs Linux >= 3.17 with memfd",
                                  std::strerror(errno)));
  }
  if (ftruncate(memfd_, static_cast<off_t>(bytes_)) != 0) {
    int err = errno;
    close(memfd_);
    throw_environment(fmt::format("ftruncate of the {}-frame memfd failed: {}; ask for less memory",
                                  frames, std::strerror(err)));
  }
  void* base = mmap(nullptr, bytes_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
  if (base == MAP_FAILED) {
    int err = errno;
    close(memfd_);
    throw_environment(fmt::format("mmap of the {}-frame direct map failed: {}; ask for less memory",
                                  frames, std::strerror(err)));
  }
  base_ = static_cast<uint8_t*>(base);
  // A stack popped from the back: push the highest pfn first so that the
  // first allocations come out as 0, 1, 2, ... (contiguous guest RAM).
  free_list_.reserve(frames);
  for (size_t i = frames; i-- > 0;) free_list_.push_back(static_cast<Pfn>(i));
}

PhysMem::~PhysMem() {
  if (base_) ::munmap(base_, bytes_);  // the system call, not mm::munmap
  if (memfd_ >= 0) close(memfd_);
}

std::atomic_ref<uint64_t> PhysMem::word_ref(Pfn pfn, size_t word) const {
  return std::atomic_ref<uint64_t>(reinterpret_cast<uint64_t*>(direct_map(pfn))[word]);
}

uint64_t PhysMem::load_word(Pfn pfn, size_t word) const {
  return word_ref(pfn, word).load(std::memory_order_relaxed);
}

void PhysMem::store_word(Pfn pfn, size_t word, uint64_t value) {
  word_ref(pfn, word).store(value, std::memory_order_relaxed);
}

void PhysMem::fill_frame(Pfn pfn, uint64_t value) {
  for (size_t i = 0; i < kWordsPerFrame; ++i) store_word(pfn, i, value);
}

void PhysMem::copy_frame(Pfn dst, Pfn src) {
  for (size_t i = 0; i < kWordsPerFrame; ++i) store_word(dst, i, load_word(src, i));
}

void PhysMem::copy_page(Pfn dst, Pfn src) {
  copy_frame(dst, src);
  for (PageFlag flag : {kPageDirty, kPageAccessed}) {
    if (pages_[src].test(flag)) pages_[dst].set(flag);
  }
}

bool PhysMem::frames_equal(Pfn a, Pfn b) const {
  for (size_t i = 0; i < kWordsPerFrame; ++i) {
    if (load_word(a, i) != load_word(b, i)) return false;
  }
  return true;
}

bool PhysMem::is_poisoned(Pfn pfn) const {
  for (size_t i = 0; i < kWordsPerFrame; ++i) {
    if (load_word(pfn, i) != kPoison) return false;
  }
  return true;
}

void PhysMem::init_allocated(Pfn pfn, uint32_t flags) {
  Page& page = pages_[pfn];
  fill_frame(pfn, 0);
  page.mapping = nullptr;
  page.index = 0;
  page.mapcount.store(0, std::memory_order_relaxed);
  {
    std::lock_guard lock(page.rmap_lock);
    page.rmap.clear();
  }
  page.flags.store(flags & ~static_cast<uint32_t>(kPageFree), std::memory_order_relaxed);
  uint64_t generation = page.generation.fetch_add(1, std::memory_order_acq_rel) + 1;
  // Publishing the count last: a racing GUP-fast try_get() can only succeed
  // once the page is fully set up (it then re-validates its PTE and backs off).
  page.refcount.store(1, std::memory_order_release);
  trace::emit(Kind::kPageAlloc, pfn, generation);
}

// The most recently freed frame (so a stale mapping meets reused memory
// soon), except that a page table gets a frame that never held data: a
// guest keeping a stale spte to a freed data frame (a scheme without
// invalidation) may write it at any time, and must corrupt data that the
// detectors see (frame generations), never the emulated host's page tables.
Pfn PhysMem::pop_free_frame(bool for_table) {
  auto chosen = std::prev(free_list_.end());
  if (for_table) {
    auto never_data = std::find_if(free_list_.rbegin(), free_list_.rend(),
                                   [this](Pfn pfn) { return !pages_[pfn].held_data; });
    if (never_data != free_list_.rend()) chosen = std::prev(never_data.base());
  }
  const Pfn pfn = *chosen;
  free_list_.erase(chosen);
  if (!for_table) pages_[pfn].held_data = true;
  return pfn;
}

Pfn PhysMem::alloc(uint32_t flags) {
  Pfn pfn;
  {
    std::lock_guard lock(free_lock_);
    if (free_list_.empty()) return kNoPfn;
    pfn = pop_free_frame((flags & kPageTable) != 0);
    ++allocations_;
  }
  init_allocated(pfn, flags);
  return pfn;
}

std::vector<Pfn> PhysMem::alloc_contiguous(size_t count, uint32_t flags) {
  std::vector<Pfn> taken;
  if (count == 0) return taken;
  {
    std::lock_guard lock(free_lock_);
    if (free_list_.size() < count) return taken;
    std::vector<Pfn> sorted = free_list_;
    std::sort(sorted.begin(), sorted.end());
    size_t run_start = 0;
    bool found = false;
    for (size_t i = 0; i < sorted.size(); ++i) {
      if (i > 0 && sorted[i] != sorted[i - 1] + 1) run_start = i;
      if (i - run_start + 1 == count) {
        taken.assign(sorted.begin() + static_cast<std::ptrdiff_t>(run_start),
                     sorted.begin() + static_cast<std::ptrdiff_t>(i) + 1);
        found = true;
        break;
      }
    }
    if (found) {
      // Remove the run from the stack, keeping the order of the rest.
      Pfn first = taken.front();
      Pfn last = taken.back();
      std::erase_if(free_list_, [&](Pfn pfn) { return pfn >= first && pfn <= last; });
    } else {
      taken.assign(free_list_.end() - static_cast<std::ptrdiff_t>(count), free_list_.end());
      free_list_.resize(free_list_.size() - count);
      std::sort(taken.begin(), taken.end());
    }
    allocations_ += count;
    if ((flags & kPageTable) == 0) {
      for (Pfn pfn : taken) pages_[pfn].held_data = true;
    }
  }
  for (Pfn pfn : taken) init_allocated(pfn, flags);
  return taken;
}

// No lock: under `explore` a thread that held one here would yield inside
// alloc() (a scheduling point) while a second first user of the zero page
// blocked on it where the scheduler cannot see. Both allocate instead; one
// publishes its frame and the other gives its own back.
Pfn PhysMem::zero_pfn() {
  Pfn pfn = zero_pfn_.load(std::memory_order_acquire);
  if (pfn != kNoPfn) return pfn;
  // The reference from alloc() belongs to PhysMem forever, so GUP's get/put
  // on the zero page can never free it.
  const Pfn fresh = alloc(kPageZero);
  if (fresh == kNoPfn) return zero_pfn_.load(std::memory_order_acquire);
  if (zero_pfn_.compare_exchange_strong(pfn, fresh, std::memory_order_acq_rel)) return fresh;
  put(fresh);  // another first user published its frame first
  return pfn;
}

void PhysMem::get(Pfn pfn) {
  int32_t old = pages_[pfn].refcount.fetch_add(1, std::memory_order_acq_rel);
  if (old <= 0) {
    pages_[pfn].refcount.fetch_sub(1, std::memory_order_acq_rel);
    throw_internal(
        fmt::format("get_page on pfn {:#x} with refcount {}: the page is free", pfn, old));
  }
}

bool PhysMem::try_get(Pfn pfn) {
  std::atomic<int32_t>& count = pages_[pfn].refcount;
  int32_t old = count.load(std::memory_order_relaxed);
  do {
    if (old <= 0) return false;
  } while (!count.compare_exchange_weak(old, old + 1, std::memory_order_acq_rel,
                                        std::memory_order_relaxed));
  return true;
}

void PhysMem::put(Pfn pfn) {
  std::atomic<int32_t>& count = pages_[pfn].refcount;
  int32_t old = count.load(std::memory_order_relaxed);
  do {
    if (old <= 0) {
      throw_internal(fmt::format(
          "put_page on pfn {:#x} with refcount {}: double free or put of a free page", pfn, old));
    }
  } while (!count.compare_exchange_weak(old, old - 1, std::memory_order_acq_rel,
                                        std::memory_order_relaxed));
  if (old == 1) free_frame(pfn);
}

bool PhysMem::ref_freeze(Pfn pfn, int32_t expected) {
  return pages_[pfn].refcount.compare_exchange_strong(expected, 0, std::memory_order_acq_rel);
}

void PhysMem::ref_unfreeze(Pfn pfn, int32_t count) {
  pages_[pfn].refcount.store(count, std::memory_order_release);
}

void PhysMem::free_frozen(Pfn pfn) {
  int32_t count = pages_[pfn].refcount.load(std::memory_order_acquire);
  if (count != 0) {
    throw_internal(fmt::format("free of frozen pfn {:#x} whose refcount is {}", pfn, count));
  }
  free_frame(pfn);
}

void PhysMem::free_frame(Pfn pfn) {
  Page& page = pages_[pfn];
  if (page.test(kPageFree)) {
    throw_internal(fmt::format("double free of pfn {:#x} (generation {})", pfn, generation(pfn)));
  }
  int32_t mapcount = page.mapcount.load(std::memory_order_acquire);
  if (mapcount != 0) {
    throw_internal(
        fmt::format("freeing pfn {:#x} that is still mapped (mapcount {})", pfn, mapcount));
  }
  {
    std::lock_guard lock(page.rmap_lock);
    if (!page.rmap.empty()) {
      throw_internal(
          fmt::format("freeing pfn {:#x} that still has {} rmap entries", pfn, page.rmap.size()));
    }
  }
  if (freed_ == FreedFrames::kPoisoned) fill_frame(pfn, kPoison);
  page.mapping = nullptr;
  page.index = 0;
  uint64_t generation = page.generation.fetch_add(1, std::memory_order_acq_rel) + 1;
  page.flags.store(kPageFree, std::memory_order_release);
  trace::emit(Kind::kPageFree, pfn, generation);
  std::lock_guard lock(free_lock_);
  free_list_.push_back(pfn);
  ++frees_;
}

void PhysMem::lock_page(Pfn pfn) {
  // lock_page() sleeps in Linux; under `explore` the thread is runnable only
  // while the page is unlocked.
  sched::point(sched::Step{.kind = sched::Kind::kAcquire,
                           .object = &pages_[pfn].flags,
                           .label = "page_lock",
                           .detail = pfn,
                           .ready = [](const void* flags) {
                             return !(static_cast<const std::atomic<uint32_t>*>(flags)->load() &
                                      kPageLocked);
                           }});
  for (unsigned spins = 0; !trylock_page(pfn); ++spins) {
    if (sched::active()) {
      sched::relax(&pages_[pfn].flags, "page_lock");
      continue;
    }
    if (spins < 64) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

bool PhysMem::trylock_page(Pfn pfn) {
  uint32_t old = pages_[pfn].flags.fetch_or(kPageLocked, std::memory_order_acquire);
  return !(old & kPageLocked);
}

void PhysMem::unlock_page(Pfn pfn) {
  uint32_t old =
      pages_[pfn].flags.fetch_and(~static_cast<uint32_t>(kPageLocked), std::memory_order_release);
  if (!(old & kPageLocked))
    throw_internal(fmt::format("unlock of pfn {:#x} that is not locked", pfn));
}

void PhysMem::mark_dirty(Pfn pfn) {
  uint32_t old = pages_[pfn].flags.fetch_or(kPageDirty, std::memory_order_acq_rel);
  if (!(old & kPageDirty)) trace::emit(Kind::kPageDirty, pfn);
}

PhysMemStats PhysMem::stats() const {
  PhysMemStats stats;
  stats.frames = pages_.size();
  stats.zero_page = zero_pfn_.load(std::memory_order_acquire) != kNoPfn ? 1 : 0;
  std::lock_guard lock(free_lock_);
  stats.free = free_list_.size();
  stats.allocations = allocations_;
  stats.frees = frees_;
  return stats;
}

}  // namespace sptelab::mm
