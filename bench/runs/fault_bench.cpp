// spte_fault_seq, spte_fault_random and fault_scale: the benchtouch guest
// touches fresh pages through the emulated sptes and, as the baseline, on a
// plain memslot where the real kernel's KVM resolves every fault itself.
//
// Each run makes kPasses passes over the same pages in the same order and
// the host times each pass from the guest's reports (touch_run.h): pass 0
// takes the faults, pass 1 whatever the first touch left to the real KVM
// (after an emulated fault completed the store, the real kernel still has
// to map the window page), passes 2 and 3 are the guest's own loop. The
// fault cost of a page is pass 0 + pass 1 - 2 x loop: what it costs, net of
// the guest's instructions, until a fresh page is as usable as any other.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "bench/runs/catalog.h"
#include "bench/runs/stacks.h"
#include "bench/runs/touch_run.h"

namespace sptelab::bench {
namespace {

constexpr uint32_t kPasses = 4;
constexpr uint32_t kFaultAround = 16;  // fault_scale's
constexpr std::array<uint32_t, 3> kFaultArounds = {0, 16, 64};
const spte::Scheme kScheme{mmu_notifier::Placement::kStartEnd, spte::Protocol::kSeqCount};

struct TouchCost {
  double fault_us = 0;  // first + settle, at least resolution_us
  double first_us = 0;
  double settle_us = 0;
  double loop_us = 0;
  double resolution_us = 0;   // how far the two loop passes disagree
  double exits_per_page = 0;  // MMIO exits, i.e. emulated spte faults
  double wall_fault_us = 0;   // fault_us by the wall clock (waits for a CPU included)
};

// The smallest per-page difference a run resolves: the two loop passes do
// the same work, so their difference is noise. A fault cost below it is
// reported as the resolution itself ("no cost this run can see"), never as
// zero or a negative number.
constexpr double kMinResolutionUs = 0.01;

TouchCost cost_of(const TouchRun& run) {
  const double pages = static_cast<double>(run.pages);
  auto per_page_us = [&](double seconds) { return seconds / pages * 1e6; };
  TouchCost cost;
  cost.loop_us = per_page_us((run.pass_seconds[2] + run.pass_seconds[3]) / 2);
  cost.resolution_us =
      std::max(kMinResolutionUs, std::fabs(per_page_us(run.pass_seconds[2] - run.pass_seconds[3])));
  cost.first_us = per_page_us(run.pass_seconds[0]) - cost.loop_us;
  cost.settle_us = per_page_us(run.pass_seconds[1]) - cost.loop_us;
  cost.fault_us = std::max(cost.first_us + cost.settle_us, cost.resolution_us);
  cost.exits_per_page = static_cast<double>(run.vm_stats.mmio_exits) / pages;
  const std::vector<double>& wall = run.pass_wall_seconds;
  cost.wall_fault_us = per_page_us(wall[0] + wall[1] - (wall[2] + wall[3]));
  return cost;
}

TouchCost median_cost(const std::vector<TouchCost>& costs) {
  auto field = [&](double TouchCost::*member) {
    std::vector<double> values;
    for (const TouchCost& cost : costs) values.push_back(cost.*member);
    return median(values);
  };
  TouchCost m;
  for (double TouchCost::*member :
       {&TouchCost::fault_us, &TouchCost::first_us, &TouchCost::settle_us, &TouchCost::loop_us,
        &TouchCost::resolution_us, &TouchCost::exits_per_page, &TouchCost::wall_fault_us}) {
    m.*member = field(member);
  }
  return m;
}

struct Variant {
  std::string label;
  StackBuilder build;
};

struct Measured {
  std::map<std::string, TouchCost> cost;                     // median of the repetitions
  std::map<std::string, std::vector<double>> fault_samples;  // fault_us of each
};

// Runs every variant `repetitions` times, round-robin so that a change in
// the machine's load hits all of them alike.
Measured measure(const BenchEnv& env, const TouchConfig& config,
                 const std::vector<Variant>& variants) {
  std::map<std::string, std::vector<TouchCost>> costs;
  for (uint32_t rep = 0; rep < env.repetitions(); ++rep) {
    for (const Variant& variant : variants) {
      env.say(fmt::format("{} {} pages, {}", config.random ? "random" : "in order", config.pages,
                          variant.label));
      costs[variant.label].push_back(cost_of(run_touch(config, variant.build)));
    }
  }
  Measured measured;
  for (const auto& [label, list] : costs) {
    measured.cost[label] = median_cost(list);
    for (const TouchCost& cost : list) measured.fault_samples[label].push_back(cost.fault_us);
  }
  return measured;
}

struct Sizes {
  uint64_t ram_bytes;
  uint64_t small_pages;
  uint64_t large_pages;
};

Sizes sizes(const BenchEnv& env) {
  return env.quick ? Sizes{16ull << 20, 512, 2048} : Sizes{64ull << 20, 2048, 8192};
}

std::string label_for(uint32_t fault_around) {
  return fmt::format("emulated, fault-around {}", fault_around);
}

Result spte_fault(const BenchEnv& env, bool random) {
  const Sizes size = sizes(env);
  TouchConfig config;
  config.guest_path = env.touch_guest;
  config.ram_bytes = size.ram_bytes;
  config.random = random;
  config.passes = kPasses;
  config.pages = size.large_pages;
  const uint64_t ram = size.ram_bytes;
  const std::string cold = "emulated, host memory on demand";
  std::vector<Variant> variants = {{"direct", direct_stack(ram)}};
  for (uint32_t around : kFaultArounds) {
    variants.push_back(
        {label_for(around), emulated_stack(ram, kScheme, around, HostMemory::kPreallocated)});
  }
  variants.push_back({"anonymous", anonymous_stack(ram)});
  variants.push_back(
      {cold, emulated_stack(ram, kScheme, kFaultArounds.back(), HostMemory::kOnDemand)});
  Measured large = measure(env, config, variants);
  uint32_t best_around = kFaultArounds.front();
  for (uint32_t around : kFaultArounds) {
    if (large.cost[label_for(around)].fault_us < large.cost[label_for(best_around)].fault_us) {
      best_around = around;
    }
  }
  const std::string best = label_for(best_around);

  config.pages = size.small_pages;
  Measured small =
      measure(env, config,
              {{"direct", direct_stack(ram)},
               {best, emulated_stack(ram, kScheme, best_around, HostMemory::kPreallocated)}});

  const TouchCost& value = large.cost[best];
  const TouchCost& baseline = large.cost["direct"];
  Result result;
  result.name = random ? "spte_fault_random" : "spte_fault_seq";
  result.unit = "us/page";
  result.value = value.fault_us;
  result.baseline = baseline.fault_us;
  result.ratio = ratio_of(result.value, result.baseline);
  result.notes = fmt::format(
      "{}, {} pages, host memory preallocated, fault-around {} (best of {}); baseline: direct "
      "memslot",
      kScheme.name(), size.large_pages, best_around, fmt::join(kFaultArounds, "/"));
  result.add("pages", static_cast<double>(size.large_pages));
  result.add("fault_around", best_around);
  for (uint32_t around : kFaultArounds) {
    result.add(fmt::format("fault_around_{}_us", around), large.cost[label_for(around)].fault_us);
  }
  result.add("first_touch_us", value.first_us);
  result.add("settle_us", value.settle_us);
  result.add("loop_us", value.loop_us);
  result.add("resolution_us", value.resolution_us);
  result.add("spte_faults_per_page", value.exits_per_page);
  result.add("baseline_first_touch_us", baseline.first_us);
  result.add("baseline_settle_us", baseline.settle_us);
  result.add("value_samples", samples_text(large.fault_samples[best], 2));
  result.add("baseline_samples", samples_text(large.fault_samples["direct"], 2));
  result.add("wall_value", value.wall_fault_us);
  result.add("wall_baseline", baseline.wall_fault_us);
  // Linear growth: the per-page cost at large_pages against small_pages.
  result.add("small_pages", static_cast<double>(size.small_pages));
  result.add("small_value", small.cost[best].fault_us);
  result.add("small_baseline", small.cost["direct"].fault_us);
  result.add("small_ratio", ratio_of(small.cost[best].fault_us, small.cost["direct"].fault_us));
  result.add("growth", ratio_of(value.fault_us, small.cost[best].fault_us));
  result.add("baseline_growth", ratio_of(baseline.fault_us, small.cost["direct"].fault_us));
  // Host memory on demand: the emulated host faults each page in inside the
  // spte fault; the real kernel allocates it inside KVM's.
  result.add("on_demand_value", large.cost[cold].fault_us);
  result.add("on_demand_baseline", large.cost["anonymous"].fault_us);
  result.add("on_demand_ratio",
             ratio_of(large.cost[cold].fault_us, large.cost["anonymous"].fault_us));
  return result;
}

// A 1 GiB guest (256 MiB with --quick) on 4 vCPUs touching all its pages:
// it must work, and cost per page what the small runs do.
Result fault_scale(const BenchEnv& env) {
  TouchConfig config;
  config.guest_path = env.touch_guest;
  config.ram_bytes = env.quick ? 256ull << 20 : 1ull << 30;
  config.vcpus = 4;
  config.passes = kPasses;
  config.pages = config.ram_bytes / 4096 - touch_first_gfn(env.touch_guest, config.ram_bytes);
  const uint64_t ram = config.ram_bytes;
  const std::string fa = fmt::format("emulated, fault-around {}", kFaultAround);
  BenchEnv once = env;
  once.quick = true;  // one repetition: these runs are long
  std::map<std::string, TouchCost> costs =
      measure(once, config,
              {{"direct", direct_stack(ram)},
               {fa, emulated_stack(ram, kScheme, kFaultAround, HostMemory::kPreallocated)}})
          .cost;
  Result result;
  result.name = "fault_scale";
  result.unit = "us/page";
  result.value = costs[fa].fault_us;
  result.baseline = costs["direct"].fault_us;
  result.ratio = ratio_of(result.value, result.baseline);
  result.notes = fmt::format(
      "{} MiB guest, {} vCPUs, all {} pages above the image, {}, fault-around {}; CPU time per "
      "page, summed over the vCPUs",
      ram >> 20, config.vcpus, config.pages, kScheme.name(), kFaultAround);
  result.add("ram_bytes", static_cast<double>(ram));
  result.add("vcpus", config.vcpus);
  result.add("pages", static_cast<double>(config.pages));
  result.add("loop_us", costs[fa].loop_us);
  result.add("spte_faults_per_page", costs[fa].exits_per_page);
  result.add("wall_value", costs[fa].wall_fault_us);
  result.add("wall_baseline", costs["direct"].wall_fault_us);
  return result;
}

// spte_fault_native: the same guest in native mode (CPL3, natively on PVM):
// a page's first touch is an EFAULT that the exit loop decodes and resolves
// through the emulated sptes, against the real KVM's in-kernel fault on a
// direct memslot in the same run; and the floor of any native fault, the
// bare exit round trip (an `out` from CPL3 to a port that does nothing).
Result spte_fault_native(const BenchEnv& env) {
  const Sizes size = sizes(env);
  TouchConfig config;
  config.guest_path = env.touch_guest;
  config.ram_bytes = size.ram_bytes;
  config.passes = kPasses;
  config.pages = size.large_pages;
  config.native = true;
  const uint64_t ram = size.ram_bytes;
  std::vector<Variant> variants = {{"direct", direct_stack(ram)}};
  for (uint32_t around : kFaultArounds) {
    variants.push_back(
        {label_for(around), emulated_stack(ram, kScheme, around, HostMemory::kPreallocated)});
  }
  Measured measured = measure(env, config, variants);
  uint32_t best_around = kFaultArounds.front();
  for (uint32_t around : kFaultArounds) {
    if (measured.cost[label_for(around)].fault_us <
        measured.cost[label_for(best_around)].fault_us) {
      best_around = around;
    }
  }
  // The floor: every pass is nothing but exits, so the loop passes give it.
  TouchConfig exits = config;
  exits.port_loop = true;
  // The same exits from CPL0, for comparison (emulated there).
  TouchConfig cpl0_exits = exits;
  cpl0_exits.native = false;
  std::vector<double> exit_us;
  std::vector<double> cpl0_exit_us;
  double efaults_per_page = 0;
  auto exit_cost = [](const TouchRun& run) {
    return (run.pass_seconds[2] + run.pass_seconds[3]) / 2 / static_cast<double>(run.pages) * 1e6;
  };
  for (uint32_t rep = 0; rep < env.repetitions(); ++rep) {
    env.say(fmt::format("native exit round trip, {} exits", exits.pages));
    exit_us.push_back(exit_cost(run_touch(exits, direct_stack(ram))));
    cpl0_exit_us.push_back(exit_cost(run_touch(cpl0_exits, direct_stack(ram))));
  }
  {
    TouchRun run = run_touch(config, emulated_stack(ram, kScheme, 0, HostMemory::kPreallocated));
    efaults_per_page =
        static_cast<double>(run.vm_stats.native_faults) / static_cast<double>(run.pages);
  }
  const TouchCost& value = measured.cost[label_for(best_around)];
  const TouchCost& baseline = measured.cost["direct"];
  Result result;
  result.name = "spte_fault_native";
  result.unit = "us/page";
  result.value = value.fault_us;
  result.baseline = baseline.fault_us;
  result.ratio = ratio_of(result.value, result.baseline);
  result.notes = fmt::format(
      "guest at CPL3, {}, {} pages in order, host memory preallocated, fault-around {} (best of "
      "{}); baseline: the real KVM's in-kernel fault on a direct memslot",
      kScheme.name(), size.large_pages, best_around, fmt::join(kFaultArounds, "/"));
  result.add("pages", static_cast<double>(size.large_pages));
  result.add("fault_around", best_around);
  for (uint32_t around : kFaultArounds) {
    result.add(fmt::format("fault_around_{}_us", around),
               measured.cost[label_for(around)].fault_us);
  }
  result.add("exit_round_trip_us", median(exit_us));
  result.add("cpl0_exit_round_trip_us", median(cpl0_exit_us));
  result.add("efaults_per_page_fault_around_0", efaults_per_page);
  result.add("loop_us", value.loop_us);
  result.add("resolution_us", value.resolution_us);
  result.add("value_samples", samples_text(measured.fault_samples[label_for(best_around)], 2));
  result.add("baseline_samples", samples_text(measured.fault_samples["direct"], 2));
  result.add("wall_value", value.wall_fault_us);
  result.add("wall_baseline", baseline.wall_fault_us);
  return result;
}

}  // namespace

std::vector<Benchmark> fault_benchmarks() {
  return {
      {"spte_fault_seq",
       "a guest writes fresh pages in order: us/page through the emulated sptes vs the real KVM "
       "on a plain memslot",
       true, [](const BenchEnv& env) { return std::vector<Result>{spte_fault(env, false)}; }},
      {"spte_fault_random", "the same in a random order", true,
       [](const BenchEnv& env) { return std::vector<Result>{spte_fault(env, true)}; }},
      {"spte_fault_native",
       "the guest at CPL3 (native mode): us/page of the decoded EFAULT spte fault vs the real "
       "KVM's in-kernel fault, and the bare native exit round trip",
       true, [](const BenchEnv& env) { return std::vector<Result>{spte_fault_native(env)}; }},
      {"fault_scale",
       "a 1 GiB guest on 4 vCPUs touches all its RAM: it works, and costs per page what small "
       "guests do",
       true, [](const BenchEnv& env) { return std::vector<Result>{fault_scale(env)}; }},
  };
}

}  // namespace sptelab::bench
