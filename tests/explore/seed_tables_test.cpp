// Each seed race's scheme table (does the host bug reach the secondary MMU)
// is what docs/seeds.md says: both variants of a race under every scheme,
// each searched to completion. Label `search` (exhaustive_test.cpp says
// why): a table takes 10-25 s here and over a minute under ASan.
#include <gtest/gtest.h>

#include <initializer_list>
#include <map>
#include <set>
#include <string>

#include "explore/campaign.h"

namespace sptelab::explore {
namespace {

using scenarios::SeedRace;
using scenarios::Variant;

// The verdict of each scheme with the vCPU as the witness, per variant.
struct Verdicts {
  bool fixed_racy;
  bool buggy_racy;
};

std::map<std::string, Verdicts> scheme_verdicts(SeedRace race) {
  std::map<std::string, Verdicts> verdicts;
  for (const CellResult& result :
       run_campaign(seed_scheme_cells(race, spte::all_schemes()), CampaignOptions{})) {
    EXPECT_TRUE(result.complete) << result.cell.key();
    Verdicts& v = verdicts[result.cell.scheme.name()];
    (result.cell.variant == Variant::kBuggy ? v.buggy_racy : v.fixed_racy) = result.violated;
  }
  return verdicts;
}

// The schemes whose own protocol keeps a vCPU that already holds its spte
// coherent through these roles: only under them can a seed race's cell say
// anything about the host bug. Under the others the scheme's own race is
// found first, in both variants (none: the spte is never invalidated;
// range-after: only after the release; range-before, start-end+naive and
// start-end+seq: a refault can map the old state again).
// The sva device is coherent whenever the host flushes its TLB before it
// frees, reuses or cleans a page, under every placement but none.
const std::set<std::string> kSvaForwarding = {"ptl-page+sva", "range-before+sva", "range-after+sva",
                                              "start-end+sva"};

std::set<std::string> coherent_schemes(std::initializer_list<const char*> extra) {
  std::set<std::string> schemes = {"ptl-page+seq", "ptl-page+seq-count", "ptl-page+interval",
                                   "start-end+seq-count", "start-end+interval"};
  schemes.insert(kSvaForwarding.begin(), kSvaForwarding.end());
  schemes.insert(extra.begin(), extra.end());
  return schemes;
}

// The host bug reaches exactly the schemes of `reached`: their buggy variant
// is racy where the fixed one is coherent; every other verdict is the
// scheme's own and the same in both variants.
void expect_reaches(SeedRace race, const std::set<std::string>& coherent,
                    const std::set<std::string>& reached) {
  const auto verdicts = scheme_verdicts(race);
  ASSERT_EQ(verdicts.size(), spte::all_schemes().size());
  for (const auto& [scheme, v] : verdicts) {
    EXPECT_EQ(v.fixed_racy, !coherent.count(scheme)) << scheme;
    EXPECT_EQ(v.buggy_racy, v.fixed_racy || reached.count(scheme) > 0) << scheme;
  }
}

void expect_reaches_no_scheme(SeedRace race, const std::set<std::string>& coherent) {
  expect_reaches(race, coherent, {});
}

// delayed-rmap: every placement that invalidates the spte before the rmap
// entry goes (start-end and range-before at before_change, ptl-page in the
// PTL right at the clear) leaves the vCPU no writable spte once page_mkclean
// can miss the mapping; range-after invalidates after the release, so its
// vCPU keeps writing after writeback in either order (lost-at-writeback
// fixed and buggy alike). The sva device's IOTLB entry, like a host CPU's
// TLB entry, lives until the zap's TLB flush: the bug reaches it.
TEST(SeedSchemeTable, DelayedRmapReachesOnlyTheSvaDevice) {
  expect_reaches(SeedRace::kDelayedRmap, coherent_schemes({}), kSvaForwarding);
}

// dontneed-tlb: an spte is dropped by the notifier, not by the host's TLB
// flush, so flushing the host TLBs late changes nothing for the vCPU.
// ptl-page+naive is coherent here: its own race needs a fault whose GUP read
// the PTE before an in-PTL invalidation and installs after it, and here the
// vCPU faults only once its spte is gone, when the PTE is already clear (in
// delayed-rmap the cleaner's page_mkclean opens that window).
// The sva device is the exception: its IOTLB is flushed by the host's TLB
// flush, which the buggy variant makes after dropping the PTL.
TEST(SeedSchemeTable, DontneedTlbReachesOnlyTheSvaDevice) {
  expect_reaches(SeedRace::kDontneedTlb, coherent_schemes({"ptl-page+naive"}), kSvaForwarding);
}

// gup-fast-revalidate: a fault protocol that re-checks the invalidation
// sequence under mmu_lock throws away the page a GUP-fast without its
// re-check returned (the zap that freed it ran an invalidation meanwhile),
// so ptl-page and start-end with seq, seq-count or interval mask the bug.
// The naive protocols are racy against the zap itself in either variant;
// the pinning user without notifiers (the host witness) is not masked at
// all: SeedExplored finds it. The sva device takes no GUP at all.
TEST(SeedSchemeTable, GupFastRevalidateIsMaskedBySequenceProtocols) {
  expect_reaches_no_scheme(SeedRace::kGupFastRevalidate, coherent_schemes({}));
}

// pagewalk-ptl: the walker's written-back PTE is a mapping the rmap does not
// know, so the host's next reclaim frees the frame without any invalidation
// for it, and the spte the vCPU faulted in through that PTE is left on the
// freed frame. No notifier placement can see a mapping the host itself
// lost: every scheme that is coherent in the fixed variant is reached in the
// buggy one (range-after among them: nothing frees or replaces the page
// during the round, a shared file page stays cached after MADV_DONTNEED, so
// its late invalidation leaves no spte on a wrong frame).
TEST(SeedSchemeTable, PagewalkPtlReachesEveryCoherentScheme) {
  const std::set<std::string> coherent =
      coherent_schemes({"range-after+seq", "range-after+seq-count", "range-after+interval"});
  const auto verdicts = scheme_verdicts(SeedRace::kPagewalkPtl);
  ASSERT_EQ(verdicts.size(), spte::all_schemes().size());
  for (const auto& [scheme, v] : verdicts) {
    EXPECT_EQ(v.fixed_racy, !coherent.count(scheme)) << scheme;
    EXPECT_TRUE(v.buggy_racy) << scheme;
  }
}

}  // namespace
}  // namespace sptelab::explore
