#include "spte/mmu.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "host/lab.h"
#include "mm/host_cpu.h"
#include "mm/ops.h"
#include "spte/soft_vcpu.h"
#include "tests/spte/recording_mirror.h"
#include "trace/trace.h"

namespace sptelab::spte {
namespace {

using host::Backing;
using host::Lab;
using host::LabConfig;
using mmu_notifier::Placement;
using testing::RecordingMirror;

LabConfig config(Placement placement, Protocol protocol, uint64_t pages = 16,
                 Backing backing = Backing::kSharedFile) {
  return LabConfig{.scheme = {placement, protocol}, .guest_pages = pages, .backing = backing};
}

TEST(Scheme, AllTwentyFiveParseAndPrint) {
  auto schemes = all_schemes();
  ASSERT_EQ(schemes.size(), 25u);
  for (const Scheme& scheme : schemes) {
    auto back = parse_scheme(scheme.name());
    ASSERT_TRUE(back.has_value()) << scheme.name();
    EXPECT_EQ(*back, scheme);
    EXPECT_FALSE(describe(scheme).empty());
  }
  EXPECT_EQ(parse_scheme("start-end+seq-count")->protocol, Protocol::kSeqCount);
  EXPECT_EQ(parse_scheme("none+sva")->protocol, Protocol::kSva);
  EXPECT_FALSE(parse_scheme("start-end").has_value());
  EXPECT_FALSE(parse_scheme("middle+seq").has_value());
  EXPECT_FALSE(parse_scheme("ptl-page+sometimes").has_value());
}

TEST(Mmu, ReadFaultInstallsReadOnlySpteOfTheHostFrame) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  RecordingMirror mirror;
  lab.mmu->set_mirror(&mirror);
  ASSERT_EQ(lab.mmu->fault(3, false, 0), FaultOutcome::kFixed);
  Spte spte = lab.mmu->spte(3);
  mm::Pte pte = lab.mm->read_pte_lockless(lab.hva_of(3));
  ASSERT_TRUE(spte.present());
  EXPECT_FALSE(spte.writable());
  EXPECT_EQ(spte.pfn(), pte.pfn());
  auto updates = mirror.take();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].gfn, 3u);
  EXPECT_EQ(updates[0].pfn, pte.pfn());
  EXPECT_EQ(updates[0].access, Access::kRead);
  EXPECT_EQ(lab.mmu->audit(), 0u);
  lab.mmu->set_mirror(nullptr);
}

TEST(Mmu, WriteFaultInstallsWritableDirtySpte) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  ASSERT_EQ(lab.mmu->fault(2, true, 0), FaultOutcome::kFixed);
  Spte spte = lab.mmu->spte(2);
  EXPECT_TRUE(spte.writable());
  EXPECT_TRUE(spte.dirty());
  EXPECT_TRUE(lab.mm->read_pte_lockless(lab.hva_of(2)).writable());
  EXPECT_EQ(lab.mmu->audit(), 0u);
}

TEST(Mmu, GfnOutsideEveryMemslotIsReported) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  EXPECT_EQ(lab.mmu->fault(16, false, 0), FaultOutcome::kNoMemslot);
  EXPECT_EQ(lab.mmu->fault(1ull << 40, true, 0), FaultOutcome::kNoMemslot);
}

TEST(Mmu, ZapTransfersDirtyToThePageAndTellsTheMirrorFirst) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  RecordingMirror mirror;
  lab.mmu->set_mirror(&mirror);
  ASSERT_EQ(lab.mmu->fault(4, true, 0), FaultOutcome::kFixed);
  mm::Pfn pfn = lab.mmu->spte(4).pfn();
  lab.phys.page(pfn).clear(mm::kPageDirty);
  mirror.take();
  ASSERT_TRUE(mm::madvise_dontneed(*lab.mm, lab.hva_of(4), mm::kPageSize));
  EXPECT_FALSE(lab.mmu->spte(4).present());
  EXPECT_TRUE(lab.phys.page(pfn).test(mm::kPageDirty));
  auto updates = mirror.take();
  ASSERT_FALSE(updates.empty());
  EXPECT_EQ(updates.front().gfn, 4u);
  EXPECT_EQ(updates.front().access, Access::kNone);
  lab.mmu->set_mirror(nullptr);
}

TEST(Mmu, SeqCountRetriesWhileAnOpenInvalidationCoversTheGfn) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  mm::InvalidateRange range{lab.mm.get(), lab.hva_of(6), lab.hva_of(8), mm::InvalidateEvent::kClear,
                            true};
  lab.chain.before_change(range);  // invalidate_range_start
  EXPECT_EQ(lab.mmu->fault(6, false, 0), FaultOutcome::kRetry);
  EXPECT_EQ(lab.mmu->fault(7, true, 0), FaultOutcome::kRetry);
  EXPECT_EQ(lab.mmu->fault(9, false, 0), FaultOutcome::kFixed);  // outside the range
  lab.chain.after_unlock(range);                                 // invalidate_range_end
  EXPECT_EQ(lab.mmu->fault(6, false, 0), FaultOutcome::kFixed);
  EXPECT_GE(lab.mmu->stats().retries, 2u);
}

TEST(Mmu, SeqWithoutCountInstallsInsideAnOpenInvalidation) {
  // The weakness of start-end+seq: the sequence moves only at end.
  Lab lab(config(Placement::kStartEnd, Protocol::kSeq));
  mm::InvalidateRange range{lab.mm.get(), lab.hva_of(6), lab.hva_of(8), mm::InvalidateEvent::kClear,
                            true};
  lab.chain.before_change(range);
  EXPECT_EQ(lab.mmu->fault(6, false, 0), FaultOutcome::kFixed);
  lab.chain.after_unlock(range);
}

TEST(Mmu, IntervalReadBeginWaitsForTheOpenInvalidation) {
  Lab lab(config(Placement::kStartEnd, Protocol::kInterval));
  mm::InvalidateRange range{lab.mm.get(), lab.hva_of(0), lab.hva_of(16),
                            mm::InvalidateEvent::kClear, true};
  lab.chain.before_change(range);
  std::atomic<bool> fixed{false};
  std::thread vcpu([&] {
    EXPECT_EQ(lab.mmu->fault(1, false, 0), FaultOutcome::kFixed);
    fixed = true;
  });
  // The fault cannot finish while the interval's sequence is odd.
  for (int i = 0; i < 1000; ++i) std::this_thread::yield();
  EXPECT_FALSE(fixed.load());
  lab.chain.after_unlock(range);
  vcpu.join();
  EXPECT_TRUE(fixed.load());
  EXPECT_TRUE(lab.mmu->spte(1).present());
}

TEST(Mmu, RangeInvalidationCostFollowsTheSptesInTheRange) {
  // A 256 MiB memslot: a one-page invalidation must not walk it.
  Lab lab(LabConfig{.scheme = {Placement::kStartEnd, Protocol::kSeqCount},
                    .guest_pages = 1u << 16,
                    .host_frames = 4096});
  for (Gfn gfn : {10u, 11u, 40000u}) ASSERT_EQ(lab.mmu->fault(gfn, false, 0), FaultOutcome::kFixed);
  uint64_t scanned_before = lab.mmu->stats().scanned_words;
  ASSERT_TRUE(mm::madvise_dontneed(*lab.mm, lab.hva_of(11), mm::kPageSize));
  EXPECT_LE(lab.mmu->stats().scanned_words - scanned_before, 2u);
  EXPECT_FALSE(lab.mmu->spte(11).present());
  EXPECT_TRUE(lab.mmu->spte(10).present());
  EXPECT_TRUE(lab.mmu->spte(40000).present());
}

TEST(Mmu, AgingClearsAccessedAndHidesThePageUntilTheNextAccess) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  RecordingMirror mirror;
  lab.mmu->set_mirror(&mirror);
  ASSERT_EQ(lab.mmu->fault(5, false, 0), FaultOutcome::kFixed);
  EXPECT_TRUE(lab.mmu->spte(5).accessed());
  mirror.take();
  EXPECT_GE(mm::age_range(*lab.mm, lab.hva_of(5), lab.hva_of(6)), 1u);
  EXPECT_FALSE(lab.mmu->spte(5).accessed());
  EXPECT_TRUE(lab.mmu->spte(5).present());
  auto hidden = mirror.take();
  ASSERT_EQ(hidden.size(), 1u);
  EXPECT_EQ(hidden[0].access, Access::kNone);
  // The next access faults, finds the spte present and restores it without GUP.
  uint64_t fast_before = lab.mmu->stats().fast_fixes;
  ASSERT_EQ(lab.mmu->fault(5, false, 0), FaultOutcome::kFixed);
  EXPECT_EQ(lab.mmu->stats().fast_fixes, fast_before + 1);
  EXPECT_TRUE(lab.mmu->spte(5).accessed());
  lab.mmu->set_mirror(nullptr);
}

TEST(Mmu, ReleaseZapsEverything) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  for (Gfn gfn = 0; gfn < 4; ++gfn) ASSERT_EQ(lab.mmu->fault(gfn, true, 0), FaultOutcome::kFixed);
  lab.chain.release(lab.mm.get());
  for (Gfn gfn = 0; gfn < 4; ++gfn) EXPECT_FALSE(lab.mmu->spte(gfn).present());
}

TEST(Mmu, StaleSpteIsFoundByTheAuditorUnderPlacementNone) {
  Lab lab(config(Placement::kNone, Protocol::kSeqCount));
  ASSERT_EQ(lab.mmu->fault(3, false, 0), FaultOutcome::kFixed);
  ASSERT_TRUE(mm::remap_file_page(*lab.mm, lab.hva_of(3), lab.spare_file_index(3)));
  EXPECT_EQ(lab.mmu->audit(), 1u);
  auto found = lab.violations.all();
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].kind, ViolationKind::kStaleSpte);
  EXPECT_EQ(found[0].gfn, 3u);
}

TEST(Mmu, SpteOutlivingItsFrameIsAUseAfterFree) {
  Lab lab(config(Placement::kNone, Protocol::kSeqCount, 16, Backing::kAnon));
  ASSERT_EQ(lab.mmu->fault(3, true, 0), FaultOutcome::kFixed);
  ASSERT_TRUE(mm::migrate_page(*lab.mm, lab.hva_of(3)));  // old frame freed, spte not told
  bool reached = lab.mmu->access(3, false, [](uint8_t*) {});
  EXPECT_TRUE(reached);
  EXPECT_EQ(lab.violations.count(ViolationKind::kUseAfterFree), 1u);
}

// The race's notes name the detector that counts a finding: an spte left on
// a migrated-away (freed) frame is a use-after-free, not a stale spte.
TEST(Mmu, AuditCountsAnSpteOnAFreedFrameApartFromAStaleOne) {
  Lab lab(config(Placement::kNone, Protocol::kSeqCount, 16, Backing::kSharedFile));
  for (Gfn gfn = 3; gfn < 6; ++gfn) ASSERT_EQ(lab.mmu->fault(gfn, true, 0), FaultOutcome::kFixed);
  ASSERT_TRUE(mm::migrate_page(*lab.mm, lab.hva_of(3)));  // old frame freed, spte not told
  ASSERT_TRUE(mm::migrate_page(*lab.mm, lab.hva_of(4)));
  // The old page stays in the page cache: a live frame the host PTE no longer maps.
  ASSERT_TRUE(mm::remap_file_page(*lab.mm, lab.hva_of(5), lab.spare_file_index(5)));
  const Mmu::AuditFindings found = lab.mmu->audit_findings();
  EXPECT_EQ(found.freed, 2u);
  EXPECT_EQ(found.stale, 1u);
  EXPECT_EQ(found.total(), 3u);
  EXPECT_EQ(lab.violations.count(ViolationKind::kUseAfterFree), 2u);
  EXPECT_EQ(lab.violations.count(ViolationKind::kStaleSpte), 1u);
}

TEST(Mmu, StartEndKeepsSptesCoherentAcrossEveryHostOperation) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount, 16, Backing::kSharedFile));
  for (Gfn gfn = 0; gfn < 8; ++gfn) ASSERT_EQ(lab.mmu->fault(gfn, true, 0), FaultOutcome::kFixed);
  EXPECT_TRUE(mm::remap_file_page(*lab.mm, lab.hva_of(1), lab.spare_file_index(1)));
  EXPECT_TRUE(mm::migrate_page(*lab.mm, lab.hva_of(2)));
  EXPECT_TRUE(mm::madvise_dontneed(*lab.mm, lab.hva_of(3), mm::kPageSize));
  EXPECT_TRUE(mm::mprotect(*lab.mm, lab.hva_of(4), mm::kPageSize, mm::kProtRead));
  mm::writeback_page(*lab.file, 5);
  EXPECT_EQ(lab.mmu->audit(), 0u);
  EXPECT_EQ(lab.violations.count(), 0u);
}

TEST(SoftVcpu, LoadsAndStoresReachTheHostPage) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  SoftMachine machine(*lab.mmu, lab.phys, lab.violations, 1);
  mm::HostCpu host(*lab.mm, 0);
  machine.vcpu(0).store64(3 * mm::kPageSize + 8, 77);
  EXPECT_EQ(host.load64(lab.hva_of(3) + 8), 77u);
  host.store64(lab.hva_of(3) + 16, 99);
  EXPECT_EQ(machine.vcpu(0).load64(3 * mm::kPageSize + 16), 99u);
}

TEST(SoftVcpu, ZapFlushesTheTlbBeforeReturning) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  SoftMachine machine(*lab.mmu, lab.phys, lab.violations, 1);
  machine.vcpu(0).store64(3 * mm::kPageSize, 1);
  uint64_t faults_before = machine.vcpu(0).stats().faults;
  ASSERT_TRUE(mm::remap_file_page(*lab.mm, lab.hva_of(3), lab.spare_file_index(3)));
  mm::HostCpu host(*lab.mm, 0);
  // The vCPU faults again and sees the new page's content, not the old page.
  EXPECT_EQ(machine.vcpu(0).load64(3 * mm::kPageSize + 8), host.load64(lab.hva_of(3) + 8));
  EXPECT_GT(machine.vcpu(0).stats().faults, faults_before);
}

TEST(SoftVcpu, TouchingMemoryBeyondRamIsAGuestFault) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  SoftMachine machine(*lab.mmu, lab.phys, lab.violations, 1);
  EXPECT_THROW(machine.vcpu(0).load64(1ull << 30), GuestFault);
}

TEST(SoftVcpu, AtomicIncrementsFromManyVcpusAreExact) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount));
  SoftMachine machine(*lab.mmu, lab.phys, lab.violations, 3);
  const uint64_t initial = machine.vcpu(0).load64(0x2000);  // file pages start with a pattern
  std::vector<std::thread> threads;
  for (uint32_t v = 0; v < 3; ++v) {
    threads.emplace_back([&, v] {
      for (int i = 0; i < 5000; ++i) machine.vcpu(v).fetch_add64(0x2000, 1);
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(machine.vcpu(0).load64(0x2000), initial + 15000u);
}

TEST(SoftVcpu, AtomicIncrementsSurviveContinuousMigrationUnderStartEndSeqCount) {
  Lab lab(config(Placement::kStartEnd, Protocol::kSeqCount, 16, Backing::kAnon));
  SoftMachine machine(*lab.mmu, lab.phys, lab.violations, 2);
  machine.vcpu(0).store64(2 * mm::kPageSize, 0);
  // A fixed number of migrations; the vCPUs increment until they are done,
  // so the page really moves under them however the threads are scheduled.
  constexpr int kMigrations = 200;
  std::atomic<bool> done{false};
  std::atomic<int> migrated{0};
  std::thread remapper([&] {
    while (migrated < kMigrations) migrated += mm::migrate_page(*lab.mm, lab.hva_of(2)) ? 1 : 0;
    done = true;
  });
  std::atomic<uint64_t> increments{0};
  std::vector<std::thread> vcpus;
  for (uint32_t v = 0; v < 2; ++v) {
    vcpus.emplace_back([&, v] {
      while (!done) {
        machine.vcpu(v).fetch_add64(2 * mm::kPageSize, 1);
        increments.fetch_add(1);
      }
    });
  }
  for (auto& thread : vcpus) thread.join();
  remapper.join();
  EXPECT_EQ(machine.vcpu(0).load64(2 * mm::kPageSize), increments.load());
  EXPECT_EQ(migrated.load(), kMigrations);
  EXPECT_EQ(lab.mmu->audit(), 0u);
  EXPECT_EQ(lab.violations.count(), 0u);
}

}  // namespace
}  // namespace sptelab::spte
