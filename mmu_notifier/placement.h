// Where the host MM calls the secondary-MMU notifiers (docs/design.md, "placement"),
// and the names of the points and callbacks involved. The mapping from a
// host point to a callback lives here, in one table, so the chain, the CLI and
// the documentation cannot disagree about it.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sptelab::mmu_notifier {

enum class Placement : uint8_t {
  kNone,         // no secondary invalidation at all (baseline, CONFIG_MMU_NOTIFIER=n)
  kPtlPage,      // invalidate_page inside the PTL (Andrea Arcangeli, Jan 2008)
  kRangeBefore,  // invalidate_range before the PTEs change (Christoph Lameter's v1)
  kRangeAfter,   // invalidate_range after unlock and page release (Lameter's v1, do_wp_page)
  kStartEnd,     // invalidate_range_start / invalidate_range_end (2.6.27 to today)
};

inline constexpr std::array<Placement, 5> kAllPlacements = {
    Placement::kNone, Placement::kPtlPage, Placement::kRangeBefore, Placement::kRangeAfter,
    Placement::kStartEnd};

// "none", "ptl-page", "range-before", "range-after", "start-end".
const char* placement_name(Placement placement);
std::optional<Placement> parse_placement(std::string_view name);
// Like parse_placement, but throws Error(kBadInput) naming the valid choices.
Placement placement_from_string(std::string_view name);
// "none, ptl-page, range-before, range-after, start-end" (for help and errors).
std::string placement_list();

// The points an mm operation passes through (mm/notifier_hooks.h).
enum class HookPoint : uint8_t {
  kBeforeChange,  // before any PTL is taken
  kInPtlCleared,  // inside the PTL, PTE cleared and flushed, new PTE not yet set
  kAfterUnlock,   // all PTLs dropped, old pages not yet released
  kAfterRelease,  // old pages released
  kCount
};
const char* hook_point_name(HookPoint point);

// Every callback a subscription can receive.
enum class Callback : uint8_t {
  kInvalidatePage,
  kInvalidateRange,
  kInvalidateRangeStart,
  kInvalidateRangeEnd,
  kClearFlushYoung,
  kClearYoung,
  kTestYoung,
  kChangePte,
  kRelease,
  kIntervalInvalidate,  // mmu_interval_notifier_ops::invalidate
  // From the host's TLB flush (6.6+), for secondary TLBs that share the host
  // page table (IOMMU SVA).
  kArchInvalidateSecondaryTlbs,
  kCount
};
const char* callback_name(Callback callback);

// The invalidation callback a placement issues at a host point, if any:
//   placement     before_change     in_ptl_cleared   after_unlock    after_release
//   none          -                 -                -               -
//   ptl-page      -                 invalidate_page  -               -
//   range-before  invalidate_range  -                -               -
//   range-after   -                 -                -               invalidate_range
//   start-end     range_start       -                range_end       -
std::optional<Callback> invalidation_at(Placement placement, HookPoint point);

// change_pte, arch_invalidate_secondary_tlbs, the *_young callbacks and
// release reach subscriptions under every placement except none, which drops them like a kernel
// built without MMU notifiers does (aging then sees only the primary PTE's accessed bit).
constexpr bool forwards_other_callbacks(Placement placement) {
  return placement != Placement::kNone;
}

}  // namespace sptelab::mmu_notifier
