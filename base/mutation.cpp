#include "base/mutation.h"

#include <array>

namespace sptelab::mutation {
namespace {

struct Info {
  Mutant mutant;
  const char* name;
  const char* description;
};

constexpr std::array<Info, static_cast<size_t>(Mutant::kCount)> kInfo = {{
    {Mutant::kNone, "none", "the protocols as designed"},
    {Mutant::kSeqCountIgnoresOpenRange, "seq-count-ignores-open-range",
     "seq-count's in-progress check never finds the gfn inside the open range"},
    {Mutant::kIntervalSkipsSeqCheck, "interval-skips-seq-check",
     "mmu_interval_read_retry always answers 'unchanged'"},
    {Mutant::kEndBeforePteChange, "end-before-pte-change",
     "start-end calls invalidate_range_end right after the start, before the PTE changes"},
    {Mutant::kEndKeepsSeq, "end-keeps-seq",
     "invalidate_range_end drops the in-progress count without bumping the sequence"},
    {Mutant::kZapForgetsMirror, "zap-forgets-mirror",
     "an spte zap clears the spte but leaves the guest window / vCPU TLB entry"},
    {Mutant::kGupFastNoRecheck, "gup-fast-no-recheck",
     "GUP-fast keeps the page without re-reading the PTE after taking its reference"},
    {Mutant::kShootdownNoAck, "shootdown-no-ack",
     "a TLB flush returns before the other CPUs dropped their entries (one more access "
     "goes through the old one)"},
    {Mutant::kWalkReadsBeforePtl, "walk-reads-before-ptl",
     "the write-protect and clean walker holds the PTL but rewrites each PTE from the copy it "
     "read before taking it"},
    {Mutant::kSvaSkipsIotlbFlush, "sva-skips-iotlb-flush",
     "sva's arch_invalidate_secondary_tlbs returns without flushing the IOTLB"},
}};

}  // namespace

namespace detail {
std::atomic<Mutant> current{Mutant::kNone};
}

const char* name(Mutant mutant) {
  return kInfo[static_cast<size_t>(mutant)].name;
}

std::string_view description(Mutant mutant) {
  return kInfo[static_cast<size_t>(mutant)].description;
}

std::optional<Mutant> parse(std::string_view wanted) {
  for (const Info& info : kInfo) {
    if (wanted == info.name) return info.mutant;
  }
  return std::nullopt;
}

std::vector<Mutant> all() {
  std::vector<Mutant> mutants;
  for (const Info& info : kInfo) {
    if (info.mutant != Mutant::kNone) mutants.push_back(info.mutant);
  }
  return mutants;
}

}  // namespace sptelab::mutation
