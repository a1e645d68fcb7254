// For every mm operation: the exact sequence of PTL acquire/release, PTE
// change, TLB flush, notifier point and page free, recorded with the trace
// and the recording hooks, against the order documented in mm/README.md.

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
  // inside the PTL.
  void expect_atomic_context_only_inside_ptl() {
    for (const HookCall& call : hooks.calls()) {
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
  // PTL, new rmap, ptep_clear_flush, (2008: invalidate_page),
  // set_pte_at_notify, PTL drop, range end, old page put (the zero page has
  // no reference to put).
  Steps expected = {"ptl_lock",   "ptl_unlock", "before_change", "ptl_lock",       "rmap_add",
                    "pte_clear",  "tlb_flush",  "tlb_ack",       "in_ptl_cleared", "pte_set",
                    "change_pte", "ptl_unlock", "after_unlock",  "after_release"};
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
  Steps expected = {"ptl_lock",       "ptl_unlock",   "before_change", "ptl_lock",
                    "rmap_add",       "pte_clear",    "tlb_flush",     "tlb_ack",
                    "in_ptl_cleared", "pte_set",      "change_pte",    "rmap_remove",
                    "ptl_unlock",     "after_unlock", "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(phys.page(old_pfn).mapcount.load(), 1);
  EXPECT_TRUE(audit(phys, {&mm, child.get()}, {&file}).empty());
}

TEST_F(OrderTest, ForkWriteProtectsTheParentUnderTheNotifierPoints) {
  uint64_t addr = anon_written(1, 5);
  hooks.clear();
  trace::Session session;
  std::unique_ptr<Mm> child = mm.fork();
  // copy_pte_range: child PTL, parent PTL, ptep_set_wrprotect, (notifier),
  // child PTE + rmap; the parent's TLB flushed before the range closes.
  Steps expected = {"before_change", "ptl_lock",     "ptl_lock",     "pte_set",    "in_ptl_cleared",
                    "rmap_add",      "pte_set",      "ptl_unlock",   "ptl_unlock", "tlb_flush",
                    "tlb_ack",       "after_unlock", "after_release"};
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
  // try_to_migrate_one, then remove_migration_ptes, then the old page freed.
  Steps expected = {"ptl_lock",      "ptl_unlock",  // lookup
                    "before_change", "ptl_lock",       "pte_clear",     "tlb_flush",
                    "tlb_ack",       "in_ptl_cleared", "pte_set",       "rmap_remove",
                    "ptl_unlock",    "after_unlock",   "after_release",                // unmapped
                    "ptl_lock",      "rmap_add",       "pte_set",       "ptl_unlock",  // remapped
                    "page_free"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kMigrate});
  EXPECT_TRUE(phys.is_free(old_pfn));
  EXPECT_EQ(cpu.load64(addr), 9u);
  expect_atomic_context_only_inside_ptl();
}

TEST_F(OrderTest, RemapReplacesAPresentPteWithMmapLockReadHeld) {
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

TEST_F(OrderTest, DontneedGathersThenFlushesAfterTheRangeEndAndFrees) {
  uint64_t addr = anon_written(2, 1);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(madvise_dontneed(mm, addr, 2 * kPageSize));
  // zap_pte_range (no flush inside the PTL for anon pages), range end, then
  // tlb_finish_mmu: flush, free the batch.
  Steps expected = {"before_change", "ptl_lock",     "pte_clear",      "in_ptl_cleared",
                    "rmap_remove",   "pte_clear",    "in_ptl_cleared", "rmap_remove",
                    "ptl_unlock",    "after_unlock", "tlb_flush",      "tlb_ack",
                    "page_free",     "page_free",    "after_release"};
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
                    "tlb_flush",     "tlb_ack",   "ptl_unlock",     "after_unlock",
                    "page_free",     "page_free", "after_release"};
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
  Steps expected = {"before_change", "ptl_lock",     "pte_clear",    "in_ptl_cleared",
                    "page_dirty",    "tlb_flush",    "tlb_ack",      "rmap_remove",
                    "ptl_unlock",    "after_unlock", "after_release"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kPageDirty})), expected);
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(OrderTest, DontneedBefore62RemovedTheRmapBeforeTheFlush) {
  mm.set_zap_rmap_order(ZapRmapOrder::kImmediate);
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
  Steps expected = {"before_change", "ptl_lock",     "pte_clear",    "in_ptl_cleared",
                    "pte_set",       "page_dirty",   "ptl_unlock",   "tlb_flush",
                    "tlb_ack",       "after_unlock", "after_release"};
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
  Steps expected = {"before_change", "pte_set", "in_ptl_cleared", "page_dirty",
                    "tlb_flush",     "tlb_ack", "after_unlock",   "after_release"};
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
  Steps expected = {"mmap_lock_write",  "before_change", "ptl_lock",   "pte_clear",
                    "in_ptl_cleared",   "rmap_remove",   "ptl_unlock", "after_unlock",
                    "tlb_flush",        "tlb_ack",       "page_free",  "after_release",
                    "mmap_unlock_write"};
  EXPECT_EQ(steps(with(ordering_kinds(), {Kind::kMmapLock, Kind::kMmapUnlock})), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kUnmap});
  EXPECT_THROW(cpu.load64(addr), SegFault);
  EXPECT_FALSE(munmap(mm, addr, kPageSize));
}

TEST_F(OrderTest, MprotectChangesEachPteUnderThePtlAndFlushesBeforeTheRangeEnd) {
  uint64_t addr = anon_written(2, 1);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(mprotect(mm, addr, 2 * kPageSize, kProtRead));
  // change_pte_range: ptep_modify_prot_start/commit per PTE, one
  // flush_tlb_range after the walk, then range end.
  Steps expected = {"before_change", "ptl_lock",  "pte_clear",      "in_ptl_cleared",
                    "pte_set",       "pte_clear", "in_ptl_cleared", "pte_set",
                    "ptl_unlock",    "tlb_flush", "tlb_ack",        "after_unlock",
                    "after_release"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kProtectionVma});
  EXPECT_THROW(cpu.store64(addr, 3), SegFault);
  EXPECT_EQ(cpu.load64(addr + kPageSize), 2u);
  expect_atomic_context_only_inside_ptl();
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
  Steps expected = {"before_change", "ptl_lock",       "pte_clear",    "tlb_flush",
                    "tlb_ack",       "in_ptl_cleared", "page_dirty",   "pte_set",
                    "ptl_unlock",    "after_unlock",   "after_release"};
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
  Steps expected = {"mm_op_begin", "mm_op_begin",  "before_change", "pte_clear", "in_ptl_cleared",
                    "pte_set",     "after_unlock", "after_release", "mm_op_end", "mm_op_end"};
  EXPECT_EQ(
      steps({Kind::kMmOpBegin, Kind::kMmOpEnd, Kind::kPteClear, Kind::kPteSet, Kind::kCheckpoint}),
      expected);
  EXPECT_EQ(file.disk_word(2, 2), 0xabcu);
  EXPECT_FALSE(phys.page(pfn_at(addr)).test(kPageDirty));
  EXPECT_FALSE(writeback_page(file, 2));  // clean now
}

TEST_F(OrderTest, KsmWriteProtectsBothThenReplacesWithChangePte) {
  uint64_t a = anon_written(1, 7);
  uint64_t b = anon_written(1, 7);  // same content (7 in word 0, zeros elsewhere)
  Pfn pa = pfn_at(a);
  Pfn pb = pfn_at(b);
  hooks.clear();
  trace::Session session;
  ASSERT_TRUE(ksm_merge(mm, a, b));
  Steps write_protect = {"before_change", "ptl_lock",       "pte_clear",    "tlb_flush",
                         "tlb_ack",       "in_ptl_cleared", "pte_set",      "change_pte",
                         "ptl_unlock",    "after_unlock",   "after_release"};
  Steps expected = {"ptl_lock", "ptl_unlock", "ptl_lock", "ptl_unlock"};  // get_mergeable_page x2
  expected.insert(expected.end(), write_protect.begin(), write_protect.end());
  expected.insert(expected.end(), write_protect.begin(), write_protect.end());
  Steps replace = {"before_change", "ptl_lock",       "rmap_add",      "pte_clear",  "tlb_flush",
                   "tlb_ack",       "in_ptl_cleared", "pte_set",       "change_pte", "rmap_remove",
                   "ptl_unlock",    "after_unlock",   "after_release", "page_free"};
  expected.insert(expected.end(), replace.begin(), replace.end());
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), (std::vector<InvalidateEvent>{InvalidateEvent::kProtectionPage,
                                                    InvalidateEvent::kProtectionPage,
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
  Steps expected = {"ptl_lock",       "clear_flush_young", "ptl_unlock", "before_change",
                    "ptl_lock",       "pte_clear",         "tlb_flush",  "tlb_ack",
                    "in_ptl_cleared", "rmap_remove",       "ptl_unlock", "after_unlock",
                    "after_release",  "page_free"};
  EXPECT_EQ(steps(), expected);
  EXPECT_EQ(events(), std::vector<InvalidateEvent>{InvalidateEvent::kClear});
  EXPECT_TRUE(phys.is_free(pfn));
  EXPECT_EQ(file.cached_pfn(1), kNoPfn);
  expect_atomic_context_only_inside_ptl();
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
