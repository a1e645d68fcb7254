// A scheme is PLACEMENT+PROTOCOL: where the host calls the notifiers, and how
// the secondary MMU synchronises its faults with them (docs/design.md). Every pair
// is valid; comparing them is the point.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mmu_notifier/placement.h"

namespace sptelab::spte {

enum class Protocol : uint8_t {
  kNaive,     // GUP, take mmu_lock, install; no check
  kSeq,       // snapshot invalidate_seq before GUP; retry under mmu_lock if it moved
  kSeqCount,  // also retry while an open invalidation covers the page (KVM today)
  kInterval,  // mmu_interval_read_begin / read_retry on a per-memslot interval
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
// All 20 schemes, placement-major.
std::vector<Scheme> all_schemes();
// One line on what this scheme is, for `sptelab list schemes`.
std::string describe(const Scheme& scheme);

}  // namespace sptelab::spte
