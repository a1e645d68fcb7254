// Shorthands the explorer's tests share: a cell by name, and one searched
// at the default bound (with or without sleep sets).
#pragma once

#include "explore/campaign.h"

namespace sptelab::explore::testing {

inline Cell cell(const char* scheme, host::HostOp op,
                 ScenarioKind scenario = ScenarioKind::kCoherence) {
  return Cell{*spte::parse_scheme(scheme), op, scenario};
}

// The same cell on a host of another kernel era (the 2008 thread's remap is
// 2.6.27's populate over a present PTE).
inline Cell cell_in(mm::KernelEra era, const char* scheme, host::HostOp op,
                    ScenarioKind scenario = ScenarioKind::kCoherence) {
  Cell c = cell(scheme, op, scenario);
  c.era = era;
  return c;
}

inline CellResult explore(const Cell& c, bool reduction = true) {
  CampaignOptions options;
  options.search.reduction = reduction;
  return explore_cell(c, options);
}

}  // namespace sptelab::explore::testing
