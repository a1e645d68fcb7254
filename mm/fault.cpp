#include "mm/fault.h"

#include <fmt/format.h>

#include "base/error.h"
#include "mm/file.h"
#include "mm/notify.h"
#include "trace/trace.h"

namespace sptelab::mm {

using inject::Point;

const char* fault_result_name(FaultResult result) {
  switch (result) {
    case FaultResult::kOk:
      return "ok";
    case FaultResult::kSigSegv:
      return "sigsegv";
    case FaultResult::kOom:
      return "oom";
    case FaultResult::kRetry:
      return "retry";
  }
  return "unknown";
}

namespace {

struct Outcome {
  FaultResult result = FaultResult::kOk;
  Pfn pfn = kNoPfn;
};

// The page is ready; install it unless a racing fault got there first. The
// new PTE takes over the caller's reference on pfn.
// fault_dirty_shared_page (wp_page_shared, do_shared_fault): the page is
// marked dirty under the page lock. folio_clear_dirty_for_io holds that lock
// from its page_mkclean to its test-and-clear of the dirty flag and relies on
// it ("We carefully synchronise fault handlers against installing a dirty pte
// and marking the folio dirty at this point"): a fault's dirtying lands
// before the writeback's clear or after it, never between mkclean and clear.
void mark_dirty_locked(PhysMem& phys, Pfn pfn) {
  phys.lock_page(pfn);
  phys.mark_dirty(pfn);
  phys.unlock_page(pfn);
}

Outcome install_new_page(Mm& mm, uint64_t addr, PteSlot slot, Pfn pfn, Pte entry, bool shared) {
  PhysMem& phys = mm.phys();
  detail::inject_at(Point::kHostFaultBeforePtl, addr, pfn);
  PtlGuard ptl(phys, slot.table);
  if (!Mm::load_pte(slot).none()) {
    ptl.unlock();
    phys.put(pfn);
    return {FaultResult::kOk, kNoPfn};
  }
  rmap_add(phys, pfn, RmapEntry{&mm, addr, shared});
  mm.install_pte(slot, addr, entry);
  return {FaultResult::kOk, pfn};
}

// do_anonymous_page
Outcome anon_fault(Mm& mm, const Vma& vma, uint64_t addr, PteSlot slot, bool write) {
  PhysMem& phys = mm.phys();
  if (!write) {
    Pfn zero = phys.zero_pfn();
    if (zero == kNoPfn) return {FaultResult::kOom, kNoPfn};
    PtlGuard ptl(phys, slot.table);
    if (!Mm::load_pte(slot).none()) return {FaultResult::kOk, kNoPfn};
    // The zero page is "special": no reference, no mapcount, no rmap.
    mm.install_pte(slot, addr, Pte::make(zero, false).with(Pte::kAccessed));
    mm.count_zero_page_map();
    return {FaultResult::kOk, zero};
  }
  Pfn pfn = phys.alloc(kPageAnon);
  if (pfn == kNoPfn) return {FaultResult::kOom, kNoPfn};
  Pte entry = Pte::make(pfn, vma.writable()).with(Pte::kAccessed | Pte::kDirty);
  return install_new_page(mm, addr, slot, pfn, entry, false);
}

// filemap_fault's lookup: the page-cache page with a reference, locked, and
// still the file's. Truncation (truncate_inode_pages_range) holds the page
// lock while it unmaps a page and removes it from the cache, so a page that
// was found before the truncation and locked after it no longer belongs to
// the file (Page::mapping cleared): drop it and look again, as
// filemap_fault's "did it get truncated?" recheck does. kNoPfn if no frame
// is free.
Pfn lock_file_page(File& file, uint64_t index) {
  PhysMem& phys = file.phys();
  for (;;) {
    const Pfn pfn = file.get_page(index);
    if (pfn == kNoPfn) return kNoPfn;
    phys.lock_page(pfn);
    if (phys.page(pfn).mapping == &file) return pfn;
    phys.unlock_page(pfn);
    phys.put(pfn);
  }
}

// do_read_fault / do_shared_fault / do_cow_fault. The page stays locked
// until its PTE is installed (finish_fault before folio_unlock), so a
// truncation either comes first and the recheck sees it, or comes after
// and finds the PTE to unmap: the host never maps a page the cache dropped.
Outcome file_fault(Mm& mm, const Vma& vma, uint64_t addr, PteSlot slot, bool write) {
  PhysMem& phys = mm.phys();
  const uint64_t index = vma.file_index(addr);
  if (index >= vma.file->size_pages()) return {FaultResult::kSigSegv, kNoPfn};  // SIGBUS
  const Pfn cached = lock_file_page(*vma.file, index);
  if (cached == kNoPfn) return {FaultResult::kOom, kNoPfn};
  if (write && !vma.shared) {
    // do_cow_fault copies under the page lock, then unlocks and installs
    // the copy, an anonymous page truncation leaves alone.
    Pfn copy = phys.alloc(kPageAnon);
    if (copy != kNoPfn) phys.copy_frame(copy, cached);
    phys.unlock_page(cached);
    phys.put(cached);
    if (copy == kNoPfn) return {FaultResult::kOom, kNoPfn};
    Pte entry = Pte::make(copy, true).with(Pte::kAccessed | Pte::kDirty);
    return install_new_page(mm, addr, slot, copy, entry, false);
  }
  // A read fault maps the page read-only even in a writable shared mapping:
  // the first write then faults and marks the page dirty (write-notify).
  const bool writable = write && vma.shared;
  Pte entry = Pte::make(cached, writable).with(Pte::kAccessed | (writable ? Pte::kDirty : 0));
  // The PTE takes over our reference (or install_new_page drops it); the
  // cache's keeps the frame until the unlock, which no truncation passes.
  Outcome outcome = install_new_page(mm, addr, slot, cached, entry, vma.shared);
  // fault_dirty_shared_page(): after the PTL is dropped, under the page lock.
  if (writable && outcome.pfn != kNoPfn) phys.mark_dirty(cached);
  phys.unlock_page(cached);
  return outcome;
}

// wp_page_copy: a new anon page replaces a read-only one. The caller holds a
// reference on the old page (none for the zero page).
Outcome wp_page_copy(Mm& mm, uint64_t addr, PteSlot slot, Pte orig) {
  PhysMem& phys = mm.phys();
  const Pfn old = orig.pfn();
  const bool zero = phys.is_zero_pfn(old);
  const Pfn fresh = phys.alloc(kPageAnon);
  if (fresh == kNoPfn) {
    if (!zero) phys.put(old);
    return {FaultResult::kOom, kNoPfn};
  }
  if (!zero) phys.copy_frame(fresh, old);  // alloc() already zeroed it for the zero page

  const InvalidateRange range = detail::page_range(mm, addr, InvalidateEvent::kClear);
  detail::notify_before(mm, range);
  detail::inject_at(Point::kHostBeforePtl, addr, old);
  bool replaced = false;
  {
    PtlGuard ptl(phys, slot.table);
    if (Mm::load_pte(slot).same_mapping(orig)) {
      rmap_add(phys, fresh, RmapEntry{&mm, addr, false});
      detail::clear_flush_notify(mm, slot, addr, old, InvalidateEvent::kClear);
      const Pte entry = Pte::make(fresh, true).with(Pte::kAccessed | Pte::kDirty);
      mm.install_pte(slot, addr, entry);
      detail::notify_change_pte(mm, addr, entry);
      if (!zero) rmap_remove(phys, old, &mm, addr);
      replaced = true;
    }
  }
  detail::inject_at(Point::kHostAfterPtlUnlock, addr, old);
  detail::notify_after_unlock(mm, range);
  detail::inject_at(Point::kHostBeforeRelease, addr, replaced ? old : fresh);
  if (!replaced) phys.put(fresh);
  if (!zero) {
    if (replaced) phys.put(old);  // the old PTE's reference
    phys.put(old);                // the one taken by do_wp_page
  }
  detail::inject_at(Point::kHostAfterRelease, addr, old);
  detail::notify_after_release(mm, range);
  if (replaced) mm.count_cow_copy();
  return {FaultResult::kOk, replaced ? fresh : kNoPfn};
}

// do_wp_page: a write to a present read-only PTE of a writable VMA.
Outcome wp_fault(Mm& mm, const Vma& vma, uint64_t addr, PteSlot slot, Pte orig) {
  PhysMem& phys = mm.phys();
  const Pfn pfn = orig.pfn();
  PtlGuard ptl(phys, slot.table);
  if (!Mm::load_pte(slot).same_mapping(orig)) return {FaultResult::kOk, kNoPfn};
  orig = Mm::load_pte(slot);
  if (vma.shared) {
    // wp_page_shared: the page stays, the PTE becomes writable and dirty.
    if (!mm.update_pte(slot, addr, orig,
                       orig.with(Pte::kWritable | Pte::kDirty | Pte::kAccessed))) {
      return {FaultResult::kOk, kNoPfn};  // the hardware set A meanwhile: access again
    }
    ptl.unlock();
    mark_dirty_locked(phys, pfn);
    return {FaultResult::kOk, pfn};
  }
  const Page& page = phys.page(pfn);
  const bool zero = phys.is_zero_pfn(pfn);
  if (!zero && page.test(kPageAnon) && !page.test(kPageKsm) &&
      page.mapcount.load(std::memory_order_acquire) == 1 &&
      page.refcount.load(std::memory_order_acquire) == 1) {
    // wp_page_reuse: an exclusive anon page is made writable in place. An
    // upgrade needs no flush and no invalidation: stale read-only
    // translations just fault again.
    if (mm.update_pte(slot, addr, orig, orig.with(Pte::kWritable | Pte::kDirty | Pte::kAccessed))) {
      mm.count_cow_reuse();
    }
    return {FaultResult::kOk, pfn};
  }
  if (!zero) phys.get(pfn);  // keeps the old page while the PTL is dropped
  ptl.unlock();
  return wp_page_copy(mm, addr, slot, orig);
}

Outcome do_fault(Mm& mm, uint64_t addr, bool write) {
  const Vma* vma = mm.find_vma(addr);
  if (!vma || (write ? !vma->writable() : !vma->readable())) return {FaultResult::kSigSegv, kNoPfn};
  PteSlot slot = mm.walk_alloc(addr);
  if (!slot) return {FaultResult::kOom, kNoPfn};
  Pte pte = Mm::load_pte(slot);
  if (pte.none()) {
    return vma->anon() ? anon_fault(mm, *vma, addr, slot, write)
                       : file_fault(mm, *vma, addr, slot, write);
  }
  if (pte.is_migration()) {
    wait_for_migration(mm, slot, pte);
    return {FaultResult::kRetry, kNoPfn};
  }
  if (!pte.present()) {
    // PROT_NONE entries exist only in PROT_NONE VMAs, which failed the
    // permission check above (mprotect holds mmap_lock for write).
    throw_internal(
        fmt::format("fault at {:#x}: unexpected non-present PTE {:#x} in a VMA with "
                    "prot {}",
                    addr, pte.raw(), vma->prot));
  }
  if (write && !pte.writable()) return wp_fault(mm, *vma, addr, slot, pte);
  // Spurious fault (a stale TLB entry, or A/D to set): handle_pte_fault's
  // ptep_set_access_flags.
  PtlGuard ptl(mm.phys(), slot.table);
  Pte now = Mm::load_pte(slot);
  if (now.present() && (!write || now.writable())) {
    Pte updated = now.with(Pte::kAccessed | (write ? Pte::kDirty : 0));
    if (updated != now) mm.update_pte(slot, addr, now, updated);
  }
  return {FaultResult::kOk, now.pfn()};
}

}  // namespace

FaultResult handle_mm_fault(Mm& mm, uint64_t addr, bool write) {
  mm.assert_mmap_locked();
  addr = page_align_down(addr);
  mm.count_fault();
  trace::emit(trace::Kind::kHostFault, addr, write);
  Outcome outcome = do_fault(mm, addr, write);
  trace::emit(trace::Kind::kHostFaultDone, addr, outcome.pfn == kNoPfn ? ~uint64_t{0} : outcome.pfn,
              static_cast<uint64_t>(outcome.result));
  return outcome.result;
}

}  // namespace sptelab::mm
