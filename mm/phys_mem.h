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

#include "base/spinlock.h"
#include "mm/types.h"

namespace sptelab::mm {

class Mm;
class File;

// Where a frame is mapped by a host page table (reverse map entry).
struct RmapEntry {
  Mm* mm = nullptr;
  uint64_t addr = 0;
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
  File* mapping = nullptr;              // page-cache owner, nullptr for anon
  uint64_t index = 0;                   // page offset in mapping
  SpinLock rmap_lock;
  std::vector<RmapEntry> rmap;  // under rmap_lock
  SpinLock ptl;                 // split page-table lock, when kPageTable

  bool test(PageFlag flag) const { return flags.load(std::memory_order_acquire) & flag; }
  void set(PageFlag flag) { flags.fetch_or(flag, std::memory_order_acq_rel); }
  void clear(PageFlag flag) {
    flags.fetch_and(~static_cast<uint32_t>(flag), std::memory_order_acq_rel);
  }
};

struct PhysMemStats {
  size_t frames = 0;
  size_t free = 0;
  uint64_t allocations = 0;
  uint64_t frees = 0;
};

class PhysMem {
 public:
  // Poison written into a frame when it is freed: a guest or host thread that
  // reads it through a stale mapping sees this value.
  static constexpr uint64_t kPoison = 0xdead4ead5f7e1abull;

  explicit PhysMem(size_t frames);  // throws Error (kEnvironment) if memfd/mmap fail
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
  // Allocates `count` frames at consecutive pfns if possible (guest RAM).
  std::vector<Pfn> alloc_contiguous(size_t count, uint32_t flags = 0);

  // Reference counting: get_page / put_page. put() frees the frame when the
  // count reaches zero; it checks the frame is not mapped (mapcount 0) and
  // reports a double free or a free of a mapped page as an internal error.
  void get(Pfn pfn);
  bool try_get(Pfn pfn);  // get_page_unless_zero, for GUP-fast
  void put(Pfn pfn);

  uint64_t generation(Pfn pfn) const {
    return pages_[pfn].generation.load(std::memory_order_acquire);
  }
  bool is_free(Pfn pfn) const { return pages_[pfn].test(kPageFree); }
  PhysMemStats stats() const;

 private:
  void free_frame(Pfn pfn);

  int memfd_ = -1;
  uint8_t* base_ = nullptr;
  std::vector<Page> pages_;
  mutable std::mutex free_lock_;
  std::vector<Pfn> free_list_;  // a stack: recently freed frames are reused first
  uint64_t allocations_ = 0;
  uint64_t frees_ = 0;
};

}  // namespace sptelab::mm
