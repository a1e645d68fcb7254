// The operations of the emulated host MM. Each follows Linux's order of lock,
// PTE change, TLB flush, notifier point and page release (see mm/README.md
// for the table), emits kMmOpBegin/kMmOpEnd around itself and passes the
// inject points kHostBeforePtl, kHostAfterPteClear, kHostAfterPtlUnlock,
// kHostBeforeRelease and kHostAfterRelease where they apply.
//
// Misuse (no VMA where one is required, unaligned addresses) throws
// Error(kBadInput); a race that makes an operation pointless (the page went
// away meanwhile) is a normal `false`.
#pragma once

#include <cstddef>
#include <cstdint>

#include "mm/fault.h"
#include "mm/file.h"
#include "mm/mm.h"

namespace sptelab::mm {

// --- page migration (migrate_pages: try_to_migrate_one,
// move_to_new_folio, remove_migration_ptes) ---
// Moves the page mapped at addr to a new frame: every mapping becomes a
// migration entry (faults on it wait), the content and dirty state are
// copied, the entries are replaced by the new pfn, the old frame is freed.
// False if nothing movable is mapped there, no frame is free, or the page
// has extra references (a GUP pin): then every mapping is restored.
bool migrate_page(Mm& mm, uint64_t addr);
// The same by frame, through the rmap (the caller need not hold a reference).
bool migrate_pfn(PhysMem& phys, Pfn pfn);

// --- remap_file_pages-style populate over a present PTE (2008's
// install_file_pte), with mmap_lock held for read only ---
// The PTE at addr (a shared file mapping) is cleared and flushed (its dirty
// bit goes to the old page) and page new_index of the file is installed
// read-only (PROT_NONE in a PROT_NONE VMA). A none PTE is just populated,
// inside the same notifier points. A migration entry is waited out first.
bool remap_file_page(Mm& mm, uint64_t addr, uint64_t new_index);

// --- COW break: the write-fault path on one address (do_wp_page ->
// wp_page_copy or wp_page_reuse), with mmap_lock for read ---
FaultResult break_cow(Mm& mm, uint64_t addr);

// --- zap with an mmu_gather batch (zap_pte_range + tlb_finish_mmu) ---
// MADV_DONTNEED under mmap_lock for read. False if part of the range has no
// VMA (Linux: -ENOMEM); the mapped parts are zapped anyway.
bool madvise_dontneed(Mm& mm, uint64_t start, uint64_t len);
// munmap under mmap_lock for write: the VMAs go, then the PTEs (kUnmap).
// False if nothing was mapped in the range.
bool munmap(Mm& mm, uint64_t start, uint64_t len);

// --- mprotect (change_protection, kProtectionVma) ---
// PROT_NONE keeps the pages mapped but inaccessible. Adding write permission
// leaves PTEs read-only: the next write faults (reuse, COW or write-notify).
// False (nothing changed) if part of the range has no VMA.
bool mprotect(Mm& mm, uint64_t start, uint64_t len, uint32_t prot);

// --- dirty tracking ---
// folio_mkclean: every shared mapping of the frame is write-protected and
// cleaned with ptep_clear_flush semantics (page_vma_mkclean_one,
// kProtectionPage); a dirty PTE marks the page dirty. Returns whether any PTE
// was dirty. Linux requires the page lock; writeback_page holds it.
bool page_mkclean(PhysMem& phys, Pfn pfn);
// The range walker of the mapping dirty helpers (wp_shared_mapping_range +
// clean_record_shared_mapping_range, through walk_page_range's pte_entry),
// for one address space: every present PTE of the shared file mappings in
// [start, start + len) that is writable or dirty is write-protected and
// cleaned (ptep_modify_prot_start/commit, kProtectionPage), a dirty one
// marks its page dirty (the record those helpers keep), and the range is
// flushed after the walk, before the "after unlock" point. Private and
// anonymous mappings in the range are skipped. Mm::walk_pte_lock() says
// whether the per-PTE step runs under the PTL (mm/mm.h). Returns how many
// PTEs were dirty.
size_t wp_clean_range(Mm& mm, uint64_t start, uint64_t len);
// Writes back page `index` if it is cached: lock, mkclean, and if the page is
// dirty clear it and store its content on the file's disk copy. Returns
// whether something was written.
bool writeback_page(File& file, uint64_t index);

// --- KSM (try_to_merge_two_pages: write_protect_page + replace_page) ---
// If the anon pages at addr_a and addr_b hold the same content, both are
// write-protected and b's PTE is replaced by a's page, which becomes a KSM
// page (a write to it then copies). False if the pages differ, are not
// mergeable anon pages, are pinned, or changed under the merge.
bool ksm_merge(Mm& mm, uint64_t addr_a, uint64_t addr_b);

// --- reclaim (shrink_folio_list) ---
enum class ReclaimResult : uint8_t {
  kReclaimed,       // unmapped, written back if dirty, dropped, frame freed
  kReferenced,      // young: kept (page_referenced found an access)
  kBusy,            // locked, pinned, or mapped again meanwhile
  kNotReclaimable,  // free, anon (no swap), zero page, page table
};
const char* reclaim_result_name(ReclaimResult result);
// Reclaims a page-cache frame: page_referenced (clear_flush_young per
// mapping, with the notifier) unless honor_references is false, then
// try_to_unmap every mapping (dirty -> page), pageout if dirty, remove from
// the page cache with the refcount frozen, free.
ReclaimResult reclaim_page(PhysMem& phys, Pfn pfn, bool honor_references = true);

// --- punch hole (fallocate(FALLOC_FL_PUNCH_HOLE): shmem_fallocate for a
// memfd, truncate_pagecache_range for a disk file such as ext4's) ---
// Removes file pages [first_index, first_index + count): every VMA of every
// address space that shows part of the hole is zapped over that part, each
// in its own notifier bracket (unmap_mapping_range, MMU_NOTIFY_CLEAR; the
// anonymous copies in private mappings stay, even_cows = 0); then each
// cached page of the hole is locked, unmapped again if a fault mapped it
// meanwhile, dropped from the page cache with its dirty state and freed
// unless something else holds it (truncate_inode_pages_range); the hole
// reads as zeros afterwards. Returns how many cached pages were dropped.
// Throws Error(kBadInput) for an empty range or one beyond the file.
// A fault that found a page in the cache before the truncation dropped it
// rechecks Page::mapping under the page lock and looks the index up again
// (filemap_fault; mm/fault.cpp), so no PTE is left to a dropped page; a GUP
// pin taken before keeps the dropped frame alive, unmapped, until it is put.
size_t punch_hole(File& file, uint64_t first_index, uint64_t count);

// --- aging ---
// Idle-page tracking over [start, end) (page_idle_clear_pte_refs_one): per
// mapped page, under the PTL, clear the PTE's accessed bit and call
// clear_young. Returns how many pages were young.
size_t age_range(Mm& mm, uint64_t start, uint64_t end);
// khugepaged's scan: accessed bit of the PTE, or test_young, under the PTL.
bool test_young(Mm& mm, uint64_t addr);

}  // namespace sptelab::mm
