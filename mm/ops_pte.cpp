// Operations on the PTEs of one address space under its mmap_lock:
// remap_file_pages-style populate, COW break, mprotect, the write-protect
// and clean walker, aging.

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <vector>

#include "base/error.h"
#include "base/mutation.h"
#include "mm/notify.h"
#include "mm/ops.h"
#include "mm/zap.h"

namespace sptelab::mm {

using inject::Point;

namespace {

void check_page_aligned(uint64_t addr, const char* op) {
  if (addr % kPageSize != 0 || addr >= kUserAddressEnd) {
    throw_bad_input(fmt::format("{}: address {:#x} must be page aligned and below {:#x}", op, addr,
                                kUserAddressEnd));
  }
}

// The PTE of `pte`'s page (or of a migration entry) under `prot`. PROT_NONE
// keeps the page mapped but not present; write permission is only ever
// removed here, never added (the next write faults instead).
Pte apply_prot(Pte pte, uint32_t prot) {
  uint64_t raw = pte.raw();
  if (prot == kProtNone) {
    raw = (raw & ~(Pte::kPresent | Pte::kWritable)) | Pte::kProtNone;
  } else {
    raw &= ~Pte::kProtNone;
    if (!(prot & kProtWrite)) raw &= ~Pte::kWritable;
    if (!pte.is_migration()) raw |= Pte::kPresent | Pte::kUser;
  }
  return Pte(raw);
}

// A read-only entry for a freshly populated page of a VMA with `prot`.
Pte populated_pte(Pfn pfn, uint32_t prot) {
  return apply_prot(Pte::make(pfn, false).with(Pte::kAccessed), prot);
}

template <typename Fn>
void for_each_table(Mm& mm, uint64_t start, uint64_t end, Fn&& fn) {
  for (uint64_t table_start = start; table_start < end;) {
    const uint64_t table_end = std::min(end, (table_start & ~(kPteTableSpan - 1)) + kPteTableSpan);
    if (const PteSlot first = mm.walk(table_start)) fn(first, table_start, table_end);
    table_start = table_end;
  }
}

const Vma& shared_file_vma(const Mm& mm, uint64_t addr) {
  const Vma* vma = mm.find_vma(addr);
  if (!vma || vma->anon() || !vma->shared) {
    throw_bad_input(fmt::format("remap_file_page: {:#x} is not in a shared file mapping", addr));
  }
  return *vma;
}

// remap_file_pages since 4.0 (mm/mmap.c): under mmap_lock for write, do_mmap
// of the same file at new_index with MAP_FIXED over the page. __mmap_region
// cuts the old VMA around it (vms_gather_munmap_vmas, with the
// __split_huge_pmd brackets), zaps its PTE under one MMU_NOTIFY_UNMAP range
// (vms_clean_up_area -> unmap_vmas), and maps the new VMA, merged with its
// neighbours where the file offsets continue. After mmap_write_unlock,
// MAP_POPULATE faults the page in (mm_populate: a read fault in a shared
// mapping, so the new PTE is read-only).
bool remap_emulated(Mm& mm, uint64_t addr, uint64_t new_index) {
  const uint64_t end = addr + kPageSize;
  {
    MmapWriteGuard lock(mm);
    Vma remapped = shared_file_vma(mm, addr);
    if (new_index >= remapped.file->size_pages()) {
      throw_bad_input(fmt::format("remap_file_page: file page {} is beyond the file's {} pages",
                                  new_index, remapped.file->size_pages()));
    }
    mm.remove_vmas(addr, end);
    detail::zap_range(mm, addr, end, InvalidateEvent::kUnmap, true);
    remapped.start = addr;
    remapped.end = end;
    remapped.pgoff = new_index;
    mm.add_vma(remapped);
    mm.merge_vmas(addr, end);
  }
  MmapReadGuard lock(mm);
  while (handle_mm_fault(mm, addr, false) == FaultResult::kRetry) {
  }
  return true;
}

// 2.6.2x install_file_pte / populate_range over a present PTE, with the
// notifier points of ptep_clear_flush_notify (linux-mm, January 2008,
// Andrea Arcangeli, "[PATCH] mmu notifiers").
bool remap_nonlinear(Mm& mm, uint64_t addr, uint64_t new_index) {
  PhysMem& phys = mm.phys();
  MmapReadGuard lock(mm);
  const Vma* vma = &shared_file_vma(mm, addr);
  const PteSlot slot = mm.walk_alloc(addr);
  if (!slot) return false;
  const Pfn fresh = vma->file->get_page(new_index);  // throws for an index beyond the file
  if (fresh == kNoPfn) return false;
  const Pte entry = populated_pte(fresh, vma->prot);
  for (;;) {
    const InvalidateRange range = detail::page_range(mm, addr, InvalidateEvent::kClear);
    detail::notify_before(mm, range);
    detail::inject_at(Point::kHostBeforePtl, addr, fresh);
    Pte old;
    bool migrating = false;
    {
      PtlGuard ptl(phys, slot.table);
      const Pte current = Mm::load_pte(slot);
      if (current.is_migration()) {
        migrating = true;
        old = current;
      } else {
        if (current.maps_page()) {
          old = detail::clear_flush_notify(mm, slot, addr, current.pfn(), InvalidateEvent::kClear);
          if (old.dirty()) phys.mark_dirty(old.pfn());
        }
        rmap_add(phys, fresh, RmapEntry{&mm, addr, true});
        mm.install_pte(slot, addr, entry);
        if (old.maps_page()) rmap_remove(phys, old.pfn(), &mm, addr);
      }
    }
    detail::unlock_release_notify(mm, range, fresh,
                                  !migrating && old.maps_page() ? old.pfn() : kNoPfn);
    if (!migrating) return true;
    wait_for_migration(mm, slot, old);
  }
}

// The range a walk changed, flushed once after it (flush_tlb_range in the
// dirty helpers' post_vma callback, mprotect's tlb_finish_mmu).
struct FlushRange {
  uint64_t start = std::numeric_limits<uint64_t>::max();
  uint64_t end = 0;
  void track(uint64_t addr) {
    start = std::min(start, addr);
    end = std::max(end, addr + kPageSize);
  }
  bool owed() const { return end > start; }
};

// change_protection -> change_pte_range over one VMA's piece:
// ptep_modify_prot_start (clear), the in-PTL point, commit the new PTE
// (A/D kept). The flush is owed to the caller's mmu_gather: `changed`
// collects the range.
void change_protection(Mm& mm, uint64_t start, uint64_t end, uint32_t prot, FlushRange& changed) {
  PhysMem& phys = mm.phys();
  for_each_table(mm, start, end, [&](PteSlot first, uint64_t table_start, uint64_t table_end) {
    detail::inject_at(Point::kHostBeforePtl, table_start);
    {
      PtlGuard ptl(phys, first.table);
      for (uint64_t addr = table_start; addr < table_end; addr += kPageSize) {
        const PteSlot slot = Mm::slot_at(first, table_start, addr);
        const Pte pte = Mm::load_pte(slot);
        if (pte.none()) continue;
        if (pte.is_migration()) {
          // No hardware uses it; the migration restores what it finds.
          const Pte target = apply_prot(pte, prot);
          if (target != pte) mm.install_pte(slot, addr, target);
          continue;
        }
        if (apply_prot(pte, prot).same_mapping(pte)) continue;
        const Pte old = mm.clear_pte(slot, addr);
        if (old.present()) changed.track(addr);
        detail::inject_at(Point::kHostAfterPteClear, addr, old.pfn());
        detail::notify_in_ptl(mm, addr, InvalidateEvent::kProtectionVma);
        mm.install_pte(slot, addr, apply_prot(old, prot));  // keeps the A/D bits of `old`
      }
    }
    detail::inject_at(Point::kHostAfterPtlUnlock, table_start);
  });
}

}  // namespace

// remap_file_pages: the era decides between the 2.6.27 populate over the
// present PTE and the 4.0+ emulation with mmap (mm/kernel_era.h).
bool remap_file_page(Mm& mm, uint64_t addr, uint64_t new_index) {
  check_page_aligned(addr, "remap_file_page");
  detail::OpTrace op(MmOp::kRemap, addr, addr + kPageSize);
  if (era_remap_file_pages_emulated(mm.era())) return remap_emulated(mm, addr, new_index);
  return remap_nonlinear(mm, addr, new_index);
}

FaultResult break_cow(Mm& mm, uint64_t addr) {
  check_page_aligned(page_align_down(addr), "break_cow");
  addr = page_align_down(addr);
  detail::OpTrace op(MmOp::kBreakCow, addr, addr + kPageSize);
  MmapReadGuard lock(mm);
  for (;;) {
    FaultResult result = handle_mm_fault(mm, addr, true);
    if (result != FaultResult::kRetry) return result;
  }
}

// change_protection -> change_pte_range: ptep_modify_prot_start (clear),
// commit the new PTE, and the range's flush owed to the mmu_gather. Since
// 3.16 that flush is tlb_finish_mmu in do_mprotect_pkey, after
// change_pud_range's invalidate_range_end: a host CPU may write through a
// stale writable TLB entry after the secondary MMU was told "end". Before
// (2.6.27) change_protection flushed inside the bracket.
bool mprotect(Mm& mm, uint64_t start, uint64_t len, uint32_t prot) {
  const uint64_t end = detail::checked_end(start, len, "mprotect");
  if (prot & ~(kProtRead | kProtWrite)) {
    throw_bad_input(fmt::format("mprotect prot {:#x} has unknown bits", prot));
  }
  detail::OpTrace op(MmOp::kMprotect, start, end);
  MmapWriteGuard lock(mm);
  const std::vector<Vma> pieces = mm.vmas_in(start, end);
  uint64_t covered = 0;
  for (const Vma& vma : pieces) covered += vma.end - vma.start;
  if (covered != end - start) return false;  // -ENOMEM
  // do_mprotect_pkey: mprotect_fixup VMA by VMA, each with its own
  // change_protection bracket; one mmu_gather flushed after the last.
  FlushRange flush;
  const bool flush_after_end = era_mprotect_flushes_after_range_end(mm.era());
  for (size_t i = 0; i < pieces.size(); ++i) {
    const Vma& piece = pieces[i];
    if (piece.prot == prot) continue;  // mprotect_fixup: newflags == oldflags
    // vma_modify_flags: split at the piece's ends (with their
    // __split_huge_pmd brackets), new flags, merge with agreeing neighbours.
    mm.split_vmas(piece.start, piece.end);
    mm.set_prot(piece.start, piece.end, prot);
    mm.merge_vmas(piece.start, piece.end);
    FlushRange changed;
    const InvalidateRange range{&mm, piece.start, piece.end, InvalidateEvent::kProtectionVma, true};
    detail::notify_before(mm, range);
    change_protection(mm, piece.start, piece.end, prot, changed);
    if (!flush_after_end && changed.owed()) mm.flush_tlb_range(changed.start, changed.end);
    if (flush_after_end && changed.owed()) {
      flush.track(changed.start);
      flush.track(changed.end - kPageSize);
    }
    detail::notify_after_unlock(mm, range);
    const bool last =
        std::none_of(pieces.begin() + static_cast<std::ptrdiff_t>(i) + 1, pieces.end(),
                     [&](const Vma& rest) { return rest.prot != prot; });
    if (last && flush.owed()) mm.flush_tlb_range(flush.start, flush.end);  // tlb_finish_mmu
    detail::notify_after_release(mm, range);
  }
  return true;
}

namespace {

constexpr uint64_t kWpCleanBits = Pte::kWritable | Pte::kDirty;

bool needs_wp_clean(Pte pte) {
  return pte.present() && (pte.raw() & kWpCleanBits) != 0;
}

// The dirty bit goes to the page, as the helpers' bitmap records it.
size_t record_dirty(PhysMem& phys, Pte old) {
  if (!old.dirty() || phys.is_zero_pfn(old.pfn())) return 0;
  phys.mark_dirty(old.pfn());
  return 1;
}

// wp_pte + clean_record_pte under pte_offset_map_lock: the entry is taken
// with ptep_modify_prot_start (an atomic clear, so an A/D bit a CPU sets
// meanwhile is in `old`, and a CPU that walks the table now faults and waits
// for the PTL) and committed write-protected and clean. `early` (or null):
// the copy the walk-reads-before-ptl mutant read before the PTL and trusts
// instead.
size_t wp_clean_locked(Mm& mm, PteSlot slot, uint64_t addr, const Pte* early, FlushRange& flush) {
  if (!needs_wp_clean(early ? *early : Mm::load_pte(slot))) return 0;
  detail::inject_at(Point::kWalkAfterPteRead, addr);
  const Pte old = mm.clear_pte(slot, addr);
  const Pte base = early ? *early : old;
  detail::inject_at(Point::kHostAfterPteClear, addr, old.pfn());
  detail::notify_in_ptl(mm, addr, InvalidateEvent::kProtectionPage);
  mm.install_pte(slot, addr, base.without(kWpCleanBits));
  flush.track(addr);
  return record_dirty(mm.phys(), base);
}

// walk-reads-before-ptl (base/mutation.h): a half fix that takes the PTL
// only after reading the table's entries.
std::vector<Pte> read_before_ptl(PteSlot first, uint64_t table_start, uint64_t table_end) {
  std::vector<Pte> copies;
  for (uint64_t addr = table_start; addr < table_end; addr += kPageSize) {
    const PteSlot slot = Mm::slot_at(first, table_start, addr);
    Mm::announce_pte_access(slot, false, "walk_pte", addr);
    copies.push_back(Mm::load_pte(slot));
  }
  return copies;
}

// The same step over walk_pte_range before it took the PTL: the callback
// looks at the entry through an unlocked mapping of the table and writes its
// modified copy back with set_pte_at. A zap that clears the entry between
// the read and the write is undone: the copy maps the page again, without
// the reference and rmap entry the zap has dropped.
size_t wp_clean_unlocked(Mm& mm, PteSlot slot, uint64_t addr, FlushRange& flush) {
  Mm::announce_pte_access(slot, false, "walk_pte", addr);
  const Pte copy = Mm::load_pte(slot);
  if (!needs_wp_clean(copy)) return 0;
  detail::inject_at(Point::kWalkAfterPteRead, addr);
  mm.set_pte_unlocked(slot, addr, copy.without(kWpCleanBits));
  detail::notify_in_ptl(mm, addr, InvalidateEvent::kProtectionPage);
  flush.track(addr);
  return record_dirty(mm.phys(), copy);
}

// walk_pte_range over one last-level table, with or without its PTL.
size_t wp_clean_table(Mm& mm, PteSlot first, uint64_t table_start, uint64_t table_end,
                      FlushRange& flush) {
  const bool locked = mm.walk_pte_lock() == WalkPteLock::kLocked;
  const std::vector<Pte> early = locked && mutation::active(mutation::Mutant::kWalkReadsBeforePtl)
                                     ? read_before_ptl(first, table_start, table_end)
                                     : std::vector<Pte>{};
  size_t dirty = 0;
  detail::inject_at(Point::kHostBeforePtl, table_start);
  {
    std::optional<PtlGuard> ptl;
    if (locked) ptl.emplace(mm.phys(), first.table);
    size_t index = 0;
    for (uint64_t addr = table_start; addr < table_end; addr += kPageSize, ++index) {
      const PteSlot slot = Mm::slot_at(first, table_start, addr);
      const Pte* copy = early.empty() ? nullptr : &early[index];
      dirty += locked ? wp_clean_locked(mm, slot, addr, copy, flush)
                      : wp_clean_unlocked(mm, slot, addr, flush);
    }
  }
  detail::inject_at(Point::kHostAfterPtlUnlock, table_start);
  return dirty;
}

}  // namespace

// wp_shared_mapping_range / clean_record_shared_mapping_range for the shared
// mappings of one address space: per VMA, invalidate_range_start
// (kProtectionPage), the walk, flush_tlb_range, invalidate_range_end
// (mm/mapping_dirty_helpers.c's pre_vma and post_vma).
size_t wp_clean_range(Mm& mm, uint64_t start, uint64_t len) {
  const uint64_t end = detail::checked_end(start, len, "wp_clean_range");
  detail::OpTrace op(MmOp::kWpClean, start, end);
  size_t dirty = 0;
  MmapReadGuard lock(mm);
  for (const Vma& vma : mm.vmas_in(start, end)) {
    if (vma.anon() || !vma.shared) continue;
    const InvalidateRange range{&mm, vma.start, vma.end, InvalidateEvent::kProtectionPage, true};
    detail::notify_before(mm, range);
    FlushRange flush;
    for_each_table(mm, vma.start, vma.end,
                   [&](PteSlot first, uint64_t table_start, uint64_t table_end) {
                     dirty += wp_clean_table(mm, first, table_start, table_end, flush);
                   });
    if (flush.end > flush.start) mm.flush_tlb_range(flush.start, flush.end);
    detail::notify_after_unlock(mm, range);
    detail::notify_after_release(mm, range);
  }
  return dirty;
}

size_t age_range(Mm& mm, uint64_t start, uint64_t end) {
  if (end <= start) return 0;
  detail::checked_end(start, end - start, "age_range");
  detail::OpTrace op(MmOp::kAge, start, end);
  PhysMem& phys = mm.phys();
  NotifierHooks* hooks = mm.notifier_hooks();
  size_t young = 0;
  MmapReadGuard lock(mm);
  for (const Vma& vma : mm.vmas_in(start, end)) {
    for_each_table(mm, vma.start, vma.end,
                   [&](PteSlot first, uint64_t table_start, uint64_t table_end) {
                     PtlGuard ptl(phys, first.table);
                     for (uint64_t addr = table_start; addr < table_end; addr += kPageSize) {
                       const PteSlot slot = Mm::slot_at(first, table_start, addr);
                       if (!Mm::load_pte(slot).maps_page()) continue;
                       // ptep_clear_young_notify: both are asked, neither short-circuits.
                       bool was_young = mm.test_and_clear_young(slot, addr);
                       if (hooks && hooks->clear_young(&mm, addr, addr + kPageSize))
                         was_young = true;
                       young += was_young;
                     }
                   });
  }
  return young;
}

bool test_young(Mm& mm, uint64_t addr) {
  addr = page_align_down(addr);
  NotifierHooks* hooks = mm.notifier_hooks();
  MmapReadGuard lock(mm);
  const PteSlot slot = mm.walk(addr);
  if (!slot) return false;
  PtlGuard ptl(mm.phys(), slot.table);
  const Pte pte = Mm::load_pte(slot);
  if (!pte.maps_page()) return false;
  return pte.accessed() || (hooks && hooks->test_young(&mm, addr));
}

}  // namespace sptelab::mm
