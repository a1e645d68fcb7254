// PhysMem and File: allocation order, poison and generations, the bugs that
// must be caught (double free, free while mapped), freezing, page cache and
// disk copy.

#include <gtest/gtest.h>

#include "base/error.h"
#include "mm/audit.h"
#include "mm/file.h"
#include "mm/mm.h"
#include "mm/phys_mem.h"
#include "trace/trace.h"

namespace sptelab::mm {
namespace {

ExitStatus status_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& error) {
    return error.status();
  }
  return ExitStatus::kOk;
}

TEST(PhysMemTest, ZeroFramesIsBadInput) {
  EXPECT_EQ(status_of([] { PhysMem phys(0); }), ExitStatus::kBadInput);
}

TEST(PhysMemTest, FirstAllocationsAscendAndAreZeroed) {
  PhysMem phys(8);
  EXPECT_GE(phys.memfd(), 0);
  for (Pfn expected = 0; expected < 4; ++expected) {
    Pfn pfn = phys.alloc(kPageAnon);
    EXPECT_EQ(pfn, expected);
    EXPECT_EQ(phys.page(pfn).refcount.load(), 1);
    EXPECT_TRUE(phys.page(pfn).test(kPageAnon));
    EXPECT_FALSE(phys.is_free(pfn));
    for (size_t word = 0; word < PhysMem::kWordsPerFrame; ++word) {
      ASSERT_EQ(phys.load_word(pfn, word), 0u);
    }
  }
  EXPECT_EQ(phys.stats().free, 4u);
}

TEST(PhysMemTest, ContiguousRunEvenAfterScatteredFrees) {
  PhysMem phys(16);
  std::vector<Pfn> first = phys.alloc_contiguous(6);
  ASSERT_EQ(first.size(), 6u);
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(first[i], i);
  phys.put(first[1]);
  phys.put(first[3]);  // free: 1, 3, 6..15
  std::vector<Pfn> run = phys.alloc_contiguous(4);
  ASSERT_EQ(run.size(), 4u);
  for (size_t i = 1; i < run.size(); ++i) EXPECT_EQ(run[i], run[i - 1] + 1);
  EXPECT_GE(run.front(), 6u);
  EXPECT_TRUE(phys.alloc_contiguous(100).empty());
  EXPECT_EQ(phys.stats().free, 8u);
}

// A stale spte of a scheme without invalidation keeps writing a freed data
// frame; the race's none+* rows used to corrupt a page table that way (and
// end in an internal error). Page tables take frames that never held data.
TEST(PhysMemTest, PageTablesNeverReuseAFreedDataFrame) {
  PhysMem phys(8);
  Pfn data = phys.alloc(kPageAnon);
  Pfn other = phys.alloc(kPageAnon);
  phys.put(data);
  Pfn table = phys.alloc(kPageTable);
  EXPECT_NE(table, data);
  phys.put(table);
  EXPECT_EQ(phys.alloc(kPageTable), table);  // a freed table frame is fine to reuse
  EXPECT_EQ(phys.alloc(kPageAnon), data);    // data still reuses the latest free frame
  phys.put(other);
  // With only data frames left, a table still gets one rather than failing.
  PhysMem small(1);
  Pfn only = small.alloc(kPageAnon);
  small.put(only);
  EXPECT_EQ(small.alloc(kPageTable), only);
}

// FreedFrames::kAsIs frees as Linux does (no write to the frame); the
// generation still moves, and mm::audit's poison check, which has nothing
// to read, stays quiet. The default poisons, and the audit sees a write
// into a freed frame.
TEST(PhysMemTest, FramesFreedAsIsKeepTheirContentAndTheAuditSkipsThePoison) {
  for (FreedFrames freed : {FreedFrames::kAsIs, FreedFrames::kPoisoned}) {
    PhysMem phys(4, freed);
    Pfn pfn = phys.alloc();
    const uint64_t allocated = phys.generation(pfn);
    phys.store_word(pfn, 3, 42);
    phys.put(pfn);
    EXPECT_EQ(phys.generation(pfn), allocated + 1);
    EXPECT_EQ(phys.is_poisoned(pfn), freed == FreedFrames::kPoisoned);
    EXPECT_EQ(phys.load_word(pfn, 3), freed == FreedFrames::kPoisoned ? PhysMem::kPoison : 42u);
    phys.store_word(pfn, 5, 7);  // a write through a stale mapping
    EXPECT_EQ(audit(phys, {}, {}).empty(), freed == FreedFrames::kAsIs);
  }
}

TEST(PhysMemTest, FreePoisonsAndBumpsGeneration) {
  PhysMem phys(4);
  trace::Session session;
  Pfn pfn = phys.alloc();
  uint64_t allocated = phys.generation(pfn);
  phys.store_word(pfn, 3, 42);
  phys.put(pfn);
  EXPECT_TRUE(phys.is_free(pfn));
  EXPECT_TRUE(phys.is_poisoned(pfn));
  EXPECT_EQ(phys.generation(pfn), allocated + 1);
  Pfn again = phys.alloc();
  EXPECT_EQ(again, pfn);  // a stack: the frame just freed comes back first
  EXPECT_EQ(phys.generation(again), allocated + 2);
  EXPECT_EQ(phys.load_word(again, 3), 0u);
  std::vector<trace::Kind> kinds;
  for (const trace::Event& event : trace::snapshot().events) kinds.push_back(event.kind);
  EXPECT_EQ(kinds, (std::vector<trace::Kind>{trace::Kind::kPageAlloc, trace::Kind::kPageFree,
                                             trace::Kind::kPageAlloc}));
}

TEST(PhysMemTest, DoubleFreeAndPutOnFreePageAreInternalErrors) {
  PhysMem phys(4);
  Pfn pfn = phys.alloc();
  phys.put(pfn);
  EXPECT_EQ(status_of([&] { phys.put(pfn); }), ExitStatus::kInternal);
  EXPECT_EQ(status_of([&] { phys.get(pfn); }), ExitStatus::kInternal);
  EXPECT_EQ(status_of([&] { phys.free_frozen(pfn); }), ExitStatus::kInternal);
  EXPECT_EQ(phys.page(pfn).refcount.load(), 0);  // the failed calls left the count alone
  EXPECT_FALSE(phys.try_get(pfn));
}

TEST(PhysMemTest, FreeWhileMappedIsInternalError) {
  PhysMem phys(4);
  Pfn pfn = phys.alloc(kPageAnon);
  phys.page(pfn).mapcount.store(1);  // a PTE maps it but its reference was dropped
  EXPECT_EQ(status_of([&] { phys.put(pfn); }), ExitStatus::kInternal);
  EXPECT_FALSE(phys.is_free(pfn));
}

TEST(PhysMemTest, FreezeBlocksTryGetUntilUnfrozen) {
  PhysMem phys(4);
  Pfn pfn = phys.alloc();
  phys.get(pfn);
  EXPECT_FALSE(phys.ref_freeze(pfn, 1));  // two references, not one
  EXPECT_TRUE(phys.ref_freeze(pfn, 2));
  EXPECT_FALSE(phys.try_get(pfn));
  phys.ref_unfreeze(pfn, 2);
  EXPECT_TRUE(phys.try_get(pfn));
  EXPECT_EQ(phys.page(pfn).refcount.load(), 3);
}

TEST(PhysMemTest, PageLockIsExclusive) {
  PhysMem phys(2);
  Pfn pfn = phys.alloc();
  phys.lock_page(pfn);
  EXPECT_FALSE(phys.trylock_page(pfn));
  phys.unlock_page(pfn);
  EXPECT_TRUE(phys.trylock_page(pfn));
  phys.unlock_page(pfn);
  EXPECT_EQ(status_of([&] { phys.unlock_page(pfn); }), ExitStatus::kInternal);
}

TEST(PhysMemTest, ZeroPageIsSharedAndNeverFreed) {
  PhysMem phys(4);
  Pfn zero = phys.zero_pfn();
  EXPECT_EQ(phys.zero_pfn(), zero);
  EXPECT_TRUE(phys.is_zero_pfn(zero));
  EXPECT_TRUE(phys.page(zero).test(kPageZero));
  phys.get(zero);
  phys.put(zero);
  EXPECT_FALSE(phys.is_free(zero));
  EXPECT_EQ(phys.stats().zero_page, 1u);
}

TEST(FileTest, PagesComeFromTheDiskPatternAndWritebackReplacesIt) {
  PhysMem phys(8);
  File file(phys, "f", 4);
  Pfn pfn = file.get_page(2);
  ASSERT_NE(pfn, kNoPfn);
  EXPECT_EQ(phys.load_word(pfn, 7), File::pattern_word(file.id(), 2, 0));
  EXPECT_EQ(phys.page(pfn).mapping, &file);
  EXPECT_EQ(phys.page(pfn).index, 2u);
  EXPECT_EQ(phys.page(pfn).refcount.load(), 2);  // the cache's and ours
  EXPECT_EQ(file.find_page(2), pfn);
  phys.put(pfn);
  phys.store_word(pfn, 7, 0x1234);
  file.write_disk(2, pfn);
  EXPECT_EQ(file.disk_word(2, 7), 0x1234u);
  EXPECT_EQ(file.disk_word(1, 7), File::pattern_word(file.id(), 1, 0));
  EXPECT_EQ(status_of([&] { file.get_page(4); }), ExitStatus::kBadInput);
}

// File ids count per emulated host, so that a page's content is the same
// in every host built the same way: the explorer builds one host per
// execution and prints contents in its verdicts (docs/schemes.md).
TEST(FileTest, IdsCountPerPhysMemSoContentDoesNotDependOnEarlierHosts) {
  uint64_t first_word = 0;
  for (int host = 0; host < 2; ++host) {
    PhysMem phys(8);
    File file(phys, "f", 2);
    File other(phys, "g", 2);
    EXPECT_EQ(file.id(), 1u) << "host " << host;
    EXPECT_EQ(other.id(), 2u) << "host " << host;
    Pfn pfn = file.get_page(1);
    ASSERT_NE(pfn, kNoPfn);
    if (host == 0) first_word = phys.load_word(pfn, 0);
    EXPECT_EQ(phys.load_word(pfn, 0), first_word) << "host " << host;
    phys.put(pfn);
  }
}

TEST(FileTest, RemoveFrozenNeedsExactReferencesAndACleanPage) {
  PhysMem phys(8);
  auto file = std::make_unique<File>(phys, "f", 2);
  Pfn pfn = file->get_page(0);
  phys.get(pfn);  // an extra user
  EXPECT_FALSE(file->remove_frozen(0, pfn, 2));
  phys.put(pfn);
  phys.mark_dirty(pfn);
  EXPECT_FALSE(file->remove_frozen(0, pfn, 2));  // dirty: must be written first
  phys.page(pfn).clear(kPageDirty);
  ASSERT_TRUE(file->remove_frozen(0, pfn, 2));
  EXPECT_EQ(file->cached_pages(), 0u);
  phys.free_frozen(pfn);
  EXPECT_TRUE(phys.is_free(pfn));
  file->get_page(1);
  phys.put(file->cached_pfn(1));
  file.reset();
  EXPECT_EQ(phys.stats().free, 8u);
}

}  // namespace
}  // namespace sptelab::mm
