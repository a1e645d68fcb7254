#include "explore/crosscheck.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <limits>

#include "base/json.h"
#include "base/table.h"
#include "explore/guide.h"

namespace sptelab::explore {
namespace {

using host::HostOp;
using scenarios::Backend;
using scenarios::RaceConfig;
using scenarios::RaceResult;

// docs/schemes.md's bound, and the deeper search for a coherent cell that a
// real run found racy.
constexpr int kTableBound = 2;
constexpr int kDeeperBound = 3;

CellResult verdict_at(const Cell& cell, int bound) {
  CampaignOptions options;
  options.search.bound = bound;
  return explore_cell(cell, options);
}

// The explorer's verdict over its two scenarios: the racy one with the
// fewest preemptions (the coherence scenario first on a tie), else the
// coherence scenario's clean result.
CellResult explorer_verdict(const spte::Scheme& scheme, HostOp op, int bound, mm::KernelEra era) {
  std::optional<CellResult> best;
  for (ScenarioKind scenario : {ScenarioKind::kCoherence, ScenarioKind::kStaleSpte}) {
    Cell cell{scheme, op, scenario};
    cell.era = era;
    CellResult result = verdict_at(cell, bound);
    if (!best || (result.violated && (!best->violated || result.preemptions < best->preemptions))) {
      best = std::move(result);
    }
  }
  return *best;
}

RaceConfig base_config(const CrosscheckOptions& options, const spte::Scheme& scheme, HostOp op,
                       ScenarioKind scenario) {
  RaceConfig config;
  config.scenario = scenario;
  config.scheme = scheme;
  config.op = op;
  config.backend = options.backend;
  config.vcpus = options.vcpus;
  config.guest_path = options.guest_path;
  config.era = options.era;
  config.trace = false;  // the time to the first violation, without tracing's cost
  // The delays `race` uses for the backend: native KVM guests have only the
  // windows behind a fault's round trip held; software vCPUs keep the
  // default delays that widen the windows for them.
  if (options.backend == Backend::kKvm) config.delays = scenarios::native_delays();
  return config;
}

Attempt attempt(RaceConfig config, uint64_t seed, bool guided) {
  config.seed = seed;
  config.stop_at_first_violation = true;
  RaceResult result = scenarios::run_race(config);
  Attempt attempt{seed, guided, result.violations > 0, result.first_violation_ms,
                  result.operations};
  return attempt;
}

std::string note_of(const RaceResult& result) {
  return result.examples.empty() ? std::string() : result.examples.front();
}

void run_racy(CrosscheckResult& cell, const CellResult& explored,
              const CrosscheckOptions& options) {
  RaceConfig config = base_config(options, cell.scheme, cell.op, cell.race_scenario);
  config.operations = std::numeric_limits<uint64_t>::max();
  config.max_seconds = options.attempt_seconds;
  config.for_duration = true;
  const Guide guide = guide_from(parse_schedule(explored.counterexample), kGuideBoundNs);
  for (uint64_t seed = 1; seed <= options.seeds; ++seed) {
    Attempt run = attempt(config, seed, false);
    if (!run.found && !guide.delays.empty()) {
      RaceConfig guided = config;
      guided.delays = guide.delays;
      guided.guide = guide.description;
      run = attempt(guided, seed, true);
    }
    cell.attempts.push_back(run);
  }
}

void run_coherent(CrosscheckResult& cell, const CrosscheckOptions& options) {
  RaceConfig config = base_config(options, cell.scheme, cell.op, cell.race_scenario);
  config.operations = options.coherent_operations;
  config.max_seconds = 3600;  // a limit only; the operations end the run
  RaceResult result = scenarios::run_race(config);
  cell.operations = result.operations;
  cell.violations = result.violations;
  cell.example = note_of(result);
}

std::string ms_text(double ms) {
  if (ms < 0) return "never";
  if (ms < 1000) return fmt::format("{:.0f}ms", ms);
  return fmt::format("{:.1f}s", ms / 1000);
}

std::string ops_text(uint64_t operations) {
  if (operations >= 1000000) return fmt::format("{}M", operations / 1000000);
  if (operations >= 1000) return fmt::format("{}k", operations / 1000);
  return std::to_string(operations);
}

// At most 9 characters: "12ms", "310ms g", "ok 100k", "MISSED", "RACY 3k".
std::string cell_text(const CrosscheckResult& cell) {
  if (cell.explorer_racy) {
    const double median = cell.median_ms();
    if (median < 0) return "MISSED";
    return ms_text(median) + (cell.guided_seeds() > 0 ? " g" : "");
  }
  if (cell.violations > 0) {
    return cell.deeper_racy ? fmt::format("racy p{}", cell.deeper_preemptions) : "RACY";
  }
  return "ok " + ops_text(cell.operations);
}

std::vector<std::string> row_order(const std::vector<CrosscheckResult>& results) {
  std::vector<std::string> schemes;
  for (const auto& result : results) {
    if (std::find(schemes.begin(), schemes.end(), result.scheme.name()) == schemes.end()) {
      schemes.push_back(result.scheme.name());
    }
  }
  return schemes;
}

std::vector<HostOp> column_order(const std::vector<CrosscheckResult>& results) {
  std::vector<HostOp> ops;
  for (const auto& result : results) {
    if (std::find(ops.begin(), ops.end(), result.op) == ops.end()) ops.push_back(result.op);
  }
  std::sort(ops.begin(), ops.end());
  return ops;
}

std::string header_line(const CrosscheckOptions& options) {
  return fmt::format(
      "crosscheck on {}: racy cells {} seed(s), each run up to {} s (free-running, then "
      "guided if it found nothing); coherent cells one run of {} operations\n",
      scenarios::backend_name(options.backend), options.seeds, options.attempt_seconds,
      options.coherent_operations);
}

std::string table_body(const std::vector<CrosscheckResult>& results) {
  const std::vector<HostOp> ops = column_order(results);
  std::vector<std::vector<std::string>> grid{{"scheme"}};
  for (HostOp op : ops) grid[0].emplace_back(host::host_op_name(op));
  for (const std::string& scheme : row_order(results)) {
    std::vector<std::string>& row = grid.emplace_back(std::vector<std::string>{scheme});
    for (HostOp op : ops) {
      auto found = std::find_if(results.begin(), results.end(), [&](const auto& r) {
        return r.scheme.name() == scheme && r.op == op;
      });
      row.push_back(found == results.end() ? "-" : cell_text(*found));
    }
  }
  return format_grid(grid);
}

constexpr const char* kLegend =
    "\nA time is the median over the seeds of the time to the first violation in a cell\n"
    "the explorer calls racy (g: some seeds needed the guided run); ok N: a cell the\n"
    "explorer calls coherent ran N operations without a violation; racy pK: the real\n"
    "run found a violation in a cell coherent at bound 2, and the explorer finds one\n"
    "too with K preemptions. MISSED (racy, not found) and RACY (coherent, found, not\n"
    "even at bound 3) are disagreements: a bug in the explorer or in the real guest.\n";

std::string attempts_text(const CrosscheckResult& cell) {
  std::string out;
  for (const Attempt& run : cell.attempts) {
    out += fmt::format("{}{}{}", out.empty() ? "" : ", ",
                       run.found ? ms_text(run.first_violation_ms) : "none",
                       run.guided ? " (guided)" : "");
  }
  return out;
}

std::string cell_line(const CrosscheckResult& cell) {
  std::string explorer =
      cell.explorer_racy
          ? fmt::format("explorer: {} with {} preemption(s) ({} scenario)", cell.property,
                        cell.preemptions, scenarios::scenario_name(cell.explorer_scenario))
          : std::string("explorer: coherent at bound 2");
  std::string real;
  if (cell.explorer_racy) {
    real = fmt::format("{}: first violation after {}", scenarios::scenario_name(cell.race_scenario),
                       attempts_text(cell));
  } else {
    real =
        fmt::format("{}: {} operations, {} violation(s)",
                    scenarios::scenario_name(cell.race_scenario), cell.operations, cell.violations);
    if (cell.deeper_searched) {
      real += cell.deeper_racy ? fmt::format(
                                     "; at bound 3 the explorer finds {} with {} "
                                     "preemptions",
                                     cell.deeper_property, cell.deeper_preemptions)
                               : std::string("; none at bound 3 either");
    }
  }
  std::string line =
      fmt::format("- **{}** `{}`: {}; {}{}", cell.scheme.name(), host::host_op_name(cell.op),
                  explorer, real, cell.agrees() ? "" : " **DISAGREES**");
  if (!cell.agrees() && !cell.example.empty()) line += fmt::format(" ({})", cell.example);
  return line + "\n";
}

}  // namespace

double CrosscheckResult::median_ms() const {
  std::vector<double> times;
  for (const Attempt& run : attempts) {
    times.push_back(run.found ? run.first_violation_ms : std::numeric_limits<double>::infinity());
  }
  if (times.empty()) return -1;
  std::sort(times.begin(), times.end());
  const double median = times[(times.size() - 1) / 2];
  return median == std::numeric_limits<double>::infinity() ? -1 : median;
}

uint32_t CrosscheckResult::guided_seeds() const {
  return static_cast<uint32_t>(
      std::count_if(attempts.begin(), attempts.end(), [](const Attempt& a) { return a.guided; }));
}

// Where a real guest shows the explorer's property: lost writes, and any
// violation of a write-protecting op (a writable spte left after mprotect or
// page_mkclean: only a writing vCPU installs one), in the lock-free
// third-thread race, which audits the write-protect window; stale sptes,
// stale reads and freed frames in the stale-spte race, whose auditor checks
// every spte after every operation. (A stale spte can be harmless to the
// lock-free counters: after MADV_DONTNEED of a shared file page the refault
// maps the very frame the stale spte still maps.)
ScenarioKind race_scenario_for(const std::string& property, HostOp op) {
  if (property == "lost-write" || property == "write-after-wrprotect" ||
      property == "lost-at-writeback" || op == HostOp::kMprotect || op == HostOp::kMkclean) {
    return ScenarioKind::kLockfree;
  }
  return ScenarioKind::kStaleSpte;
}

CellResult explorer_verdict(const spte::Scheme& scheme, HostOp op, mm::KernelEra era) {
  return explorer_verdict(scheme, op, kTableBound, era);
}

bool CrosscheckResult::agrees() const {
  if (explorer_racy) return median_ms() >= 0;
  return violations == 0 || deeper_racy;
}

CrosscheckResult crosscheck_cell(const spte::Scheme& scheme, HostOp op,
                                 const CrosscheckOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  CrosscheckResult cell;
  cell.scheme = scheme;
  cell.op = op;
  const CellResult explored = explorer_verdict(scheme, op, kTableBound, options.era);
  cell.explorer_racy = explored.violated;
  cell.property = explored.property;
  cell.preemptions = explored.preemptions;
  cell.explorer_scenario = explored.cell.scenario;
  cell.race_scenario =
      cell.explorer_racy ? race_scenario_for(explored.property, op) : ScenarioKind::kLockfree;
  if (cell.explorer_racy) {
    run_racy(cell, explored, options);
  } else {
    run_coherent(cell, options);
    if (cell.violations > 0) {
      const CellResult deeper = explorer_verdict(scheme, op, kDeeperBound, options.era);
      cell.deeper_searched = true;
      cell.deeper_racy = deeper.violated;
      cell.deeper_property = deeper.property;
      cell.deeper_preemptions = deeper.preemptions;
    }
  }
  cell.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return cell;
}

std::vector<CrosscheckResult> crosscheck(const std::vector<spte::Scheme>& schemes,
                                         const std::vector<HostOp>& ops,
                                         const CrosscheckOptions& options,
                                         const CrosscheckProgress& progress) {
  std::vector<CrosscheckResult> results;
  const size_t total = schemes.size() * ops.size();
  for (const spte::Scheme& scheme : schemes) {
    for (HostOp op : ops) {
      results.push_back(crosscheck_cell(scheme, op, options));
      if (progress) progress(results.back(), results.size(), total);
    }
  }
  return results;
}

std::string format_crosscheck_table(const std::vector<CrosscheckResult>& results,
                                    const CrosscheckOptions& options) {
  std::string out = header_line(options) + "\n" + table_body(results) + kLegend;
  bool first = true;
  for (const auto& cell : results) {
    if (cell.agrees()) continue;
    if (first) out += "\nDisagreements:\n";
    first = false;
    out += cell_line(cell);
  }
  return out;
}

std::string format_crosscheck_markdown(const std::vector<CrosscheckResult>& results,
                                       const CrosscheckOptions& options) {
  std::string out = "<!-- Generated by `sptelab crosscheck --markdown`. -->\n" +
                    header_line(options) + "\n```\n" + table_body(results) + kLegend +
                    "```\n\n## Every cell\n\n";
  for (const auto& cell : results) out += cell_line(cell);
  return out;
}

std::string format_crosscheck_json(const std::vector<CrosscheckResult>& results,
                                   const CrosscheckOptions& options) {
  std::string cells;
  for (const auto& cell : results) {
    std::string attempts;
    for (const Attempt& run : cell.attempts) {
      attempts += fmt::format(
          "{}{{\"seed\": {}, \"guided\": {}, \"found\": {}, \"first_violation_ms\": {}, "
          "\"operations\": {}}}",
          attempts.empty() ? "" : ", ", run.seed, run.guided, run.found,
          run.found ? fmt::format("{:.3f}", run.first_violation_ms) : std::string("null"),
          run.operations);
    }
    const double median = cell.median_ms();
    cells += fmt::format(
        "{}{{\"scheme\": \"{}\", \"op\": \"{}\", \"explorer\": {{\"racy\": {}, \"property\": {}, "
        "\"preemptions\": {}, \"scenario\": \"{}\"}}, \"race_scenario\": \"{}\", \"attempts\": "
        "[{}], \"median_ms\": {}, \"operations\": {}, \"violations\": {}, \"agrees\": {}, "
        "\"seconds\": {:.3f}}}",
        cells.empty() ? "" : ", ", cell.scheme.name(), host::host_op_name(cell.op),
        cell.explorer_racy, json_string(cell.property), cell.preemptions,
        scenarios::scenario_name(cell.explorer_scenario),
        scenarios::scenario_name(cell.race_scenario), attempts,
        median < 0 ? std::string("null") : fmt::format("{:.3f}", median), cell.operations,
        cell.violations, cell.agrees(), cell.seconds);
  }
  return fmt::format(
      "{{\"backend\": \"{}\", \"seeds\": {}, \"attempt_seconds\": {}, \"coherent_operations\": {}, "
      "\"cells\": [{}]}}\n",
      scenarios::backend_name(options.backend), options.seeds, options.attempt_seconds,
      options.coherent_operations, cells);
}

}  // namespace sptelab::explore
