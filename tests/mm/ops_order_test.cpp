// For every mm operation: the exact sequence of PTL acquire/release, PTE
// change, TLB flush, notifier point and page free, recorded with the trace
// and the recording hooks, against the order documented in mm/README.md.
// The fixture's Mm runs the default era, Linux 6.18: every TLB flush ends
// with arch_invalidate_secondary_tlbs ("secondary_tlbs"), and no change_pte.
// Tests of an older order set the era that had it.

#include <gtest/gtest.h>

#include "mm/gup.h"
#include "mm/ops.h"
#include "tests/mm/mm_fixture.h"

namespace sptelab::mm::testing {
namespace {

using Steps = std::vector<std::string>;

class OrderTest : public MmTest {
 protected:
  // Every notifier point of the last operation, checked for its spinlock
  // depth: only in_ptl_cleared, change_pte and the young callbacks run
  // inside the PTL. arch_invalidate_secondary_tlbs runs wherever its TLB
  // flush does, inside or outside.
  void expect_atomic_context_only_inside_ptl() {
    for (const HookCall& call : hooks.calls()) {
      if (call.point == HookPoint::kSecondaryTlbs) continue;
      bool inside = call.point == HookPoint::kInPtlCleared || call.point == HookPoint::kChangePte ||
                    call.point == HookPoint::kClearFlushYoung ||
                    call.point == HookPoint::kClearYoung || call.point == HookPoint::kTestYoung;
      EXPECT_EQ(call.atomic_depth > 0, inside) << hook_point_name(call.point);
    }
  }
  std::vector<InvalidateEvent> events() {
    std::vector<InvalidateEvent> out;
    for (const HookCall& call : hooks.calls()) {
      if (call.point == HookPoint::kBeforeChange) out.push_back(call.event);
    }
    return out;
  }
};

TEST_F(OrderTest, CowBreakOfTheZeroPage) {
  uint64_t addr = mm.mmap_anon(kPageSize, kProtRead | kProtWrite);
  cpu.load64(addr);  // zero page, cached in the TLB
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(break_cow(mm, addr), FaultResult::kOk);
  // do_wp_page looks under the PTL and drops it; wp_page_copy: range start,
  // PTL, new rmap, ptep_clear_flush, (2008: invalidate_page), set_pte_at
  // (no change_pte since 6.10), PTL drop, range end, old page put (the zero
  // page has no reference to put).
  Steps expected = {"ptl_lock",  "ptl_unlock", "before_change", "ptl_lock",       "rmap_add",
                    "pte_clear", "tlb_flush",  "tlb_ack",       "secondary_tlbs", "in_ptl_cleared",
                    "pte_set",   "ptl_unlock", "after_unlock",  "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kClear});
  expect_atomic_context_only_inside_ptl();
}

TEST_F(OrderTest, CowBreakOfAPageSharedWithAChild) {
  uint64_t addr = anon_written(1, 5);
  Pfn old_pfn = pfn_at(addr);
  std::unique_ptr<Mm> child = mm.fork();
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(break_cow(mm, addr), FaultResult::kOk);
  // The old page stays (the child maps it): its rmap entry goes, no free.
  Steps expected = {"ptl_lock",  "ptl_unlock",  "before_change", "ptl_lock",       "rmap_add",
                    "pte_clear", "tlb_flush",   "tlb_ack",       "secondary_tlbs", "in_ptl_cleared",
                    "pte_set",   "rmap_remove", "ptl_unlock",    "after_unlock",   "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(phys.page(old_pfn).mapcount.load(), 1);
  EXPECT_TRUE(audit(phys, {&mm, child.get()}, {&file}).empty());
}

// Before 6.10 wp_page_copy set the new PTE with set_pte_at_notify; 6.6 also
// has arch_invalidate_secondary_tlbs, so both appear.
TEST_F(OrderTest, CowBreakBefore610CallsChangePteAfterTheNewPte) {
  mm.set_era(KernelEra::k6_6);
  uint64_t addr = mm.mmap_anon(kPageSize, kProtRead | kProtWrite);
  cpu.load64(addr);
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(break_cow(mm, addr), FaultResult::kOk);
  Steps expected = {"ptl_lock",  "ptl_unlock", "before_change", "ptl_lock",       "rmap_add",
                    "pte_clear", "tlb_flush",  "tlb_ack",       "secondary_tlbs", "in_ptl_cleared",
                    "pte_set",   "change_pte", "ptl_unlock",    "after_unlock",   "after_release"};
  EXPECT_EQ(steps(), expected);
  expect_atomic_context_only_inside_ptl();
}

TEST_F(OrderTest, ForkWriteProtectsTheParentUnderTheNotifierPoints) {
  uint64_t addr = anon_written(1, 5);
  hooks.clear();
  trace::Session session;
  std::unique_ptr<Mm> child = mm.fork();
  // copy_pte_range: child PTL, parent PTL, ptep_set_wrprotect, (notifier),
  // child PTE + rmap; the parent's TLB flushed before the range closes.
  Steps expected = {"before_change",  "ptl_lock",     "ptl_lock", "pte_set",
                    "in_ptl_cleared", "rmap_add",     "pte_set",  "ptl_unlock",
                    "ptl_unlock",     "tlb_flush",    "tlb_ack",  "secondary_tlbs",
                    "after_unlock",   "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kProtectionPage});
  EXPECT_FALSE(cpu.tlb_cached(addr));
  EXPECT_EQ(child->notifier_hooks(), nullptr);
}

TEST_F(OrderTest, MigrateUnmapsToMigrationEntriesCopiesAndRemaps) {
  uint64_t addr = anon_written(1, 9);
  Pfn old_pfn = pfn_at(addr);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(migrate_page(mm, addr));
  // migrate_pages_batch's async pass: try_to_migrate_one with TTU_BATCH_FLUSH
  // (PTE cleared, no flush; rmap and reference dropped inside the PTL), range
  // end, then try_to_unmap_flush; move; remove_migration_ptes; old page freed.
  Steps expected = {"ptl_lock",      "ptl_unlock",  // lookup
                    "before_change", "ptl_lock",    "pte_clear",  "in_ptl_cleared",
                    "pte_set",       "rmap_remove", "ptl_unlock", "after_unlock",
                    "after_release", "tlb_flush",   "tlb_ack",    "secondary_tlbs",  // unmapped
                    "ptl_lock",      "rmap_add",    "pte_set",    "ptl_unlock",      // remapped
                    "page_free"};
  EXPECT_EQ(steps(), expected);
  // MMU_NOTIFY_CLEAR: MIGRATE belongs to migrate_vma (device memory).
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kClear});
  EXPECT_TRUE(phys.is_free(old_pfn));
  EXPECT_EQ(cpu.load64(addr), 9u);
  expect_atomic_context_only_inside_ptl();
}

// Migration before 6.3 (no migrate_pages_batch): ptep_clear_flush inside the
// PTL, the flush before the range closes.
TEST_F(OrderTest, MigrateBefore63FlushesInsideThePtl) {
  mm.set_era(KernelEra::k6_1);
  uint64_t addr = anon_written(1, 9);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(migrate_page(mm, addr));
  Steps expected = {"ptl_lock",   "ptl_unlock",   "before_change",  "ptl_lock", "pte_clear",
                    "tlb_flush",  "tlb_ack",      "in_ptl_cleared", "pte_set",  "rmap_remove",
                    "ptl_unlock", "after_unlock", "after_release",  "ptl_lock", "rmap_add",
                    "pte_set",    "ptl_unlock",   "page_free"};
  EXPECT_EQ(steps(), expected);
}

TEST_F(OrderTest, RemapIn2627ReplacesAPresentPteWithMmapLockReadHeld) {
  mm.set_era(KernelEra::k2_6_27);
  uint64_t addr = mm.mmap_file(file, 0, kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 1);  // page 0 mapped writable and dirty
  Pfn old_pfn = pfn_at(addr);
  phys.page(old_pfn).clear(kPageDirty);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(remap_file_page(mm, addr, 5));
  Steps expected = {"mmap_lock_read", "before_change", "ptl_lock",        "pte_clear",
                    "tlb_flush",      "tlb_ack",       "in_ptl_cleared",  "page_dirty",
                    "rmap_add",       "pte_set",       "rmap_remove",     "ptl_unlock",
                    "after_unlock",   "after_release", "mmap_unlock_read"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kMmapLock, Kind::kMmapUnlock, Kind::kPageDirty})),
            expected);
  EXPECT_TRUE(phys.page(old_pfn).test(kPageDirty));  // the PTE's dirty bit reached the page
  EXPECT_EQ(pfn_at(addr), file.cached_pfn(5));
  EXPECT_FALSE(mm.read_pte_lockless(addr).writable());
  EXPECT_EQ(cpu.load64(addr), File::pattern_word(file.id(), 5, 0));
  EXPECT_TRUE(audit_all().empty());
}

// Since 4.0 remap_file_pages is do_mmap(MAP_FIXED) under mmap_lock for
// write: one MMU_NOTIFY_UNMAP range zaps the old PTE (a dirty shared page:
// forced flush, delayed rmap), then MAP_POPULATE read-faults the new page in
// under mmap_lock for read.
TEST_F(OrderTest, RemapSince40UnmapsUnderMmapLockWriteThenPopulates) {
  uint64_t addr = mm.mmap_file(file, 0, 2 * kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 1);
  Pfn old_pfn = pfn_at(addr);
  phys.page(old_pfn).clear(kPageDirty);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(remap_file_page(mm, addr, 5));
  Steps expected = {"mmap_lock_write", "before_change",     "ptl_lock",       "pte_clear",
                    "in_ptl_cleared",  "page_dirty",        "tlb_flush",      "tlb_ack",
                    "secondary_tlbs",  "rmap_remove",       "ptl_unlock",     "after_unlock",
                    "after_release",   "mmap_unlock_write", "mmap_lock_read", "ptl_lock",
                    "rmap_add",        "pte_set",           "ptl_unlock",     "mmap_unlock_read"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kMmapLock, Kind::kMmapUnlock, Kind::kPageDirty})),
            expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kUnmap});
  EXPECT_TRUE(phys.page(old_pfn).test(kPageDirty));
  EXPECT_EQ(pfn_at(addr), file.cached_pfn(5));
  EXPECT_FALSE(mm.read_pte_lockless(addr).writable());
  // The page got a VMA of its own at file page 5; its neighbour keeps page 1.
  std::vector<Vma> vmas = mm.vma_snapshot();
  ASSERT_EQ(vmas.size(), 2u);
  EXPECT_EQ(vmas[0].pgoff, 5u);
  EXPECT_EQ(vmas[1].pgoff, 1u);
  EXPECT_EQ(cpu.load64(addr + kPageSize), File::pattern_word(file.id(), 1, 0));
  // Remapping page 0 back continues the neighbour's offsets: one VMA again.
  ASSERT_TRUE(remap_file_page(mm, addr, 0));
  EXPECT_EQ(mm.vma_snapshot().size(), 1u);
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(OrderTest, DontneedGathersThenFlushesAfterTheRangeEndAndFrees) {
  uint64_t addr = anon_written(2, 1);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(madvise_dontneed(mm, addr, 2 * kPageSize));
  // zap_pte_range (no flush inside the PTL for anon pages), range end, then
  // tlb_finish_mmu: flush, free the batch.
  Steps expected = {"before_change",  "ptl_lock",     "pte_clear",      "in_ptl_cleared",
                    "rmap_remove",    "pte_clear",    "in_ptl_cleared", "rmap_remove",
                    "ptl_unlock",     "after_unlock", "tlb_flush",      "tlb_ack",
                    "secondary_tlbs", "page_free",    "page_free",      "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kClear});
  expect_atomic_context_only_inside_ptl();
}

// The fix of the dontneed-tlb seed race (mm/mm.h DontneedFlush): the flush
// moves inside the PTL, before any fault can install a new page; nothing is
// left for tlb_finish_mmu to flush.
TEST_F(OrderTest, DontneedFlushBeforePtlUnlockFlushesInsideThePtl) {
  mm.set_dontneed_flush(DontneedFlush::kBeforePtlUnlock);
  uint64_t addr = anon_written(2, 1);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(madvise_dontneed(mm, addr, 2 * kPageSize));
  Steps expected = {"before_change", "ptl_lock",  "pte_clear",      "in_ptl_cleared",
                    "rmap_remove",   "pte_clear", "in_ptl_cleared", "rmap_remove",
                    "tlb_flush",     "tlb_ack",   "secondary_tlbs", "ptl_unlock",
                    "after_unlock",  "page_free", "page_free",      "after_release"};
  EXPECT_EQ(steps(), expected);
  expect_atomic_context_only_inside_ptl();
}

TEST_F(OrderTest, DontneedOfDirtySharedFileDelaysRmapUntilTheFlush) {
  uint64_t addr = mm.mmap_file(file, 0, kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 1);
  phys.page(pfn_at(addr)).clear(kPageDirty);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(madvise_dontneed(mm, addr, kPageSize));
  // Linux 6.2: force_flush inside the PTL, then the delayed rmap removal.
  Steps expected = {"before_change", "ptl_lock",   "pte_clear",    "in_ptl_cleared",
                    "page_dirty",    "tlb_flush",  "tlb_ack",      "secondary_tlbs",
                    "rmap_remove",   "ptl_unlock", "after_unlock", "after_release"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kPageDirty})), expected);
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(OrderTest, DontneedBefore62RemovedTheRmapBeforeTheFlush) {
  mm.set_era(KernelEra::k6_1);  // ZapRmapOrder::kImmediate
  ASSERT_EQ(mm.zap_rmap_order(), ZapRmapOrder::kImmediate);
  uint64_t addr = mm.mmap_file(file, 0, kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 1);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(madvise_dontneed(mm, addr, kPageSize));
  Steps expected = {"before_change", "ptl_lock", "pte_clear",  "in_ptl_cleared", "rmap_remove",
                    "tlb_flush",     "tlb_ack",  "ptl_unlock", "after_unlock",   "after_release"};
  EXPECT_EQ(steps(), expected);
}

// The pagewalk-ptl seed race, fixed (mm/mm.h WalkPteLock): the walker's
// per-PTE step (ptep_modify_prot_start/commit) runs under the PTL, the
// range is flushed after the walk, before the range ends.
TEST_F(OrderTest, WpCleanRewritesEachPteUnderThePtlThenFlushes) {
  uint64_t addr = mm.mmap_file(file, 0, kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 1);  // writable and dirty
  phys.page(pfn_at(addr)).clear(kPageDirty);
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(wp_clean_range(mm, addr, kPageSize), 1u);
  // Since 6.6 every host TLB flush ends with arch_invalidate_secondary_tlbs.
  Steps expected = {"before_change", "ptl_lock",       "pte_clear",    "in_ptl_cleared",
                    "pte_set",       "page_dirty",     "ptl_unlock",   "tlb_flush",
                    "tlb_ack",       "secondary_tlbs", "after_unlock", "after_release"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kPageDirty})), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kProtectionPage});
  const Pte pte = mm.read_pte_lockless(addr);
  EXPECT_FALSE(pte.writable());
  EXPECT_FALSE(pte.dirty());
  expect_atomic_context_only_inside_ptl();
  EXPECT_TRUE(audit_all().empty());
}

// The same walk before Linux took the PTL in walk_pte_range (buggy): no PTL,
// the entry is rewritten from the copy the walker read (one set, no clear),
// and the "in PTL" notifier point runs outside any lock.
TEST_F(OrderTest, WpCleanWithoutThePtlWritesItsCopyBack) {
  mm.set_walk_pte_lock(WalkPteLock::kUnlocked);
  uint64_t addr = mm.mmap_file(file, 0, kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 1);
  phys.page(pfn_at(addr)).clear(kPageDirty);
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(wp_clean_range(mm, addr, kPageSize), 1u);
  Steps expected = {"before_change",  "pte_set",      "in_ptl_cleared",
                    "page_dirty",     "tlb_flush",    "tlb_ack",
                    "secondary_tlbs", "after_unlock", "after_release"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kPageDirty})), expected);
  for (const HookCall& call : hooks.calls()) {
    EXPECT_EQ(call.atomic_depth, 0) << hook_point_name(call.point);
  }
  EXPECT_TRUE(audit_all().empty());  // nothing raced: the copy was current
}

// Clean read-only PTEs, anonymous and private mappings are left alone.
TEST_F(OrderTest, WpCleanSkipsCleanReadOnlyAndPrivateMappings) {
  uint64_t shared = mm.mmap_file(file, 0, kPageSize, kProtRead | kProtWrite, true);
  uint64_t anon = anon_written(1, 3);
  cpu.load64(shared);  // mapped read-only, clean
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(wp_clean_range(mm, shared, kPageSize), 0u);
  EXPECT_EQ(wp_clean_range(mm, anon, kPageSize), 0u);
  Steps expected = {"before_change", "ptl_lock", "ptl_unlock", "after_unlock", "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_TRUE(mm.read_pte_lockless(anon).writable());
}

TEST_F(OrderTest, MunmapRemovesVmasThenZapsUnderMmapLockWrite) {
  uint64_t addr = anon_written(1, 1);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(munmap(mm, addr, kPageSize));
  Steps expected = {"mmap_lock_write", "before_change",    "ptl_lock",       "pte_clear",
                    "in_ptl_cleared",  "rmap_remove",      "ptl_unlock",     "after_unlock",
                    "tlb_flush",       "tlb_ack",          "secondary_tlbs", "page_free",
                    "after_release",   "mmap_unlock_write"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kMmapLock, Kind::kMmapUnlock})), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kUnmap});
  EXPECT_THROW(cpu.load64(addr), SegFault);
  EXPECT_FALSE(munmap(mm, addr, kPageSize));
}

TEST_F(OrderTest, MprotectChangesEachPteUnderThePtlAndFlushesAfterTheRangeEnd) {
  uint64_t addr = anon_written(2, 1);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(mprotect(mm, addr, 2 * kPageSize, kProtRead));
  // change_pte_range: ptep_modify_prot_start/commit per PTE; range end in
  // change_pud_range; the mmu_gather's flush in tlb_finish_mmu after it.
  Steps expected = {"before_change",  "ptl_lock",     "pte_clear",      "in_ptl_cleared",
                    "pte_set",        "pte_clear",    "in_ptl_cleared", "pte_set",
                    "ptl_unlock",     "after_unlock", "tlb_flush",      "tlb_ack",
                    "secondary_tlbs", "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kProtectionVma});
  EXPECT_THROW(cpu.store64(addr, 3), SegFault);
  EXPECT_EQ(cpu.load64(addr + kPageSize), 2u);
  expect_atomic_context_only_inside_ptl();
}

// Between invalidate_range_end and the flush a host CPU still writes
// through its stale writable TLB entry: the window the 2.6.27 order closed.
// do_mprotect_pkey calls mprotect_fixup VMA by VMA: a range over three
// VMAs is three change_protection brackets, a VMA that already has the
// protection is skipped (no split, no bracket), and the one mmu_gather
// flushes once, after the last bracket's end (measured on Linux 6.18 with
// sptelab conform: mprotect of a file slot split by remap_file_pages).
TEST_F(OrderTest, MprotectBracketsEachVmaAndFlushesOnceAfterTheLast) {
  const uint64_t addr = mm.mmap_file(file, 0, 6 * kPageSize, kProtRead | kProtWrite, true);
  for (uint64_t i = 0; i < 6; ++i) cpu.store64(addr + i * kPageSize, i);
  ASSERT_TRUE(mprotect(mm, addr + 2 * kPageSize, 2 * kPageSize, kProtRead));  // three VMAs
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(mprotect(mm, addr, 6 * kPageSize, kProtRead));
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const HookCall& call : hooks.calls()) {
    if (call.point == HookPoint::kBeforeChange) ranges.emplace_back(call.start, call.end);
  }
  const std::vector<std::pair<uint64_t, uint64_t>> expected_ranges = {
      {addr, addr + 2 * kPageSize}, {addr + 4 * kPageSize, addr + 6 * kPageSize}};
  EXPECT_EQ(ranges, expected_ranges);
  Steps expected = {
      "before_change", "ptl_lock",       "pte_clear",      "in_ptl_cleared", "pte_set",
      "pte_clear",     "in_ptl_cleared", "pte_set",        "ptl_unlock",     "after_unlock",
      "after_release", "before_change",  "ptl_lock",       "pte_clear",      "in_ptl_cleared",
      "pte_set",       "pte_clear",      "in_ptl_cleared", "pte_set",        "ptl_unlock",
      "after_unlock",  "tlb_flush",      "tlb_ack",        "secondary_tlbs", "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(mm.vma_snapshot().size(), 1u);  // merged back into one read-only VMA
}

TEST_F(OrderTest, MprotectLeavesAStaleWritableTlbEntryPastTheRangeEnd) {
  uint64_t addr = anon_written(1, 1);
  bool checked = false;
  inject::ScopedHook hook(
      inject::Point::kTlbBeforeFlush, [&](inject::Point, const inject::Context&) {
        if (checked) return;
        checked = true;
        EXPECT_EQ(hooks.calls().back().point, HookPoint::kAfterUnlock);  // "end" already told
        EXPECT_TRUE(cpu.tlb_cached(addr));
        cpu.store64(addr, 7);  // no fault: the TLB still says writable
      });
  hooks.clear();
  ASSERT_TRUE(mprotect(mm, addr, kPageSize, kProtRead));
  ASSERT_TRUE(checked);
  EXPECT_EQ(cpu.load64(addr), 7u);
  EXPECT_THROW(cpu.store64(addr, 8), SegFault);
}

TEST_F(OrderTest, MprotectIn2627FlushedBeforeTheRangeEnd) {
  mm.set_era(KernelEra::k2_6_27);
  uint64_t addr = anon_written(1, 1);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(mprotect(mm, addr, kPageSize, kProtRead));
  Steps expected = {"before_change", "ptl_lock",  "pte_clear", "in_ptl_cleared", "pte_set",
                    "ptl_unlock",    "tlb_flush", "tlb_ack",   "after_unlock",   "after_release"};
  EXPECT_EQ(steps(), expected);
}

// __split_vma -> __split_huge_pmd: a cut inside a 2 MiB block that lies in
// the VMA brackets the block ([0, 512) pages) with MMU_NOTIFY_CLEAR before
// the protection range, though no huge PMD exists (the kernel's trace shows
// it for a 16-page mprotect in a MADV_NOHUGEPAGE VMA). The end cut's block
// starts before the new VMA: no second bracket.
TEST_F(OrderTest, MprotectInsideA2MiBBlockBracketsTheWholeBlockFirst) {
  constexpr uint64_t kBase = uint64_t{1} << 40;  // 2 MiB aligned
  const uint64_t vma = mm.mmap_anon(2 * kPteTableSpan, kProtRead | kProtWrite, kBase);
  cpu.store64(vma + 20 * kPageSize, 1);  // the block's page table exists
  hooks.clear();
  ASSERT_TRUE(mprotect(mm, vma + 16 * kPageSize, 16 * kPageSize, kProtRead));
  const std::vector<HookCall> calls = hooks.calls();
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const HookCall& call : calls) {
    if (call.point == HookPoint::kBeforeChange) ranges.emplace_back(call.start, call.end);
  }
  const std::vector<std::pair<uint64_t, uint64_t>> expected = {
      {vma, vma + kPteTableSpan}, {vma + 16 * kPageSize, vma + 32 * kPageSize}};
  EXPECT_EQ(ranges, expected);
  EXPECT_EQ(events(), (std::vector<InvalidateEvent>{InvalidateEvent::kClear,
                                                    InvalidateEvent::kProtectionVma}));
  // Back to read/write: the three VMAs merge, no cut, no block bracket.
  hooks.clear();
  ASSERT_TRUE(mprotect(mm, vma + 16 * kPageSize, 16 * kPageSize, kProtRead | kProtWrite));
  EXPECT_EQ(mm.vma_snapshot().size(), 1u);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kProtectionVma});
}

// mm_find_pmd finds the PMD table of a block whose PTE table was never
// populated (the PMD table spans 1 GiB): such a block is bracketed too. A
// VMA in a gigabyte with no table at all gets the unmap range alone.
TEST_F(OrderTest, MunmapInsideA2MiBBlockBracketsTheBlockThenUnmaps) {
  constexpr uint64_t kBase = uint64_t{1} << 40;
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  const uint64_t vma = mm.mmap_anon(2 * kPteTableSpan, kProtRead | kProtWrite, kBase);
  const uint64_t untouched = mm.mmap_anon(2 * kPteTableSpan, kProtRead | kProtWrite, kBase + kGiB);
  cpu.store64(vma + kPteTableSpan + 3 * kPageSize, 1);  // the first block has no PTE table
  hooks.clear();
  ASSERT_TRUE(munmap(mm, vma + 8 * kPageSize, 8 * kPageSize));
  ASSERT_TRUE(munmap(mm, untouched + 8 * kPageSize, 8 * kPageSize));
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const HookCall& call : hooks.calls()) {
    if (call.point == HookPoint::kBeforeChange) ranges.emplace_back(call.start, call.end);
  }
  const std::vector<std::pair<uint64_t, uint64_t>> expected = {
      {vma, vma + kPteTableSpan},
      {vma + 8 * kPageSize, vma + 16 * kPageSize},
      {untouched + 8 * kPageSize, untouched + 16 * kPageSize}};
  EXPECT_EQ(ranges, expected);
  EXPECT_EQ(events(),
            (std::vector<InvalidateEvent>{InvalidateEvent::kClear, InvalidateEvent::kUnmap,
                                          InvalidateEvent::kUnmap}));
}

// No THP before 2.6.38, and a block that sticks out of the VMA cannot hold
// a huge page: the cut alone.
TEST_F(OrderTest, VmaSplitsWithoutABlockBracketIn2627OrInASmallVma) {
  constexpr uint64_t kBase = uint64_t{1} << 40;
  const uint64_t small = mm.mmap_anon(64 * kPageSize, kProtRead | kProtWrite, kBase);
  cpu.store64(small, 1);
  hooks.clear();
  ASSERT_TRUE(mprotect(mm, small + 8 * kPageSize, kPageSize, kProtRead));
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kProtectionVma});
  mm.set_era(KernelEra::k2_6_27);
  const uint64_t large = mm.mmap_anon(kPteTableSpan, kProtRead | kProtWrite, kBase + kPteTableSpan);
  cpu.store64(large, 1);
  hooks.clear();
  ASSERT_TRUE(mprotect(mm, large + 8 * kPageSize, kPageSize, kProtRead));
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kProtectionVma});
}

TEST_F(OrderTest, MkcleanWriteProtectsWithClearFlushAndMovesDirtyToThePage) {
  uint64_t addr = mm.mmap_file(file, 2, kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 1);
  Pfn pfn = pfn_at(addr);
  phys.page(pfn).clear(kPageDirty);
  hooks.clear();
  trace::Session session;
  EXPECT_TRUE(page_mkclean(phys, pfn));
  // page_vma_mkclean_one: range start, PTL, ptep_clear_flush, (2008:
  // invalidate_page), wrprotect+clean, PTL drop, range end.
  Steps expected = {"before_change", "ptl_lock",       "pte_clear",      "tlb_flush",
                    "tlb_ack",       "secondary_tlbs", "in_ptl_cleared", "page_dirty",
                    "pte_set",       "ptl_unlock",     "after_unlock",   "after_release"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kPageDirty})), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kProtectionPage});
  Pte pte = mm.read_pte_lockless(addr);
  EXPECT_FALSE(pte.writable() || pte.dirty());
  EXPECT_TRUE(phys.page(pfn).test(kPageDirty));
  EXPECT_FALSE(page_mkclean(phys, pfn));  // nothing dirty any more: no PTE change
}

TEST_F(OrderTest, WritebackNestsMkcleanUnderThePageLock) {
  uint64_t addr = mm.mmap_file(file, 2, kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr + 16, 0xabc);
  hooks.clear();
  trace::Session session;
  EXPECT_TRUE(writeback_page(file, 2));
  Steps expected = {"mm_op_begin",    "mm_op_begin",    "before_change", "pte_clear",
                    "secondary_tlbs", "in_ptl_cleared", "pte_set",       "after_unlock",
                    "after_release",  "mm_op_end",      "mm_op_end"};
  EXPECT_EQ(
      steps({Kind::kMmOpBegin, Kind::kMmOpEnd, Kind::kPteClear, Kind::kPteSet, Kind::kCheckpoint}),
      expected);
  EXPECT_EQ(file.disk_word(2, 2), 0xabcu);
  EXPECT_FALSE(phys.page(pfn_at(addr)).test(kPageDirty));
  EXPECT_FALSE(writeback_page(file, 2));  // clean now
}

TEST_F(OrderTest, KsmWriteProtectsBothThenReplaces) {
  uint64_t a = anon_written(1, 7);
  uint64_t b = anon_written(1, 7);  // same content (7 in word 0, zeros elsewhere)
  Pfn pa = pfn_at(a);
  Pfn pb = pfn_at(b);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(ksm_merge(mm, a, b));
  Steps write_protect = {"before_change", "ptl_lock",       "pte_clear",      "tlb_flush",
                         "tlb_ack",       "secondary_tlbs", "in_ptl_cleared", "pte_set",
                         "ptl_unlock",    "after_unlock",   "after_release"};
  Steps expected = {"ptl_lock", "ptl_unlock", "ptl_lock", "ptl_unlock"};  // get_mergeable_page x2
  expected.insert(expected.end(), write_protect.begin(), write_protect.end());
  expected.insert(expected.end(), write_protect.begin(), write_protect.end());
  // replace_page drops b's rmap entry and its PTE's reference inside the
  // PTL; b is freed when ksm_merge drops its own.
  Steps replace = {"before_change", "ptl_lock",       "rmap_add",       "pte_clear", "tlb_flush",
                   "tlb_ack",       "secondary_tlbs", "in_ptl_cleared", "pte_set",   "rmap_remove",
                   "ptl_unlock",    "after_unlock",   "after_release",  "page_free"};
  expected.insert(expected.end(), replace.begin(), replace.end());
  EXPECT_EQ(steps(), expected);
  // write_protect_page and replace_page both use MMU_NOTIFY_CLEAR.
  EXPECT_EQ(events(),
            (std::vector<InvalidateEvent>{InvalidateEvent::kClear, InvalidateEvent::kClear,
                                          InvalidateEvent::kClear}));
  EXPECT_EQ(pfn_at(b), pa);
  EXPECT_TRUE(phys.is_free(pb));
  EXPECT_TRUE(phys.page(pa).test(kPageKsm));
  expect_atomic_context_only_inside_ptl();
}

TEST_F(OrderTest, ReclaimAgesThenUnmapsEachMappingThenFrees) {
  uint64_t addr = mm.mmap_file(file, 1, kPageSize, kProtRead, true);
  cpu.load64(addr);
  Pfn pfn = pfn_at(addr);
  hooks.clear();
  {
    trace::Session session;
    // Young PTE: page_referenced clears it (with clear_flush_young inside
    // the PTL) and the page is kept.
    EXPECT_EQ(reclaim_page(phys, pfn), ReclaimResult::kReferenced);
    Steps expected = {"ptl_lock", "pte_set", "clear_flush_young", "ptl_unlock"};
    EXPECT_EQ(steps(), expected);
  }
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(reclaim_page(phys, pfn), ReclaimResult::kReclaimed);
  // page_referenced (old now), try_to_unmap_one, __remove_mapping, free.
  // try_to_unmap_one with TTU_BATCH_FLUSH: no flush inside the PTL; the
  // page is clean, so try_to_unmap_flush comes after __remove_mapping,
  // right before the frame is freed.
  Steps expected = {"ptl_lock",   "clear_flush_young", "ptl_unlock",     "before_change",
                    "ptl_lock",   "pte_clear",         "in_ptl_cleared", "rmap_remove",
                    "ptl_unlock", "after_unlock",      "after_release",  "tlb_flush",
                    "tlb_ack",    "secondary_tlbs",    "page_free"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kClear});
  EXPECT_TRUE(phys.is_free(pfn));
  EXPECT_EQ(file.cached_pfn(1), kNoPfn);
  expect_atomic_context_only_inside_ptl();
}

// A dirty page: try_to_unmap_flush_dirty before pageout() reads it, so a
// CPU's stale dirty TLB entry cannot write behind the write-back.
TEST_F(OrderTest, ReclaimOfADirtyPageFlushesBeforeItsWriteback) {
  uint64_t addr = mm.mmap_file(file, 1, kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 0x77);
  Pfn pfn = pfn_at(addr);
  bool flushed_before_writeback = false;
  inject::ScopedHook hook(inject::Point::kTlbBeforeFlush,
                          [&](inject::Point, const inject::Context&) {
                            flushed_before_writeback = file.disk_word(1, 0) != 0x77u;
                          });
  EXPECT_EQ(reclaim_page(phys, pfn, false), ReclaimResult::kReclaimed);
  EXPECT_TRUE(flushed_before_writeback);
  EXPECT_EQ(file.disk_word(1, 0), 0x77u);
}

TEST_F(OrderTest, ReclaimIn2627FlushedInsideThePtl) {
  mm.set_era(KernelEra::k2_6_27);
  uint64_t addr = mm.mmap_file(file, 1, kPageSize, kProtRead, true);
  cpu.load64(addr);
  Pfn pfn = pfn_at(addr);
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(reclaim_page(phys, pfn, false), ReclaimResult::kReclaimed);
  Steps expected = {"before_change", "ptl_lock",       "pte_clear",   "tlb_flush",
                    "tlb_ack",       "in_ptl_cleared", "rmap_remove", "ptl_unlock",
                    "after_unlock",  "after_release",  "page_free"};
  EXPECT_EQ(steps(), expected);
}

TEST_F(OrderTest, AgingCallsClearYoungAndTestYoungInsideThePtl) {
  uint64_t addr = anon_written(1, 1);
  hooks.clear();
  hooks.secondary_young = true;
  trace::Session session;
  EXPECT_EQ(age_range(mm, addr, addr + kPageSize), 1u);
  EXPECT_FALSE(mm.read_pte_lockless(addr).accessed());
  EXPECT_TRUE(test_young(mm, addr));  // the PTE is old: the secondary MMU is asked
  hooks.secondary_young = false;
  EXPECT_FALSE(test_young(mm, addr));
  Steps expected = {"ptl_lock",   "pte_set",    "clear_young", "ptl_unlock", "ptl_lock",
                    "test_young", "ptl_unlock", "ptl_lock",    "test_young", "ptl_unlock"};
  EXPECT_EQ(steps(), expected);
  expect_atomic_context_only_inside_ptl();
}

// fallocate(PUNCH_HOLE): unmap_mapping_range brackets every VMA that shows
// part of the hole, each over its own part (zap_page_range_single,
// MMU_NOTIFY_CLEAR), with the zap's order inside; then
// truncate_inode_pages_range drops each page from the cache and frees it,
// after every bracket has closed.
TEST_F(OrderTest, PunchHoleZapsEveryVmaShowingTheHoleThenFreesThePages) {
  const uint64_t a = mm.mmap_file(file, 0, 4 * kPageSize, kProtRead, true);  // pages 0-3
  const uint64_t b = mm.mmap_file(file, 2, 4 * kPageSize, kProtRead, true);  // pages 2-5
  for (uint64_t i = 0; i < 4; ++i) {
    cpu.load64(a + i * kPageSize);
    cpu.load64(b + i * kPageSize);
  }
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(punch_hole(file, 3, 2), 2u);  // pages 3 and 4
  Steps expected = {
      // a shows page 3
      "before_change", "ptl_lock", "pte_clear", "in_ptl_cleared", "rmap_remove", "ptl_unlock",
      "after_unlock", "tlb_flush", "tlb_ack", "secondary_tlbs", "after_release",
      // b shows pages 3 and 4
      "before_change", "ptl_lock", "pte_clear", "in_ptl_cleared", "rmap_remove", "pte_clear",
      "in_ptl_cleared", "rmap_remove", "ptl_unlock", "after_unlock", "tlb_flush", "tlb_ack",
      "secondary_tlbs", "after_release",
      // truncate_inode_pages_range: the page cache held the last references
      "page_free", "page_free"};
  EXPECT_EQ(steps(), expected);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const HookCall& call : hooks.calls()) {
    if (call.point == HookPoint::kBeforeChange) ranges.emplace_back(call.start, call.end);
  }
  const std::vector<std::pair<uint64_t, uint64_t>> expected_ranges = {
      {a + 3 * kPageSize, a + 4 * kPageSize}, {b + 1 * kPageSize, b + 3 * kPageSize}};
  EXPECT_EQ(ranges, expected_ranges);
  EXPECT_EQ(events(),
            (std::vector<InvalidateEvent>{InvalidateEvent::kClear, InvalidateEvent::kClear}));
  expect_atomic_context_only_inside_ptl();
}

// A VMA over the hole with no PTE present is still bracketed: the
// notifier range comes from the VMA, not from what is mapped.
TEST_F(OrderTest, PunchHoleBracketsAVmaWithNothingMapped) {
  const uint64_t addr = mm.mmap_file(file, 0, 4 * kPageSize, kProtRead, true);
  hooks.clear();
  trace::Session session;
  EXPECT_EQ(punch_hole(file, 1, 2), 0u);
  Steps expected = {"before_change", "after_unlock", "after_release"};
  EXPECT_EQ(steps(), expected);
  ASSERT_EQ(hooks.calls().size(), 3u);
  EXPECT_EQ(hooks.calls()[0].start, addr + kPageSize);
  EXPECT_EQ(hooks.calls()[0].end, addr + 3 * kPageSize);
}

TEST(OrderExitTest, ExitCallsReleaseFirstThenZapsWithoutNotifier) {
  PhysMem phys(64);
  RecordingHooks hooks;
  auto mm = std::make_unique<Mm>(phys);
  mm->set_notifier_hooks(&hooks);
  uint64_t addr = mm->mmap_anon(kPageSize, kProtRead | kProtWrite);
  {
    HostCpu cpu(*mm, 0);
    cpu.store64(addr, 1);
  }
  trace::Session session;
  mm.reset();
  // exit_mmap: mmu_notifier_release, unmap, free page tables (4 levels).
  Steps expected = {"release",   "ptl_lock",  "pte_clear", "rmap_remove", "ptl_unlock", "tlb_flush",
                    "page_free", "page_free", "page_free", "page_free",   "page_free"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(hooks.calls().size(), 1u);
  EXPECT_EQ(phys.stats().free, 64u);
}

}  // namespace
}  // namespace sptelab::mm::testing
