#include "spte/scheme.h"

#include <array>

namespace sptelab::spte {
namespace {

constexpr std::array<std::pair<Protocol, const char*>, 4> kProtocols = {{
    {Protocol::kNaive, "naive"},
    {Protocol::kSeq, "seq"},
    {Protocol::kSeqCount, "seq-count"},
    {Protocol::kInterval, "interval"},
}};

}  // namespace

const char* protocol_name(Protocol protocol) {
  for (const auto& [value, name] : kProtocols) {
    if (value == protocol) return name;
  }
  return "unknown";
}

std::optional<Protocol> parse_protocol(std::string_view name) {
  for (const auto& [value, text] : kProtocols) {
    if (name == text) return value;
  }
  return std::nullopt;
}

const std::vector<Protocol>& all_protocols() {
  static const std::vector<Protocol> protocols = {Protocol::kNaive, Protocol::kSeq,
                                                  Protocol::kSeqCount, Protocol::kInterval};
  return protocols;
}

std::string Scheme::name() const {
  return std::string(mmu_notifier::placement_name(placement)) + "+" + protocol_name(protocol);
}

std::optional<Scheme> parse_scheme(std::string_view name) {
  size_t plus = name.find('+');
  if (plus == std::string_view::npos) return std::nullopt;
  auto placement = mmu_notifier::parse_placement(name.substr(0, plus));
  auto protocol = parse_protocol(name.substr(plus + 1));
  if (!placement || !protocol) return std::nullopt;
  return Scheme{*placement, *protocol};
}

std::vector<Scheme> all_schemes() {
  std::vector<Scheme> schemes;
  for (auto placement : mmu_notifier::kAllPlacements) {
    for (auto protocol : all_protocols()) schemes.push_back({placement, protocol});
  }
  return schemes;
}

std::string describe(const Scheme& scheme) {
  static constexpr std::array<const char*, 5> kWhere = {
      "no secondary invalidation at all",
      "invalidate_page inside the PTL, before the new PTE is set (Arcangeli, Jan 2008)",
      "invalidate_range before the PTEs change, no bracket (Lameter v1, Jan 2008)",
      "invalidate_range after the PTL is dropped and the page released (Lameter v1)",
      "invalidate_range_start/end around the change (Linux since 2.6.27)",
  };
  static constexpr std::array<const char*, 4> kHow = {
      "faults install whatever GUP returned",
      "faults retry if invalidate_seq moved since before GUP",
      "faults also retry while an open invalidation covers the page (KVM today)",
      "faults use mmu_interval_read_begin/read_retry on the memslot's interval",
  };
  return std::string(kWhere[static_cast<size_t>(scheme.placement)]) + "; " +
         kHow[static_cast<size_t>(scheme.protocol)];
}

}  // namespace sptelab::spte
