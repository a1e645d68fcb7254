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
#include "explore/guide.h"
#include "scenarios/race.h"
#include "scenarios/seeds.h"
#include "tools/command.h"
#include "tools/guests.h"
#include "tools/options.h"
#include "tools/selection.h"
#include "tools/signals.h"

namespace sptelab::tools {
namespace {

constexpr const char* kHelp =
    R"(usage: sptelab race SCENARIO [--scheme S|all] [--op OP] [--backend kvm|soft]
                    [--iterations N] [--duration S] [--vcpus N] [--seed N] [--cpl0]
                    [--delay POINT=NS[@PER_MILLE]]... [--no-delays] [--guided]
                    [--trace FILE] [--kernel] [--era ERA] [--json]

Runs a race scenario under one scheme or all 20, and prints one row per
scheme: the violations each detector found, when the first one was seen,
and what the scheme cost. SCENARIO is one of ('sptelab list scenarios'):
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
  Its roles run as threads, round after round, on the soft backend (one
  delay widens the window: the coin of --seed picks the rounds); the race's
  property is checked after every round and the run stops at the first
  violation, printing the violating round's events. --variant defaults to
  fixed; --iterations counts rounds (default 200000); --duration is the time
  limit (default 600 s).

options:
  --scheme S       PLACEMENT+PROTOCOL (e.g. start-end+seq-count) or all
                   (default all); 'sptelab list schemes'
  --op OP          the host operation: migrate, remap, cow, dontneed,
                   mprotect, mkclean, ksm (default remap); 'sptelab list ops'
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
  --seed N         seeds the delay injection, to repeat a run (default 1)
  --delay P=NS@PM  delay threads at injection point P by NS nanoseconds (a
                   whole number up to 4294967295) with probability PM/1000
                   (0 to 1000, default 1000); replaces the defaults;
                   repeatable; 'sptelab list points'
  --no-delays      no delay injection at all (the default for a native KVM
                   guest; soft and --cpl0 runs widen the windows with delays)
  --guided         per scheme, let the explorer find the fewest-preemption
                   counterexample for this op and place delays where it holds
                   threads back (each waits until the thread that ran instead
                   has made progress), so a narrow window is hit on purpose;
                   a scheme the explorer finds coherent runs free
  --trace FILE     write the run's events to FILE ('sptelab trace FILE' shows
                   them); with several schemes, FILE.SCHEME per scheme
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

Columns: viol is the total over all detectors; first_ms the time to the first
violation; ops the remapper operations done, ops/s their rate; guest/s the
vCPUs' increments (or page reads) per second, the host thread's excluded; faults, retries and zapped
count spte faults, fault retries and sptes zapped; ptl p50/p99 the
page-table-lock hold times.

SIGINT or SIGTERM stops the run: the rows finished so far are printed (the
last one partial, marked "interrupted" in the table or JSON), the trace is
written, and the exit status is 130 or 143.

exit status: 0 no violation in any run, 1 a violation was found, 2 bad usage
(or a --trace path that cannot be written, checked before running), 3 no
usable /dev/kvm (try --backend soft) or the output could not be written, 4
internal error, 130/143 stopped by SIGINT/SIGTERM.
)";

std::vector<spte::Scheme> schemes_option(const Options& options) {
  std::string text = options.value("scheme").value_or("all");
  if (text == "all") return spte::all_schemes();
  auto scheme = spte::parse_scheme(text);
  if (!scheme) {
    options.fail(fmt::format("unknown scheme '{}'; 'sptelab list schemes' shows the 20", text));
  }
  return {*scheme};
}

// POINT=NS[@PER_MILLE], strictly: NS a whole number of nanoseconds that
// fits the delay (at most 4294967295, about 4.3 s), PER_MILLE a whole
// number from 0 to 1000; no signs, spaces, exponents or trailing text.
scenarios::DelayPoint delay_option(const Options& options, const std::string& text) {
  auto bad = [&](const std::string& why) {
    options.fail(
        fmt::format("--delay '{}': {}; the form is POINT=NS[@PER_MILLE], e.g. "
                    "host_before_ptl=50000@500 ('sptelab list points' shows the points)",
                    text, why));
  };
  size_t eq = text.find('=');
  if (eq == std::string::npos) bad("no '='");
  std::string point = text.substr(0, eq);
  if (!inject::from_name(point)) {
    bad(fmt::format("unknown injection point '{}'", point));
  }
  std::string rest = text.substr(eq + 1);
  std::string ns_text = rest, per_mille_text;
  if (size_t at = rest.find('@'); at != std::string::npos) {
    ns_text = rest.substr(0, at);
    per_mille_text = rest.substr(at + 1);
    if (per_mille_text.find('@') != std::string::npos) bad("more than one '@'");
    std::optional<uint64_t> per_mille = parse_unsigned(per_mille_text);
    if (!per_mille || *per_mille > 1000) {
      bad(fmt::format("PER_MILLE '{}' is not a whole number from 0 to 1000", per_mille_text));
    }
  }
  std::optional<uint64_t> ns = parse_unsigned(ns_text);
  if (!ns || *ns > UINT32_MAX) {
    bad(fmt::format("NS '{}' is not a whole number of nanoseconds from 0 to {}", ns_text,
                    UINT32_MAX));
  }
  // Checked above: scenarios::parse_delay only assembles the point.
  return scenarios::parse_delay(text);
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
  std::string op = options.value("op").value_or("remap");
  auto host_op = scenarios::parse_host_op(op);
  if (!host_op) options.fail(fmt::format("unknown op '{}'; 'sptelab list ops' shows them", op));
  config.op = *host_op;
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
  // Native vCPUs hit the microsecond windows unaided; the default delays
  // (made for guests emulated at a microsecond per instruction) would only
  // make the remapper wait. Free-running, unless delays are asked for.
  if (kvm && config.native && options.values("delay").empty()) config.delays.clear();
  if (options.flag("no-delays")) {
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
  for (const char* name : {"scheme", "op", "vcpus", "trace"}) {
    if (options.value(name)) {
      options.fail(fmt::format("--{} does not apply to the seed race {}", name,
                               scenarios::seed_race_name(race)));
    }
  }
  for (const char* name : {"no-delays", "cpl0", "guided", "kernel"}) {
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
  const scenarios::SeedRaceResult result = scenarios::run_seed_race(config);
  fmt::print("{}", options.flag("json") ? scenarios::seed_race_json(result)
                                        : scenarios::format_seed_race(result));
  if (const int signal = interrupt::requested(); signal != 0) return interrupted_status(signal);
  return result.violations > 0 ? 1 : 0;
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
                   {"guided", false, true},
                   {"trace"},
                   {"kernel", false, true},
                   {"json", false, true},
                   {"variant"},
                   {"era"}});
  if (options.help()) {
    fmt::print("{}", kHelp);
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
        "--variant goes with a seed race (delayed-rmap, dontneed-tlb, gup-fast-revalidate)");
  const bool json = options.flag("json");
  scenarios::RaceConfig config = base_config(options);
  const bool show_progress = !json && isatty(STDERR_FILENO);

  const std::vector<spte::Scheme> schemes = schemes_option(options);
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
  auto scheme_trace_path = [&](const spte::Scheme& scheme) {
    return schemes.size() == 1 ? *trace_path : *trace_path + "." + scheme.name();
  };
  if (trace_path) {
    for (const spte::Scheme& scheme : schemes) {
      std::string path = scheme_trace_path(scheme);
      check_output_path(path, "trace");
      if (!config.guest_path.empty()) check_not_input(path, config.guest_path, "trace");
    }
  }

  handle_stop_signals();  // before the first thread: SIGINT/SIGTERM end the run early
  std::vector<scenarios::RaceResult> results;
  std::optional<Error> failure;  // a scheme that failed; the rows before it are still shown
  for (const spte::Scheme& scheme : schemes) {
    if (interrupt::requested() != 0) break;
    config.scheme = scheme;
    if (guided) guide(config);
    if (trace_path) config.trace_path = scheme_trace_path(scheme);
    scenarios::ProgressFn progress;
    if (show_progress) {
      progress = [](const scenarios::RaceConfig& c, uint64_t done, uint64_t total) {
        if (c.for_duration) {
          fmt::print(stderr, "\r{:<24} {:>9} ops", c.scheme.name(), done);
        } else {
          fmt::print(stderr, "\r{:<24} {:>7}/{:<7}", c.scheme.name(), done, total);
        }
      };
    }
    try {
      results.push_back(run_one(config, progress));
    } catch (const Error& error) {
      if (results.empty()) throw;
      failure = Error(error.status(), fmt::format("{}: {}", scheme.name(), error.what()));
    }
    if (show_progress) fmt::print(stderr, "\r{:<45}\r", "");
    if (failure) break;
    if (!results.back().kernel_problem.empty()) {
      fmt::print(stderr, "sptelab: --kernel: {}; the run went on without the kernel's events\n",
                 results.back().kernel_problem);
    }
  }
  const int signal = interrupt::requested();

  bool violated = false;
  for (const auto& result : results) violated |= result.violations > 0;
  if (json) {
    std::string document = scenarios::race_json(results);
    if (signal != 0 || failure) {
      // Marked as partial: which signal stopped it, or which scheme failed.
      std::string mark =
          signal != 0 ? fmt::format("\"interrupted\": {}, ", json_string(signal_name(signal)))
                      : fmt::format("\"failed\": {}, ", json_string(failure->what()));
      document.insert(1, mark + fmt::format("\"schemes_planned\": {}, ", schemes.size()));
    }
    fmt::print("{}", document);
  } else {
    std::string mode;
    if (config.backend == scenarios::Backend::kKvm) {
      mode =
          config.native ? " (guest workload native, CPL3)" : " (guest workload at CPL0, emulated)";
    }
    std::string budget = config.for_duration
                             ? fmt::format("free-running for {} s per scheme", config.max_seconds)
                             : fmt::format("{} operations per scheme", config.operations);
    fmt::print("race {} --op {} --backend {}{}: {}, seed {}, kernel {}\n\n",
               scenarios::scenario_name(config.scenario), scenarios::host_op_name(config.op),
               scenarios::backend_name(config.backend), mode, budget, config.seed,
               mm::kernel_era_name(config.era));
    fmt::print("{}", scenarios::format_race_table(results));
    if (signal != 0) {
      fmt::print("\ninterrupted by {}: {} of {} schemes ran; the last row is partial\n",
                 signal_name(signal), results.size(), schemes.size());
    } else if (failure) {
      fmt::print("\nstopped after {} of {} schemes: the next one failed (below)\n", results.size(),
                 schemes.size());
    }
    for (const auto& result : results) {
      if (result.config.guide.empty()) continue;
      fmt::print("\n{} guided by the explorer's {}", result.config.scheme.name(),
                 result.config.guide);
    }
    bool shown_counterexample = false;
    for (const auto& result : results) {
      if (result.examples.empty()) continue;
      fmt::print("\n{}: {}\n", result.config.scheme.name(), result.examples.front());
      if (!shown_counterexample && !result.counterexample.empty()) {
        fmt::print("counterexample (events around the first violation):\n{}",
                   result.counterexample);
        shown_counterexample = true;
      }
    }
  }
  if (failure) throw *failure;
  if (signal != 0) return interrupted_status(signal);
  return violated ? 1 : 0;
}

}  // namespace sptelab::tools
