#include "explore/campaign.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <sstream>
#include <tuple>

#include "base/error.h"
#include "base/json.h"
#include "base/table.h"
#include "explore/json_reader.h"
#include "trace/export.h"
#include "trace/trace.h"

namespace sptelab::explore {
namespace {

RunFn runner(const Cell& cell) {
  return [cell](sched::Chooser& chooser) { return run_cell(cell, chooser); };
}

// Short names of the properties for the 100-column table.
struct PropertyInfo {
  const char* name;
  const char* abbrev;
  const char* meaning;
};
constexpr PropertyInfo kProperties[] = {
    {"stale-spte", "STALE", "an spte disagrees with the host PTE at the end (auditor)"},
    {"use-after-free", "UAF", "an spte or a vCPU access reached a freed frame"},
    {"lost-write", "LOST", "a completed write is missing from the page the host maps"},
    {"orphan-page", "ORPHAN", "the host maps a page its file's page cache dropped"},
    {"write-after-wrprotect", "WRPROT",
     "a vCPU write landed after mprotect(PROT_READ) had returned"},
    {"lost-at-writeback", "WBACK", "a write after page_mkclean that writeback never saw"},
    {"stale-read", "READ", "a read after the host published a version returned an older one"},
    {"deadlock", "DEAD", "no thread could go on"},
    {"livelock", "LIVE", "the run never ended"},
    {"internal-error", "ERROR", "the emulator reported an internal error"},
};

const char* abbrev(const std::string& property) {
  for (const PropertyInfo& info : kProperties) {
    if (property == info.name) return info.abbrev;
  }
  return "RACY";
}

std::string verdict(const CellResult& result) {
  return result.violated ? "racy" : "coherent";
}

// Integer from a schedule file token, with the line for errors.
uint32_t parse_choice(std::string_view token, size_t line) {
  uint32_t value = 0;
  auto [end, error] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (error != std::errc() || end != token.data() + token.size() || value >= 64) {
    throw_bad_input(
        fmt::format("schedule line {}: '{}' is not a thread index (0 to 63)", line, token));
  }
  return value;
}

std::string timeline_of(const std::vector<ReplayStep>& steps, const trace::Snapshot& snapshot,
                        const std::vector<std::string>& names) {
  trace::TraceFile file = trace::make_trace_file(snapshot);
  std::string out;
  size_t event = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    const ReplayStep& step = steps[i];
    const uint64_t next_ts = i + 1 < steps.size() ? steps[i + 1].ts_ns : ~uint64_t{0};
    const std::string& who = step.thread < names.size() ? names[step.thread] : "?";
    std::string what = step.step.label;
    if (step.step.kind != sched::Kind::kPoint && step.step.kind != sched::Kind::kStart) {
      what = fmt::format("{} {}", sched::kind_name(step.step.kind), step.step.label);
    }
    if (step.step.detail) what += fmt::format(" {:#x}", step.step.detail);
    const bool switched = i == 0 || steps[i - 1].thread != step.thread;
    out += fmt::format("{:4} {} {:<9} {}\n", i + 1, switched ? '>' : ' ', who, what);
    for (; event < file.snapshot.events.size() && file.snapshot.events[event].ts_ns < next_ts;
         ++event) {
      const trace::Event& traced = file.snapshot.events[event];
      // Only the roles' events: setup and the final checks are not steps.
      const std::string thread = file.thread_name(traced.thread);
      if (std::find(names.begin(), names.end(), thread) == names.end()) continue;
      out += fmt::format("                   | {}\n", trace::format_event_line(file, traced));
    }
  }
  return out;
}

}  // namespace

std::vector<Cell> cells_of(const std::vector<spte::Scheme>& schemes, const std::vector<HostOp>& ops,
                           const std::vector<ScenarioKind>& scenarios, mutation::Mutant mutant) {
  std::vector<Cell> cells;
  for (const spte::Scheme& scheme : schemes) {
    for (HostOp op : ops) {
      for (ScenarioKind scenario : scenarios) cells.push_back(Cell{scheme, op, scenario, mutant});
    }
  }
  return cells;
}

// Cells are dealt round-robin in the order of a hash of their key, not in
// table order: there every other cell is a (costlier) coherence cell, so two
// shards dealt in table order got all of them on one side.
std::vector<Cell> shard(const std::vector<Cell>& cells, size_t index, size_t count) {
  auto fnv1a = [](const std::string& text) {
    uint64_t hash = 0xcbf29ce484222325ull;
    for (unsigned char c : text) hash = (hash ^ c) * 0x100000001b3ull;
    return hash;
  };
  std::vector<size_t> order(cells.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::vector<uint64_t> keys(cells.size());
  for (size_t i = 0; i < cells.size(); ++i) keys[i] = fnv1a(cells[i].key());
  std::stable_sort(order.begin(), order.end(),
                   [&keys](size_t a, size_t b) { return keys[a] < keys[b]; });
  std::vector<bool> taken(cells.size(), false);
  for (size_t position = index; position < order.size(); position += count) {
    taken[order[position]] = true;
  }
  std::vector<Cell> mine;
  for (size_t i = 0; i < cells.size(); ++i) {
    if (taken[i]) mine.push_back(cells[i]);
  }
  return mine;
}

CellResult explore_cell(const Cell& cell, const CampaignOptions& options) {
  const RunFn run = runner(cell);
  SearchOptions search_options = options.search;
  // A seed race turns on which frame a fault gets back from the free list,
  // and taking or returning a frame is no scheduling point of its own: the
  // step that frees a frame and the step that allocates one name other
  // objects, look independent to the sleep sets, and the order that hands
  // the freed frame to another thread is pruned (gup-fast-revalidate is
  // found only without them). Seed cells are small: searched in full.
  if (cell.race) search_options.reduction = false;
  SearchResult search =
      options.pct ? search_pct(run, *options.pct) : search_bounded(run, search_options);
  CellResult result;
  result.cell = cell;
  result.violated = search.violated;
  result.property = search.outcome.property;
  result.detail = search.outcome.detail;
  result.preemptions = search.preemptions;
  result.schedules = search.executions;
  result.pruned = search.pruned;
  result.complete = search.complete;
  result.seconds = search.seconds;
  if (search.violated) {
    result.counterexample =
        format_schedule(cell, search.schedule,
                        fmt::format("{} with {} preemption(s): {}", search.outcome.property,
                                    search.preemptions, search.outcome.detail));
  }
  return result;
}

std::vector<CellResult> run_campaign(const std::vector<Cell>& cells, const CampaignOptions& options,
                                     const CellProgress& progress) {
  std::vector<CellResult> results;
  for (const Cell& cell : cells) {
    results.push_back(explore_cell(cell, options));
    if (progress) progress(results.size(), cells.size(), results.back());
  }
  return results;
}

// ---- counterexample files ----------------------------------------------------------

std::string format_schedule(const Cell& cell, const Schedule& schedule, const std::string& note) {
  std::string out = "# sptelab explore schedule: sptelab explore --replay FILE\n";
  if (!note.empty()) out += fmt::format("# {}\n", note);
  const std::vector<std::string> names = role_names(cell);
  std::string threads;
  for (size_t i = 0; i < names.size(); ++i) {
    threads += fmt::format("{}{}={}", i ? " " : "", i, names[i]);
  }
  out += fmt::format("# threads: {}\n", threads);
  out += fmt::format("kernel {}\n", mm::kernel_era_name(cell.era));
  if (cell.race) {
    out +=
        fmt::format("race {}\nvariant {}\nwitness {}\n", scenarios::seed_race_name(*cell.race),
                    scenarios::variant_name(cell.variant), scenarios::witness_name(cell.witness));
    out += fmt::format("scheme {}\nmutant {}\nschedule", cell.scheme.name(),
                       mutation::name(cell.mutant));
    for (uint32_t choice : schedule) out += fmt::format(" {}", choice);
    return out + "\n";
  }
  out += fmt::format("scheme {}\nop {}\nscenario {}\nmutant {}\nschedule", cell.scheme.name(),
                     host::host_op_name(cell.op), scenarios::scenario_name(cell.scenario),
                     mutation::name(cell.mutant));
  for (uint32_t choice : schedule) out += fmt::format(" {}", choice);
  return out + "\n";
}

SavedSchedule parse_schedule(const std::string& text) {
  SavedSchedule saved;
  std::map<std::string, size_t> seen;
  std::istringstream lines(text);
  std::string line;
  for (size_t number = 1; std::getline(lines, line); ++number) {
    std::istringstream words(line);
    std::string key;
    if (!(words >> key) || key[0] == '#') continue;
    if (seen.count(key))
      throw_bad_input(fmt::format("schedule line {}: '{}' given twice", number, key));
    seen[key] = number;
    std::string value;
    if (key == "schedule") {
      while (words >> value) saved.schedule.push_back(parse_choice(value, number));
      continue;
    }
    if (!(words >> value))
      throw_bad_input(fmt::format("schedule line {}: '{}' needs a value", number, key));
    if (key == "kernel") {
      auto era = mm::parse_kernel_era(value);
      if (!era)
        throw_bad_input(fmt::format("schedule line {}: unknown kernel era '{}'; choose one of {}",
                                    number, value, mm::kernel_era_list()));
      saved.cell.era = *era;
    } else if (key == "scheme") {
      auto scheme = spte::parse_scheme(value);
      if (!scheme)
        throw_bad_input(fmt::format(
            "schedule line {}: unknown scheme '{}'; see 'sptelab list schemes'", number, value));
      saved.cell.scheme = *scheme;
    } else if (key == "op") {
      auto op = host::parse_host_op(value);
      if (!op)
        throw_bad_input(fmt::format("schedule line {}: unknown op '{}'; see 'sptelab list ops'",
                                    number, value));
      saved.cell.op = *op;
    } else if (key == "scenario") {
      auto scenario = scenarios::parse_scenario(value);
      if (!scenario)
        throw_bad_input(fmt::format(
            "schedule line {}: unknown scenario '{}' (coherence or stale-spte)", number, value));
      saved.cell.scenario = *scenario;
    } else if (key == "race") {
      auto race = scenarios::parse_seed_race(value);
      if (!race)
        throw_bad_input(fmt::format(
            "schedule line {}: unknown race '{}'; see 'sptelab list scenarios'", number, value));
      saved.cell.race = *race;
    } else if (key == "variant") {
      auto variant = scenarios::parse_variant(value);
      if (!variant)
        throw_bad_input(
            fmt::format("schedule line {}: unknown variant '{}' (buggy or fixed)", number, value));
      saved.cell.variant = *variant;
    } else if (key == "witness") {
      auto witness = scenarios::parse_witness(value);
      if (!witness)
        throw_bad_input(
            fmt::format("schedule line {}: unknown witness '{}' (host or guest)", number, value));
      saved.cell.witness = *witness;
    } else if (key == "mutant") {
      auto mutant = mutation::parse(value);
      if (!mutant)
        throw_bad_input(fmt::format(
            "schedule line {}: unknown mutant '{}'; see 'sptelab list mutants'", number, value));
      saved.cell.mutant = *mutant;
    } else {
      throw_bad_input(
          fmt::format("schedule line {}: unknown key '{}' (scheme, op, scenario, race, variant, "
                      "witness, mutant, schedule)",
                      number, key));
    }
  }
  // A seed race names its own roles: op and scenario do not apply.
  const std::vector<const char*> required =
      seen.count("race") ? std::vector<const char*>{"scheme", "schedule"}
                         : std::vector<const char*>{"scheme", "op", "scenario", "schedule"};
  for (const char* key : required) {
    if (!seen.count(key)) throw_bad_input(fmt::format("schedule: the '{}' line is missing", key));
  }
  return saved;
}

Replayed replay_schedule(const SavedSchedule& saved) {
  Replayed replayed;
  std::vector<ReplayStep> steps;
  {
    trace::Session session;
    replayed.outcome = replay(runner(saved.cell), saved.schedule, &steps, &replayed.preemptions);
    replayed.trace = trace::snapshot();
  }
  replayed.timeline = timeline_of(steps, replayed.trace, role_names(saved.cell));
  return replayed;
}

// ---- output -------------------------------------------------------------------------

namespace {

struct Table {
  std::vector<std::string> schemes;  // row order
  std::vector<HostOp> ops;           // column order
  std::map<std::pair<std::string, HostOp>, std::vector<const CellResult*>> cells;
};

Table tabulate(const std::vector<CellResult>& results) {
  Table table;
  for (const CellResult& result : results) {
    const std::string scheme = result.cell.scheme.name();
    if (std::find(table.schemes.begin(), table.schemes.end(), scheme) == table.schemes.end()) {
      table.schemes.push_back(scheme);
    }
    if (std::find(table.ops.begin(), table.ops.end(), result.cell.op) == table.ops.end()) {
      table.ops.push_back(result.cell.op);
    }
    table.cells[{scheme, result.cell.op}].push_back(&result);
  }
  std::sort(table.ops.begin(), table.ops.end());
  return table;
}

// RACY with the property of the first racy scenario, else ok/K (ok?/K when
// a search stopped at its execution limit).
std::string cell_text(const std::vector<const CellResult*>& results, int bound) {
  bool complete = true;
  for (const CellResult* result : results) {
    if (result->violated)
      return fmt::format("{} p{}", abbrev(result->property), result->preemptions);
    complete &= result->complete;
  }
  return fmt::format("{}/{}", complete ? "ok" : "ok?", bound);
}

}  // namespace

std::string format_table(const std::vector<CellResult>& results, int bound) {
  const Table table = tabulate(results);
  std::vector<std::vector<std::string>> grid{{"scheme"}};
  for (HostOp op : table.ops) grid[0].emplace_back(host::host_op_name(op));
  for (const std::string& scheme : table.schemes) {
    std::vector<std::string>& row = grid.emplace_back(std::vector<std::string>{scheme});
    for (HostOp op : table.ops) {
      auto it = table.cells.find({scheme, op});
      row.push_back(it == table.cells.end() ? "-" : cell_text(it->second, bound));
    }
  }
  std::string out = format_grid(grid);
  out += fmt::format(
      "\nok/{0}: no violation in any schedule with at most {0} preemptions (ok?: the search "
      "hit\nits execution limit). Racy cells name the property the fewest-preemption "
      "counterexample\nviolates and its preemptions (p1: one preemption):\n",
      bound);
  std::vector<std::string> seen;
  for (const PropertyInfo& info : kProperties) {
    bool used = false;
    for (const CellResult& result : results)
      used |= result.violated && result.property == info.name;
    if (used) out += fmt::format("  {:<7} {}: {}\n", info.abbrev, info.name, info.meaning);
  }
  return out;
}

mm::KernelEra campaign_era(const std::vector<CellResult>& results) {
  return results.empty() ? mm::kDefaultKernelEra : results.front().cell.era;
}

std::string format_json(const std::vector<CellResult>& results, int bound) {
  std::string out = fmt::format("{{\"bound\": {}, \"kernel\": {}, \"results\": [", bound,
                                json_string(mm::kernel_era_name(campaign_era(results))));
  for (size_t i = 0; i < results.size(); ++i) {
    const CellResult& r = results[i];
    // A seed race's cell says which race, variant and witness it ran.
    const std::string race = r.cell.race
                                 ? fmt::format("\"race\": {}, \"variant\": {}, \"witness\": {}, ",
                                               json_string(scenarios::seed_race_name(*r.cell.race)),
                                               json_string(scenarios::variant_name(r.cell.variant)),
                                               json_string(scenarios::witness_name(r.cell.witness)))
                                 : std::string();
    out += fmt::format(
        "{}\n  {{{}\"scheme\": {}, \"op\": {}, \"scenario\": {}, \"mutant\": {}, \"verdict\": {}, "
        "\"property\": {}, \"detail\": {}, \"preemptions\": {}, \"schedules\": {}, "
        "\"pruned\": {}, \"complete\": {}, \"seconds\": {:.3f}, \"counterexample\": {}}}",
        i ? "," : "", race, json_string(r.cell.scheme.name()),
        json_string(host::host_op_name(r.cell.op)),
        json_string(scenarios::scenario_name(r.cell.scenario)),
        json_string(mutation::name(r.cell.mutant)), json_string(verdict(r)),
        r.violated ? json_string(r.property) : "null", r.violated ? json_string(r.detail) : "null",
        r.preemptions, r.schedules, r.pruned, r.complete ? "true" : "false", r.seconds,
        r.violated ? json_string(r.counterexample) : "null");
  }
  return out + "\n]}\n";
}

namespace {

// Table order: schemes as all_schemes() lists them, ops and scenarios as
// declared.
void sort_in_table_order(std::vector<CellResult>& results) {
  const std::vector<spte::Scheme> schemes = spte::all_schemes();
  auto order = [&schemes](const CellResult& r) {
    const auto scheme = std::find(schemes.begin(), schemes.end(), r.cell.scheme) - schemes.begin();
    return std::tuple(scheme, r.cell.op, r.cell.scenario, r.cell.mutant);
  };
  std::stable_sort(
      results.begin(), results.end(),
      [&order](const CellResult& a, const CellResult& b) { return order(a) < order(b); });
}

}  // namespace

std::string format_markdown(const std::vector<CellResult>& results, int bound) {
  std::string out = fmt::format(
      "<!-- Generated by `sptelab explore --markdown` (bound {}, kernel {}); "
      "tests/explore/schemes_doc_test.cpp fails when it and the explorer disagree. -->\n",
      bound, mm::kernel_era_name(campaign_era(results)));
  out += "```\n" + format_table(results, bound) + "```\n\n## Why each racy cell is racy\n\n";
  std::vector<CellResult> ordered = results;  // whatever order the cells were given in
  sort_in_table_order(ordered);
  for (const CellResult& r : ordered) {
    if (!r.violated) continue;
    out += fmt::format("- **{}** `{}` ({} scenario, {} preemption(s)): {}\n", r.cell.scheme.name(),
                       host::host_op_name(r.cell.op), scenarios::scenario_name(r.cell.scenario),
                       r.preemptions, r.detail);
  }
  return out;
}

std::pair<int, std::vector<CellResult>> parse_json_results(const std::vector<std::string>& docs) {
  std::optional<int> bound;
  std::optional<mm::KernelEra> era;
  std::vector<CellResult> results;
  for (const std::string& doc : docs) {
    const json::Value root = json::parse(doc);
    const int doc_bound = static_cast<int>(root.at("bound").as_number("bound"));
    if (bound && *bound != doc_bound) {
      throw_bad_input(
          fmt::format("--merge: shards ran with different bounds ({} and {})", *bound, doc_bound));
    }
    bound = doc_bound;
    const mm::KernelEra doc_era = mm::kernel_era_from_string(root.at("kernel").as_string("kernel"));
    if (era && *era != doc_era) {
      throw_bad_input(fmt::format("--merge: shards ran under different kernel eras ({} and {})",
                                  mm::kernel_era_name(*era), mm::kernel_era_name(doc_era)));
    }
    era = doc_era;
    for (const json::Value& item : root.at("results").as_array("results")) {
      CellResult r;
      auto scheme = spte::parse_scheme(item.at("scheme").as_string("scheme"));
      auto op = host::parse_host_op(item.at("op").as_string("op"));
      auto scenario = scenarios::parse_scenario(item.at("scenario").as_string("scenario"));
      auto mutant = mutation::parse(item.at("mutant").as_string("mutant"));
      if (!scheme || !op || !scenario || !mutant)
        throw_bad_input("--merge: a result names an unknown scheme, op, scenario or mutant");
      r.cell = Cell{*scheme, *op, *scenario, *mutant};
      r.cell.era = doc_era;
      r.violated = item.at("verdict").as_string("verdict") == "racy";
      if (r.violated) {
        r.property = item.at("property").as_string("property");
        r.detail = item.at("detail").as_string("detail");
        r.counterexample = item.at("counterexample").as_string("counterexample");
      }
      r.preemptions = static_cast<int>(item.at("preemptions").as_number("preemptions"));
      r.schedules = static_cast<uint64_t>(item.at("schedules").as_number("schedules"));
      r.pruned = static_cast<uint64_t>(item.at("pruned").as_number("pruned"));
      r.complete = item.at("complete").as_bool("complete");
      r.seconds = item.at("seconds").as_number("seconds");
      results.push_back(std::move(r));
    }
  }
  if (!bound) throw_bad_input("--merge: no shard output given");
  // The order of the unsharded default campaign, so that a merged
  // --markdown is the unsharded one, byte for byte.
  sort_in_table_order(results);
  return {*bound, std::move(results)};
}

}  // namespace sptelab::explore

namespace sptelab::explore {

std::string format_seed_results(const std::vector<CellResult>& results, int bound) {
  std::string out;
  for (const CellResult& result : results) {
    out += fmt::format("{:<52} {}\n", result.cell.key(),
                       result.violated
                           ? fmt::format("RACY {} p{}", result.property, result.preemptions)
                           : fmt::format("{}/{} ({} schedules)", result.complete ? "ok" : "ok?",
                                         bound, result.schedules));
  }
  return out;
}

std::vector<Cell> seed_scheme_cells(scenarios::SeedRace race,
                                    const std::vector<spte::Scheme>& schemes) {
  std::vector<Cell> cells;
  for (const spte::Scheme& scheme : schemes) {
    for (scenarios::Variant variant : {scenarios::Variant::kFixed, scenarios::Variant::kBuggy}) {
      Cell cell{scheme};
      cell.race = race;
      cell.variant = variant;
      cell.witness = scenarios::Witness::kGuest;
      cells.push_back(cell);
    }
  }
  return cells;
}

std::string format_seed_scheme_table(const std::vector<CellResult>& results, int bound) {
  std::vector<std::string> schemes;
  std::map<std::pair<std::string, scenarios::Variant>, const CellResult*> by_cell;
  for (const CellResult& result : results) {
    const std::string scheme = result.cell.scheme.name();
    if (std::find(schemes.begin(), schemes.end(), scheme) == schemes.end()) {
      schemes.push_back(scheme);
    }
    by_cell[{scheme, result.cell.variant}] = &result;
  }
  auto text = [&](const CellResult* result) {
    if (!result) return std::string("-");
    if (result->violated) return fmt::format("{} p{}", result->property, result->preemptions);
    return fmt::format("{}/{}", result->complete ? "ok" : "ok?", bound);
  };
  std::string out =
      "| scheme | fixed | buggy | the host bug reaches the secondary MMU |\n|---|---|---|---|\n";
  for (const std::string& scheme : schemes) {
    const CellResult* fixed = by_cell[{scheme, scenarios::Variant::kFixed}];
    const CellResult* buggy = by_cell[{scheme, scenarios::Variant::kBuggy}];
    std::string reaches = "-";
    if (fixed && buggy) {
      reaches = !buggy->violated  ? "no"
                : fixed->violated ? "racy either way (the scheme's own race)"
                                  : "**yes**";
    }
    out += fmt::format("| {} | {} | {} | {} |\n", scheme, text(fixed), text(buggy), reaches);
  }
  return out;
}

}  // namespace sptelab::explore
