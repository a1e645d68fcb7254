// Traces of small known runs on the emulated host (host::Lab): the
// exact events, in order, that a secondary-MMU fault and a MADV_DONTNEED
// emit under each notifier placement; and a fault that races with an
// invalidation, whose retry the exporters link back to that invalidation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <thread>

#include "base/inject.h"
#include "host/lab.h"
#include "mm/ops.h"
#include "tests/trace/json.h"
#include "trace/export.h"
#include "trace/file.h"
#include "trace/trace.h"

namespace sptelab::trace {
namespace {

using mmu_notifier::Placement;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using K = Kind;

std::vector<Kind> kinds(const Snapshot& snapshot) {
  std::vector<Kind> out;
  for (const Event& event : snapshot.events) out.push_back(event.kind);
  return out;
}

host::LabConfig lab_config(Placement placement) {
  return {.scheme = {placement, spte::Protocol::kSeqCount}, .guest_pages = 4};
}

// The first fault of a shared-file page: GUP fast fails, GUP slow faults the
// page (and the page tables) in, then the spte is installed.
TEST(LabTrace, FirstFaultEmitsExactlyThese) {
  host::Lab lab(lab_config(Placement::kStartEnd));
  Session session;
  ASSERT_EQ(lab.mmu->fault(1, /*write=*/true, 0), spte::FaultOutcome::kFixed);
  Snapshot snap = snapshot();
  EXPECT_THAT(
      kinds(snap),
      ElementsAreArray({K::kFaultBegin, K::kGupFast,       K::kMmapLock,    K::kHostFault,
                        K::kPageAlloc,  K::kPageAlloc,     K::kPageAlloc,   K::kPageAlloc,
                        K::kPtlLock,    K::kRmapAdd,       K::kPteSet,      K::kPtlUnlock,
                        K::kPageDirty,  K::kHostFaultDone, K::kPtlLock,     K::kPtlUnlock,
                        K::kMmapUnlock, K::kGupSlow,       K::kSpteInstall, K::kFaultFixed}));
  const Event& install = snap.events[18];
  EXPECT_EQ(install.args[0], 1u);                     // gfn
  EXPECT_EQ(install.args[1], 0u);                     // old_spte
  EXPECT_EQ(install.args[2] & 0x63, 0x63u);           // present, writable, accessed, dirty
  EXPECT_EQ(snap.events[17].args[0], lab.hva_of(1));  // GUP of the gfn's host page
  EXPECT_EQ(snap.overwritten, 0u);
}

struct PlacementCase {
  Placement placement;
  std::vector<Kind> dontneed;
};

class DontneedTrace : public ::testing::TestWithParam<PlacementCase> {};

// Where each placement puts its notifier call relative to the PTL, the PTE
// change and the TLB flush: the 2008 debate, visible in the trace. The
// flush ends with arch_invalidate_secondary_tlbs (6.6+), which every
// placement but none forwards (the page was dirty: forced flush in the PTL).
TEST_P(DontneedTrace, EmitsExactlyThese) {
  host::Lab lab(lab_config(GetParam().placement));
  ASSERT_EQ(lab.mmu->fault(1, true, 0), spte::FaultOutcome::kFixed);
  Session session;
  ASSERT_TRUE(mm::madvise_dontneed(*lab.mm, lab.hva_of(1), mm::kPageSize));
  EXPECT_THAT(kinds(snapshot()), ElementsAreArray(GetParam().dontneed));
}

INSTANTIATE_TEST_SUITE_P(
    Placements, DontneedTrace,
    ::testing::Values(
        PlacementCase{Placement::kNone,
                      {K::kMmOpBegin, K::kMmapLock, K::kPtlLock, K::kPteClear, K::kTlbFlush,
                       K::kRmapRemove, K::kPtlUnlock, K::kMmapUnlock, K::kMmOpEnd}},
        PlacementCase{Placement::kPtlPage,
                      {K::kMmOpBegin, K::kMmapLock, K::kPtlLock, K::kPteClear,
                       K::kNotifyInvalidatePage, K::kSpteZap, K::kTlbFlush, K::kNotifySecondaryTlbs,
                       K::kRmapRemove, K::kPtlUnlock, K::kMmapUnlock, K::kMmOpEnd}},
        PlacementCase{Placement::kRangeBefore,
                      {K::kMmOpBegin, K::kMmapLock, K::kNotifyInvalidateRange, K::kSpteZap,
                       K::kPtlLock, K::kPteClear, K::kTlbFlush, K::kNotifySecondaryTlbs,
                       K::kRmapRemove, K::kPtlUnlock, K::kMmapUnlock, K::kMmOpEnd}},
        PlacementCase{Placement::kRangeAfter,
                      {K::kMmOpBegin, K::kMmapLock, K::kPtlLock, K::kPteClear, K::kTlbFlush,
                       K::kNotifySecondaryTlbs, K::kRmapRemove, K::kPtlUnlock,
                       K::kNotifyInvalidateRange, K::kSpteZap, K::kMmapUnlock, K::kMmOpEnd}},
        PlacementCase{Placement::kStartEnd,
                      {K::kMmOpBegin, K::kMmapLock, K::kNotifyRangeStart, K::kSpteZap, K::kPtlLock,
                       K::kPteClear, K::kTlbFlush, K::kNotifySecondaryTlbs, K::kRmapRemove,
                       K::kPtlUnlock, K::kNotifyRangeEnd, K::kMmapUnlock, K::kMmOpEnd}}),
    [](const auto& test) {
      switch (test.param.placement) {
        case Placement::kNone:
          return std::string("None");
        case Placement::kPtlPage:
          return std::string("PtlPage");
        case Placement::kRangeBefore:
          return std::string("RangeBefore");
        case Placement::kRangeAfter:
          return std::string("RangeAfter");
        case Placement::kStartEnd:
          return std::string("StartEnd");
      }
      return std::string("Unknown");
    });

// A vCPU faults gfn 1; between its GUP and its check under mmu_lock a
// "remapper" thread runs MADV_DONTNEED on the page. The fault must retry,
// and the exporters link the retry (and the zap) to the remapper's
// invalidate_range_start.
class RacingFault : public ::testing::Test {
 protected:
  void SetUp() override {
    lab_ = std::make_unique<host::Lab>(lab_config(Placement::kStartEnd));
    Session session;
    bool fired = false;
    inject::ScopedHook hook(inject::Point::kSpteFaultAfterGup,
                            [&](inject::Point, const inject::Context& ctx) {
                              if (fired || ctx.gfn != 1) return;
                              fired = true;
                              std::thread remapper([&] {
                                name_this_thread("remapper");
                                mm::madvise_dontneed(*lab_->mm, lab_->hva_of(1), mm::kPageSize);
                              });
                              remapper.join();
                            });
    std::thread vcpu([&] {
      name_this_thread("vcpu0");
      outcome_ = lab_->mmu->fault(1, false, 0);
    });
    vcpu.join();
    file_ = make_trace_file(snapshot(), {{"memslot", memslot_metadata(0, 4, lab_->guest_hva())}});
  }

  size_t index_of(Kind kind) const {
    for (size_t i = 0; i < file_.snapshot.events.size(); ++i) {
      if (file_.snapshot.events[i].kind == kind) return i;
    }
    ADD_FAILURE() << "no " << info(kind).name;
    return 0;
  }

  std::unique_ptr<host::Lab> lab_;
  spte::FaultOutcome outcome_ = spte::FaultOutcome::kFixed;
  TraceFile file_;
};

TEST_F(RacingFault, RetryIsLinkedToTheInvalidation) {
  ASSERT_EQ(outcome_, spte::FaultOutcome::kRetry);
  size_t start = index_of(Kind::kNotifyRangeStart);
  size_t retry = index_of(Kind::kFaultRetry);
  EXPECT_EQ(file_.thread_name(file_.snapshot.events[start].thread), "remapper");
  EXPECT_EQ(file_.thread_name(file_.snapshot.events[retry].thread), "vcpu0");
  std::vector<Link> links = link_invalidations(file_);
  ASSERT_EQ(links.size(), 1u);  // no spte was present to zap: only the retry
  EXPECT_EQ(links[0].kind, LinkKind::kRetry);
  EXPECT_EQ(links[0].from, start);
  EXPECT_EQ(links[0].to, retry);
  EXPECT_TRUE(links[0].covers);
}

TEST_F(RacingFault, WindowShowsTheCause) {
  uint64_t when = file_.snapshot.events[index_of(Kind::kFaultRetry)].ts_ns;
  std::string window = format_window(file_, when, 6, 1);
  EXPECT_THAT(window, HasSubstr("=> "));
  EXPECT_THAT(window, HasSubstr("kvm_page_fault_retry: gfn=0x1"));
  EXPECT_THAT(window, HasSubstr("<- mmu_notifier_invalidate_range_start remapper-"));
}

TEST_F(RacingFault, ChromeFlowCrossesFromRemapperToVcpu) {
  testing::Json root = testing::parse_json(format_chrome_json(file_));
  double s_tid = -1, f_tid = -1;
  for (const testing::Json& e : root["traceEvents"].array()) {
    if (e["ph"].string() == "s") s_tid = e["tid"].number();
    if (e["ph"].string() == "f") f_tid = e["tid"].number();
  }
  size_t start = index_of(Kind::kNotifyRangeStart);
  size_t retry = index_of(Kind::kFaultRetry);
  EXPECT_EQ(s_tid, file_.snapshot.events[start].thread + 1.0);
  EXPECT_EQ(f_tid, file_.snapshot.events[retry].thread + 1.0);
}

TEST_F(RacingFault, SurvivesTheFileRoundTrip) {
  std::string path = ::testing::TempDir() + "/racing.trace";
  write_trace_file(path, file_);
  TraceFile back = read_trace_file(path);
  EXPECT_EQ(format_text(back), format_text(file_));
  EXPECT_EQ(link_invalidations(back).size(), 1u);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace sptelab::trace
