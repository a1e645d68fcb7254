// Fault-around (MmuOptions::fault_around): the prefetch of present
// neighbours within the aligned block around a fault, mapped with the
// faulting page in one mirror update.
#include <gtest/gtest.h>

#include <vector>

#include "host/lab.h"
#include "mm/fault.h"
#include "mm/ops.h"
#include "spte/mmu.h"
#include "tests/spte/recording_mirror.h"

namespace sptelab::spte {
namespace {

using host::Backing;
using host::Lab;
using host::LabConfig;
using mmu_notifier::Placement;
using testing::RecordingMirror;

// 64 pages of anonymous guest RAM with the given fault-around, whose host
// pages [0, populated) the host has written (so their PTEs are present,
// writable, and their frames contiguous: allocated in order).
class FaultAround : public ::testing::Test {
 protected:
  void make_lab(uint32_t fault_around, uint64_t populated,
                Protocol protocol = Protocol::kSeqCount) {
    lab_ = std::make_unique<Lab>(LabConfig{.scheme = {Placement::kStartEnd, protocol},
                                           .guest_pages = 64,
                                           .backing = Backing::kAnon,
                                           .fault_around = fault_around});
    mm::MmapReadGuard guard(*lab_->mm);
    for (Gfn gfn = 0; gfn < populated; ++gfn) {
      ASSERT_EQ(mm::handle_mm_fault(*lab_->mm, lab_->hva_of(gfn), true), mm::FaultResult::kOk);
    }
    lab_->mmu->set_mirror(&mirror_);
  }
  void TearDown() override {
    if (lab_) lab_->mmu->set_mirror(nullptr);
  }
  mm::Pfn host_pfn(Gfn gfn) const { return lab_->mm->read_pte_lockless(lab_->hva_of(gfn)).pfn(); }
  std::vector<Gfn> present() const {
    std::vector<Gfn> gfns;
    for (Gfn gfn = 0; gfn < 64; ++gfn) {
      if (lab_->mmu->spte(gfn).present()) gfns.push_back(gfn);
    }
    return gfns;
  }
  static std::vector<Gfn> range(Gfn first, Gfn end) {
    std::vector<Gfn> gfns;
    for (Gfn gfn = first; gfn < end; ++gfn) gfns.push_back(gfn);
    return gfns;
  }

  std::unique_ptr<Lab> lab_;
  RecordingMirror mirror_;
};

TEST_F(FaultAround, MapsTheAlignedBlockAroundTheFaultInOneMirrorUpdate) {
  make_lab(16, 64);
  ASSERT_EQ(lab_->mmu->fault(21, true, 0), FaultOutcome::kFixed);
  EXPECT_EQ(present(), range(16, 32));
  auto updates = mirror_.take();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].gfn, 16u);
  EXPECT_EQ(updates[0].pfn, host_pfn(16));
  EXPECT_EQ(updates[0].count, 16u);
  EXPECT_EQ(updates[0].access, Access::kWrite);
  EXPECT_EQ(lab_->mmu->stats().installs, 16u);
  EXPECT_EQ(lab_->mmu->audit(), 0u);
}

TEST_F(FaultAround, PrefetchedSptesAreWritableDirtyAndNotAccessed) {
  make_lab(16, 64);
  ASSERT_EQ(lab_->mmu->fault(21, true, 0), FaultOutcome::kFixed);
  Spte faulted = lab_->mmu->spte(21);
  EXPECT_TRUE(faulted.writable() && faulted.dirty() && faulted.accessed());
  Spte neighbour = lab_->mmu->spte(22);
  EXPECT_TRUE(neighbour.writable());
  EXPECT_TRUE(neighbour.dirty());  // the mirror cannot report writes
  EXPECT_FALSE(neighbour.accessed());
  EXPECT_EQ(neighbour.pfn(), host_pfn(22));
}

TEST_F(FaultAround, StopsAtAnAbsentHostPte) {
  make_lab(16, 28);
  ASSERT_EQ(lab_->mmu->fault(18, true, 0), FaultOutcome::kFixed);
  EXPECT_EQ(present(), range(16, 28));
  auto updates = mirror_.take();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].gfn, 16u);
  EXPECT_EQ(updates[0].count, 12u);
}

TEST_F(FaultAround, StopsAtAPresentSpte) {
  make_lab(16, 64);
  ASSERT_EQ(lab_->mmu->fault(18, true, 0), FaultOutcome::kFixed);
  // Write-protecting 20..23 zaps their sptes and leaves read-only host PTEs
  // behind, even once the VMA is writable again.
  ASSERT_TRUE(mm::mprotect(*lab_->mm, lab_->hva_of(20), 4 * mm::kPageSize, mm::kProtRead));
  ASSERT_TRUE(
      mm::mprotect(*lab_->mm, lab_->hva_of(20), 4 * mm::kPageSize, mm::kProtRead | mm::kProtWrite));
  mirror_.take();
  ASSERT_EQ(lab_->mmu->fault(22, false, 0), FaultOutcome::kFixed);
  auto updates = mirror_.take();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].gfn, 20u);
  EXPECT_EQ(updates[0].count, 4u);
  EXPECT_EQ(updates[0].pfn, host_pfn(20));
  EXPECT_EQ(updates[0].access, Access::kRead);
  EXPECT_EQ(lab_->mmu->audit(), 0u);
}

TEST_F(FaultAround, WritableFaultStopsAtAReadOnlyHostPte) {
  make_lab(16, 64);
  ASSERT_TRUE(mm::mprotect(*lab_->mm, lab_->hva_of(26), mm::kPageSize, mm::kProtRead));
  ASSERT_EQ(lab_->mmu->fault(20, true, 0), FaultOutcome::kFixed);
  EXPECT_EQ(present(), range(16, 26));
  EXPECT_EQ(lab_->mmu->audit(), 0u);
  // A read fault on the read-only page maps it read-only and takes its
  // writable neighbours along read-only.
  ASSERT_EQ(lab_->mmu->fault(26, false, 0), FaultOutcome::kFixed);
  EXPECT_EQ(present(), range(16, 32));
  EXPECT_FALSE(lab_->mmu->spte(26).writable());
  EXPECT_FALSE(lab_->mmu->spte(27).writable());
  EXPECT_EQ(lab_->mmu->audit(), 0u);
}

TEST_F(FaultAround, SkipsNeighboursInsideAnOpenInvalidation) {
  make_lab(16, 64);
  // Open [hva(24), hva(26)): its PTEs may change after any read without
  // another notifier call, so the prefetch must not install them.
  mm::InvalidateRange open{lab_->mm.get(), lab_->hva_of(24), lab_->hva_of(26),
                           mm::InvalidateEvent::kClear, true};
  lab_->chain.before_change(open);
  ASSERT_EQ(lab_->mmu->fault(20, true, 0), FaultOutcome::kFixed);
  EXPECT_EQ(present(), range(16, 24));
  lab_->chain.after_unlock(open);
}

TEST_F(FaultAround, ZeroMapsOnlyTheFaultingPage) {
  make_lab(0, 64);
  ASSERT_EQ(lab_->mmu->fault(21, true, 0), FaultOutcome::kFixed);
  EXPECT_EQ(present(), range(21, 22));
  auto updates = mirror_.take();
  ASSERT_EQ(updates.size(), 1u);
  EXPECT_EQ(updates[0].count, 1u);
}

}  // namespace
}  // namespace sptelab::spte
