// remap_<scheme> and trace_overhead: a race scenario run with a guest on
// the page the host keeps remapping (scenarios/race.h), here for its cost
// rather than its violations. The runs inject no delays (the race command's
// defaults widen race windows on purpose, which is not what a cost is).
//
// Remap throughput: 1 / the median duration of one remap operation (from
// its mm_op_begin to its mm_op_end in the trace: PTE change, TLB flush,
// notifier calls, spte zap, guest window update and the real KVM's zap),
// i.e. the rate the host sustains with the guest faulting on the same
// pages. The race's own operations per wall-clock second are reported too,
// but they mostly measure how soon the emulated guest comes back to fault
// (the remapper waits for that) and how loaded the machine is.
//
// Guest stall per operation: the time the vCPU threads spend inside the
// secondary MMU's fault handler, from the first kvm_page_fault of an
// episode to its kvm_page_fault_fixed (retries included), summed over the
// vCPUs and divided by the remapper operations. It is what an invalidation
// costs the guest beyond the host's own work. Read from the run's trace.
#include <algorithm>
#include <chrono>
#include <map>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "bench/runs/catalog.h"
#include "mm/types.h"
#include "scenarios/race.h"
#include "trace/trace.h"

namespace sptelab::bench {
namespace {

using Clock = std::chrono::steady_clock;

const spte::Scheme kReference{mmu_notifier::Placement::kStartEnd, spte::Protocol::kSeqCount};

scenarios::RaceConfig race_config(const BenchEnv& env, const spte::Scheme& scheme, bool traced) {
  scenarios::RaceConfig config;
  config.scenario = scenarios::ScenarioKind::kStaleSpte;
  config.scheme = scheme;
  config.op = host::HostOp::kRemap;
  config.backend = env.kvm ? scenarios::Backend::kKvm : scenarios::Backend::kSoft;
  config.operations = env.quick ? 100 : 300;
  config.vcpus = 1;
  config.seed = 1;
  config.delays.clear();
  config.trace = traced;
  config.guest_path = env.race_guest;
  return config;
}

// Seconds the vCPU threads spent in fault episodes (see the top).
double fault_path_seconds(const trace::Snapshot& snapshot) {
  std::set<uint32_t> vcpus;
  for (const trace::ThreadInfo& thread : snapshot.threads) {
    if (thread.name.rfind("vcpu", 0) == 0) vcpus.insert(thread.id);
  }
  std::map<uint32_t, uint64_t> open_since;
  uint64_t total_ns = 0;
  for (const trace::Event& event : snapshot.events) {
    if (!vcpus.count(event.thread)) continue;
    if (event.kind == trace::Kind::kFaultBegin) {
      open_since.try_emplace(event.thread, event.ts_ns);
    } else if (event.kind == trace::Kind::kFaultFixed) {
      auto open = open_since.find(event.thread);
      if (open == open_since.end()) continue;
      total_ns += event.ts_ns - open->second;
      open_since.erase(open);
    }
  }
  return static_cast<double>(total_ns) / 1e9;
}

// Durations of the remapper's remap operations (mm_op_begin to mm_op_end),
// in microseconds.
std::vector<double> remap_op_us(const trace::Snapshot& snapshot) {
  std::set<uint32_t> remapper;
  for (const trace::ThreadInfo& thread : snapshot.threads) {
    if (thread.name == "remapper") remapper.insert(thread.id);
  }
  const uint64_t remap = static_cast<uint64_t>(mm::MmOp::kRemap);
  std::vector<double> durations;
  uint64_t begin = 0;
  for (const trace::Event& event : snapshot.events) {
    if (!remapper.count(event.thread) || event.args[0] != remap) continue;
    if (event.kind == trace::Kind::kMmOpBegin) {
      begin = event.ts_ns;
    } else if (event.kind == trace::Kind::kMmOpEnd && begin != 0) {
      durations.push_back(static_cast<double>(event.ts_ns - begin) / 1000);
      begin = 0;
    }
  }
  return durations;
}

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[static_cast<size_t>(p * static_cast<double>(values.size() - 1))];
}

struct RaceCost {
  double ops_per_s = 0;  // 1e6 / median remap duration
  double op_us_p50 = 0;
  double op_us_p99 = 0;
  double wall_ops_per_s = 0;  // the race's own rate, waits for the guest included
  double ptl_p50_ns = 0;
  double ptl_p99_ns = 0;
  double stall_us_per_op = 0;
  double faults_per_op = 0;
  double retries_per_op = 0;
  double violations = 0;
  double trace_lost = 0;  // events overwritten in the rings
};

RaceCost traced_race(const BenchEnv& env, const spte::Scheme& scheme) {
  env.say(fmt::format("remap: {}", scheme.name()));
  scenarios::RaceResult result = scenarios::run_race(race_config(env, scheme, true));
  trace::Snapshot snapshot = trace::snapshot();
  const double ops = static_cast<double>(std::max<uint64_t>(result.operations, 1));
  const std::vector<double> op_us = remap_op_us(snapshot);
  RaceCost cost;
  cost.op_us_p50 = percentile(op_us, 0.5);
  cost.op_us_p99 = percentile(op_us, 0.99);
  cost.ops_per_s = cost.op_us_p50 > 0 ? 1e6 / cost.op_us_p50 : 0;
  cost.wall_ops_per_s = result.ops_per_s;
  cost.ptl_p50_ns = static_cast<double>(result.ptl_hold_p50_ns);
  cost.ptl_p99_ns = static_cast<double>(result.ptl_hold_p99_ns);
  cost.stall_us_per_op = fault_path_seconds(snapshot) * 1e6 / ops;
  cost.faults_per_op = static_cast<double>(result.spte_faults) / ops;
  cost.retries_per_op = static_cast<double>(result.fault_retries) / ops;
  cost.violations = static_cast<double>(result.violations);
  cost.trace_lost = static_cast<double>(snapshot.overwritten);
  return cost;
}

RaceCost median_cost(const std::vector<RaceCost>& costs) {
  auto field = [&](double RaceCost::*member) {
    std::vector<double> values;
    for (const RaceCost& cost : costs) values.push_back(cost.*member);
    return median(values);
  };
  RaceCost m;
  for (double RaceCost::*member :
       {&RaceCost::ops_per_s, &RaceCost::op_us_p50, &RaceCost::op_us_p99, &RaceCost::wall_ops_per_s,
        &RaceCost::ptl_p50_ns, &RaceCost::ptl_p99_ns, &RaceCost::stall_us_per_op,
        &RaceCost::faults_per_op, &RaceCost::retries_per_op, &RaceCost::violations,
        &RaceCost::trace_lost}) {
    m.*member = field(member);
  }
  return m;
}

// The scheme's runs alternate with runs of the reference scheme.
Result remap(const BenchEnv& env, const spte::Scheme& scheme) {
  std::vector<RaceCost> measured, reference;
  for (uint32_t rep = 0; rep < env.repetitions(); ++rep) {
    measured.push_back(traced_race(env, scheme));
    reference.push_back(scheme == kReference ? measured.back() : traced_race(env, kReference));
  }
  RaceCost value = median_cost(measured);
  RaceCost baseline = median_cost(reference);
  const bool kvm = env.kvm;
  Result result;
  result.name = "remap_" + scheme.name();
  result.unit = "ops/s";
  result.value = value.ops_per_s;
  result.baseline = baseline.ops_per_s;
  result.ratio = ratio_of(result.value, result.baseline);
  result.notes = fmt::format(
      "stale-spte race, remap op, 1 vCPU ({}), no delays; ops/s = 1 / the median operation "
      "alone (mm_op_begin to mm_op_end); `sptelab race` reports wall_ops_per_s, which waits "
      "for the vCPU to fault back between operations; baseline: {}",
      kvm ? "kvm" : "soft: no /dev/kvm", kReference.name());
  result.add("backend", std::string(kvm ? "kvm" : "soft"));
  result.add("op_us_p50", value.op_us_p50);
  result.add("op_us_p99", value.op_us_p99);
  result.add("wall_ops_per_s", value.wall_ops_per_s);
  result.add("baseline_wall_ops_per_s", baseline.wall_ops_per_s);
  result.add("ptl_hold_p50_ns", value.ptl_p50_ns);
  result.add("ptl_hold_p99_ns", value.ptl_p99_ns);
  result.add("stall_us_per_op", value.stall_us_per_op);
  result.add("spte_faults_per_op", value.faults_per_op);
  result.add("fault_retries_per_op", value.retries_per_op);
  result.add("violations", value.violations);
  result.add("baseline_ptl_hold_p50_ns", baseline.ptl_p50_ns);
  result.add("baseline_ptl_hold_p99_ns", baseline.ptl_p99_ns);
  result.add("baseline_stall_us_per_op", baseline.stall_us_per_op);
  result.add("stall_ratio", ratio_of(value.stall_us_per_op, baseline.stall_us_per_op));
  result.add("trace_events_lost", value.trace_lost);
  return result;
}

// The schemes compared: every placement with KVM's protocol, and KVM's
// placement with every other shadow protocol. Not sva: these runs use KVM
// where the machine has it, and a KVM guest's memory goes through KVM's
// own MMU, not an IOMMU's IOTLB (scenarios refuse it there).
std::vector<spte::Scheme> remap_schemes() {
  std::vector<spte::Scheme> schemes = {kReference};
  for (const spte::Scheme& scheme : spte::all_schemes()) {
    if (scheme == kReference || scheme.protocol == spte::Protocol::kSva) continue;
    if (scheme.protocol == kReference.protocol || scheme.placement == kReference.placement) {
      schemes.push_back(scheme);
    }
  }
  return schemes;
}

// ---- trace_overhead ----------------------------------------------------------

// Nanoseconds per trace::emit with tracing on, on this thread.
double ns_per_event(uint64_t count) {
  trace::Session session;
  const auto start = Clock::now();
  for (uint64_t i = 0; i < count; ++i) trace::emit(trace::Kind::kCheckpoint, i, count - i);
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return seconds * 1e9 / static_cast<double>(count);
}

double us_per_op(const scenarios::RaceResult& result) {
  return result.operations > 0 ? result.seconds * 1e6 / static_cast<double>(result.operations) : 0;
}

Result trace_overhead(const BenchEnv& env) {
  std::vector<double> traced, untraced, events_per_op;
  for (uint32_t rep = 0; rep < env.repetitions(); ++rep) {
    env.say("trace_overhead: race traced and untraced");
    scenarios::RaceResult off = scenarios::run_race(race_config(env, kReference, false));
    scenarios::RaceResult on = scenarios::run_race(race_config(env, kReference, true));
    trace::Snapshot snapshot = trace::snapshot();
    untraced.push_back(us_per_op(off));
    traced.push_back(us_per_op(on));
    events_per_op.push_back(static_cast<double>(snapshot.events.size() + snapshot.overwritten) /
                            static_cast<double>(std::max<uint64_t>(on.operations, 1)));
  }
  const double event_ns = ns_per_event(env.quick ? 200000 : 2000000);
  Result result;
  result.name = "trace_overhead";
  result.unit = "us/op";
  result.value = median(traced);
  result.baseline = median(untraced);
  result.ratio = ratio_of(result.value, result.baseline);
  const double per_op = median(events_per_op);
  result.notes = fmt::format("stale-spte race ({}, remap, {}), traced vs untraced",
                             env.kvm ? "kvm" : "soft", kReference.name());
  result.add("ns_per_event", event_ns);
  result.add("events_per_op", per_op);
  // Tracing's own cost per operation, from the two numbers above: a ratio
  // the machine's noise does not blur.
  result.add("estimated_ratio",
             ratio_of(result.baseline + per_op * event_ns / 1000, result.baseline));
  result.add("value_samples", samples_text(traced, 0));
  result.add("baseline_samples", samples_text(untraced, 0));
  return result;
}

}  // namespace

std::vector<Benchmark> remap_benchmarks() {
  std::vector<Benchmark> list;
  for (const spte::Scheme& scheme : remap_schemes()) {
    list.push_back(
        {"remap_" + scheme.name(),
         fmt::format("remap throughput, PTL hold p50/p99 and guest stall per operation "
                     "under {} (vs {})",
                     scheme.name(), kReference.name()),
         false, [scheme](const BenchEnv& env) { return std::vector<Result>{remap(env, scheme)}; }});
  }
  return list;
}

std::vector<Benchmark> trace_benchmarks() {
  return {{"trace_overhead",
           "the same race run traced and untraced, and the cost of one trace event", false,
           [](const BenchEnv& env) { return std::vector<Result>{trace_overhead(env)}; }}};
}

}  // namespace sptelab::bench
