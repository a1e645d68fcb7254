// sptelab race SCENARIO [--scheme S|all] [--op OP] [--backend kvm|soft] ...
#include <unistd.h>

#include <fmt/core.h>

#include <string>
#include <vector>

#include "base/error.h"
#include "base/files.h"
#include "base/inject.h"
#include "base/interrupt.h"
#include "base/json.h"
#include "explore/crosscheck.h"
#include "explore/guide.h"
#include "scenarios/race.h"
#include "scenarios/seeds.h"
#include "tools/command.h"
#include "tools/guests.h"
#include "tools/options.h"
#include "tools/progress.h"
#include "tools/selection.h"
#include "tools/signals.h"
#include "tools/trace_events.h"

namespace sptelab::tools {
namespace {

constexpr const char* kRaceHelp =
    R"(usage: sptelab race SCENARIO [--scheme LIST] [--op LIST] [--backend kvm|soft]
                    [--iterations N] [--duration S] [--vcpus N] [--seed N] [--cpl0]
                    [--scheduled|--free]
                    [--delay POINT=NS[@PER_MILLE]]... [--no-delays] [--guided]
                    [--expect] [--wide] [--trace FILE] [--trace-events N]
                    [--kernel] [--era ERA] [--json]

Runs a race scenario under the schemes and ops chosen, and prints one row
per scheme and op: the violations each detector found, when the first one
was seen, and what the scheme cost. SCENARIO is one of ('sptelab list
scenarios'):
  coherence   vCPUs and a host thread increment a counter under a spinlock in
              one page while a remapper applies OP to that page over and over,
              taking the same spinlock around each move
  coherence-lockfree
              the third thread without a lock: vCPUs and a host thread
              lock-xadd their own counters in the page; the remapper never
              waits for them, and an increment through a stale spte is lost
  stale-spte  vCPUs read versioned pages the remapper keeps changing; the
              auditor and the readers catch sptes left on old frames

or a seed race, a host-MM bug Linux had, run buggy or fixed:
  sptelab race NAME [--variant buggy|fixed] [--iterations N] [--duration S]
                    [--seed N] [--era ERA] [--json]
  delayed-rmap  (2022) MADV_DONTNEED removes the rmap entry before its TLB
                flush; writeback cleans the page while a stale dirty TLB entry
                keeps writing
  dontneed-tlb  (2022) MADV_DONTNEED drops the PTL before its TLB flush; a
                fault installs a new page while a stale TLB entry keeps
                writing the old one
  gup-fast-revalidate
                (2022) GUP-fast keeps its reference without re-reading the
                PTE; the page was freed and reused at another address
  pagewalk-ptl  (2019) a page walker rewrites a PTE it read without the PTL;
                a zap cleared it meanwhile and the page is mapped again
                behind the rmap's back
  Its roles run as threads, round after round, on the soft backend (one
  delay widens the window: the coin of --seed picks the rounds); the race's
  property is checked after every round and the run stops at the first
  violation, printing the violating round's events. --variant defaults to
  fixed; --iterations counts rounds (default 200000); --duration is the time
  limit (default 600 s).

options:
  --scheme LIST    comma list of PLACEMENT+PROTOCOL names and globs, e.g.
                   start-end+seq-count, 'ptl-page+*', '*+seq-count',
                   ptl-page+seq,range-after+seq; or all (default all);
                   'sptelab list schemes'. The sva protocol (an IOMMU
                   device sharing the host page table) runs on --backend
                   soft under --era 6.6 or later: kvm and older eras
                   refuse it by name and skip it in all and globs
  --op LIST        the host operations, a comma list or globs: migrate,
                   remap, cow, dontneed, mprotect, mkclean, ksm,
                   punch-hole, or all
                   (default remap); 'sptelab list ops'
  --backend B      kvm: the built-in race guest on /dev/kvm (default);
                   soft: software vCPUs, no KVM needed
  --iterations N   remapper operations per scheme (default 2000; kvm 400;
                   with --duration and no --iterations: as many as fit)
  --duration S     time limit per scheme in seconds (default 30; injected
                   delays end there too); without --iterations the run is
                   free-running for that long
  --cpl0           kvm: run the guest's workload at CPL0 (emulated by PVM,
                   ~1 us per instruction) instead of native mode (CPL3)
  --vcpus N        guest vCPUs (default 1)
  --seed N         picks the schedule of a scheduled soft run, and the
                   delay injection's coin (which firings of each point are
                   delayed) of a free one (default 1). A scheduled run
                   repeats exactly; a free one repeats only the coin: its
                   threads run in parallel on the OS scheduler, so its
                   counts differ from run to run (kvm runs are always free)
  --scheduled      soft: run the vCPU, host-thread and remapper threads one
                   at a time, a chooser seeded by --seed picking who steps
                   next (a switch every 8 steps on average), so the same
                   seed repeats the run exactly: its counts and first
                   violation. Delays do not apply (the switches are the
                   windows). The default on soft unless --free, --delay,
                   --guided or a --duration without --iterations is given
                   (a run cut by the clock is not repeatable, nor is one
                   that reaches its time limit)
  --free           soft: run the threads in parallel on the OS scheduler,
                   with delays widening the windows, as kvm runs do
  --delay P=NS@PM  delay threads at injection point P by NS nanoseconds (a
                   whole number up to 4294967295) with probability PM/1000
                   (0 to 1000, default 1000); replaces the defaults;
                   repeatable; 'sptelab list points'
  --no-delays      no delay injection at all. By default free soft and
                   --cpl0 runs widen every window with delays; a native KVM
                   guest has only the windows held that it reaches no
                   faster than a fault's round trip (the host operation
                   before its PTE change, and a migration before its
                   refcount freeze, until the vCPU's fault has finished;
                   the vCPU's fault after its GUP, until the host
                   invalidates)
  --guided         per scheme, let the explorer find the fewest-preemption
                   counterexample for this op and place delays where it holds
                   threads back (each waits until the thread that ran instead
                   has made progress), so a narrow window is hit on purpose;
                   a scheme the explorer finds coherent runs free
  --expect         ask the explorer for each row's verdict (the scheme and
                   op's cell, both explorer scenarios, bound 2, as
                   docs/schemes.md and crosscheck; a few seconds per row)
                   and mark it in the table: exit 1 only for rows that
                   disagree (MISSED: a racy cell whose property this
                   scenario witnesses showed no violation; RACY: a coherent
                   cell showed one), 0 when every row agrees, racy or not.
                   Lost writes show in coherence-lockfree, stale sptes and
                   reads in stale-spte; the lock-protected coherence race
                   closes the third-thread window by design, so there its
                   racy cells are 'racy?' (either outcome agrees)
  --wide           all columns (the cost columns too); by default the table
                   fits 100 columns and names the ones it left out
  --trace FILE     write the run's events to FILE ('sptelab trace FILE' shows
                   them); with several rows, FILE.SCHEME (FILE.SCHEME.OP
                   with several ops) per row; stderr names each file written
  --trace-events N each thread's trace ring keeps its newest N events (rounded
                   up to a power of two, 1024 to 67108864, 48 bytes each;
                   default 65536); the trace and the counterexample say how
                   many older ones were lost
  --kernel         with --trace: also capture the real kernel's kvm and
                   kvmmmu tracepoints (tracefs) into the same timeline; where
                   tracefs is unavailable, says why and goes on without them
  --era ERA        the emulated host's kernel era: 2.6.27, 6.1, 6.2, 6.6 or
                   6.18 (default 6.18; mm/kernel_era.h); the header and JSON
                   name it. (--kernel is the real kernel's trace, above.)
  --json           print one JSON document on stdout, nothing else

Under the table, each scheme with violations says what happened; the first
one also shows its counterexample: the traced events around the first
violation (tracing stops two operations after it, so they survive).

A legend under the table names every column: each detector has its own
column (they count different things, so no total is shown); ops is the
remapper operations the row held, marked * when the time limit ended it.
Progress (scheme k of N, operations, elapsed time, ETA) goes to stderr once
a run has taken 2 s, on a terminal or piped; never with --json.

SIGINT or SIGTERM stops the run: the rows finished so far are printed (the
last one partial, marked "interrupted" in the table or JSON), the trace is
written, and the exit status is 130 or 143.

A trace that cannot be written after a run (a full disk) costs the run
nothing but the file: the row is printed, the error said on stderr (and as
"trace_error" in JSON), and the exit status is 3.

exit status: 0 no violation in any run (with --expect: every row agrees with
the explorer), 1 a violation was found (with --expect: a row disagrees), 2 bad usage
(or a --trace path that cannot be written, checked before running), 3 no
usable /dev/kvm (try --backend soft) or the output (stdout, a trace) could
not be written, 4 internal error, 130/143 stopped by SIGINT/SIGTERM.
)";

// --delay POINT=NS[@PER_MILLE] (scenarios::parse_delay says what is wrong).
scenarios::DelayPoint delay_option(const Options& options, const std::string& text) {
  try {
    return scenarios::parse_delay(text);
  } catch (const Error& error) {
    options.fail(error.what());
  }
}

// --duration S: a number of seconds above 0 and at most kMaxSeconds.
std::optional<double> duration_option(const Options& options) {
  std::optional<std::string> text = options.value("duration");
  if (!text) return std::nullopt;
  auto seconds = parse_seconds(*text);
  if (!seconds || *seconds <= 0 || *seconds > kMaxSeconds) {
    options.fail(fmt::format("--duration '{}' is not a number of seconds above 0 and at most {}",
                             *text, kMaxSeconds));
  }
  return seconds;
}

// Soft runs are scheduled (repeatable) unless something asks for threads
// running freely: --free, delays of one's own, --guided's delays, or a
// run that the clock ends.
bool scheduled_option(const Options& options, const scenarios::RaceConfig& config) {
  const bool soft = config.backend == scenarios::Backend::kSoft;
  const bool delays = options.flag("guided") || !options.values("delay").empty();
  if (options.flag("scheduled") && options.flag("free")) {
    options.fail("--scheduled and --free contradict each other: choose one");
  }
  if (options.flag("free")) {
    if (!soft) options.fail("--free is for soft runs: kvm runs are always free");
    return false;
  }
  if (options.flag("scheduled")) {
    if (!soft) options.fail("--scheduled runs software vCPUs: it needs --backend soft");
    if (delays) options.fail("--scheduled injects no delays: drop --delay and --guided");
    if (config.for_duration) {
      options.fail("--scheduled repeats a run by its operation count: give --iterations");
    }
    return true;
  }
  return soft && !delays && !config.for_duration;
}

scenarios::RaceConfig base_config(const Options& options) {
  scenarios::RaceConfig config;
  auto scenario = scenarios::parse_scenario(options.positionals().front());
  if (!scenario) {
    options.fail(
        fmt::format("unknown scenario '{}'; choose coherence, coherence-lockfree or "
                    "stale-spte",
                    options.positionals().front()));
  }
  config.scenario = *scenario;
  std::string backend = options.value("backend").value_or("kvm");
  auto parsed_backend = scenarios::parse_backend(backend);
  if (!parsed_backend)
    options.fail(fmt::format("unknown backend '{}'; choose kvm or soft", backend));
  config.backend = *parsed_backend;
  const bool kvm = config.backend == scenarios::Backend::kKvm;
  config.operations = unsigned_option(options, "iterations", kvm ? 400 : 2000, 1, 100000000);
  config.vcpus =
      static_cast<uint32_t>(unsigned_option(options, "vcpus", 1, 1, scenarios::kMaxRaceVcpus));
  config.seed = unsigned_option(options, "seed", 1, 0, UINT64_MAX);
  if (auto seconds = duration_option(options)) {
    config.max_seconds = *seconds;
    if (!options.value("iterations")) {
      config.operations = UINT64_MAX;  // free-running for the duration
      config.for_duration = true;
    }
  }
  config.native = !options.flag("cpl0");
  // Native vCPUs meet most windows unaided; the default delays (made for
  // guests emulated at a microsecond per instruction) would mostly make the
  // remapper wait. Only the windows behind a fault's round trip are held.
  if (kvm && config.native) config.delays = scenarios::native_delays();
  config.scheduled = scheduled_option(options, config);
  if (options.flag("no-delays") || config.scheduled) {
    config.delays.clear();
  } else if (auto delays = options.values("delay"); !delays.empty()) {
    config.delays.clear();
    for (const std::string& delay : delays) config.delays.push_back(delay_option(options, delay));
  }
  if (kvm) config.guest_path = resolve_guest("race");
  return config;
}

// A missing /dev/kvm is the environment's fault (exit 3); say what still works.
scenarios::RaceResult run_one(const scenarios::RaceConfig& config,
                              const scenarios::ProgressFn& progress) {
  try {
    return scenarios::run_race(config, progress);
  } catch (const Error& error) {
    if (error.status() != ExitStatus::kEnvironment || config.backend != scenarios::Backend::kKvm) {
      throw;
    }
    throw Error(ExitStatus::kEnvironment,
                std::string(error.what()) +
                    "; the same race runs without KVM on software vCPUs: --backend soft");
  }
}

// The delays of --guided, from the explorer's counterexample for the cell
// (bound 2, as docs/schemes.md); none where the explorer finds no violation.
void guide(scenarios::RaceConfig& config) {
  explore::Cell cell{config.scheme, config.op, explore::explorer_scenario(config.scenario)};
  cell.era = config.era;
  explore::Guide found = explore::guide_for(cell, explore::kGuideBoundNs);
  config.delays = found.delays;
  config.guide.clear();
  if (!found.delays.empty()) {
    config.guide = fmt::format("{} in {} preemption(s):\n{}", found.property, found.preemptions,
                               found.description);
  }
}

// `sptelab race NAME` for a seed race (scenarios/seeds.h).
int seed_race_main(const Options& options, scenarios::SeedRace race) {
  for (const char* name : {"scheme", "op", "vcpus", "trace", "trace-events"}) {
    if (options.value(name)) {
      options.fail(fmt::format("--{} does not apply to the seed race {}", name,
                               scenarios::seed_race_name(race)));
    }
  }
  for (const char* name : {"no-delays", "cpl0", "scheduled", "free", "guided", "kernel"}) {
    if (options.flag(name)) {
      options.fail(fmt::format("--{} does not apply to the seed race {}", name,
                               scenarios::seed_race_name(race)));
    }
  }
  if (!options.values("delay").empty()) options.fail("a seed race places its own delay");
  if (auto backend = options.value("backend"); backend && *backend != "soft") {
    options.fail("the seed races run on the soft backend");
  }
  scenarios::SeedRaceConfig config;
  config.race = race;
  config.era = selected_era(options);
  if (auto text = options.value("variant")) {
    auto variant = scenarios::parse_variant(*text);
    if (!variant) options.fail(fmt::format("--variant '{}': buggy or fixed", *text));
    config.variant = *variant;
  }
  config.rounds = unsigned_option(options, "iterations", config.rounds, 1, 100000000);
  config.seed = unsigned_option(options, "seed", 1, 0, UINT64_MAX);
  if (auto seconds = duration_option(options)) {
    config.max_seconds = *seconds;
    if (!options.value("iterations")) {
      config.rounds = UINT64_MAX;
      config.for_duration = true;
    }
  }
  handle_stop_signals();
  // A fixed run of 100,000 rounds takes seconds: progress on stderr, as
  // every long command shows it (never with --json).
  std::optional<Progress> progress;
  scenarios::SeedProgressFn report;
  if (!options.flag("json")) {
    progress.emplace("race", 1);
    progress->start(scenarios::seed_race_name(race), config.for_duration ? config.max_seconds : 0);
    report = [&progress, &config](uint64_t done, uint64_t planned) {
      progress->update(done, config.for_duration ? 0 : planned);
    };
  }
  const scenarios::SeedRaceResult result = scenarios::run_seed_race(config, report);
  if (progress) {
    progress->finish(result.violations > 0 ? result.property : "no violation");
  }
  fmt::print("{}", options.flag("json") ? scenarios::seed_race_json(result)
                                        : scenarios::format_seed_race(result));
  if (const int signal = interrupt::requested(); signal != 0) return interrupted_status(signal);
  return result.violations > 0 ? 1 : 0;
}

// One row of the table: a scheme under one op.
struct Row {
  spte::Scheme scheme;
  host::HostOp op;
  std::string name() const { return fmt::format("{}/{}", scheme.name(), host::host_op_name(op)); }
};

std::vector<Row> selected_rows(const Options& options, scenarios::Backend backend) {
  const SchemeBackend runs_on =
      backend == scenarios::Backend::kKvm ? SchemeBackend::kKvm : SchemeBackend::kEmulated;
  const std::vector<spte::Scheme> schemes = selected_schemes(options, "all", runs_on);
  std::vector<Row> rows;
  for (host::HostOp op : selected_ops(options, "remap")) {
    for (const spte::Scheme& scheme : schemes) rows.push_back({scheme, op});
  }
  return rows;
}

// The command as typed, for the trace's header ("sptelab race ...").
std::string command_line(Args args) {
  std::string line = "sptelab race";
  for (const std::string& arg : args) {
    const bool plain = !arg.empty() && arg.find_first_of(" \t'\"*?$") == std::string::npos;
    line += " " + (plain ? arg : "'" + arg + "'");
  }
  return line;
}

// race --expect: the explorer's verdict for the row's cell, with progress
// on stderr (a cell's search takes about 2 s).
void expect_verdicts(std::vector<scenarios::RaceResult>& results, bool quiet) {
  std::optional<Progress> progress;
  if (!quiet) progress.emplace("race --expect: explorer", results.size());
  for (scenarios::RaceResult& result : results) {
    if (interrupt::requested() != 0) return;
    const scenarios::RaceConfig& config = result.config;
    if (progress) progress->start(Row{config.scheme, config.op}.name());
    const explore::CellResult verdict =
        explore::explorer_verdict(config.scheme, config.op, config.era);
    result.expected_racy = verdict.violated;
    result.expected_property = verdict.property;
    result.expected_witnessed =
        verdict.violated &&
        explore::race_scenario_for(verdict.property, config.op) == config.scenario;
    if (progress)
      progress->finish(verdict.violated ? "racy (" + verdict.property + ")" : "coherent");
  }
}

// What the progress line says about a finished row.
std::string row_outcome(const scenarios::RaceResult& result) {
  std::string outcome = fmt::format("{} ops", result.operations);
  if (result.violations > 0) {
    outcome += fmt::format(", violations after {:.1f} ms", result.first_violation_ms);
  } else {
    outcome += ", no violation";
  }
  return outcome;
}

// The table and what it found, after the header line of the run.
void print_report(const scenarios::RaceConfig& config,
                  const std::vector<scenarios::RaceResult>& results, size_t planned, int signal,
                  bool failed, bool wide) {
  std::string mode;
  if (config.backend == scenarios::Backend::kKvm) {
    mode = config.native ? " (guest workload native, CPL3)" : " (guest workload at CPL0, emulated)";
  }
  std::string budget = config.for_duration
                           ? fmt::format("free-running for {} s per row", config.max_seconds)
                           : fmt::format("up to {} operations or {} s per row", config.operations,
                                         config.max_seconds);
  if (config.scheduled) budget += ", scheduled (repeatable)";
  std::string ops;
  for (const auto& result : results) {
    const std::string op = host::host_op_name(result.config.op);
    if (ops.find(op) == std::string::npos) ops += (ops.empty() ? "" : ",") + op;
  }
  // With several ops a row is named by its scheme and op.
  const bool several_ops = ops.find(',') != std::string::npos;
  auto row_name = [several_ops](const scenarios::RaceResult& result) {
    return several_ops ? Row{result.config.scheme, result.config.op}.name()
                       : result.config.scheme.name();
  };
  fmt::print("race {} --op {} --backend {} --era {}{}\n{}, seed {}\n\n",
             scenarios::scenario_name(config.scenario), ops.empty() ? "-" : ops,
             scenarios::backend_name(config.backend), mm::kernel_era_name(config.era), mode, budget,
             config.seed);
  fmt::print("{}", scenarios::format_race_table(results, wide));
  if (signal != 0) {
    fmt::print("\ninterrupted by {}: {} of {} rows ran; the last row is partial\n",
               signal_name(signal), results.size(), planned);
  } else if (failed) {
    fmt::print("\nstopped after {} of {} rows: the next one failed (below)\n", results.size(),
               planned);
  }
  for (const auto& result : results) {
    if (result.config.guide.empty()) continue;
    fmt::print("\n{} guided by the explorer's {}", row_name(result), result.config.guide);
  }
  bool shown_counterexample = false;
  for (const auto& result : results) {
    if (result.examples.empty()) continue;
    fmt::print("\n{}: {}\n", row_name(result), result.examples.front());
    if (!shown_counterexample && !result.counterexample.empty()) {
      fmt::print("counterexample (events around the first violation):\n{}", result.counterexample);
      shown_counterexample = true;
    }
  }
}

}  // namespace

int race_main(Args args) {
  Options options("race", args,
                  {{"scheme"},
                   {"op"},
                   {"backend"},
                   {"iterations"},
                   {"duration"},
                   {"vcpus"},
                   {"seed"},
                   {"delay", true},
                   {"no-delays", false, true},
                   {"cpl0", false, true},
                   {"scheduled", false, true},
                   {"free", false, true},
                   {"guided", false, true},
                   {"expect", false, true},
                   {"wide", false, true},
                   {"trace"},
                   {"trace-events"},
                   {"kernel", false, true},
                   {"json", false, true},
                   {"variant"},
                   {"era"}});
  if (options.help()) {
    fmt::print("{}", kRaceHelp);
    return 0;
  }
  if (options.positionals().size() != 1) {
    options.fail("give one SCENARIO: coherence, coherence-lockfree or stale-spte");
  }
  if (auto race = scenarios::parse_seed_race(options.positionals().front())) {
    return seed_race_main(options, *race);
  }
  if (options.value("variant"))
    options.fail(
        "--variant goes with a seed race (delayed-rmap, dontneed-tlb, gup-fast-revalidate, "
        "pagewalk-ptl)");
  const bool json = options.flag("json");
  scenarios::RaceConfig config = base_config(options);
  config.command_line = command_line(args);
  apply_trace_events_option(options, std::nullopt);

  const std::vector<Row> rows = selected_rows(options, config.backend);
  const bool several_ops = rows.front().op != rows.back().op;
  const bool guided = options.flag("guided");
  if (guided && (options.flag("no-delays") || !options.values("delay").empty())) {
    options.fail("--guided places its own delays: drop --delay and --no-delays");
  }
  const std::optional<std::string> trace_path = options.value("trace");
  if (options.flag("kernel") && !trace_path) {
    options.fail("--kernel needs --trace FILE: it adds the real kernel's events to that trace");
  }
  config.kernel = options.flag("kernel");
  config.era = selected_era(options);
  // Every trace path is checked before the first scheme runs: a bad path
  // must not cost a long run its results.
  auto row_trace_path = [&](const Row& row) {
    if (rows.size() == 1) return *trace_path;
    std::string path = *trace_path + "." + row.scheme.name();
    if (several_ops) path += std::string(".") + host::host_op_name(row.op);
    return path;
  };
  if (trace_path) {
    for (const Row& row : rows) {
      std::string path = row_trace_path(row);
      check_output_path(path, "trace");
      if (!config.guest_path.empty()) check_not_input(path, config.guest_path, "trace");
    }
  }

  handle_stop_signals();  // before the first thread: SIGINT/SIGTERM end the run early
  std::vector<scenarios::RaceResult> results;
  std::optional<Error> failure;  // a scheme that failed; the rows before it are still shown
  std::optional<Progress> progress;
  if (!json) progress.emplace("race", rows.size());
  for (const Row& row : rows) {
    if (interrupt::requested() != 0) break;
    config.scheme = row.scheme;
    config.op = row.op;
    if (guided) guide(config);
    if (trace_path) config.trace_path = row_trace_path(row);
    scenarios::ProgressFn report;
    if (progress) {
      progress->start(row.name(), config.max_seconds);
      report = [&progress](const scenarios::RaceConfig& c, uint64_t done, uint64_t total) {
        progress->update(done, c.for_duration ? 0 : total);
      };
    }
    try {
      results.push_back(run_one(config, report));
    } catch (const Error& error) {
      if (results.empty()) throw;
      failure = Error(error.status(), fmt::format("{}: {}", row.name(), error.what()));
    }
    if (failure) break;
    if (progress) progress->finish(row_outcome(results.back()));
    if (trace_path && results.back().trace_error.empty()) {
      fmt::print(stderr, "sptelab: wrote the trace {}\n", config.trace_path);
    }
    if (!results.back().kernel_problem.empty()) {
      fmt::print(stderr, "sptelab: --kernel: {}; the run went on without the kernel's events\n",
                 results.back().kernel_problem);
    }
    if (!results.back().trace_error.empty()) {
      fmt::print(stderr, "sptelab: race: {}: {}; its row is printed all the same\n", row.name(),
                 results.back().trace_error);
    }
  }
  if (options.flag("expect") && !failure) expect_verdicts(results, json);
  const int signal = interrupt::requested();

  bool violated = false;
  bool disagrees = false;
  for (const auto& result : results) {
    violated |= result.violations > 0;
    disagrees |= !result.agrees_with_explorer();
  }
  if (json) {
    std::string document = scenarios::race_json(results);
    if (signal != 0 || failure) {
      // Marked as partial: which signal stopped it, or which scheme failed.
      std::string mark =
          signal != 0 ? fmt::format("\"interrupted\": {}, ", json_string(signal_name(signal)))
                      : fmt::format("\"failed\": {}, ", json_string(failure->what()));
      document.insert(1, mark + fmt::format("\"schemes_planned\": {}, ", rows.size()));
    }
    fmt::print("{}", document);
  } else {
    print_report(config, results, rows.size(), signal, failure.has_value(), options.flag("wide"));
  }
  if (failure) throw *failure;
  if (signal != 0) return interrupted_status(signal);
  for (const auto& result : results) {
    if (!result.trace_error.empty()) return static_cast<int>(ExitStatus::kEnvironment);
  }
  if (options.flag("expect")) return disagrees ? 1 : 0;
  return violated ? 1 : 0;
}

}  // namespace sptelab::tools
