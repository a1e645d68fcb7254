// HostCpu: TLB hits and misses, hardware A/D updates, the dirty assist, and
// the stale-TLB window between a PTE clear and its shootdown.

#include <gtest/gtest.h>

#include "base/error.h"
#include "mm/ops.h"
#include "tests/mm/mm_fixture.h"

namespace sptelab::mm::testing {
namespace {

using HostCpuTest = MmTest;

TEST_F(HostCpuTest, MissFillsTheTlbAndSetsAccessedAndDirtyLikeHardware) {
  uint64_t addr = anon_written(1, 0);
  Pfn pfn = pfn_at(addr);
  // Clean the PTE behind the CPU's back (what mkclean would do, minus the
  // flush), then drop the CPU's entry.
  PteSlot slot = mm.walk(addr);
  {
    PtlGuard ptl(phys, slot.table);
    Pte pte = Mm::load_pte(slot);
    ASSERT_TRUE(mm.update_pte(slot, addr, pte, pte.without(Pte::kAccessed | Pte::kDirty)));
  }
  cpu.flush_local();
  HostCpuStats before = cpu.stats();
  EXPECT_EQ(cpu.load64(addr), 0u);
  Pte pte = mm.read_pte_lockless(addr);
  EXPECT_TRUE(pte.accessed());
  EXPECT_FALSE(pte.dirty());  // a read does not dirty
  EXPECT_TRUE(cpu.tlb_cached(addr));
  EXPECT_EQ(cpu.load64(addr + 8), 0u);
  HostCpuStats after = cpu.stats();
  EXPECT_EQ(after.tlb_misses - before.tlb_misses, 1u);
  EXPECT_EQ(after.tlb_hits - before.tlb_hits, 1u);

  // A write through the clean entry sets D in the PTE first (dirty assist).
  cpu.store64(addr, 3);
  EXPECT_TRUE(mm.read_pte_lockless(addr).dirty());
  EXPECT_EQ(cpu.stats().dirty_assists - after.dirty_assists, 1u);
  EXPECT_EQ(phys.load_word(pfn, 0), 3u);
}

TEST_F(HostCpuTest, WriteThroughCleanEntryRefaultsIfThePteChanged) {
  uint64_t addr = anon_written(1, 0);
  PteSlot slot = mm.walk(addr);
  {
    PtlGuard ptl(phys, slot.table);
    Pte pte = Mm::load_pte(slot);
    mm.update_pte(slot, addr, pte, pte.without(Pte::kDirty));
  }
  cpu.flush_local();
  cpu.load64(addr);  // clean writable entry cached
  // Write-protect without a flush: the entry is stale but clean, so the
  // dirty assist re-walks, sees the change and takes the fault path.
  {
    PtlGuard ptl(phys, slot.table);
    mm.wrprotect_pte(slot, addr);
  }
  cpu.store64(addr, 1);  // wp fault: exclusive anon page, reused in place
  EXPECT_EQ(mm.stats().cow_reuses, 1u);
  EXPECT_TRUE(mm.read_pte_lockless(addr).writable());
}

TEST_F(HostCpuTest, StaleEntryWritesUntilTheShootdownAndNeverAfter) {
  // Before 6.3 migration cleared and flushed inside the PTL
  // (ptep_clear_flush), so the shootdown comes before the migration entry;
  // 6.18 defers it (MigrateUnmapsToMigrationEntriesCopiesAndRemaps).
  mm.set_era(KernelEra::k6_1);
  uint64_t addr = anon_written(1, 10);
  Pfn old_pfn = pfn_at(addr);
  bool wrote_in_window = false;
  bool cached_after_flush = true;
  // The migration clears the PTE, then shoots the translation down. Right
  // before the shootdown the CPU still writes through its dirty entry.
  inject::ScopedHook window(inject::Point::kTlbBeforeFlush,
                            [&](inject::Point, const inject::Context& context) {
                              if (context.addr != addr || wrote_in_window) return;
                              EXPECT_TRUE(mm.read_pte_lockless(addr).none());
                              cpu.store64(addr, 11);  // a TLB hit: no fault, no PTE needed
                              wrote_in_window = true;
                            });
  inject::ScopedHook after(
      inject::Point::kHostAfterPteClear,
      [&](inject::Point, const inject::Context&) { cached_after_flush = cpu.tlb_cached(addr); });
  ASSERT_TRUE(migrate_page(mm, addr));
  EXPECT_TRUE(wrote_in_window);
  EXPECT_FALSE(cached_after_flush);
  // The write landed in the old frame before the copy, so it survived.
  EXPECT_NE(pfn_at(addr), old_pfn);
  EXPECT_EQ(cpu.load64(addr), 11u);
  EXPECT_GE(cpu.stats().shootdowns, 1u);
}

TEST_F(HostCpuTest, DontneedLeavesAWindowUntilTlbFinish) {
  // zap_pte_range defers the flush to tlb_finish_mmu (after the PTL and the
  // after_unlock point): a CPU can write to the zapped page until then.
  uint64_t addr = anon_written(1, 1);
  Pfn old_pfn = pfn_at(addr);
  bool wrote_after_unlock = false;
  inject::ScopedHook hook(inject::Point::kHostAfterPtlUnlock,
                          [&](inject::Point, const inject::Context&) {
                            EXPECT_TRUE(cpu.tlb_cached(addr));
                            cpu.store64(addr, 2);
                            wrote_after_unlock = true;
                          });
  ASSERT_TRUE(madvise_dontneed(mm, addr, kPageSize));
  EXPECT_TRUE(wrote_after_unlock);
  EXPECT_TRUE(phys.is_free(old_pfn));  // freed after the flush, poisoned
  EXPECT_TRUE(phys.is_poisoned(old_pfn));
  EXPECT_FALSE(cpu.tlb_cached(addr));
  EXPECT_EQ(cpu.load64(addr), 0u);  // refaults: the zero page
}

TEST_F(HostCpuTest, ShootdownReachesEveryCpuOfTheMmOnly) {
  uint64_t addr = anon_written(1, 1);
  HostCpu second(mm, 1);
  Mm other_mm(phys);
  HostCpu stranger(other_mm, 2);
  second.load64(addr);
  EXPECT_EQ(mm.cpu_count(), 2u);
  trace::Session session;
  mm.flush_tlb_range(addr, addr + kPageSize);
  std::vector<std::string> expected = {"tlb_flush", "tlb_ack", "tlb_ack"};
  EXPECT_EQ(steps({Kind::kTlbFlush, Kind::kTlbFlushAck}), expected);
  EXPECT_FALSE(cpu.tlb_cached(addr));
  EXPECT_FALSE(second.tlb_cached(addr));
  EXPECT_EQ(stranger.stats().shootdowns, 0u);
}

TEST_F(HostCpuTest, ReadWriteAcrossPagesAndAtomics) {
  uint64_t addr = mm.mmap_anon(2 * kPageSize, kProtRead | kProtWrite);
  std::vector<uint8_t> data(100);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i);
  uint64_t across = addr + kPageSize - 50;
  cpu.write(across, data.data(), data.size());
  std::vector<uint8_t> back(100);
  cpu.read(across, back.data(), back.size());
  EXPECT_EQ(back, data);
  EXPECT_EQ(cpu.fetch_add64(addr, 5), 0u);
  uint64_t expected = 5;
  EXPECT_TRUE(cpu.compare_exchange64(addr, expected, 9));
  expected = 5;
  EXPECT_FALSE(cpu.compare_exchange64(addr, expected, 1));
  EXPECT_EQ(expected, 9u);
  EXPECT_THROW(cpu.load64(addr + 4), Error);
}

}  // namespace
}  // namespace sptelab::mm::testing
