// The three interleavings that decide every scheme, driven deterministically
// by parking threads at injection points (`sptelab explore`, and the spte
// tests that assert the verdict table in docs/schemes.md):
//
//  gup-before-change  A secondary fault has looked the old page up (GUP) when
//                     the host operation starts, and installs its spte only
//                     after the operation has completed.
//  fault-in-window    The host operation has passed its "before" notifier
//                     point but not yet changed the PTE when a secondary fault
//                     runs from start to end (Andrea Arcangeli's first point
//                     against invalidating before populate_range).
//  third-thread       A vCPU holds a writable spte; the host operation has
//                     set the new PTE and released the old page but not yet
//                     reached its "after" point when a host thread writes
//                     through the new PTE and the vCPU writes through its spte
//                     (the third-thread argument of the 2008 thread).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/host_ops.h"
#include "spte/scheme.h"

namespace sptelab::scenarios {

enum class Interleaving : uint8_t { kGupBeforeChange, kFaultInWindow, kThirdThread };
const char* interleaving_name(Interleaving interleaving);
std::optional<Interleaving> parse_interleaving(std::string_view name);
const std::vector<Interleaving>& all_interleavings();

struct InterleavingOutcome {
  bool op_applied = false;  // the host operation changed the mapping
  bool stale_spte = false;  // the auditor found an spte disagreeing with the host PTE at the end
  bool lost_write = false;  // a write through one mapping was not seen through the other
  bool use_after_free = false;  // an spte or access reached a freed frame
  uint64_t fault_retries = 0;
  std::vector<std::string> details;  // violation descriptions

  bool coherent() const { return !stale_spte && !lost_write && !use_after_free; }
};

// Shadow-MMU schemes only: an sva scheme throws Error(kBadInput).
InterleavingOutcome run_interleaving(const spte::Scheme& scheme, Interleaving interleaving,
                                     host::HostOp op);

}  // namespace sptelab::scenarios
