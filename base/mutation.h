// Deliberately broken protocol variants ("mutants"). The explorer's tests run
// each one and must find the race it opens: a mutant no test catches is a
// missing test. Production code checks a mutant with one relaxed load at the
// few places a mutant changes; nothing enables one outside the explorer.
#pragma once

#include <atomic>
#include <optional>
#include <string_view>
#include <vector>

namespace sptelab::mutation {

enum class Mutant : uint8_t {
  kNone,
  kSeqCountIgnoresOpenRange,  // seq-count: the in-progress check never matches the gfn
  kIntervalSkipsSeqCheck,     // interval: read_retry never reports a change
  kEndBeforePteChange,        // start-end: invalidate_range_end right after start, before the PTL
  kEndKeepsSeq,               // invalidate_range_end closes the range without bumping the sequence
  kZapForgetsMirror,          // an spte zap that does not tell the guest window / vCPU TLBs
  kGupFastNoRecheck,          // GUP-fast keeps its reference without re-reading the PTE
  kShootdownNoAck,            // a TLB flush that does not wait for the CPUs to drop entries
  kWalkReadsBeforePtl,        // the PTE walker takes the PTL but rewrites the entry it read before
  kSvaSkipsIotlbFlush,        // sva: arch_invalidate_secondary_tlbs leaves the IOTLB entries
  kCount
};

const char* name(Mutant mutant);
std::optional<Mutant> parse(std::string_view name);
std::string_view description(Mutant mutant);
std::vector<Mutant> all();  // every mutant but kNone

namespace detail {
extern std::atomic<Mutant> current;
}

inline bool active(Mutant mutant) {
  return detail::current.load(std::memory_order_relaxed) == mutant;
}
inline Mutant current() {
  return detail::current.load(std::memory_order_relaxed);
}

// RAII: enables one mutant for a scope (the explorer, per cell).
class Scoped {
 public:
  explicit Scoped(Mutant mutant) : previous_(detail::current.exchange(mutant)) {}
  ~Scoped() { detail::current.store(previous_); }
  Scoped(const Scoped&) = delete;
  Scoped& operator=(const Scoped&) = delete;

 private:
  Mutant previous_;
};

}  // namespace sptelab::mutation
