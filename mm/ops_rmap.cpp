// Operations that find a page's mappings through the rmap, without any
// mmap_lock: migration, page_mkclean/writeback, reclaim; and KSM, which
// write-protects and replaces single mappings the way mm/ksm.c does.
//
// Lock order: page lock -> rmap_walk_lock (shared) -> PTL -> Page::rmap_lock.
// Walkers copy the rmap, then take each mapping's PTL and re-check that the
// PTE still maps the page: an entry may be stale by then.

#include <fmt/format.h>

#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "base/error.h"
#include "mm/notify.h"
#include "mm/ops.h"

namespace sptelab::mm {

using inject::Point;

const char* reclaim_result_name(ReclaimResult result) {
  switch (result) {
    case ReclaimResult::kReclaimed:
      return "reclaimed";
    case ReclaimResult::kReferenced:
      return "referenced";
    case ReclaimResult::kBusy:
      return "busy";
    case ReclaimResult::kNotReclaimable:
      return "not_reclaimable";
  }
  return "unknown";
}

namespace {

// The TLB flushes that try_to_unmap_one / try_to_migrate_one defer with
// TTU_BATCH_FLUSH (set_tlb_ubc_flush_pending): owed before the page is
// written back, moved or freed (try_to_unmap_flush, try_to_unmap_flush_dirty).
// Whatever is still owed when the batch goes is flushed then, like the
// try_to_unmap_flush at the end of shrink_folio_list. The caller holds
// rmap_walk_lock for the batch's lifetime, which keeps each Mm alive.
class UnmapFlushBatch {
 public:
  UnmapFlushBatch() = default;
  ~UnmapFlushBatch() { flush(); }
  UnmapFlushBatch(const UnmapFlushBatch&) = delete;
  UnmapFlushBatch& operator=(const UnmapFlushBatch&) = delete;

  void defer(Mm& mm, uint64_t addr) { pending_.emplace_back(&mm, addr); }
  void flush() {
    for (const auto& [mm, addr] : pending_) mm->flush_tlb_range(addr, addr + kPageSize);
    pending_.clear();
  }

 private:
  std::vector<std::pair<Mm*, uint64_t>> pending_;
};

// try_to_unmap_one / try_to_migrate_one for one mapping: notifier points
// around the PTE clear under the PTL; the dirty bit goes to the page; the PTE
// becomes none or (migration) a migration entry; rmap entry and the mapping's
// reference go inside the PTL (folio_remove_rmap_pte, folio_put: never the
// last reference, the caller holds its own). With a `batch` the flush is
// deferred to it (TTU_BATCH_FLUSH), otherwise ptep_clear_flush flushes inside
// the PTL. Returns whether the mapping was still there.
bool unmap_one(PhysMem& phys, Pfn pfn, const RmapEntry& mapping, bool leave_migration_entry,
               UnmapFlushBatch* batch) {
  Mm& mm = *mapping.mm;
  const uint64_t addr = mapping.addr;
  // Both use MMU_NOTIFY_CLEAR; MMU_NOTIFY_MIGRATE is migrate_vma's (device
  // memory, with an owner), not try_to_migrate_one's.
  const InvalidateEvent event = InvalidateEvent::kClear;
  const InvalidateRange range = detail::page_range(mm, addr, event);
  detail::notify_before(mm, range);
  detail::inject_at(Point::kHostBeforePtl, addr, pfn);
  bool unmapped = false;
  if (const PteSlot slot = mm.walk(addr)) {
    PtlGuard ptl(phys, slot.table);
    const Pte pte = Mm::load_pte(slot);
    if (pte.maps_page() && pte.pfn() == pfn) {
      const Pte old = batch ? mm.clear_pte(slot, addr) : mm.clear_pte_flush(slot, addr);
      if (batch && old.present()) batch->defer(mm, addr);
      detail::inject_at(Point::kHostAfterPteClear, addr, pfn);
      detail::notify_in_ptl(mm, addr, event);
      if (old.dirty()) phys.mark_dirty(pfn);
      if (leave_migration_entry) mm.install_pte(slot, addr, old.to_migration());
      rmap_remove(phys, pfn, &mm, addr);
      // No release inject points: this put never frees, and nothing may
      // wait or delay inside the PTL.
      phys.put(pfn);
      unmapped = true;
    }
  }
  detail::unlock_release_notify(mm, range, pfn, kNoPfn);  // the put was inside the PTL
  return unmapped;
}

// remove_migration_pte: a new mapping, so no invalidation is needed. A
// mapping zapped meanwhile (munmap, MADV_DONTNEED) is not brought back.
void restore_mapping(PhysMem& phys, Pfn old_pfn, Pfn target, const RmapEntry& mapping) {
  Mm& mm = *mapping.mm;
  const PteSlot slot = mm.walk(mapping.addr);
  if (!slot) return;
  PtlGuard ptl(phys, slot.table);
  const Pte pte = Mm::load_pte(slot);
  if (!pte.is_migration() || pte.pfn() != old_pfn) return;
  phys.get(target);
  rmap_add(phys, target, mapping);
  mm.install_pte(slot, mapping.addr, pte.to_mapped(target));
}

// unmap_and_move with the page referenced by the caller: allocate the new
// frame, lock the old page, unmap every mapping to migration entries, move
// (refcount frozen: no pin may exist), remap to whichever frame now holds
// the page.
bool migrate_referenced(PhysMem& phys, Pfn pfn) {
  Page& page = phys.page(pfn);
  const uint32_t flags = page.flags.load(std::memory_order_acquire);
  if (flags & (kPageTable | kPageZero | kPageFree)) return false;
  const Pfn fresh = phys.alloc(flags & (kPageAnon | kPageKsm));
  if (fresh == kNoPfn) return false;
  phys.lock_page(fresh);  // its mapping/index are written below
  phys.lock_page(pfn);
  std::shared_lock walkers(phys.rmap_walk_lock());
  std::vector<RmapEntry> unmapped;
  {
    // migrate_pages_batch: the first, asynchronous pass unmaps the batch with
    // TTU_BATCH_FLUSH and calls try_to_unmap_flush before moving (6.3+).
    UnmapFlushBatch batch;
    for (const RmapEntry& mapping : rmap_snapshot(phys, pfn)) {
      const bool batched = era_migration_batches_flush(mapping.mm->era());
      if (unmap_one(phys, pfn, mapping, true, batched ? &batch : nullptr)) {
        unmapped.push_back(mapping);
      }
    }
    batch.flush();
  }
  File* file = page.mapping;
  bool moved = false;
  if (page.mapcount.load(std::memory_order_acquire) == 0) {
    // page_ref_freeze decides the move: a reference dropped just before it
    // (a secondary MMU's fault that installed its spte from a GUP taken
    // before the unmap) lets the copy go on under that spte. An injection
    // point, so also a scheduling point dependent on every step: the
    // references the freeze counts are taken and dropped in steps named
    // after other objects.
    detail::inject_at(Point::kHostBeforeRefFreeze, unmapped.empty() ? 0 : unmapped.front().addr,
                      pfn);
    // move_to_new_folio with the refcount frozen: ours (and the page
    // cache's) and nothing more, or a pin may still write to the old frame.
    if (file) {
      moved = file->migrate_page(page.index, pfn, fresh, 2);
    } else if (phys.ref_freeze(pfn, 1)) {
      phys.copy_page(fresh, pfn);
      phys.ref_unfreeze(pfn, 1);
      moved = true;
    }
  }
  const Pfn now_mapped = moved ? fresh : pfn;
  for (const RmapEntry& mapping : unmapped) restore_mapping(phys, pfn, now_mapped, mapping);
  phys.unlock_page(pfn);
  phys.unlock_page(fresh);
  walkers.unlock();
  // alloc()'s reference: the page cache keeps it for a moved file page,
  // otherwise the mappings now hold their own.
  if (!moved || !file) phys.put(fresh);
  return moved;
}

// page_vma_mkclean_one for one shared mapping.
bool mkclean_one(PhysMem& phys, Pfn pfn, const RmapEntry& mapping) {
  Mm& mm = *mapping.mm;
  const uint64_t addr = mapping.addr;
  const InvalidateRange range = detail::page_range(mm, addr, InvalidateEvent::kProtectionPage);
  detail::notify_before(mm, range);
  detail::inject_at(Point::kHostBeforePtl, addr, pfn);
  bool dirty = false;
  if (const PteSlot slot = mm.walk(addr)) {
    PtlGuard ptl(phys, slot.table);
    const Pte pte = Mm::load_pte(slot);
    if (pte.maps_page() && pte.pfn() == pfn && (pte.writable() || pte.dirty())) {
      const Pte old =
          detail::clear_flush_notify(mm, slot, addr, pfn, InvalidateEvent::kProtectionPage);
      if (old.dirty()) {
        phys.mark_dirty(pfn);
        dirty = true;
      }
      mm.install_pte(slot, addr, old.without(Pte::kWritable | Pte::kDirty));
    }
  }
  detail::unlock_release_notify(mm, range, pfn, kNoPfn);
  return dirty;
}

// folio_referenced -> page_referenced_one: ptep_clear_flush_young_notify
// under the PTL, for every mapping (no short cut: each young bit is cleared).
bool page_referenced(PhysMem& phys, Pfn pfn) {
  bool referenced = false;
  for (const RmapEntry& mapping : rmap_snapshot(phys, pfn)) {
    Mm& mm = *mapping.mm;
    const PteSlot slot = mm.walk(mapping.addr);
    if (!slot) continue;
    PtlGuard ptl(phys, slot.table);
    const Pte pte = Mm::load_pte(slot);
    if (!pte.maps_page() || pte.pfn() != pfn) continue;
    bool young = mm.test_and_clear_young(slot, mapping.addr);
    if (NotifierHooks* hooks = mm.notifier_hooks()) {
      if (hooks->clear_flush_young(&mm, mapping.addr, mapping.addr + kPageSize)) young = true;
    }
    referenced = referenced || young;
  }
  return referenced;
}

// shrink_folio_list for one page-cache page the caller holds a reference on.
// On kReclaimed that reference is gone with the frame.
ReclaimResult reclaim_referenced(PhysMem& phys, Pfn pfn, bool honor_references) {
  Page& page = phys.page(pfn);
  if (!phys.trylock_page(pfn)) return ReclaimResult::kBusy;
  File* file = page.mapping;
  if (!file || page.test(kPageAnon) || page.test(kPageTable) || page.test(kPageZero)) {
    phys.unlock_page(pfn);
    return ReclaimResult::kNotReclaimable;
  }
  const uint64_t index = page.index;
  std::shared_lock walkers(phys.rmap_walk_lock());
  if (honor_references && page_referenced(phys, pfn)) {
    page.set(kPageAccessed);  // folio_activate
    walkers.unlock();
    phys.unlock_page(pfn);
    return ReclaimResult::kReferenced;
  }
  // Declared after `walkers`: its destructor's flush runs while they keep
  // every Mm of the batch alive.
  UnmapFlushBatch batch;
  for (const RmapEntry& mapping : rmap_snapshot(phys, pfn)) {
    const bool batched = era_reclaim_batches_flush(mapping.mm->era());
    unmap_one(phys, pfn, mapping, false, batched ? &batch : nullptr);
  }
  if (page.mapcount.load(std::memory_order_acquire) != 0) {
    phys.unlock_page(pfn);  // mapped again meanwhile
    return ReclaimResult::kBusy;
  }
  if (page.test(kPageDirty)) {
    // try_to_unmap_flush_dirty: no CPU may write through a stale dirty entry
    // while pageout() (synchronous here) reads the page.
    batch.flush();
    page.clear(kPageDirty);
    page.set(kPageWriteback);
    file->write_disk(index, pfn);
    page.clear(kPageWriteback);
  }
  if (!file->remove_frozen(index, pfn, 2)) {
    phys.unlock_page(pfn);
    return ReclaimResult::kBusy;
  }
  page.mapping = nullptr;
  phys.unlock_page(pfn);
  // try_to_unmap_flush before free_unref_folios: the frame is reused only
  // once no CPU can reach it.
  batch.flush();
  walkers.unlock();
  detail::inject_at(Point::kHostBeforeRelease, 0, pfn);
  phys.free_frozen(pfn);
  detail::inject_at(Point::kHostAfterRelease, 0, pfn);
  return ReclaimResult::kReclaimed;
}

// KSM's get_mergeable_page: an anon page in a private mapping, referenced.
Pfn get_mergeable_page(Mm& mm, uint64_t addr) {
  PhysMem& phys = mm.phys();
  const Vma* vma = mm.find_vma(addr);
  if (!vma || vma->shared) return kNoPfn;
  const PteSlot slot = mm.walk(addr);
  if (!slot) return kNoPfn;
  PtlGuard ptl(phys, slot.table);
  const Pte pte = Mm::load_pte(slot);
  if (!pte.present() || phys.is_zero_pfn(pte.pfn())) return kNoPfn;
  if (!phys.page(pte.pfn()).test(kPageAnon)) return kNoPfn;
  phys.get(pte.pfn());
  return pte.pfn();
}

// ksm.c write_protect_page: ptep_clear_flush, then refuse if a pin could
// write behind our back (refcount != mapcount + our reference), else set
// the read-only clean PTE (set_pte_at_notify until 6.9). `orig` gets the
// result. The bracket is MMU_NOTIFY_CLEAR, not a protection event: the PTE
// is cleared and flushed on the way.
bool write_protect_page(Mm& mm, uint64_t addr, Pfn pfn, Pte& orig) {
  PhysMem& phys = mm.phys();
  const InvalidateRange range = detail::page_range(mm, addr, InvalidateEvent::kClear);
  detail::notify_before(mm, range);
  detail::inject_at(Point::kHostBeforePtl, addr, pfn);
  bool protected_ok = false;
  if (const PteSlot slot = mm.walk(addr)) {
    PtlGuard ptl(phys, slot.table);
    const Pte pte = Mm::load_pte(slot);
    if (pte.present() && pte.pfn() == pfn) {
      if (pte.writable() || pte.dirty()) {
        const Pte old = mm.clear_pte_flush(slot, addr);
        detail::inject_at(Point::kHostAfterPteClear, addr, pfn);
        const Page& page = phys.page(pfn);
        if (page.mapcount.load(std::memory_order_acquire) + 1 !=
            page.refcount.load(std::memory_order_acquire)) {
          mm.install_pte(slot, addr, old);
        } else {
          detail::notify_in_ptl(mm, addr, InvalidateEvent::kClear);
          if (old.dirty()) phys.mark_dirty(pfn);
          const Pte entry = old.without(Pte::kWritable | Pte::kDirty);
          mm.install_pte(slot, addr, entry);
          detail::notify_change_pte(mm, addr, entry);
          orig = entry;
          protected_ok = true;
        }
      } else {
        orig = pte;
        protected_ok = true;
      }
    }
  }
  detail::unlock_release_notify(mm, range, pfn, kNoPfn);
  return protected_ok;
}

// ksm.c replace_page: b's PTE (still `orig`) now maps kpage read-only; the
// old page's rmap entry and its reference go inside the PTL
// (folio_remove_rmap_pte, folio_put before pte_unmap_unlock).
bool replace_page(Mm& mm, uint64_t addr, Pfn page_pfn, Pfn kpage, Pte orig) {
  PhysMem& phys = mm.phys();
  const InvalidateRange range = detail::page_range(mm, addr, InvalidateEvent::kClear);
  detail::notify_before(mm, range);
  detail::inject_at(Point::kHostBeforePtl, addr, page_pfn);
  bool replaced = false;
  if (const PteSlot slot = mm.walk(addr)) {
    PtlGuard ptl(phys, slot.table);
    if (Mm::load_pte(slot).same_mapping(orig)) {
      phys.get(kpage);
      rmap_add(phys, kpage, RmapEntry{&mm, addr, false});
      detail::clear_flush_notify(mm, slot, addr, page_pfn, InvalidateEvent::kClear);
      const Pte entry = Pte::make(kpage, false).with(Pte::kAccessed);
      mm.install_pte(slot, addr, entry);
      detail::notify_change_pte(mm, addr, entry);
      rmap_remove(phys, page_pfn, &mm, addr);
      phys.put(page_pfn);  // never the last: ksm_merge holds its own
      replaced = true;
    }
  }
  detail::unlock_release_notify(mm, range, page_pfn, kNoPfn);  // the put was inside the PTL
  return replaced;
}

// try_to_merge_two_pages: kpage (a) is write-protected and becomes the KSM
// page; b is write-protected, compared, and replaced by it.
bool merge_pair(Mm& mm, uint64_t addr_a, Pfn a, uint64_t addr_b, Pfn b) {
  PhysMem& phys = mm.phys();
  bool merged = false;
  phys.lock_page(a);
  Pte orig_a;
  if (write_protect_page(mm, addr_a, a, orig_a)) {
    // trylock: two merges of the same pair in opposite order must not
    // deadlock on each other's page lock.
    if (phys.trylock_page(b)) {
      Pte orig_b;
      if (write_protect_page(mm, addr_b, b, orig_b) && phys.frames_equal(a, b)) {
        const bool was_ksm = phys.page(a).test(kPageKsm);
        phys.page(a).set(kPageKsm);  // before b maps it: a write to either copies
        merged = replace_page(mm, addr_b, b, a, orig_b);
        if (!merged && !was_ksm) phys.page(a).clear(kPageKsm);
      }
      phys.unlock_page(b);
    }
  }
  phys.unlock_page(a);
  return merged;
}

}  // namespace

bool migrate_page(Mm& mm, uint64_t addr) {
  addr = page_align_down(addr);
  detail::OpTrace op(MmOp::kMigrate, addr, addr + kPageSize);
  PhysMem& phys = mm.phys();
  Pfn pfn = kNoPfn;
  {
    // Like move_pages(2): find the page under mmap_lock, migrate without it.
    MmapReadGuard lock(mm);
    const PteSlot slot = mm.walk(addr);
    if (!slot) return false;
    PtlGuard ptl(phys, slot.table);
    const Pte pte = Mm::load_pte(slot);
    if (!pte.maps_page() || phys.is_zero_pfn(pte.pfn())) return false;
    pfn = pte.pfn();
    phys.get(pfn);
  }
  const bool moved = migrate_referenced(phys, pfn);
  detail::inject_at(Point::kHostBeforeRelease, addr, pfn);
  phys.put(pfn);  // the last reference of a moved page: the old frame is freed
  detail::inject_at(Point::kHostAfterRelease, addr, pfn);
  return moved;
}

bool migrate_pfn(PhysMem& phys, Pfn pfn) {
  detail::OpTrace op(MmOp::kMigrate, pfn, pfn + 1);
  if (!phys.valid(pfn) || !phys.try_get(pfn)) return false;
  const bool moved = migrate_referenced(phys, pfn);
  detail::inject_at(Point::kHostBeforeRelease, 0, pfn);
  phys.put(pfn);
  detail::inject_at(Point::kHostAfterRelease, 0, pfn);
  return moved;
}

bool page_mkclean(PhysMem& phys, Pfn pfn) {
  detail::OpTrace op(MmOp::kMkclean, pfn, pfn + 1);
  std::shared_lock walkers(phys.rmap_walk_lock());
  bool dirty = false;
  for (const RmapEntry& mapping : rmap_snapshot(phys, pfn)) {
    if (mapping.shared && mkclean_one(phys, pfn, mapping)) dirty = true;
  }
  return dirty;
}

bool writeback_page(File& file, uint64_t index) {
  detail::OpTrace op(MmOp::kWriteback, index, index + 1);
  PhysMem& phys = file.phys();
  const Pfn pfn = file.find_page(index);
  if (pfn == kNoPfn) return false;
  Page& page = phys.page(pfn);
  phys.lock_page(pfn);
  // folio_clear_dirty_for_io: clean the PTEs first (their dirty bits move to
  // the page), then test-and-clear the page's dirty flag.
  page_mkclean(phys, pfn);
  const bool dirty = page.test(kPageDirty);
  if (dirty) {
    page.clear(kPageDirty);
    page.set(kPageWriteback);
    file.write_disk(index, pfn);
    page.clear(kPageWriteback);
  }
  phys.unlock_page(pfn);
  phys.put(pfn);
  return dirty;
}

bool ksm_merge(Mm& mm, uint64_t addr_a, uint64_t addr_b) {
  addr_a = page_align_down(addr_a);
  addr_b = page_align_down(addr_b);
  detail::OpTrace op(MmOp::kKsmMerge, addr_a, addr_b);
  PhysMem& phys = mm.phys();
  MmapReadGuard lock(mm);
  Pfn a = get_mergeable_page(mm, addr_a);
  Pfn b = get_mergeable_page(mm, addr_b);
  bool merged = false;
  if (a != kNoPfn && b != kNoPfn && a != b) {
    // An existing KSM page is the one kept.
    if (phys.page(b).test(kPageKsm) && !phys.page(a).test(kPageKsm)) {
      std::swap(a, b);
      std::swap(addr_a, addr_b);
    }
    if (!phys.page(b).test(kPageKsm)) merged = merge_pair(mm, addr_a, a, addr_b, b);
  }
  if (a != kNoPfn) phys.put(a);
  if (b != kNoPfn) phys.put(b);  // b's last reference after a merge: its frame is freed
  return merged;
}

ReclaimResult reclaim_page(PhysMem& phys, Pfn pfn, bool honor_references) {
  detail::OpTrace op(MmOp::kReclaim, pfn, pfn + 1);
  if (!phys.valid(pfn) || !phys.try_get(pfn)) return ReclaimResult::kNotReclaimable;
  const ReclaimResult result = reclaim_referenced(phys, pfn, honor_references);
  if (result != ReclaimResult::kReclaimed) phys.put(pfn);
  return result;
}

}  // namespace sptelab::mm
