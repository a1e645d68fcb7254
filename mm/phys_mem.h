// Physical memory of the emulated host: one memfd of N frames, mapped once as
// the "direct map", and a Page record per frame. The hypervisor maps frames of
// the same memfd into the guest window, so a guest access lands on the frame
// an emulated spte names.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "base/rwlock.h"
#include "base/spinlock.h"
#include "mm/types.h"

namespace sptelab::mm {

class Mm;
class File;

// Where a frame is mapped by a host page table (reverse map entry).
struct RmapEntry {
  Mm* mm = nullptr;
  uint64_t addr = 0;
  // The mapping is in a shared (VM_SHARED) VMA. Rmap walkers cannot look at
  // VMAs (they never take mmap_lock), and page_mkclean only touches shared
  // mappings, so the entry carries it (Linux reaches the vma from the rmap).
  bool shared = false;
  bool operator==(const RmapEntry&) const = default;
};

enum PageFlag : uint32_t {
  kPageDirty = 1u << 0,
  kPageAccessed = 1u << 1,
  kPageAnon = 1u << 2,
  kPageLocked = 1u << 3,  // page lock held (migration, reclaim, writeback)
  kPageTable = 1u << 4,   // frame holds a page table
  kPageFree = 1u << 5,    // on the free list, poisoned
  kPageKsm = 1u << 6,     // a KSM-merged page
  kPageZero = 1u << 7,    // the shared zero page
  kPageWriteback = 1u << 8,
};

// struct page: never freed, even when its frame is (GUP-fast relies on that).
struct Page {
  std::atomic<int32_t> refcount{0};
  std::atomic<int32_t> mapcount{0};  // number of PTEs mapping the frame
  std::atomic<uint32_t> flags{kPageFree};
  std::atomic<uint64_t> generation{0};  // bumped on every allocation and free
  // Page-cache owner (nullptr for anon) and page offset in it. Written while
  // the page is not yet published or under the page lock; read under the page
  // lock or at quiescent points.
  File* mapping = nullptr;
  uint64_t index = 0;
  SpinLock rmap_lock{"rmap_lock"};
  std::vector<RmapEntry> rmap;          // under rmap_lock
  SpinLock ptl{"ptl", LockRank::kPtl};  // split page-table lock, when kPageTable
  bool held_data = false;               // ever allocated for data (under PhysMem's free lock)

  bool test(PageFlag flag) const { return flags.load(std::memory_order_acquire) & flag; }
  void set(PageFlag flag) { flags.fetch_or(flag, std::memory_order_acq_rel); }
  void clear(PageFlag flag) {
    flags.fetch_and(~static_cast<uint32_t>(flag), std::memory_order_acq_rel);
  }
};

struct PhysMemStats {
  size_t frames = 0;
  size_t free = 0;
  size_t zero_page = 0;  // 1 once the shared zero page exists (it is never freed)
  uint64_t allocations = 0;
  uint64_t frees = 0;
};

// What free_frame() leaves in a frame.
//  kPoisoned  kPoison in every word (Linux's CONFIG_PAGE_POISONING): a thread
//             that reads the frame through a stale mapping sees it, and
//             mm::audit reports a freed frame that no longer holds it (a
//             write through a stale host TLB entry). It costs a write of the
//             whole frame per free (bench range_zap's poison_us).
//  kAsIs      the content stays, as Linux frees with init_on_free off. A
//             stale spte is still caught by the frame's generation (spte
//             faults, zaps and audits compare it); only the poison check of
//             mm::audit is lost. For stacks that run no mm::audit.
enum class FreedFrames : uint8_t { kPoisoned, kAsIs };

class PhysMem {
 public:
  // Poison written into a frame when it is freed: a guest or host thread that
  // reads it through a stale mapping sees this value.
  static constexpr uint64_t kPoison = 0xdead4ead5f7e1abull;

  static constexpr size_t kWordsPerFrame = kPageSize / sizeof(uint64_t);

  // Throws Error: kBadInput for 0 frames, kEnvironment if memfd/mmap fail.
  explicit PhysMem(size_t frames, FreedFrames freed = FreedFrames::kPoisoned);
  bool poisons_freed_frames() const { return freed_ == FreedFrames::kPoisoned; }
  ~PhysMem();
  PhysMem(const PhysMem&) = delete;
  PhysMem& operator=(const PhysMem&) = delete;

  int memfd() const { return memfd_; }
  size_t frame_count() const { return pages_.size(); }
  uint64_t frame_offset(Pfn pfn) const { return pfn << kPageShift; }  // offset in memfd
  uint8_t* direct_map(Pfn pfn) const { return base_ + (pfn << kPageShift); }
  bool valid(Pfn pfn) const { return pfn < pages_.size(); }

  Page& page(Pfn pfn) { return pages_[pfn]; }
  const Page& page(Pfn pfn) const { return pages_[pfn]; }
  Pfn pfn_of(const Page& page) const { return static_cast<Pfn>(&page - pages_.data()); }

  // Allocates one frame, zero-filled, refcount 1, given flags set. Returns
  // kNoPfn when memory is exhausted.
  Pfn alloc(uint32_t flags = 0);
  // Allocates `count` frames, at consecutive pfns if such a run is free
  // (guest RAM: fewer VMAs in the guest window), otherwise the next free
  // frames; sorted ascending. Empty when fewer than `count` frames are free.
  std::vector<Pfn> alloc_contiguous(size_t count, uint32_t flags = 0);

  // The shared zero page: allocated on first use, read-only, never freed,
  // not counted in mapcount or rmap (Linux: vm_normal_page() is NULL for it).
  // kNoPfn if memory is exhausted.
  Pfn zero_pfn();
  bool is_zero_pfn(Pfn pfn) const {
    return pfn == zero_pfn_.load(std::memory_order_acquire) && pfn != kNoPfn;
  }

  // Reference counting: get_page / put_page. put() frees the frame when the
  // count reaches zero; it checks the frame is not mapped (mapcount 0) and
  // reports a double free or a free of a mapped page as an internal error.
  void get(Pfn pfn);
  bool try_get(Pfn pfn);  // get_page_unless_zero, for GUP-fast
  void put(Pfn pfn);

  // folio_ref_freeze / unfreeze: swap the count `expected` for 0 so that no
  // new reference (GUP-fast's try_get) can appear while a page is moved or
  // dropped from the page cache; free_frozen() then frees it.
  bool ref_freeze(Pfn pfn, int32_t expected);
  void ref_unfreeze(Pfn pfn, int32_t count);
  void free_frozen(Pfn pfn);

  // The page lock (lock_page / unlock_page). Linux's sleeps; this one yields.
  void lock_page(Pfn pfn);
  bool trylock_page(Pfn pfn);
  void unlock_page(Pfn pfn);

  // set_page_dirty: records that the content differs from the backing copy.
  void mark_dirty(Pfn pfn);

  // Frame content. Word-sized relaxed atomics: host CPUs, GUP holders and
  // guests may touch a frame concurrently (by design in racy scenarios), and
  // the emulator itself must stay free of data races for TSan.
  uint64_t load_word(Pfn pfn, size_t word) const;
  void store_word(Pfn pfn, size_t word, uint64_t value);
  void fill_frame(Pfn pfn, uint64_t value);
  void copy_frame(Pfn dst, Pfn src);
  // Migration's copy: content plus the dirty and accessed state.
  void copy_page(Pfn dst, Pfn src);
  bool frames_equal(Pfn a, Pfn b) const;
  bool is_poisoned(Pfn pfn) const;  // every word still kPoison

  // Held shared by every rmap walker (migration, page_mkclean, reclaim) for
  // the whole walk and exclusively by an exiting Mm, so that an Mm named by
  // an rmap entry stays alive while a walker uses it (Linux: the anon_vma and
  // i_mmap locks that exit_mmap's unlink takes).
  RwLock& rmap_walk_lock() { return rmap_walk_lock_; }

  uint64_t generation(Pfn pfn) const {
    return pages_[pfn].generation.load(std::memory_order_acquire);
  }
  bool is_free(Pfn pfn) const { return pages_[pfn].test(kPageFree); }
  PhysMemStats stats() const;

  // An id for a new File whose pages live in this memory: 1, 2, ... in
  // creation order. Unique within one emulated host, which is where pages
  // must be told apart by content (File::pattern_word), and the same in
  // every run: a process that builds many hosts (the explorer builds one
  // per execution) must not see page contents depend on how many it built
  // before.
  uint32_t new_file_id() { return next_file_id_.fetch_add(1, std::memory_order_relaxed); }

 private:
  void init_allocated(Pfn pfn, uint32_t flags);
  void free_frame(Pfn pfn);
  std::atomic_ref<uint64_t> word_ref(Pfn pfn, size_t word) const;

  int memfd_ = -1;
  FreedFrames freed_ = FreedFrames::kPoisoned;
  uint8_t* base_ = nullptr;
  size_t bytes_ = 0;
  std::vector<Page> pages_;
  Pfn pop_free_frame(bool for_table);  // under free_lock_
  mutable std::mutex free_lock_;
  std::vector<Pfn> free_list_;  // a stack: recently freed frames are reused first
  uint64_t allocations_ = 0;    // under free_lock_
  uint64_t frees_ = 0;          // under free_lock_
  std::atomic<Pfn> zero_pfn_{kNoPfn};
  RwLock rmap_walk_lock_{"rmap_walk_lock"};
  std::atomic<uint32_t> next_file_id_{1};
};

}  // namespace sptelab::mm
