// GUP: the fast path's grab-and-revalidate, the slow path's fault-in, and
// what a GUP reference does to the page's lifetime.

#include <gtest/gtest.h>

#include "base/mutation.h"
#include "mm/gup.h"
#include "mm/ops.h"
#include "tests/mm/mm_fixture.h"

namespace sptelab::mm::testing {
namespace {

using GupTest = MmTest;

TEST_F(GupTest, FastPathTakesAReferenceOnAPresentPage) {
  uint64_t addr = anon_written(1, 3);
  Pfn pfn = pfn_at(addr);
  GupResult result = gup_fast(mm, addr + 123, true);
  ASSERT_TRUE(result.ok);
  EXPECT_EQ(result.pfn, pfn);
  EXPECT_TRUE(result.writable);
  EXPECT_EQ(phys.page(pfn).refcount.load(), 2);
  phys.put(result.pfn);
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(GupTest, FastPathBacksOffWithoutAUsablePte) {
  uint64_t addr = mm.mmap_anon(2 * kPageSize, kProtRead | kProtWrite);
  EXPECT_EQ(gup_fast(mm, addr, false).error, GupError::kBackedOff);  // nothing mapped
  cpu.load64(addr);                                                  // zero page
  EXPECT_EQ(gup_fast(mm, addr, false).error, GupError::kBackedOff);  // special PTE
  uint64_t ro = mm.mmap_file(file, 0, kPageSize, kProtRead | kProtWrite, true);
  cpu.load64(ro);
  EXPECT_FALSE(gup_fast(mm, ro, true).ok);  // read-only PTE, write wanted
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(GupTest, FastPathBacksOffWhenThePteChangesAfterTheReference) {
  uint64_t addr = anon_written(1, 3);
  Pfn pfn = pfn_at(addr);
  // Between try_get and the re-check, write-protect the PTE.
  inject::ScopedHook hook(inject::Point::kGupFastAfterRef,
                          [&](inject::Point, const inject::Context& context) {
                            EXPECT_EQ(context.pfn, pfn);
                            EXPECT_EQ(phys.page(pfn).refcount.load(), 2);
                            ASSERT_TRUE(mprotect(mm, addr, kPageSize, kProtRead));
                          });
  GupResult result = gup_fast(mm, addr, true);
  EXPECT_FALSE(result.ok);
  EXPECT_EQ(result.error, GupError::kBackedOff);
  EXPECT_EQ(phys.page(pfn).refcount.load(), 1);  // the reference was dropped again
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(GupTest, FastPathCannotReferenceAPageFreedAfterThePteRead) {
  uint64_t addr = anon_written(1, 3);
  Pfn pfn = pfn_at(addr);
  inject::ScopedHook hook(inject::Point::kGupFastAfterPteRead,
                          [&](inject::Point, const inject::Context&) {
                            ASSERT_TRUE(madvise_dontneed(mm, addr, kPageSize));
                            ASSERT_TRUE(phys.is_free(pfn));
                          });
  GupResult result = gup_fast(mm, addr, false);
  EXPECT_FALSE(result.ok);  // try_get saw refcount 0
  EXPECT_TRUE(phys.is_free(pfn));
  EXPECT_EQ(phys.page(pfn).refcount.load(), 0);
}

// The gup-fast-revalidate seed race (docs/seeds.md) in both orders: the
// page is freed after the PTE read and the frame reused at another address
// before the reference. The re-check backs off; without it (the buggy
// variant, the gup-fast-no-recheck mutant) GUP returns the other mapping's
// page.
class GupRecheckTest : public MmTest, public ::testing::WithParamInterface<bool> {};

TEST_P(GupRecheckTest, FrameReusedBeforeTheReference) {
  const bool buggy = GetParam();
  mutation::Scoped mutant(buggy ? mutation::Mutant::kGupFastNoRecheck : mutation::Mutant::kNone);
  uint64_t addr = mm.mmap_anon(2 * kPageSize, kProtRead | kProtWrite);
  cpu.store64(addr, 3);
  const Pfn pfn = pfn_at(addr);
  const uint64_t other = addr + kPageSize;
  inject::ScopedHook hook(inject::Point::kGupFastAfterPteRead,
                          [&](inject::Point, const inject::Context&) {
                            ASSERT_TRUE(madvise_dontneed(mm, addr, kPageSize));
                            cpu.store64(other, 4);  // the fault takes the freed frame
                            ASSERT_EQ(pfn_at(other), pfn);
                          });
  GupResult result = gup_fast(mm, addr, true);
  if (buggy) {
    ASSERT_TRUE(result.ok);
    EXPECT_EQ(result.pfn, pfn_at(other));  // a pin on another mapping's page
    phys.put(result.pfn);
  } else {
    EXPECT_FALSE(result.ok);
    EXPECT_EQ(result.error, GupError::kBackedOff);
    EXPECT_EQ(phys.page(pfn).refcount.load(), 1);  // the reference was dropped again
  }
  EXPECT_TRUE(audit_all().empty());
}

INSTANTIATE_TEST_SUITE_P(Mm, GupRecheckTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& param_info) {
                           return param_info.param ? "WithoutRecheck" : "WithRecheck";
                         });

TEST_F(GupTest, SlowPathFaultsInAndBreaksCowForWrite) {
  uint64_t addr = mm.mmap_anon(kPageSize, kProtRead | kProtWrite);
  GupResult read = gup_slow(mm, addr, false);
  ASSERT_TRUE(read.ok);
  EXPECT_TRUE(phys.is_zero_pfn(read.pfn));
  EXPECT_FALSE(read.writable);
  phys.put(read.pfn);

  Pfn in_slow_walk = kNoPfn;
  inject::ScopedHook hook(
      inject::Point::kGupSlowAfterWalk,
      [&](inject::Point, const inject::Context& context) { in_slow_walk = context.pfn; });
  GupResult write = get_user_page(mm, addr, true);  // fast fails (RO zero page), slow copies
  ASSERT_TRUE(write.ok);
  EXPECT_TRUE(write.writable);
  EXPECT_EQ(in_slow_walk, write.pfn);
  EXPECT_EQ(pfn_at(addr), write.pfn);
  EXPECT_TRUE(phys.page(write.pfn).test(kPageDirty));  // FOLL_TOUCH for a write
  phys.put(write.pfn);
  EXPECT_EQ(gup_slow(mm, 0x1000, false).error, GupError::kBadAccess);
  EXPECT_TRUE(audit_all().empty());
}

TEST_F(GupTest, AReferenceKeepsAnUnmappedPageAliveAndBlocksMigration) {
  uint64_t addr = anon_written(1, 42);
  GupResult pin = get_user_page(mm, addr, true);
  ASSERT_TRUE(pin.ok);
  EXPECT_FALSE(migrate_page(mm, addr));  // extra reference: migration backs out
  EXPECT_EQ(pfn_at(addr), pin.pfn);      // and restored the mapping
  EXPECT_EQ(cpu.load64(addr), 42u);
  ASSERT_TRUE(munmap(mm, addr, kPageSize));
  EXPECT_FALSE(phys.is_free(pin.pfn));
  EXPECT_EQ(phys.page(pin.pfn).mapcount.load(), 0);
  EXPECT_EQ(phys.load_word(pin.pfn, 0), 42u);
  phys.put(pin.pfn);
  EXPECT_TRUE(phys.is_free(pin.pfn));
  EXPECT_TRUE(audit_all().empty());
}

}  // namespace
}  // namespace sptelab::mm::testing
