// A campaign: the selected cells, each searched, and what `sptelab explore`
// prints of them: the table, the JSON document, the Markdown of
// docs/schemes.md, counterexample files (save, parse, replay as a timeline),
// shards and their merge.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "explore/scenario.h"
#include "explore/search.h"
#include "trace/trace.h"

namespace sptelab::explore {

struct CellResult {
  Cell cell;
  bool violated = false;
  std::string property;
  std::string detail;
  int preemptions = 0;
  uint64_t schedules = 0;
  uint64_t pruned = 0;
  bool complete = true;
  double seconds = 0;
  std::string counterexample;  // the saved schedule text; empty when coherent
};

struct CampaignOptions {
  SearchOptions search;
  std::optional<PctOptions> pct;  // random mode instead of the bounded search
};

// Every (scheme, op, scenario) in the given lists, in table order.
std::vector<Cell> cells_of(const std::vector<spte::Scheme>& schemes, const std::vector<HostOp>& ops,
                           const std::vector<ScenarioKind>& scenarios,
                           mutation::Mutant mutant = mutation::Mutant::kNone);
// Shard `index` (0-based) of `count`: every count-th cell in the order of a
// hash of the cells' keys, so shards are disjoint, cover everything, and
// each gets a mix of cheap and costly cells (in table order, costly and
// cheap cells alternate).
std::vector<Cell> shard(const std::vector<Cell>& cells, size_t index, size_t count);

using CellProgress = std::function<void(size_t done, size_t total, const CellResult& last)>;
CellResult explore_cell(const Cell& cell, const CampaignOptions& options);
std::vector<CellResult> run_campaign(const std::vector<Cell>& cells, const CampaignOptions& options,
                                     const CellProgress& progress = {});

// ---- counterexample files ----------------------------------------------------------

struct SavedSchedule {
  Cell cell;
  Schedule schedule;
};
// A small text format a person can read and edit: "key value" lines
// (scheme, op, scenario, mutant, schedule) and '#' comments; the timeline is
// written as comments.
std::string format_schedule(const Cell& cell, const Schedule& schedule, const std::string& note);
// Error(kBadInput) naming the line for anything malformed or unknown.
SavedSchedule parse_schedule(const std::string& text);

// Re-runs a saved schedule with tracing on; the timeline lists every step
// (thread, scheduling point) and the events it caused.
struct Replayed {
  Outcome outcome;
  int preemptions = 0;
  std::string timeline;
  trace::Snapshot trace;  // for --trace
};
Replayed replay_schedule(const SavedSchedule& saved);

// ---- output -------------------------------------------------------------------------

// One row per scheme, one column per op; a cell is RACY with the property
// (over the scenarios selected) or ok/K. Fits 100 columns; legend below.
std::string format_table(const std::vector<CellResult>& results, int bound);
// The kernel era a campaign's results ran under (all cells share the CLI's
// --era); the default for no results. JSON and Markdown name it.
mm::KernelEra campaign_era(const std::vector<CellResult>& results);
std::string format_json(const std::vector<CellResult>& results, int bound);
// docs/schemes.md: the table, then one paragraph per racy cell.
std::string format_markdown(const std::vector<CellResult>& results, int bound);
// Seed races: one line per cell (key, verdict, property, preemptions).
std::string format_seed_results(const std::vector<CellResult>& results, int bound);
// A seed race's cells over schemes: every scheme given, both variants, the
// vCPU as the witness (seed_scheme_cells); and their Markdown table, one row
// per scheme: the verdict of each variant and whether the host bug reaches
// the secondary MMU (racy buggy, coherent fixed).
std::vector<Cell> seed_scheme_cells(scenarios::SeedRace race,
                                    const std::vector<spte::Scheme>& schemes);
std::string format_seed_scheme_table(const std::vector<CellResult>& results, int bound);
// Reads documents printed by format_json (shards) back; Error(kBadInput) if
// one is malformed. Returns the bound (they must agree) and the results, in
// table order whatever the order of the documents.
std::pair<int, std::vector<CellResult>> parse_json_results(const std::vector<std::string>& docs);

}  // namespace sptelab::explore
