// Shorthands the explorer's tests share: a cell by name, and one searched
// at the default bound (with or without sleep sets).
#pragma once

#include "explore/campaign.h"

namespace sptelab::explore::testing {

inline Cell cell(const char* scheme, scenarios::HostOp op,
                 ScenarioKind scenario = ScenarioKind::kCoherence) {
  return Cell{*spte::parse_scheme(scheme), op, scenario};
}

inline CellResult explore(const Cell& c, bool reduction = true) {
  CampaignOptions options;
  options.search.reduction = reduction;
  return explore_cell(c, options);
}

}  // namespace sptelab::explore::testing
