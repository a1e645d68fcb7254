#include "mmu_notifier/placement.h"

#include "base/error.h"

namespace sptelab::mmu_notifier {

const char* placement_name(Placement placement) {
  switch (placement) {
    case Placement::kNone:
      return "none";
    case Placement::kPtlPage:
      return "ptl-page";
    case Placement::kRangeBefore:
      return "range-before";
    case Placement::kRangeAfter:
      return "range-after";
    case Placement::kStartEnd:
      return "start-end";
  }
  return "?";
}

std::optional<Placement> parse_placement(std::string_view name) {
  for (Placement placement : kAllPlacements) {
    if (name == placement_name(placement)) return placement;
  }
  return std::nullopt;
}

std::string placement_list() {
  std::string out;
  for (Placement placement : kAllPlacements) {
    if (!out.empty()) out += ", ";
    out += placement_name(placement);
  }
  return out;
}

Placement placement_from_string(std::string_view name) {
  std::optional<Placement> placement = parse_placement(name);
  if (!placement) {
    throw_bad_input("unknown notifier placement '" + std::string(name) + "'; choose one of " +
                    placement_list());
  }
  return *placement;
}

const char* hook_point_name(HookPoint point) {
  switch (point) {
    case HookPoint::kBeforeChange:
      return "before_change";
    case HookPoint::kInPtlCleared:
      return "in_ptl_cleared";
    case HookPoint::kAfterUnlock:
      return "after_unlock";
    case HookPoint::kAfterRelease:
      return "after_release";
    case HookPoint::kCount:
      break;
  }
  return "?";
}

const char* callback_name(Callback callback) {
  switch (callback) {
    case Callback::kInvalidatePage:
      return "invalidate_page";
    case Callback::kInvalidateRange:
      return "invalidate_range";
    case Callback::kInvalidateRangeStart:
      return "invalidate_range_start";
    case Callback::kInvalidateRangeEnd:
      return "invalidate_range_end";
    case Callback::kClearFlushYoung:
      return "clear_flush_young";
    case Callback::kClearYoung:
      return "clear_young";
    case Callback::kTestYoung:
      return "test_young";
    case Callback::kChangePte:
      return "change_pte";
    case Callback::kRelease:
      return "release";
    case Callback::kIntervalInvalidate:
      return "interval_invalidate";
    case Callback::kArchInvalidateSecondaryTlbs:
      return "arch_invalidate_secondary_tlbs";
    case Callback::kCount:
      break;
  }
  return "?";
}

std::optional<Callback> invalidation_at(Placement placement, HookPoint point) {
  switch (placement) {
    case Placement::kNone:
      return std::nullopt;
    case Placement::kPtlPage:
      if (point == HookPoint::kInPtlCleared) return Callback::kInvalidatePage;
      return std::nullopt;
    case Placement::kRangeBefore:
      if (point == HookPoint::kBeforeChange) return Callback::kInvalidateRange;
      return std::nullopt;
    case Placement::kRangeAfter:
      if (point == HookPoint::kAfterRelease) return Callback::kInvalidateRange;
      return std::nullopt;
    case Placement::kStartEnd:
      if (point == HookPoint::kBeforeChange) return Callback::kInvalidateRangeStart;
      if (point == HookPoint::kAfterUnlock) return Callback::kInvalidateRangeEnd;
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace sptelab::mmu_notifier
