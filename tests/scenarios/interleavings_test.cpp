// For each of the 20 shadow-MMU schemes, the interleavings that decide it are driven
// deterministically and the outcome is asserted against the reasoning of the
// 2008 thread (docs/schemes.md has the table and a reason per cell).
#include "scenarios/interleavings.h"

#include <gtest/gtest.h>

#include <string>

#include "base/error.h"

namespace sptelab::scenarios {
namespace {

using mmu_notifier::Placement;
using spte::Protocol;
using spte::Scheme;

// Whether the interleaving lets a secondary mapping of the old page survive
// the host operation (even if only until the late invalidation).
bool unsafe(const Scheme& scheme, Interleaving interleaving, host::HostOp op) {
  const bool none = scheme.placement == Placement::kNone;
  switch (interleaving) {
    case Interleaving::kGupBeforeChange:
      // Every invalidation moves the sequence (or an interval's), so only a
      // fault that never checks, or no invalidation at all, installs the page
      // it looked up before the change.
      return none || scheme.protocol == Protocol::kNaive;
    case Interleaving::kFaultInWindow:
      // Nothing invalidates after the PTE change under range-before; under
      // start-end only a protocol that sees the open range holds the fault off.
      return none || scheme.placement == Placement::kRangeBefore ||
             (scheme.placement == Placement::kStartEnd &&
              (scheme.protocol == Protocol::kNaive || scheme.protocol == Protocol::kSeq));
    case Interleaving::kThirdThread:
      // Only range-after leaves the old spte in place after the new PTE is
      // live, and migration has no such window: it invalidates every mapping
      // before remove_migration_ptes() makes the new page visible.
      return none || (scheme.placement == Placement::kRangeAfter && op != host::HostOp::kMigrate);
  }
  return true;
}

struct Case {
  Scheme scheme;
  Interleaving interleaving;
  host::HostOp op;
};

std::string case_name(const testing::TestParamInfo<Case>& info) {
  std::string name = info.param.scheme.name() + "_" + interleaving_name(info.param.interleaving) +
                     "_" + host::host_op_name(info.param.op);
  for (char& c : name) {
    if (!isalnum(static_cast<unsigned char>(c))) c = '_';
  }
  return name;
}

std::vector<Case> all_cases() {
  std::vector<Case> cases;
  for (const Scheme& scheme : spte::all_schemes()) {
    // An sva device takes no GUP and needs a 6.6 host: not an interleaving
    // of the 2008 thread (SvaIsRefused below).
    if (scheme.protocol == Protocol::kSva) continue;
    // remap keeps the old page in the page cache: staleness and lost writes.
    for (Interleaving interleaving : all_interleavings()) {
      cases.push_back({scheme, interleaving, host::HostOp::kRemap});
    }
    // migrate frees the old page: use-after-free. (gup-before-change pins the
    // page, so Linux's migration refuses it: nothing to see there.)
    cases.push_back({scheme, Interleaving::kFaultInWindow, host::HostOp::kMigrate});
    cases.push_back({scheme, Interleaving::kThirdThread, host::HostOp::kMigrate});
  }
  return cases;
}

class InterleavingTest : public testing::TestWithParam<Case> {};

TEST_P(InterleavingTest, OutcomeMatchesTheReasoning) {
  const Case& c = GetParam();
  InterleavingOutcome out = run_interleaving(c.scheme, c.interleaving, c.op);
  ASSERT_TRUE(out.op_applied) << "the host operation must really change the mapping";
  std::string seen;
  for (const auto& detail : out.details) seen += "\n  " + detail;

  const bool bad = unsafe(c.scheme, c.interleaving, c.op);
  const bool frees = c.op == host::HostOp::kMigrate;
  // In the third-thread window the stale spte predates range-after's late
  // invalidation, which then cleans it up; in gup-before-change it is
  // installed after every invalidation and stays. A freed frame shows as
  // use-after-free rather than as a stale mapping.
  const bool cleaned_up_late =
      c.scheme.placement == Placement::kRangeAfter && c.interleaving == Interleaving::kThirdThread;
  const bool stays_stale = bad && !frees && !cleaned_up_late;
  const bool outlives_frame = bad && frees;
  const bool loses_write = bad;

  EXPECT_EQ(out.stale_spte, stays_stale) << seen;
  EXPECT_EQ(out.use_after_free, outlives_frame) << seen;
  EXPECT_EQ(out.lost_write, loses_write) << seen;
}

INSTANTIATE_TEST_SUITE_P(AllSchemes, InterleavingTest, testing::ValuesIn(all_cases()), case_name);

TEST(Interleaving, SvaIsRefused) {
  const Scheme scheme{Placement::kStartEnd, Protocol::kSva};
  EXPECT_THROW(run_interleaving(scheme, Interleaving::kFaultInWindow, host::HostOp::kRemap), Error);
}

TEST(Interleaving, NamesRoundTrip) {
  for (Interleaving interleaving : all_interleavings()) {
    EXPECT_EQ(parse_interleaving(interleaving_name(interleaving)), interleaving);
  }
  EXPECT_FALSE(parse_interleaving("sometimes").has_value());
}

}  // namespace
}  // namespace sptelab::scenarios
