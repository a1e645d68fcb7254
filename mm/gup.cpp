#include "mm/gup.h"

#include "base/mutation.h"
#include "mm/fault.h"
#include "mm/notify.h"
#include "trace/trace.h"

namespace sptelab::mm {

using inject::Point;

const char* gup_error_name(GupError error) {
  switch (error) {
    case GupError::kNone:
      return "none";
    case GupError::kBackedOff:
      return "backed_off";
    case GupError::kBadAccess:
      return "bad_access";
    case GupError::kNoMemory:
      return "no_memory";
  }
  return "unknown";
}

namespace {

GupResult failed(GupError error) {
  GupResult result;
  result.error = error;
  return result;
}

GupResult fast_path(Mm& mm, uint64_t addr, bool write) {
  PhysMem& phys = mm.phys();
  PteSlot slot = mm.walk(addr);
  if (!slot) return failed(GupError::kBackedOff);
  Mm::announce_pte_access(slot, false, "gup_fast_pte", addr);
  const Pte pte = Mm::load_pte(slot);
  detail::inject_at(Point::kGupFastAfterPteRead, addr, pte.present() ? pte.pfn() : kNoPfn);
  if (!pte.present() || (write && !pte.writable())) return failed(GupError::kBackedOff);
  const Pfn pfn = pte.pfn();
  if (!phys.valid(pfn) || phys.is_zero_pfn(pfn)) return failed(GupError::kBackedOff);
  // The Page record is never freed, so this is safe even if the frame was
  // freed and reallocated since the PTE was read; the re-check catches it.
  if (!phys.try_get(pfn)) return failed(GupError::kBackedOff);
  detail::inject_at(Point::kGupFastAfterRef, addr, pfn);
  if (Mm::load_pte(slot) != pte && !mutation::active(mutation::Mutant::kGupFastNoRecheck)) {
    phys.put(pfn);
    return failed(GupError::kBackedOff);
  }
  GupResult result;
  result.pfn = pfn;
  result.writable = pte.writable();
  result.ok = true;
  return result;
}

GupResult slow_path(Mm& mm, uint64_t addr, bool write) {
  PhysMem& phys = mm.phys();
  MmapReadGuard lock(mm);
  for (;;) {
    const Vma* vma = mm.find_vma(addr);
    if (!vma || (write ? !vma->writable() : !vma->readable())) {
      return failed(GupError::kBadAccess);
    }
    if (PteSlot slot = mm.walk(addr)) {
      PtlGuard ptl(phys, slot.table);
      const Pte pte = Mm::load_pte(slot);
      if (pte.present() && (!write || pte.writable())) {
        const Pfn pfn = pte.pfn();
        phys.get(pfn);
        if (!phys.is_zero_pfn(pfn)) {
          // follow_page_pte with FOLL_TOUCH: the caller is about to write.
          if (write) phys.mark_dirty(pfn);
          phys.page(pfn).set(kPageAccessed);
        }
        ptl.unlock();
        detail::inject_at(Point::kGupSlowAfterWalk, addr, pfn);
        GupResult result;
        result.pfn = pfn;
        result.writable = pte.writable();
        result.ok = true;
        return result;
      }
    }
    switch (handle_mm_fault(mm, addr, write)) {
      case FaultResult::kOk:
      case FaultResult::kRetry:
        break;
      case FaultResult::kSigSegv:
        return failed(GupError::kBadAccess);
      case FaultResult::kOom:
        return failed(GupError::kNoMemory);
    }
  }
}

}  // namespace

GupResult gup_fast(Mm& mm, uint64_t addr, bool write) {
  addr = page_align_down(addr);
  GupResult result = fast_path(mm, addr, write);
  trace::emit(trace::Kind::kGupFast, addr, result.ok ? result.pfn : ~uint64_t{0}, result.ok);
  return result;
}

GupResult gup_slow(Mm& mm, uint64_t addr, bool write) {
  addr = page_align_down(addr);
  GupResult result = slow_path(mm, addr, write);
  trace::emit(trace::Kind::kGupSlow, addr, result.ok ? result.pfn : ~uint64_t{0}, result.ok);
  return result;
}

GupResult get_user_page(Mm& mm, uint64_t addr, bool write) {
  GupResult result = gup_fast(mm, addr, write);
  return result.ok ? result : gup_slow(mm, addr, write);
}

}  // namespace sptelab::mm
