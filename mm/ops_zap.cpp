// Zapping PTEs with an mmu_gather batch: MADV_DONTNEED, munmap, exit_mmap.
// Follows mm/memory.c zap_pte_range + mm/mmu_gather.c tlb_finish_mmu, with
// the delayed rmap removal of Linux 6.2 (linux-mm, Nov 2022, Linus Torvalds,
// "[PATCH 4/4] mm: delay page_remove_rmap() until after the TLB has been
// flushed"); ZapRmapOrder::kImmediate is the order before it. The TLB flush
// of MADV_DONTNEED comes after the PTL is dropped (mmu_gather's batching) or,
// with DontneedFlush::kBeforePtlUnlock, before (mm/mm.h).

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "base/error.h"
#include "mm/notify.h"
#include "mm/ops.h"
#include "mm/zap.h"

namespace sptelab::mm {

using inject::Point;

namespace detail {
namespace {

// The pages whose PTEs were cleared and the range whose TLB flush is still
// owed. Pages are freed only after that flush: a CPU may use a stale entry
// until then.
class MmuGather {
 public:
  explicit MmuGather(Mm& mm) : mm_(mm) {}

  void track(uint64_t addr) {
    start_ = std::min(start_, addr);
    end_ = std::max(end_, addr + kPageSize);
  }
  void add_page(Pfn pfn) { pages_.push_back(pfn); }

  // tlb_flush_mmu_tlbonly
  void flush_tlb() {
    if (end_ <= start_) return;
    mm_.flush_tlb_range(start_, end_);
    start_ = std::numeric_limits<uint64_t>::max();
    end_ = 0;
  }
  // tlb_batch_pages_flush
  void free_pages() {
    for (Pfn pfn : pages_) mm_.phys().put(pfn);
    pages_.clear();
  }

 private:
  Mm& mm_;
  uint64_t start_ = std::numeric_limits<uint64_t>::max();
  uint64_t end_ = 0;
  std::vector<Pfn> pages_;
};

// zap_pte_range over one last-level table.
void zap_table(Mm& mm, MmuGather& tlb, PteSlot first, uint64_t start, uint64_t end,
               InvalidateEvent event, bool notify, bool flush_in_ptl, bool even_cows) {
  PhysMem& phys = mm.phys();
  std::vector<std::pair<Pfn, uint64_t>> delayed_rmap;
  inject_at(Point::kHostBeforePtl, start);
  {
    PtlGuard ptl(phys, first.table);
    // Every cleared PTE's flush before the PTL goes, so that no fault can
    // install a new page here while a CPU still caches the old one.
    bool force_flush = flush_in_ptl;
    for (uint64_t addr = start; addr < end; addr += kPageSize) {
      const PteSlot slot = Mm::slot_at(first, start, addr);
      const Pte pte = Mm::load_pte(slot);
      if (pte.none()) continue;
      if (!even_cows && pte.maps_page() && phys.page(pte.pfn()).test(kPageAnon)) continue;
      if (pte.is_migration()) {
        // The entry holds no reference or rmap entry; the migration sees it
        // gone and does not restore it.
        mm.clear_pte(slot, addr);
        continue;
      }
      // ptep_get_and_clear_full: no flush yet, the gather owes it.
      const Pte old = mm.clear_pte(slot, addr);
      const Pfn pfn = old.pfn();
      if (old.present()) tlb.track(addr);
      inject_at(Point::kHostAfterPteClear, addr, pfn);
      if (notify) notify_in_ptl(mm, addr, event);
      if (phys.is_zero_pfn(pfn)) continue;
      Page& page = phys.page(pfn);
      bool delay = false;
      if (!page.test(kPageAnon)) {
        if (old.dirty()) {
          phys.mark_dirty(pfn);
          // A stale dirty TLB entry elsewhere could keep writing to a page
          // writeback may clean next: flush before the PTL goes, and (6.2+)
          // keep the rmap entry until then so page_mkclean waits for us.
          force_flush = true;
          delay = mm.zap_rmap_order() == ZapRmapOrder::kDelayUntilFlush;
        }
        if (old.accessed()) page.set(kPageAccessed);
      }
      if (delay) {
        delayed_rmap.emplace_back(pfn, addr);
      } else {
        rmap_remove(phys, pfn, &mm, addr);
      }
      tlb.add_page(pfn);
    }
    if (force_flush) {
      tlb.flush_tlb();
      for (const auto& [pfn, addr] : delayed_rmap)
        rmap_remove(phys, pfn, &mm, addr);  // tlb_flush_rmaps
    }
  }
  inject_at(Point::kHostAfterPtlUnlock, start);
}

}  // namespace

// zap_page_range_single: range_start, unmap, range_end, tlb_finish_mmu.
// Linux's forced flush also frees the gathered batch right after the PTL
// drop (before range_end); here every page is freed in tlb_finish, after
// after_unlock, so the notifier contract holds for every op alike.
void zap_range(Mm& mm, uint64_t start, uint64_t end, InvalidateEvent event, bool notify,
               bool flush_in_ptl, bool even_cows) {
  const InvalidateRange range{&mm, start, end, event, true};
  if (notify) notify_before(mm, range);
  MmuGather tlb(mm);
  for (uint64_t table_start = start; table_start < end;) {
    const uint64_t table_end = std::min(end, (table_start & ~(kPteTableSpan - 1)) + kPteTableSpan);
    if (const PteSlot first = mm.walk(table_start)) {
      zap_table(mm, tlb, first, table_start, table_end, event, notify, flush_in_ptl, even_cows);
    }
    table_start = table_end;
  }
  if (notify) notify_after_unlock(mm, range);
  tlb.flush_tlb();
  inject_at(Point::kHostBeforeRelease, start);
  tlb.free_pages();
  inject_at(Point::kHostAfterRelease, start);
  if (notify) notify_after_release(mm, range);
}

uint64_t checked_end(uint64_t start, uint64_t len, const char* op) {
  if (start % kPageSize != 0 || len == 0 || start >= kUserAddressEnd ||
      len > kUserAddressEnd - start) {
    throw_bad_input(
        fmt::format("{}({:#x}, {:#x}): the start must be page aligned and the range "
                    "non-empty and below {:#x}",
                    op, start, len, kUserAddressEnd));
  }
  return start + page_align_up(len);
}

}  // namespace detail

bool madvise_dontneed(Mm& mm, uint64_t start, uint64_t len) {
  const uint64_t end = detail::checked_end(start, len, "madvise_dontneed");
  detail::OpTrace op(MmOp::kDontneed, start, end);
  MmapReadGuard lock(mm);
  uint64_t covered = 0;
  for (const Vma& vma : mm.vmas_in(start, end)) {
    detail::zap_range(mm, vma.start, vma.end, InvalidateEvent::kClear, true,
                      mm.dontneed_flush() == DontneedFlush::kBeforePtlUnlock);
    covered += vma.end - vma.start;
  }
  return covered == end - start;
}

bool munmap(Mm& mm, uint64_t start, uint64_t len) {
  const uint64_t end = detail::checked_end(start, len, "munmap");
  detail::OpTrace op(MmOp::kMunmap, start, end);
  MmapWriteGuard lock(mm);
  const std::vector<Vma> vmas = mm.vmas_in(start, end);
  if (vmas.empty()) return false;
  // unmap_region after the VMAs are detached: nothing can fault them back
  // in, mmap_lock is held for write.
  mm.remove_vmas(start, end);
  detail::zap_range(mm, vmas.front().start, vmas.back().end, InvalidateEvent::kUnmap, true);
  return true;
}

}  // namespace sptelab::mm
