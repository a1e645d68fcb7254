// The host page-fault handler (Linux's handle_mm_fault / handle_pte_fault).
#pragma once

#include <cstdint>

#include "mm/mm.h"

namespace sptelab::mm {

enum class FaultResult : uint8_t {
  kOk,       // the PTE now allows the access (or a racing fault fixed it)
  kSigSegv,  // no VMA, no permission, or beyond the end of the file (SIGBUS)
  kOom,      // no free frame
  kRetry,    // waited for a migration: access again
};
const char* fault_result_name(FaultResult result);

// Resolves a fault at addr. The caller holds mmap_lock (read is enough).
//  - none PTE, anon VMA: a read maps the shared zero page read-only, a write
//    a new zeroed page (do_anonymous_page);
//  - none PTE, file VMA: maps the page-cache page; a write to a shared
//    mapping maps it writable and dirty, a write to a private one copies it
//    into a new anon page (do_read_fault / do_shared_fault / do_cow_fault).
//    The page is locked from its lookup to its PTE's install, and looked up
//    again if truncation dropped it meanwhile (filemap_fault's recheck);
//  - write to a read-only present PTE (do_wp_page): a shared file mapping is
//    made writable+dirty; a private page is reused in place if it is an
//    exclusive anon page (mapcount 1, refcount 1), otherwise copied
//    (zero page, KSM page, page-cache page, shared after fork, pinned):
//    wp_page_copy, which passes the notifier points;
//  - a migration entry: waits for the migration, then kRetry.
FaultResult handle_mm_fault(Mm& mm, uint64_t addr, bool write);

}  // namespace sptelab::mm
