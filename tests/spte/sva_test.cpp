// The sva protocol: an IOMMU-SVA-style device that shares the host page table
// and caches its walks in an IOTLB (spte/mmu.h). Its fault walks the host
// page table under the IOTLB lock without GUP, sets the PTE's accessed and
// dirty bits like hardware, and only arch_invalidate_secondary_tlbs flushes
// what it cached.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "base/error.h"
#include "host/lab.h"
#include "mm/host_cpu.h"
#include "mm/ops.h"
#include "mm/phys_mem.h"
#include "scenarios/gate.h"
#include "spte/mmu.h"
#include "tests/spte/recording_mirror.h"
#include "trace/trace.h"

namespace sptelab::spte {
namespace {

using host::Backing;
using host::Lab;
using host::LabConfig;
using mm::Pte;
using mmu_notifier::Placement;
using scenarios::Gate;
using scenarios::Role;
using scenarios::ThreadRole;
using testing::RecordingMirror;

LabConfig sva_config(Placement placement = Placement::kStartEnd,
                     Backing backing = Backing::kSharedFile) {
  return LabConfig{.scheme = {placement, Protocol::kSva}, .guest_pages = 16, .backing = backing};
}

// Clears the host PTE's accessed and dirty bits under its PTL, as the host
// does after aging and writeback, so that a walk must set them again.
void clear_young_and_dirty(Lab& lab, Gfn gfn) {
  const uint64_t hva = lab.hva_of(gfn);
  const mm::PteSlot slot = lab.mm->walk(hva);
  ASSERT_TRUE(slot);
  mm::PtlGuard ptl(lab.phys, slot.table);
  const Pte pte = mm::Mm::load_pte(slot);
  ASSERT_TRUE(pte.present());
  ASSERT_TRUE(lab.mm->update_pte(slot, hva, pte, pte.without(Pte::kAccessed | Pte::kDirty)));
}

size_t gup_events() {
  const trace::Snapshot snapshot = trace::snapshot();
  return std::count_if(snapshot.events.begin(), snapshot.events.end(), [](const trace::Event& e) {
    return e.kind == trace::Kind::kGupFast || e.kind == trace::Kind::kGupSlow;
  });
}

TEST(SvaFault, WalksTheHostPageTableWithoutGup) {
  trace::Session session;
  Lab lab(sva_config());
  ASSERT_EQ(lab.mmu->fault(3, true, 0), FaultOutcome::kFixed);
  EXPECT_EQ(gup_events(), 0u);
  const Pte pte = lab.mm->read_pte_lockless(lab.hva_of(3));
  ASSERT_TRUE(pte.present());
  EXPECT_EQ(lab.mmu->spte(3).pfn(), pte.pfn());
  EXPECT_EQ(lab.mmu->audit(), 0u);

  // The same fault on a shadow MMU does GUP: the count above can see one.
  Lab shadow(LabConfig{.scheme = {Placement::kStartEnd, Protocol::kSeqCount}, .guest_pages = 16});
  ASSERT_EQ(shadow.mmu->fault(3, true, 0), FaultOutcome::kFixed);
  EXPECT_GT(gup_events(), 0u);
}

// Sampled while the fault holds the IOTLB lock, between walk and fill: an sva
// walk holds no reference on the page, where a shadow MMU's GUP holds one.
int32_t refcount_during_fill(const Scheme& scheme, int32_t* before) {
  Lab lab(LabConfig{.scheme = scheme, .guest_pages = 16, .backing = Backing::kAnon});
  mm::HostCpu host(*lab.mm, 0);
  host.store64(lab.hva_of(5), 1);  // the page exists before the fault
  const mm::Pfn pfn = lab.mm->read_pte_lockless(lab.hva_of(5)).pfn();
  *before = lab.phys.page(pfn).refcount.load();
  Gate under_lock(inject::Point::kSpteFaultUnderLock, Role::kVcpu);
  std::thread vcpu([&] {
    ThreadRole role(Role::kVcpu);
    EXPECT_EQ(lab.mmu->fault(5, true, 0), FaultOutcome::kFixed);
  });
  under_lock.wait_arrived();
  const int32_t during = lab.phys.page(pfn).refcount.load();
  under_lock.open();
  vcpu.join();
  EXPECT_EQ(lab.phys.page(pfn).refcount.load(), *before);
  return during;
}

TEST(SvaFault, TakesNoPageReference) {
  int32_t before = 0;
  EXPECT_EQ(refcount_during_fill({Placement::kStartEnd, Protocol::kSva}, &before), before);
  EXPECT_EQ(refcount_during_fill({Placement::kStartEnd, Protocol::kSeqCount}, &before), before + 1);
}

TEST(SvaFault, WalksSetAccessedThenDirtyInTheHostPte) {
  Lab lab(sva_config());
  mm::HostCpu host(*lab.mm, 0);
  host.store64(lab.hva_of(4), 1);
  clear_young_and_dirty(lab, 4);

  ASSERT_EQ(lab.mmu->fault(4, false, 0), FaultOutcome::kFixed);
  Pte pte = lab.mm->read_pte_lockless(lab.hva_of(4));
  EXPECT_TRUE(pte.accessed());
  EXPECT_FALSE(pte.dirty());
  // A read walk caches a read-only translation even though the PTE allows
  // writes: the first write walks again, which is what sets dirty.
  EXPECT_TRUE(pte.writable());
  EXPECT_FALSE(lab.mmu->spte(4).writable());

  ASSERT_EQ(lab.mmu->fault(4, true, 0), FaultOutcome::kFixed);
  pte = lab.mm->read_pte_lockless(lab.hva_of(4));
  EXPECT_TRUE(pte.accessed());
  EXPECT_TRUE(pte.dirty());
  EXPECT_TRUE(lab.mmu->spte(4).writable());
  EXPECT_EQ(lab.mmu->audit(), 0u);
}

TEST(SvaFault, APageRequestFaultsTheMissingPageInThroughTheHost) {
  Lab lab(sva_config(Placement::kStartEnd, Backing::kAnon));
  ASSERT_FALSE(lab.mm->read_pte_lockless(lab.hva_of(6)).present());
  const uint64_t host_faults = lab.mm->stats().faults;
  ASSERT_EQ(lab.mmu->fault(6, true, 0), FaultOutcome::kFixed);
  EXPECT_EQ(lab.mm->stats().faults, host_faults + 1);  // handle_mm_fault served it
  const Pte pte = lab.mm->read_pte_lockless(lab.hva_of(6));
  ASSERT_TRUE(pte.present());
  EXPECT_TRUE(pte.dirty());
  EXPECT_EQ(lab.mmu->spte(6).pfn(), pte.pfn());
  EXPECT_TRUE(lab.mmu->spte(6).writable());
}

TEST(SvaFault, AWriteToAReadOnlyVmaIsRefused) {
  Lab lab(sva_config());
  ASSERT_TRUE(mm::mprotect(*lab.mm, lab.hva_of(0), 16 * mm::kPageSize, mm::kProtRead));
  ASSERT_EQ(lab.mmu->fault(2, false, 0), FaultOutcome::kFixed);
  // The page request fails while the VMA forbids writes; like a failed GUP,
  // that is waited out while the VMA exists (Mmu::gup_failure).
  EXPECT_EQ(lab.mmu->fault(2, true, 0), FaultOutcome::kRetry);
  EXPECT_FALSE(lab.mmu->spte(2).writable());
  EXPECT_EQ(lab.mmu->stats().protection_waits, 1u);
}

// The walk and the fill happen under the IOTLB lock: a flush that arrives
// while the fault is between them waits for the fill, then removes it.
TEST(SvaIotlb, AFlushDuringTheWalkWaitsForTheFillAndZapsIt) {
  Lab lab(sva_config());
  Gate under_lock(inject::Point::kSpteFaultUnderLock, Role::kVcpu);
  std::thread vcpu([&] {
    ThreadRole role(Role::kVcpu);
    EXPECT_EQ(lab.mmu->fault(3, false, 0), FaultOutcome::kFixed);
  });
  under_lock.wait_arrived();
  std::atomic<bool> flushed{false};
  std::thread flusher([&] {
    lab.chain.arch_invalidate_secondary_tlbs(lab.mm.get(), lab.hva_of(3), lab.hva_of(4));
    flushed = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(flushed.load()) << "the flush did not wait for the walk in flight";
  under_lock.open();
  vcpu.join();
  flusher.join();
  EXPECT_FALSE(lab.mmu->spte(3).present());
}

class SvaPlacement : public ::testing::TestWithParam<Placement> {};

// Every invalidation a shadow MMU listens to leaves the IOTLB alone: the
// bracket, the 2008 single calls, interval invalidations (none subscribed),
// change_pte and aging. Only arch_invalidate_secondary_tlbs flushes it.
TEST_P(SvaPlacement, OnlyArchInvalidateSecondaryTlbsFlushesTheIotlb) {
  Lab lab(sva_config(GetParam()));
  RecordingMirror mirror;
  lab.mmu->set_mirror(&mirror);
  ASSERT_EQ(lab.mmu->fault(3, true, 0), FaultOutcome::kFixed);
  const Spte cached = lab.mmu->spte(3);
  mirror.take();

  const mm::InvalidateRange range{lab.mm.get(), lab.hva_of(3), lab.hva_of(4),
                                  mm::InvalidateEvent::kClear, true};
  lab.chain.before_change(range);
  lab.chain.in_ptl_cleared(range);
  lab.chain.after_unlock(range);
  lab.chain.after_release(range);
  lab.chain.change_pte(lab.mm.get(), lab.hva_of(3), Pte());
  EXPECT_GE(mm::age_range(*lab.mm, lab.hva_of(3), lab.hva_of(4)), 1u);  // the PTE's own A bit
  EXPECT_EQ(lab.mmu->spte(3), cached);
  EXPECT_TRUE(mirror.take().empty());
  EXPECT_EQ(lab.mmu->stats().invalidations, 0u);

  lab.chain.arch_invalidate_secondary_tlbs(lab.mm.get(), lab.hva_of(3), lab.hva_of(4));
  EXPECT_FALSE(lab.mmu->spte(3).present());
  const auto updates = mirror.take();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].gfn, 3u);
  EXPECT_EQ(updates[0].access, Access::kNone);
  lab.mmu->set_mirror(nullptr);
}

INSTANTIATE_TEST_SUITE_P(EveryForwardingPlacement, SvaPlacement,
                         ::testing::Values(Placement::kPtlPage, Placement::kRangeBefore,
                                           Placement::kRangeAfter, Placement::kStartEnd),
                         [](const ::testing::TestParamInfo<Placement>& param) {
                           std::string name = mmu_notifier::placement_name(param.param);
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

TEST(SvaIotlb, PlacementNoneDropsTheFlushLikeAKernelWithoutNotifiers) {
  Lab lab(sva_config(Placement::kNone));
  ASSERT_EQ(lab.mmu->fault(3, false, 0), FaultOutcome::kFixed);
  lab.chain.arch_invalidate_secondary_tlbs(lab.mm.get(), lab.hva_of(3), lab.hva_of(4));
  EXPECT_TRUE(lab.mmu->spte(3).present());
  ASSERT_TRUE(mm::remap_file_page(*lab.mm, lab.hva_of(3), lab.spare_file_index(3)));
  EXPECT_EQ(lab.mmu->audit(), 1u);
}

// The host's own TLB flush reaches the IOTLB: every host operation leaves it
// coherent under start-end.
TEST(SvaIotlb, EveryHostOperationFlushesItThroughTheHostTlbFlush) {
  Lab lab(sva_config());
  for (Gfn gfn = 0; gfn < 8; ++gfn) ASSERT_EQ(lab.mmu->fault(gfn, true, 0), FaultOutcome::kFixed);
  EXPECT_TRUE(mm::remap_file_page(*lab.mm, lab.hva_of(1), lab.spare_file_index(1)));
  EXPECT_TRUE(mm::migrate_page(*lab.mm, lab.hva_of(2)));
  EXPECT_TRUE(mm::madvise_dontneed(*lab.mm, lab.hva_of(3), mm::kPageSize));
  EXPECT_TRUE(mm::mprotect(*lab.mm, lab.hva_of(4), mm::kPageSize, mm::kProtRead));
  mm::writeback_page(*lab.file, 5);
  for (Gfn gfn = 1; gfn <= 5; ++gfn) EXPECT_FALSE(lab.mmu->spte(gfn).writable()) << gfn;
  EXPECT_TRUE(lab.mmu->spte(6).writable());  // untouched pages stay cached
  EXPECT_EQ(lab.mmu->audit(), 0u);
  EXPECT_EQ(lab.violations.count(), 0u);
}

TEST(SvaIotlb, AZapLeavesTheDirtyBitWhereTheWalkPutItInTheHostPte) {
  Lab lab(sva_config());
  ASSERT_EQ(lab.mmu->fault(4, true, 0), FaultOutcome::kFixed);
  const mm::Pfn pfn = lab.mmu->spte(4).pfn();
  lab.phys.page(pfn).clear(mm::kPageDirty);
  mm::writeback_page(*lab.file, 4);  // page_mkclean: takes D from the PTE, flushes
  EXPECT_FALSE(lab.mmu->spte(4).present());
  // The IOTLB entry held no dirty state of its own to hand to the page.
  EXPECT_FALSE(lab.phys.page(pfn).test(mm::kPageDirty));
}

TEST(SvaEra, NeedsAHostWithArchInvalidateSecondaryTlbs) {
  const Scheme sva{Placement::kStartEnd, Protocol::kSva};
  const Scheme shadow{Placement::kStartEnd, Protocol::kSeqCount};
  EXPECT_TRUE(scheme_runs_in_era(sva, mm::KernelEra::k6_6));
  EXPECT_TRUE(scheme_runs_in_era(sva, mm::KernelEra::k6_18));
  for (mm::KernelEra era : {mm::KernelEra::k2_6_27, mm::KernelEra::k6_1, mm::KernelEra::k6_2}) {
    EXPECT_FALSE(scheme_runs_in_era(sva, era));
    EXPECT_NE(era_requirement(sva, era).find("6.6"), std::string::npos);
    EXPECT_TRUE(scheme_runs_in_era(shadow, era));
    LabConfig config = sva_config();
    config.era = era;
    EXPECT_THROW(Lab lab(config), Error) << mm::kernel_era_name(era);
  }
  EXPECT_EQ(schemes_for_era(all_schemes(), mm::KernelEra::k2_6_27).size(), 20u);
  EXPECT_EQ(schemes_for_era(all_schemes(), mm::KernelEra::k6_6).size(), 25u);
}

}  // namespace
}  // namespace sptelab::spte
