// The host fault handler through a HostCpu: anon and file faults, COW copy
// versus reuse, permission errors, migration waits.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "mm/fault.h"
#include "mm/gup.h"
#include "mm/ops.h"
#include "tests/mm/mm_fixture.h"

namespace sptelab::mm::testing {
namespace {

using FaultTest = MmTest;

TEST_F(FaultTest, AnonReadMapsZeroPageThenWriteAllocates) {
  uint64_t addr = mm.mmap_anon(2 * kPageSize, kProtRead | kProtWrite);
  EXPECT_EQ(cpu.load64(addr + 8), 0u);
  Pte pte = mm.read_pte_lockless(addr);
  EXPECT_TRUE(phys.is_zero_pfn(pte.pfn()));
  EXPECT_FALSE(pte.writable());
  EXPECT_EQ(mm.stats().zero_page_maps, 1u);

  cpu.store64(addr + 8, 77);
  pte = mm.read_pte_lockless(addr);
  EXPECT_FALSE(phys.is_zero_pfn(pte.pfn()));
  EXPECT_TRUE(pte.writable());
  EXPECT_TRUE(pte.dirty());
  EXPECT_TRUE(phys.page(pte.pfn()).test(kPageAnon));
  EXPECT_EQ(cpu.load64(addr + 8), 77u);
  EXPECT_EQ(phys.load_word(phys.zero_pfn(), 1), 0u);  // the zero page stayed zero
  EXPECT_EQ(mm.stats().cow_copies, 1u);               // copied from the zero page
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(FaultTest, NoVmaOrNoPermissionIsSegFault) {
  uint64_t ro = mm.mmap_anon(kPageSize, kProtRead);
  uint64_t none = mm.mmap_anon(kPageSize, kProtNone);
  EXPECT_THROW(cpu.load64(0x1000), SegFault);
  EXPECT_THROW(cpu.store64(ro, 1), SegFault);
  EXPECT_NO_THROW(cpu.load64(ro));
  try {
    cpu.load64(none + 16);
    FAIL() << "read of a PROT_NONE mapping succeeded";
  } catch (const SegFault& fault) {
    EXPECT_EQ(fault.addr(), none + 16);
    EXPECT_FALSE(fault.write());
  }
  MmapReadGuard lock(mm);
  EXPECT_EQ(handle_mm_fault(mm, ro, true), FaultResult::kSigSegv);
}

TEST_F(FaultTest, SharedFileReadIsReadOnlyAndWriteMarksDirty) {
  uint64_t addr = mm.mmap_file(file, 3, 2 * kPageSize, kProtRead | kProtWrite, true);
  EXPECT_EQ(cpu.load64(addr), File::pattern_word(file.id(), 3, 0));
  Pte pte = mm.read_pte_lockless(addr);
  Pfn cached = file.cached_pfn(3);
  EXPECT_EQ(pte.pfn(), cached);
  EXPECT_FALSE(pte.writable());  // write-notify: the first write faults
  EXPECT_FALSE(phys.page(cached).test(kPageDirty));

  cpu.store64(addr, 5);
  pte = mm.read_pte_lockless(addr);
  EXPECT_EQ(pte.pfn(), cached);  // same page: shared mapping
  EXPECT_TRUE(pte.writable() && pte.dirty());
  EXPECT_TRUE(phys.page(cached).test(kPageDirty));
  EXPECT_EQ(phys.load_word(cached, 0), 5u);
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(FaultTest, BeyondEndOfFileIsSigbus) {
  uint64_t addr = mm.mmap_file(file, 15, 2 * kPageSize, kProtRead, true);
  EXPECT_NO_THROW(cpu.load64(addr));
  EXPECT_THROW(cpu.load64(addr + kPageSize), SegFault);
}

TEST_F(FaultTest, PrivateFileWriteCopiesThePageCachePage) {
  uint64_t addr = mm.mmap_file(file, 0, kPageSize, kProtRead | kProtWrite, false);
  EXPECT_EQ(cpu.load64(addr), File::pattern_word(file.id(), 0, 0));
  Pfn cached = file.cached_pfn(0);
  EXPECT_EQ(pfn_at(addr), cached);
  cpu.store64(addr + 8, 9);
  Pfn copy = pfn_at(addr);
  EXPECT_NE(copy, cached);
  EXPECT_TRUE(phys.page(copy).test(kPageAnon));
  EXPECT_EQ(phys.load_word(copy, 0), File::pattern_word(file.id(), 0, 0));
  EXPECT_EQ(phys.load_word(cached, 1), File::pattern_word(file.id(), 0, 0));  // file untouched
  EXPECT_EQ(phys.page(cached).refcount.load(), 1);  // only the cache holds it now
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(FaultTest, CowCopiesASharedPageAndReusesAnExclusiveOne) {
  uint64_t addr = anon_written(1, 100);
  Pfn original = pfn_at(addr);
  std::unique_ptr<Mm> child = mm.fork();
  EXPECT_FALSE(mm.read_pte_lockless(addr).writable());
  EXPECT_EQ(phys.page(original).mapcount.load(), 2);

  cpu.store64(addr, 101);  // shared with the child: copy
  Pfn copy = pfn_at(addr);
  EXPECT_NE(copy, original);
  EXPECT_EQ(child->read_pte_lockless(addr).pfn(), original);
  EXPECT_EQ(phys.load_word(original, 0), 100u);  // the child still sees the old value
  EXPECT_EQ(phys.load_word(copy, 0), 101u);
  EXPECT_EQ(mm.stats().cow_copies, 1u);
  EXPECT_TRUE(audit(phys, {&mm, child.get()}, {&file}).empty());

  {
    HostCpu child_cpu(*child, 1);
    child_cpu.store64(addr, 7);  // now exclusive in the child: reuse in place
  }
  EXPECT_EQ(child->read_pte_lockless(addr).pfn(), original);
  EXPECT_EQ(child->stats().cow_reuses, 1u);
  EXPECT_EQ(child->stats().cow_copies, 0u);
  child.reset();
  EXPECT_TRUE(phys.is_free(original));
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(FaultTest, CowCopiesAPinnedExclusivePage) {
  uint64_t addr = anon_written(1, 1);
  std::unique_ptr<Mm> child = mm.fork();
  child.reset();  // exclusive again, but read-only
  Pfn pfn = pfn_at(addr);
  GupResult pin = gup_slow(mm, addr, false);
  ASSERT_TRUE(pin.ok);
  cpu.store64(addr, 2);  // refcount 2: the pin could be used to read or write: copy
  EXPECT_NE(pfn_at(addr), pfn);
  EXPECT_EQ(phys.load_word(pfn, 0), 1u);
  phys.put(pin.pfn);
  EXPECT_TRUE(phys.is_free(pfn));
}

TEST_F(FaultTest, FaultOnMigrationEntryWaitsUntilMigrationEnds) {
  uint64_t addr = anon_written(1, 555);
  HostCpu other(mm, 1);
  std::atomic<uint64_t> seen{0};
  std::thread reader;
  bool started = false;
  // First PTL release of the migration: the PTE is a migration entry now.
  inject::ScopedHook hook(
      inject::Point::kHostAfterPtlUnlock, [&](inject::Point, const inject::Context&) {
        if (started) return;
        started = true;
        EXPECT_TRUE(mm.read_pte_lockless(addr).is_migration());
        reader = std::thread([&] { seen = other.load64(addr); });
        // Hold the migration here until the reader is waiting on the entry.
        for (int spins = 0; mm.stats().migration_waits == 0 && spins < 10'000'000; ++spins) {
          std::this_thread::yield();
        }
        EXPECT_EQ(seen.load(), 0u);
      });
  Pfn before = pfn_at(addr);
  EXPECT_TRUE(migrate_page(mm, addr));
  reader.join();
  EXPECT_EQ(seen.load(), 555u);
  EXPECT_GE(mm.stats().migration_waits, 1u);
  EXPECT_NE(pfn_at(addr), before);
  EXPECT_TRUE(audit_all().empty());
}

// filemap_fault's recheck. A fault found page 0 in the cache and is held
// before its PTE is installed while a hole is punched there. Without the
// page lock the truncation drops the page meanwhile and the fault then maps
// it anyway: an orphan the cache no longer knows, whose writes no one will
// ever read back. With it, the punch waits for the fault's install and
// unmaps the new PTE: whatever is mapped at the end is the cache's page.
TEST_F(FaultTest, AFaultHeldBeforeItsPteWhileAHoleIsPunchedMapsNoDroppedPage) {
  const uint64_t addr = mm.mmap_file(file, 0, 2 * kPageSize, kProtRead | kProtWrite, true);
  cpu.store64(addr, 9);
  ASSERT_TRUE(madvise_dontneed(mm, addr, kPageSize));  // cached, no longer mapped
  std::atomic<bool> punched{false};
  bool started = false;
  std::thread puncher;
  inject::ScopedHook hook(
      inject::Point::kHostFaultBeforePtl, [&](inject::Point, const inject::Context&) {
        if (started) return;
        started = true;
        puncher = std::thread([&] {
          punch_hole(file, 0, 1);
          punched = true;
        });
        // Until the punch is over, or long enough for it to be waiting for
        // this fault's page lock.
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(200);
        while (!punched && std::chrono::steady_clock::now() < until) std::this_thread::yield();
      });
  cpu.load64(addr);
  puncher.join();
  const Pte pte = mm.read_pte_lockless(addr);
  if (pte.present()) {
    EXPECT_EQ(pte.pfn(), file.cached_pfn(0)) << "the host maps a page the hole dropped";
    EXPECT_EQ(phys.page(pte.pfn()).mapping, &file);
  }
  EXPECT_EQ(cpu.load64(addr), 0u);  // the hole reads as zeros
  EXPECT_TRUE(audit_all().empty());
}

}  // namespace
}  // namespace sptelab::mm::testing
