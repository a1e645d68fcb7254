#include "spte/scheme.h"

#include <array>

#include <fmt/core.h>

namespace sptelab::spte {
namespace {

constexpr std::array<std::pair<Protocol, const char*>, 5> kProtocols = {{
    {Protocol::kNaive, "naive"},
    {Protocol::kSeq, "seq"},
    {Protocol::kSeqCount, "seq-count"},
    {Protocol::kInterval, "interval"},
    {Protocol::kSva, "sva"},
}};

// The era in which the host first calls arch_invalidate_secondary_tlbs.
constexpr mm::KernelEra kFirstSvaEra = mm::KernelEra::k6_6;
static_assert(mm::era_has_arch_invalidate_secondary_tlbs(kFirstSvaEra));

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
  static const std::vector<Protocol> protocols = {
      Protocol::kNaive, Protocol::kSeq, Protocol::kSeqCount, Protocol::kInterval, Protocol::kSva};
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
  static constexpr std::array<const char*, 5> kHow = {
      "faults install whatever GUP returned",
      "faults retry if invalidate_seq moved since before GUP",
      "faults also retry while an open invalidation covers the page (KVM today)",
      "faults use mmu_interval_read_begin/read_retry on the memslot's interval",
      "an IOMMU-SVA device walks the host page table into its IOTLB, flushed only by "
      "arch_invalidate_secondary_tlbs (6.6+)",
  };
  return std::string(kWhere[static_cast<size_t>(scheme.placement)]) + "; " +
         kHow[static_cast<size_t>(scheme.protocol)];
}

bool scheme_runs_in_era(const Scheme& scheme, mm::KernelEra era) {
  return scheme.protocol != Protocol::kSva || mm::era_has_arch_invalidate_secondary_tlbs(era);
}

std::string era_requirement(const Scheme& scheme, mm::KernelEra era) {
  if (scheme_runs_in_era(scheme, era)) return {};
  return fmt::format(
      "{} needs a host that calls arch_invalidate_secondary_tlbs from its TLB flush, which "
      "kernel {} lacks: choose --era {} or later (SVA drivers of 3.19-6.5 used "
      "invalidate_range, which sptelab does not model; 2.6.27 had no SVA)",
      scheme.name(), mm::kernel_era_name(era), mm::kernel_era_name(kFirstSvaEra));
}

std::vector<Scheme> schemes_for_era(const std::vector<Scheme>& schemes, mm::KernelEra era) {
  std::vector<Scheme> kept;
  for (const Scheme& scheme : schemes) {
    if (scheme_runs_in_era(scheme, era)) kept.push_back(scheme);
  }
  return kept;
}

}  // namespace sptelab::spte
