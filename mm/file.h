// A shared file of the emulated host: a page cache (index -> frame) and a
// "disk" copy of every page. Writeback stores a page's content on the disk
// copy and a page read back after reclaim comes from it, so a test can tell
// whether dirty data was lost on the way.
//
// Until a page is written back its disk content is a pattern: every 8-byte
// word is pattern_word(id, index, 0), so pages of different files and indices
// are told apart by content alone. Ids are per PhysMem (new_file_id).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "mm/phys_mem.h"
#include "mm/types.h"

namespace sptelab::mm {

class Mm;

// One VMA that maps a file (an entry of Linux's address_space::i_mmap):
// virtual [start, end) of `mm` shows file pages from `pgoff` on.
struct FileMapping {
  Mm* mm = nullptr;
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t pgoff = 0;
  bool shared = false;

  uint64_t pages() const { return (end - start) >> kPageShift; }
  bool operator==(const FileMapping&) const = default;
};

class File {
 public:
  // Throws Error(kBadInput) for a file of 0 pages.
  File(PhysMem& phys, std::string name, uint64_t size_pages);
  // Drops the page cache's references. A page still mapped keeps its frame
  // until it is unmapped, as an orphan (Page::mapping cleared): it can no
  // longer be written back or reclaimed, so destroy the Mms first. An Mm
  // that still maps the file forgets it (Mm::forget_file).
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& name() const { return name_; }
  uint32_t id() const { return id_; }
  uint64_t size_pages() const { return size_pages_; }
  PhysMem& phys() const { return phys_; }

  // (file id, page index, version) packed into one word: bits 63..48 id,
  // 47..16 index, 15..0 version.
  static uint64_t pattern_word(uint32_t file_id, uint64_t index, uint64_t version);

  // --- page cache (Linux: filemap_get_folio / __filemap_add_folio) ---
  // Finds page `index`, reading it from disk into a new frame if it is not
  // cached. Returns it with a reference for the caller; kNoPfn if no frame is
  // free. Throws Error(kBadInput) for an index beyond the file.
  Pfn get_page(uint64_t index);
  // The cached page with a reference for the caller, or kNoPfn.
  Pfn find_page(uint64_t index);
  // The cached frame without taking a reference (a hint: it can change).
  Pfn cached_pfn(uint64_t index) const;
  size_t cached_pages() const;
  std::vector<Pfn> cached_frames() const;  // every cached frame (audits)

  // __remove_mapping: drops page `index` from the cache if it is still `pfn`
  // and its refcount is exactly `expected_refs` (the cache's and the
  // caller's) and it is clean. On success the refcount is frozen at 0: the caller frees the
  // frame with PhysMem::free_frozen.
  bool remove_frozen(uint64_t index, Pfn pfn, int32_t expected_refs);
  // Migration of a cached page (folio_migrate_mapping): under the cache lock,
  // freeze old_pfn at `expected_refs` (the cache's and the migrator's), copy
  // content and state to new_pfn, point the slot at new_pfn (which takes over
  // the cache's reference: its alloc() reference) and unfreeze old_pfn with
  // the migrator's reference only. Both pages are locked by the caller.
  // False (nothing changed) if the slot is not old_pfn or a pin exists.
  // Doing it all under the lock means a lookup never meets a frozen page.
  bool migrate_page(uint64_t index, Pfn old_pfn, Pfn new_pfn, int32_t expected_refs);
  // Truncation (page_cache_delete, from truncate_inode_pages_range): drops
  // page `index` from the cache if it is still `pfn`, whatever its other
  // references (a GUP pin keeps the frame alive as an orphan). The caller
  // holds the page lock and now owns the cache's reference. False if the
  // slot holds something else.
  bool remove_page(uint64_t index, Pfn pfn);

  // --- i_mmap (address_space::i_mmap and its i_mmap_rwsem) ---
  // Mm keeps its entries current: it replaces them, with its mmap_lock held
  // for write, whenever its VMAs of this file change (vma_link,
  // __split_vma, vma_merge, unlink_file_vma).
  void set_mappings(Mm* mm, std::vector<FileMapping> mappings);
  // Every mapping that shows some of the file pages [first, first + count),
  // by first file page (vma_interval_tree_foreach's order). The caller holds i_mmap_lock() for
  // read, so that no mapping changes and no Mm goes away while it uses them.
  std::vector<FileMapping> mappings_of(uint64_t first, uint64_t count) const;
  std::shared_mutex& i_mmap_lock() const { return i_mmap_lock_; }

  // --- disk ---
  // Writeback of a page: the frame's content becomes the disk copy.
  void write_disk(uint64_t index, Pfn pfn);
  uint64_t disk_word(uint64_t index, size_t word) const;
  // The blocks of page `index` are deallocated (a punched hole): the page
  // reads as zeros from now on.
  void punch_disk(uint64_t index);
  uint64_t writebacks() const { return writebacks_.load(std::memory_order_relaxed); }

 private:
  void check_index(uint64_t index) const;
  void read_disk_locked(uint64_t index, Pfn pfn);

  PhysMem& phys_;
  std::string name_;
  uint32_t id_;
  uint64_t size_pages_;
  mutable std::mutex cache_lock_;  // Linux's i_pages lock
  std::vector<Pfn> cache_;         // index -> pfn or kNoPfn
  mutable std::mutex disk_lock_;
  std::vector<std::unique_ptr<uint64_t[]>> disk_;  // nullptr: the version-0 pattern
  std::atomic<uint64_t> writebacks_{0};
  // A plain lock, not a scheduling point of `explore`: every VMA change
  // takes it, and making it one would grow every explored scenario's
  // schedules. punch_hole holds it across a zap (whose steps are scheduling
  // points), which is safe only while nothing else takes it in the same
  // execution: the explored punch-hole cells change no VMA. A scenario that
  // truncates while it changes VMAs must make it a base/rwlock.h RwLock.
  mutable std::shared_mutex i_mmap_lock_;
  std::vector<FileMapping> mappings_;  // under i_mmap_lock_
};

}  // namespace sptelab::mm
