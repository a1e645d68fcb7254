// sptelab explore: the systematic search over the real emulator's schedules.
#include <fmt/core.h>
#include <fnmatch.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "explore/campaign.h"
#include "tools/command.h"
#include "tools/options.h"
#include "tools/selection.h"
#include "trace/file.h"

namespace sptelab::tools {
namespace {

constexpr const char* kExploreHelp =
    R"(usage: sptelab explore [--scheme LIST] [--op LIST] [--scenario LIST] [--mutant NAME]
                       [--bound K] [--pct N [--pct-depth D] [--seed S]] [--no-reduction]
                       [--save FILE] [--json | --markdown] [--shard I/N] [--era ERA]
       sptelab explore --race NAME [--variant buggy|fixed|both] [--witness host|guest]
                       [--scheme LIST] [--bound K] [--save FILE] [--json]
       sptelab explore --race NAME --scheme-table
       sptelab explore --replay FILE [--trace OUT]
       sptelab explore --merge FILE... [--json | --markdown]

Runs the emulator's real code (host mm operations, the notifier chain, the
secondary MMU's fault protocols, software vCPU and host-CPU accesses, GUP)
as threads of which exactly one runs at a time, and searches the orders in
which they can take their steps. Scheduling points: every injection point,
every lock acquire, every PTE store and lockless PTE load, every failed wait.
Nothing names an interleaving: the search finds them.

Each cell (scheme x op x scenario) is searched exhaustively up to K
preemptions (default 2), fewest first, with sleep-set partial-order
reduction; the first violation found is the cell's counterexample, the one
with the fewest preemptions. --pct N runs N random PCT schedules instead.

  --scheme LIST    comma list of schemes or globs ('ptl-page+*', '*+seq-count'), or all;
                   sva schemes need --era 6.6 or later (skipped in all and globs
                   before, refused by name)
  --op LIST        comma list of ops (migrate remap cow dontneed mprotect mkclean ksm
                   punch-hole) or all
  --scenario LIST  coherence, stale-spte, or all (default)
  --mutant NAME    run with a deliberately broken protocol ('sptelab list mutants')
  --race NAME      a seed race ('sptelab list scenarios': delayed-rmap,
                   dontneed-tlb, gup-fast-revalidate, pagewalk-ptl): its roles
                   and property instead of op x scenario, under the reference
                   scheme start-end+seq-count unless --scheme says otherwise
  --variant V      with --race: buggy, fixed, or both (default both)
  --witness W      with --race: who holds the stale translation: host (a host
                   CPU's TLB, default) or guest (the vCPU's spte)
  --scheme-table   with --race: every scheme, both variants, the vCPU as the
                   witness; prints the Markdown table of docs/seeds.md (does
                   the host bug reach the secondary MMU under each scheme)
  --era ERA        the emulated host's kernel era: 2.6.27, 6.1, 6.2, 6.6 or
                   6.18 (default 6.18): change_pte until 6.9, the TLB flush of
                   mprotect, reclaim and migration, VMA-split brackets,
                   remap_file_pages (mm/kernel_era.h); JSON and Markdown name it
  --bound K        preemption bound, 0 to 6 (default 2)
  --no-reduction   no sleep sets (to measure what the reduction saves)
  --save FILE      write the counterexample of the racy cell to FILE (several racy
                   cells: FILE.SCHEME.OP.SCENARIO each); the files are listed on stderr
  --replay FILE    re-run a saved schedule and print its timeline: one line per
                   step (thread, scheduling point), under it the events it caused
  --trace OUT      with --replay: write the replay's trace (sptelab trace OUT)
  --shard I/N      run only the I-th (1-based) of N disjoint slices of the cells;
                   print --json and merge the outputs with --merge
  --json           {"bound": K, "kernel": ERA, "results": [{"scheme", "op", "scenario", "mutant",
                   "verdict", "property", "detail", "preemptions", "schedules",
                   "pruned", "complete", "seconds", "counterexample"}]}
  --markdown       the table and one line per racy cell (docs/schemes.md)

Progress (one line per cell) goes to stderr. The table and counterexamples are
the same byte for byte on every run; only the seconds in --json differ.

exit status: 0 every cell coherent, 1 some cell racy (or a replay violated its
property), 2 bad usage or input.
)";

int parse_int(const Options& options, const std::string& name, const std::string& text, int min,
              int max) {
  int value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || value < min || value > max) {
    options.fail(
        fmt::format("--{} takes a whole number from {} to {}, not '{}'", name, min, max, text));
  }
  return value;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_bad_input(fmt::format("cannot read '{}'", path));
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) throw_bad_input(fmt::format("cannot read '{}'", path));
  return text.str();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) throw_bad_input(fmt::format("cannot write '{}'", path));
}

void print(const std::string& text) {
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0) {
    throw_bad_input("cannot write the output to stdout");
  }
}

int replay_main(const Options& options) {
  const std::string path = *options.value("replay");
  explore::SavedSchedule saved = explore::parse_schedule(read_file(path));
  explore::Replayed replayed = explore::replay_schedule(saved);
  std::string out = fmt::format("cell {}: {} with {} preemption(s)\n", saved.cell.key(),
                                replayed.outcome.violated ? replayed.outcome.property : "coherent",
                                replayed.preemptions);
  if (replayed.outcome.violated) out += fmt::format("  {}\n", replayed.outcome.detail);
  out += "\nstep   thread    scheduling point (| the events the step caused)\n" + replayed.timeline;
  print(out);
  if (auto trace_path = options.value("trace")) {
    trace::write_trace_file(*trace_path, replayed.trace,
                            {{"command", "explore --replay " + path}, {"cell", saved.cell.key()}});
    fmt::print(stderr, "explore: wrote the replay's trace to {}\n", *trace_path);
  }
  return replayed.outcome.violated ? 1 : 0;
}

void save_counterexamples(const std::string& path,
                          const std::vector<explore::CellResult>& results) {
  std::vector<const explore::CellResult*> racy;
  for (const auto& result : results) {
    if (result.violated) racy.push_back(&result);
  }
  for (const explore::CellResult* result : racy) {
    std::string file = path;
    if (racy.size() > 1) {
      file += result->cell.race ? fmt::format(".{}.{}.{}", result->cell.scheme.name(),
                                              scenarios::variant_name(result->cell.variant),
                                              scenarios::witness_name(result->cell.witness))
                                : fmt::format(".{}.{}.{}", result->cell.scheme.name(),
                                              host::host_op_name(result->cell.op),
                                              scenarios::scenario_name(result->cell.scenario));
    }
    write_file(file, result->counterexample);
    fmt::print(stderr, "explore: saved the counterexample of {} to {}\n", result->cell.key(), file);
  }
  if (racy.empty()) fmt::print(stderr, "explore: no racy cell, nothing saved to {}\n", path);
}

// --race: the seed race's cells (scheme x variant, one witness).
std::vector<explore::Cell> race_cells(const Options& options, scenarios::SeedRace race) {
  if (options.value("op") || options.value("scenario") || options.value("shard")) {
    options.fail("--race runs the seed race's own roles: drop --op, --scenario and --shard");
  }
  if (options.flag("scheme-table")) {
    if (options.value("variant") || options.value("witness") || options.value("scheme")) {
      options.fail("--scheme-table runs every scheme, both variants, the guest as witness");
    }
    return explore::seed_scheme_cells(
        race, spte::schemes_for_era(spte::all_schemes(), selected_era(options)));
  }
  std::vector<spte::Scheme> schemes = {scenarios::default_seed_scheme()};
  if (options.value("scheme")) schemes = selected_schemes(options);
  std::vector<scenarios::Variant> variants = {scenarios::Variant::kBuggy,
                                              scenarios::Variant::kFixed};
  if (auto text = options.value("variant"); text && *text != "both") {
    auto variant = scenarios::parse_variant(*text);
    if (!variant) options.fail(fmt::format("--variant '{}': buggy, fixed or both", *text));
    variants = {*variant};
  }
  scenarios::Witness witness = scenarios::Witness::kHost;
  if (auto text = options.value("witness")) {
    auto parsed = scenarios::parse_witness(*text);
    if (!parsed) options.fail(fmt::format("--witness '{}': host or guest", *text));
    witness = *parsed;
  }
  mutation::Mutant mutant = mutation::Mutant::kNone;
  if (auto name = options.value("mutant")) {
    auto parsed = mutation::parse(*name);
    if (!parsed)
      options.fail(fmt::format("unknown mutant '{}'; see 'sptelab list mutants'", *name));
    mutant = *parsed;
  }
  std::vector<explore::Cell> cells;
  for (const spte::Scheme& scheme : schemes) {
    for (scenarios::Variant variant : variants) {
      explore::Cell cell{scheme};
      cell.race = race;
      cell.variant = variant;
      cell.witness = witness;
      cell.mutant = mutant;
      cells.push_back(cell);
    }
  }
  return cells;
}

int race_finish(const Options& options, const std::vector<explore::CellResult>& results,
                int bound) {
  if (options.flag("json")) {
    print(explore::format_json(results, bound));
  } else if (options.flag("scheme-table")) {
    print(explore::format_seed_scheme_table(results, bound));
  } else {
    std::string out = explore::format_seed_results(results, bound);
    for (const explore::CellResult& result : results) {
      if (!result.violated) continue;
      explore::Replayed replayed =
          explore::replay_schedule(explore::parse_schedule(result.counterexample));
      out += fmt::format(
          "\n{}: {} with {} preemption(s)\n  {}\n\nstep   thread    scheduling point (| the "
          "events the step caused)\n{}",
          result.cell.key(), result.property, replayed.preemptions, result.detail,
          replayed.timeline);
    }
    print(out);
  }
  bool racy = false;
  for (const auto& result : results) racy |= result.violated;
  return racy ? 1 : 0;
}

std::vector<explore::Cell> selected_cells(const Options& options) {
  auto schemes = selected_schemes(options);
  auto ops = selected_ops(options);
  auto kinds = select<scenarios::ScenarioKind>(
      options, "scenario", options.value("scenario").value_or("all"),
      {scenarios::ScenarioKind::kCoherence, scenarios::ScenarioKind::kStaleSpte},
      [](scenarios::ScenarioKind kind) { return std::string(scenarios::scenario_name(kind)); },
      "coherence, stale-spte, or all");
  mutation::Mutant mutant = mutation::Mutant::kNone;
  if (auto name = options.value("mutant")) {
    auto parsed = mutation::parse(*name);
    if (!parsed) {
      options.fail(fmt::format("unknown mutant '{}'; see 'sptelab list mutants'", *name));
    }
    mutant = *parsed;
  }
  std::vector<explore::Cell> cells = explore::cells_of(schemes, ops, kinds, mutant);
  if (auto text = options.value("shard")) {
    const size_t slash = text->find('/');
    if (slash == std::string::npos) options.fail("--shard takes I/N, e.g. 2/8");
    const int count = parse_int(options, "shard", text->substr(slash + 1), 1, 100000);
    const int index = parse_int(options, "shard", text->substr(0, slash), 1, count);
    cells = explore::shard(cells, static_cast<size_t>(index - 1), static_cast<size_t>(count));
  }
  return cells;
}

int finish(const Options& options, const std::vector<explore::CellResult>& results, int bound) {
  if (options.flag("json")) {
    print(explore::format_json(results, bound));
  } else if (options.flag("markdown")) {
    print(explore::format_markdown(results, bound));
  } else {
    std::string out = explore::format_table(results, bound);
    if (results.size() == 1 && results[0].violated) {
      explore::Replayed replayed =
          explore::replay_schedule(explore::parse_schedule(results[0].counterexample));
      out += fmt::format(
          "\n{}: {}\n\nstep   thread    scheduling point (| the events the step "
          "caused)\n{}",
          results[0].property, results[0].detail, replayed.timeline);
    }
    print(out);
  }
  bool racy = false;
  for (const auto& result : results) racy |= result.violated;
  return racy ? 1 : 0;
}

}  // namespace

int explore_main(Args args) {
  Options options("explore", args,
                  {{"scheme"},
                   {"op"},
                   {"scenario"},
                   {"mutant"},
                   {"race"},
                   {"variant"},
                   {"witness"},
                   {"scheme-table", false, true},
                   {"bound"},
                   {"era"},
                   {"pct"},
                   {"pct-depth"},
                   {"seed"},
                   {"no-reduction", false, true},
                   {"save"},
                   {"replay"},
                   {"trace"},
                   {"shard"},
                   {"merge", false, true},
                   {"json", false, true},
                   {"markdown", false, true}});
  if (options.help()) {
    print(kExploreHelp);
    return 0;
  }
  if (options.flag("json") && options.flag("markdown"))
    options.fail("--json or --markdown, not both");
  if (options.value("replay")) {
    if (!options.positionals().empty()) options.fail("--replay takes one file");
    if (options.value("era"))
      options.fail("--replay runs under the era its file names: drop --era");
    return replay_main(options);
  }
  if (options.value("trace")) options.fail("--trace goes with --replay");
  if (options.value("era") && options.flag("merge")) {
    options.fail("--merge takes the era the shards ran under: drop --era");
  }
  if (options.flag("merge")) {
    if (options.positionals().empty()) options.fail("--merge takes the shard outputs (JSON files)");
    std::vector<std::string> docs;
    for (const std::string& path : options.positionals()) docs.push_back(read_file(path));
    auto [bound, results] = explore::parse_json_results(docs);
    return finish(options, results, bound);
  }
  if (!options.positionals().empty()) options.fail("explore takes no positional arguments");

  explore::CampaignOptions campaign;
  if (auto bound = options.value("bound")) {
    campaign.search.bound = parse_int(options, "bound", *bound, 0, 6);
  }
  campaign.search.reduction = !options.flag("no-reduction");
  if (auto runs = options.value("pct")) {
    explore::PctOptions pct;
    pct.runs = static_cast<uint64_t>(parse_int(options, "pct", *runs, 1, 100000000));
    if (auto depth = options.value("pct-depth"))
      pct.depth = parse_int(options, "pct-depth", *depth, 1, 20);
    if (auto seed = options.value("seed"))
      pct.seed = static_cast<uint64_t>(parse_int(options, "seed", *seed, 0, 2147483647));
    campaign.pct = pct;
  }
  std::optional<scenarios::SeedRace> race;
  if (auto name = options.value("race")) {
    race = scenarios::parse_seed_race(*name);
    if (!race) options.fail(fmt::format("unknown race '{}'; see 'sptelab list scenarios'", *name));
  } else if (options.value("variant") || options.value("witness") || options.flag("scheme-table")) {
    options.fail("--variant, --witness and --scheme-table go with --race NAME");
  }
  std::vector<explore::Cell> cells = race ? race_cells(options, *race) : selected_cells(options);
  const mm::KernelEra era = selected_era(options);
  for (explore::Cell& cell : cells) cell.era = era;
  fmt::print(stderr, "explore: kernel {} ({} cells)\n", mm::kernel_era_name(era), cells.size());
  auto progress = [](size_t done, size_t total, const explore::CellResult& last) {
    fmt::print(stderr, "explore: [{}/{}] {}: {} ({} schedules, {} pruned, {:.2f} s)\n", done, total,
               last.cell.key(),
               last.violated ? fmt::format("RACY {} p{}", last.property, last.preemptions)
                             : std::string("coherent"),
               last.schedules, last.pruned, last.seconds);
    std::fflush(stderr);
  };
  const std::vector<explore::CellResult> results = explore::run_campaign(cells, campaign, progress);
  if (auto path = options.value("save")) save_counterexamples(*path, results);
  if (race) return race_finish(options, results, campaign.search.bound);
  return finish(options, results, campaign.search.bound);
}

}  // namespace sptelab::tools
