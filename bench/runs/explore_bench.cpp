// explore: how fast `sptelab explore` searches the real emulator's schedules
// (explore/search.h), on two fixed cells.
//
//  explore_<cell>      schedules/s: the preemption-bounded search, sleep
//                      sets on (what `sptelab explore` runs), per second of
//                      CPU time, on
//                        start-end+seq-count/remap/coherence, coherent: the
//                        whole bound is searched;
//                        start-end+naive/ksm/stale-spte, racy: the search
//                        stops at its counterexample (two preemptions).
//     baseline         executions/s of the same cell under its default,
//                      non-preempting schedule, one after another with no
//                      search: the cost of running the emulator's code
//                      under the cooperative scheduler (base/sched.h).
//                      ratio = what the search keeps of that rate; its
//                      schedules are longer (preempted roles wait and
//                      spin), so the rows also give CPU time per step.
//  explore_sleep_sets  CPU seconds to search the coherent cell's whole bound
//                      with sleep sets vs without (--no-reduction): what the
//                      reduction saves.
//
// CPU time of the whole process: the roles are threads that run one at a
// time, so their CPU time adds up to the work and leaves out the time they
// waited for a CPU on a loaded machine. Wall-clock rates are in the rows too.
#include <chrono>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/error.h"
#include "base/sched.h"
#include "bench/runs/catalog.h"
#include "bench/runs/cpu_clock.h"
#include "explore/scenario.h"
#include "explore/search.h"

namespace sptelab::bench {
namespace {

using Clock = std::chrono::steady_clock;

explore::Cell coherent_cell() {
  return {*spte::parse_scheme("start-end+seq-count"), host::HostOp::kRemap,
          scenarios::ScenarioKind::kCoherence};
}

explore::Cell racy_cell() {
  return {*spte::parse_scheme("start-end+naive"), host::HostOp::kKsm,
          scenarios::ScenarioKind::kStaleSpte};
}

// One timed search or batch of executions.
struct Timed {
  double cpu_seconds = 0;
  double wall_seconds = 0;
  uint64_t executions = 0;
  uint64_t steps = 0;  // scheduling points passed, over all executions
  explore::SearchResult search;
};

// Runs `body` with a RunFn that counts the executions' steps.
template <typename Body>
Timed timed(const explore::Cell& cell, Body body) {
  Timed out;
  const explore::RunFn run = [&cell, &out](sched::Chooser& chooser) {
    explore::Outcome outcome = explore::run_cell(cell, chooser);
    out.steps += outcome.steps;
    return outcome;
  };
  const double cpu_start = process_cpu_seconds();
  const auto wall_start = Clock::now();
  body(run, out);
  out.cpu_seconds = process_cpu_seconds() - cpu_start;
  out.wall_seconds = std::chrono::duration<double>(Clock::now() - wall_start).count();
  return out;
}

Timed search(const explore::Cell& cell, int bound, bool reduction) {
  return timed(cell, [&](const explore::RunFn& run, Timed& out) {
    out.search = explore::search_bounded(run, {.bound = bound, .reduction = reduction});
    out.executions = out.search.executions;
  });
}

// `count` executions of the cell's default schedule: replaying the empty
// schedule is the non-preempting policy from the first step.
Timed default_runs(const explore::Cell& cell, uint64_t count) {
  return timed(cell, [&](const explore::RunFn& run, Timed& out) {
    sched::StayOnOneCpu one_cpu;  // where the search runs its executions, all of them
    for (uint64_t i = 0; i < count; ++i) explore::replay(run, {});
    out.executions = count;
  });
}

double per_second(uint64_t count, double seconds) {
  return seconds > 0 ? static_cast<double>(count) / seconds : 0;
}

double per_run(uint64_t steps, uint64_t runs) {
  return runs > 0 ? static_cast<double>(steps) / static_cast<double>(runs) : 0;
}

std::string verdict(const explore::SearchResult& result) {
  if (!result.violated) return "coherent";
  return fmt::format("racy: {} with {} preemption(s)", result.outcome.property, result.preemptions);
}

// What one repetition measures on a cell: the search (sleep sets on), the
// default schedule run `default_count` times, and, for the whole-bound
// cell only, the search without sleep sets.
struct Samples {
  std::vector<double> value, baseline, wall_value, wall_baseline;
  std::vector<double> reduced_seconds, full_seconds;
  Timed search, defaults, full;  // the last repetition's
};

void measure(const BenchEnv& env, const explore::Cell& cell, int bound, uint64_t default_count,
             bool without_reduction, Samples& samples) {
  env.say(fmt::format("explore: {} at bound {}", cell.key(), bound));
  samples.search = search(cell, bound, true);
  samples.defaults = default_runs(cell, default_count);
  samples.value.push_back(per_second(samples.search.executions, samples.search.cpu_seconds));
  samples.baseline.push_back(per_second(samples.defaults.executions, samples.defaults.cpu_seconds));
  samples.wall_value.push_back(per_second(samples.search.executions, samples.search.wall_seconds));
  samples.wall_baseline.push_back(
      per_second(samples.defaults.executions, samples.defaults.wall_seconds));
  samples.reduced_seconds.push_back(samples.search.cpu_seconds);
  if (!without_reduction) return;
  env.say(fmt::format("explore: {} at bound {} without sleep sets", cell.key(), bound));
  samples.full = search(cell, bound, false);
  samples.full_seconds.push_back(samples.full.cpu_seconds);
  if (samples.full.search.violated != samples.search.search.violated) {
    throw_internal(fmt::format("explore bench: {} is {} with sleep sets but {} without", cell.key(),
                               verdict(samples.search.search), verdict(samples.full.search)));
  }
}

double us_per_step(uint64_t steps, double seconds) {
  return steps > 0 ? seconds * 1e6 / static_cast<double>(steps) : 0;
}

// The search's schedules/s on a cell against its default schedule's
// executions/s.
Result throughput_row(const explore::Cell& cell, int bound, uint64_t default_count,
                      const Samples& samples) {
  const Timed& search = samples.search;
  const Timed& defaults = samples.defaults;
  Result result;
  result.name = "explore_" + cell.key();
  result.unit = "schedules/s";
  result.value = median(samples.value);
  result.baseline = median(samples.baseline);
  result.ratio = ratio_of(result.value, result.baseline);
  result.notes = fmt::format(
      "bounded search (bound {}, sleep sets), {}; baseline: the cell's default schedule run "
      "alone, {} times",
      bound, verdict(search.search), default_count);
  result.add("bound", static_cast<double>(bound));
  result.add("verdict", verdict(search.search));
  result.add("schedules", static_cast<double>(search.executions));
  result.add("pruned", static_cast<double>(search.search.pruned));
  // A searched schedule is longer than the default one (preempted roles
  // wait and spin), so per step is where the search's own cost would show.
  result.add("steps_per_schedule", per_run(search.steps, search.executions));
  result.add("default_steps", per_run(defaults.steps, defaults.executions));
  result.add("us_per_step", us_per_step(search.steps, search.cpu_seconds));
  result.add("default_us_per_step", us_per_step(defaults.steps, defaults.cpu_seconds));
  result.add("wall_value", median(samples.wall_value));
  result.add("wall_baseline", median(samples.wall_baseline));
  result.add("value_samples", samples_text(samples.value, 0));
  result.add("baseline_samples", samples_text(samples.baseline, 0));
  return result;
}

// CPU seconds to search the whole bound with sleep sets and without.
Result sleep_sets_row(const explore::Cell& cell, int bound, const Samples& samples) {
  const Timed& reduced = samples.search;
  const Timed& full = samples.full;
  Result result;
  result.name = "explore_sleep_sets";
  result.unit = "s";
  result.value = median(samples.reduced_seconds);
  result.baseline = median(samples.full_seconds);
  result.ratio = ratio_of(result.value, result.baseline);
  result.notes = fmt::format(
      "CPU seconds to search {} at bound {} ({}) with sleep sets; baseline: without "
      "(--no-reduction)",
      cell.key(), bound, verdict(reduced.search));
  result.add("bound", static_cast<double>(bound));
  result.add("schedules", static_cast<double>(reduced.executions));
  result.add("pruned", static_cast<double>(reduced.search.pruned));
  result.add("baseline_schedules", static_cast<double>(full.executions));
  result.add("schedules_per_s", per_second(reduced.executions, reduced.cpu_seconds));
  result.add("baseline_schedules_per_s", per_second(full.executions, full.cpu_seconds));
  return result;
}

std::vector<Result> explore_rows(const BenchEnv& env) {
  // --quick: bound 1 for the whole-bound cell (about 300 schedules instead
  // of about 7,000); the racy cell's counterexample needs bound 2.
  const int coherent_bound = env.quick ? 1 : 2;
  const uint64_t default_count = env.quick ? 100 : 1000;
  Samples coherent, racy;
  for (uint32_t rep = 0; rep < env.repetitions(); ++rep) {
    measure(env, coherent_cell(), coherent_bound, default_count, true, coherent);
    measure(env, racy_cell(), 2, default_count, false, racy);
  }
  return {throughput_row(coherent_cell(), coherent_bound, default_count, coherent),
          throughput_row(racy_cell(), 2, default_count, racy),
          sleep_sets_row(coherent_cell(), coherent_bound, coherent)};
}

}  // namespace

std::vector<Benchmark> explore_benchmarks() {
  return {{"explore",
           "sptelab explore's schedules/s on a coherent and a racy cell (vs the cell's default "
           "schedule run alone), and the time sleep sets save",
           false, explore_rows}};
}

}  // namespace sptelab::bench
