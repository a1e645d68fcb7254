// `sptelab explore`: drives every decisive interleaving for each scheme and
// summarises what each scheme lets happen. This is the table in
// docs/schemes.md, produced from a run rather than written by hand.
#pragma once

#include <string>
#include <vector>

#include "scenarios/interleavings.h"

namespace sptelab::scenarios {

struct ExploreCell {
  Interleaving interleaving;
  HostOp op;
  InterleavingOutcome outcome;
};

struct ExploreRow {
  spte::Scheme scheme;
  std::vector<ExploreCell> cells;
  bool stale_spte = false;
  bool lost_write = false;
  bool use_after_free = false;
  bool coherent() const { return !stale_spte && !lost_write && !use_after_free; }
};

// The (interleaving, op) pairs explored per scheme.
std::vector<std::pair<Interleaving, HostOp>> explored_cases();

ExploreRow explore_scheme(const spte::Scheme& scheme);
// Plain-text table, one row per scheme.
std::string format_explore_table(const std::vector<ExploreRow>& rows);
std::string explore_json(const std::vector<ExploreRow>& rows);

}  // namespace sptelab::scenarios
