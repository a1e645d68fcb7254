#include "mmu_notifier/placement.h"

#include <gtest/gtest.h>

#include "base/error.h"

namespace sptelab::mmu_notifier {
namespace {

TEST(Placement, NamesRoundTrip) {
  EXPECT_STREQ(placement_name(Placement::kNone), "none");
  EXPECT_STREQ(placement_name(Placement::kPtlPage), "ptl-page");
  EXPECT_STREQ(placement_name(Placement::kRangeBefore), "range-before");
  EXPECT_STREQ(placement_name(Placement::kRangeAfter), "range-after");
  EXPECT_STREQ(placement_name(Placement::kStartEnd), "start-end");
  for (Placement placement : kAllPlacements) {
    EXPECT_EQ(parse_placement(placement_name(placement)), placement);
  }
  EXPECT_EQ(parse_placement("start_end"), std::nullopt);
  EXPECT_EQ(parse_placement(""), std::nullopt);
}

TEST(Placement, UnknownNameIsBadInputListingTheChoices) {
  try {
    placement_from_string("ptl");
    FAIL() << "no exception";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    std::string message = error.what();
    EXPECT_NE(message.find("'ptl'"), std::string::npos) << message;
    EXPECT_NE(message.find(placement_list()), std::string::npos) << message;
  }
  EXPECT_EQ(placement_from_string("range-after"), Placement::kRangeAfter);
}

TEST(Placement, InvalidationTableMatchesTheDesign) {
  using P = Placement;
  using H = HookPoint;
  using C = Callback;
  struct Row {
    P placement;
    std::optional<C> before, in_ptl, after_unlock, after_release;
  };
  const Row rows[] = {
      {P::kNone, {}, {}, {}, {}},
      {P::kPtlPage, {}, C::kInvalidatePage, {}, {}},
      {P::kRangeBefore, C::kInvalidateRange, {}, {}, {}},
      {P::kRangeAfter, {}, {}, {}, C::kInvalidateRange},
      {P::kStartEnd, C::kInvalidateRangeStart, {}, C::kInvalidateRangeEnd, {}},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(placement_name(row.placement));
    EXPECT_EQ(invalidation_at(row.placement, H::kBeforeChange), row.before);
    EXPECT_EQ(invalidation_at(row.placement, H::kInPtlCleared), row.in_ptl);
    EXPECT_EQ(invalidation_at(row.placement, H::kAfterUnlock), row.after_unlock);
    EXPECT_EQ(invalidation_at(row.placement, H::kAfterRelease), row.after_release);
    EXPECT_EQ(forwards_other_callbacks(row.placement), row.placement != P::kNone);
  }
}

}  // namespace
}  // namespace sptelab::mmu_notifier
