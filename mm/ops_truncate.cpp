// Punching a hole in a file: fallocate(FALLOC_FL_PUNCH_HOLE). Both paths
// sptelab meets do the same two steps, and so does punch_hole:
//  - a memfd (tmpfs): shmem_fallocate calls unmap_mapping_range over the
//    hole, then shmem_truncate_range -> shmem_undo_range drops the pages;
//  - a disk file (ext4_punch_hole -> truncate_pagecache_range): one
//    unmap_mapping_range without even_cows (hole-punching keeps the private
//    copies), then truncate_inode_pages_range.
// truncate_pagecache (a shrinking truncate) is the one that unmaps twice,
// around the page-cache removal, with even_cows; a hole needs the second
// pass only for a page that a fault mapped again meanwhile, which
// truncate_cleanup_folio handles page by page (unmap_mapping_folio).
// Not era-dependent: every era runs this order. FALLOC_FL_PUNCH_HOLE came
// in 2.6.38; the 2.6.27 way to punch a hole, MADV_REMOVE ->
// vmtruncate_range, unmapped twice with even_cows and is not modelled.

#include <fmt/format.h>

#include <algorithm>
#include <shared_mutex>
#include <vector>

#include "base/error.h"
#include "mm/notify.h"
#include "mm/ops.h"
#include "mm/zap.h"

namespace sptelab::mm {
namespace {

// unmap_mapping_range(mapping, first << PAGE_SHIFT, count << PAGE_SHIFT, 0)
// -> unmap_mapping_range_tree: for every VMA showing some of file pages
// [first, first + count), unmap_mapping_range_vma over the part it shows;
// zap_page_range_single brackets each with its own MMU_NOTIFY_CLEAR range,
// whether or not a PTE is present there. The i_mmap lock is held for read
// across the zaps, as Linux holds i_mmap_rwsem.
void unmap_mapping_pages(File& file, uint64_t first, uint64_t count) {
  std::shared_lock i_mmap(file.i_mmap_lock());
  for (const FileMapping& mapping : file.mappings_of(first, count)) {
    const uint64_t zap_first = std::max(first, mapping.pgoff);
    const uint64_t zap_end = std::min(first + count, mapping.pgoff + mapping.pages());
    const uint64_t start = mapping.start + ((zap_first - mapping.pgoff) << kPageShift);
    const uint64_t end = mapping.start + ((zap_end - mapping.pgoff) << kPageShift);
    detail::zap_range(*mapping.mm, start, end, InvalidateEvent::kClear, true, false,
                      /*even_cows=*/false);
  }
}

// truncate_inode_pages_range for one page: find_lock_entries (a reference
// and the page lock), truncate_cleanup_folio (unmap it if a fault mapped it
// again, cancel_dirty_page), delete_from_page_cache_batch (the slot goes,
// Page::mapping with it), unlock, then the cache's and the lookup's
// references are dropped: the frame is freed unless a GUP pin holds it.
// The release points carry the frame and no address (the page may have
// been mapped anywhere): from the first on, the page is nobody's and its
// content is gone for good.
bool truncate_cached_page(File& file, uint64_t index) {
  PhysMem& phys = file.phys();
  const Pfn pfn = file.find_page(index);
  if (pfn == kNoPfn) return false;
  phys.lock_page(pfn);
  Page& page = phys.page(pfn);
  if (page.mapping != &file) {  // reclaimed or migrated while we waited for the lock
    phys.unlock_page(pfn);
    phys.put(pfn);
    return false;
  }
  if (page.mapcount.load(std::memory_order_acquire) > 0) unmap_mapping_pages(file, index, 1);
  page.clear(kPageDirty);
  // The blocks go with the page: a fault after the slot is empty reads zeros.
  file.punch_disk(index);
  const bool removed = file.remove_page(index, pfn);
  if (removed) page.mapping = nullptr;
  phys.unlock_page(pfn);
  if (removed) detail::inject_at(inject::Point::kHostBeforeRelease, 0, pfn);
  if (removed) phys.put(pfn);  // the page cache's reference
  phys.put(pfn);               // find_page's
  if (removed) detail::inject_at(inject::Point::kHostAfterRelease, 0, pfn);
  return removed;
}

}  // namespace

size_t punch_hole(File& file, uint64_t first_index, uint64_t count) {
  if (count == 0 || first_index >= file.size_pages() || count > file.size_pages() - first_index) {
    throw_bad_input(
        fmt::format("punch_hole({}, {}): the hole must be non-empty and within file "
                    "'{}' of {} pages",
                    first_index, count, file.name(), file.size_pages()));
  }
  detail::OpTrace op(MmOp::kPunchHole, first_index, first_index + count);
  unmap_mapping_pages(file, first_index, count);
  size_t dropped = 0;
  for (uint64_t index = first_index; index < first_index + count; ++index) {
    if (truncate_cached_page(file, index)) {
      ++dropped;
    } else {
      file.punch_disk(index);  // nothing cached: only the blocks go
    }
  }
  return dropped;
}

}  // namespace sptelab::mm
