// A scheme is PLACEMENT+PROTOCOL: where the host calls the notifiers, and how
// the secondary MMU synchronises its faults with them (docs/design.md). Every pair
// is valid; comparing them is the point.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mm/kernel_era.h"
#include "mmu_notifier/placement.h"

namespace sptelab::spte {

enum class Protocol : uint8_t {
  kNaive,     // GUP, take mmu_lock, install; no check
  kSeq,       // snapshot invalidate_seq before GUP; retry under mmu_lock if it moved
  kSeqCount,  // also retry while an open invalidation covers the page (KVM today)
  kInterval,  // mmu_interval_read_begin / read_retry on a per-memslot interval
  // Not a shadow MMU: an IOMMU-SVA-style device that walks the host page
  // table itself and caches translations in an IOTLB, invalidated only by
  // arch_invalidate_secondary_tlbs from the host's TLB flush (Linux 6.6+).
  kSva,
};

const char* protocol_name(Protocol protocol);
std::optional<Protocol> parse_protocol(std::string_view name);
const std::vector<Protocol>& all_protocols();

struct Scheme {
  mmu_notifier::Placement placement = mmu_notifier::Placement::kStartEnd;
  Protocol protocol = Protocol::kSeqCount;
  std::string name() const;
  bool operator==(const Scheme&) const = default;
};

// Parses "start-end+seq-count"; nullopt if either half is unknown.
std::optional<Scheme> parse_scheme(std::string_view name);
// All 25 schemes, placement-major.
std::vector<Scheme> all_schemes();
// One line on what this scheme is, for `sptelab list schemes`.
std::string describe(const Scheme& scheme);

// The sva protocol needs the host to call arch_invalidate_secondary_tlbs,
// which exists from 6.6 on. Before, SVA drivers (3.19-6.5) subscribed to
// invalidate_range, which sptelab does not model, and 2.6.27 had no SVA: no
// honest verdict exists for an sva scheme under an older era.
bool scheme_runs_in_era(const Scheme& scheme, mm::KernelEra era);
// Why `scheme` cannot run under `era` (for an exit-2 error), or empty.
std::string era_requirement(const Scheme& scheme, mm::KernelEra era);
// The schemes of `schemes` that run under `era`, in order.
std::vector<Scheme> schemes_for_era(const std::vector<Scheme>& schemes, mm::KernelEra era);

}  // namespace sptelab::spte
