// get_user_pages: how a secondary MMU (KVM's hva_to_pfn) gets the frame
// behind a host virtual address, with a reference the caller drops with
// PhysMem::put.
#pragma once

#include <cstdint>

#include "mm/mm.h"

namespace sptelab::mm {

enum class GupError : uint8_t {
  kNone,
  kBackedOff,  // fast path only: nothing usable mapped, or the PTE changed under it
  kBadAccess,  // no VMA or no permission (the fault would be SIGSEGV/SIGBUS)
  kNoMemory,   // the fault needed a frame and none was free
};
const char* gup_error_name(GupError error);

struct GupResult {
  Pfn pfn = kNoPfn;
  bool writable = false;  // the PTE allowed writes when the page was taken
  bool ok = false;
  GupError error = GupError::kNone;
};

// GUP-fast (gup_fast_pte_range): no locks. Reads the PTE, checks present and
// permission, try_get()s the page (fails when its refcount is 0), re-reads
// the PTE and, if it changed, drops the reference and backs off (linux-mm,
// October 2022, Alistair Popple's GUP-fast revalidation thread). The zero
// page is left to the slow path (it is a "special" PTE on x86). Inject
// points kGupFastAfterPteRead, kGupFastAfterRef.
GupResult gup_fast(Mm& mm, uint64_t addr, bool write);

// GUP slow (__get_user_pages): mmap_lock for read, look the PTE up under the
// PTL, fault in (a write breaks COW) and look again; a write marks the page
// dirty (FOLL_TOUCH). Inject point kGupSlowAfterWalk (reference taken,
// mmap_lock still held).
GupResult gup_slow(Mm& mm, uint64_t addr, bool write);

// Fast, then slow if fast backed off.
GupResult get_user_page(Mm& mm, uint64_t addr, bool write);

}  // namespace sptelab::mm
