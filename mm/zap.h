// Internal to mm/: the zap of a range with an mmu_gather batch, shared by
// MADV_DONTNEED, munmap and exit_mmap; argument checks shared by the ops.
#pragma once

#include <cstdint>

#include "mm/mm.h"

namespace sptelab::mm::detail {

// zap_page_range_single / unmap_vmas: clears every PTE of [start, end)
// (inside one VMA). With `notify`, passes the notifier points; exit_mmap
// zaps without them (release already detached the subscriptions).
// With `flush_in_ptl`, every table's TLB flush happens before its PTL is
// dropped (MADV_DONTNEED with DontneedFlush::kBeforePtlUnlock). Without
// `even_cows`, anonymous pages stay mapped: a private file mapping keeps the
// copies its writes made (zap_details.even_cows of unmap_mapping_range,
// should_zap_folio).
void zap_range(Mm& mm, uint64_t start, uint64_t end, InvalidateEvent event, bool notify,
               bool flush_in_ptl = false, bool even_cows = true);

// The end of [start, start + len) rounded up to a page; throws
// Error(kBadInput) naming `op` for an unaligned start or an empty or
// out-of-range length.
uint64_t checked_end(uint64_t start, uint64_t len, const char* op);

}  // namespace sptelab::mm::detail
