// sptelab bench [NAME]... [--json] [--quick]
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "bench/runs/catalog.h"
#include "bench/runs/report.h"
#include "hypervisor/kvm_device.h"
#include "tools/command.h"
#include "tools/guests.h"
#include "tools/options.h"

namespace sptelab::tools {
namespace {

constexpr const char* kBenchHelp = R"(usage: sptelab bench [NAME]... [--json] [--quick]

Runs the whole-run benchmarks (all of them, or the ones named) and prints one
row per measured quantity: its value, the baseline measured in the same run
(the real kernel, the reference scheme start-end+seq-count, or for explore
the same cell run without the search, or searched without sleep sets), and
ratio = value / baseline. For costs (us/..., s) lower is better; for
throughput (ops/s, schedules/s) higher is better. docs/benchmarks.md
explains each one.

options:
  --json    print one JSON document on stdout, nothing else:
            {"machine": {...}, "benchmarks": [{"name", "unit", "value",
            "baseline", "ratio", "notes", ...}]}
  --quick   small sizes and one repetition (a smoke test, well under 30 s);
            the full run takes about three minutes

exit status: 0 every benchmark ran; 2 bad usage; 3 /dev/kvm is missing or
unusable (the benchmarks that need it are skipped, the rest still run); 4 a
benchmark failed.

benchmarks:
)";

void print_help() {
  fmt::print("{}", kBenchHelp);
  for (const bench::Benchmark& benchmark : bench::benchmarks()) {
    fmt::print("  {}\n      {}{}\n", benchmark.name, benchmark.summary,
               benchmark.needs_kvm ? " [needs /dev/kvm]" : "");
  }
}

std::vector<const bench::Benchmark*> selected(const Options& options) {
  std::vector<const bench::Benchmark*> chosen;
  for (const std::string& name : options.positionals()) {
    const bench::Benchmark* found = nullptr;
    for (const bench::Benchmark& benchmark : bench::benchmarks()) {
      if (benchmark.name == name) found = &benchmark;
    }
    if (found == nullptr) {
      std::string names;
      for (const bench::Benchmark& benchmark : bench::benchmarks()) {
        names += names.empty() ? "" : ", ";
        names += benchmark.name;
      }
      options.fail(fmt::format("unknown benchmark '{}'; the benchmarks are: {}", name, names));
    }
    chosen.push_back(found);
  }
  if (chosen.empty()) {
    for (const bench::Benchmark& benchmark : bench::benchmarks()) chosen.push_back(&benchmark);
  }
  return chosen;
}

// Why KVM cannot be used, or nullopt if it can.
std::optional<std::string> kvm_problem() {
  try {
    hypervisor::KvmDevice kvm(hypervisor::default_kvm_device_path());
    return std::nullopt;
  } catch (const Error& error) {
    return std::string(error.what());
  }
}

// The guests the benchmarks run: the built-in race guest, and benchtouch,
// which is built and installed next to the built-in guests.
void find_guests(bench::BenchEnv& env) {
  std::optional<std::string> race = find_builtin_guest("race");
  if (!race) {
    throw_environment(
        "bench: the built-in guest images are missing; build the sptelab_guests target or set "
        "SPTELAB_GUEST_DIR to the directory that holds race.elf and benchtouch.elf");
  }
  env.race_guest = *race;
  std::filesystem::path touch = std::filesystem::path(*race).parent_path() / "benchtouch.elf";
  std::error_code error;
  if (!std::filesystem::is_regular_file(touch, error)) {
    throw_environment(fmt::format("bench: {} is missing; build the sptelab_guest_benchtouch target",
                                  touch.string()));
  }
  env.touch_guest = touch.string();
}

}  // namespace

int bench_main(Args args) {
  Options options("bench", args, {{"json", false, true}, {"quick", false, true}});
  if (options.help()) {
    print_help();
    return 0;
  }
  std::vector<const bench::Benchmark*> chosen = selected(options);
  const bool json = options.flag("json");

  bench::BenchEnv env;
  env.quick = options.flag("quick");
  std::optional<std::string> no_kvm = kvm_problem();
  env.kvm = !no_kvm.has_value();
  if (env.kvm) find_guests(env);
  if (isatty(STDERR_FILENO)) {
    env.progress = [](const std::string& what) { fmt::print(stderr, "bench: {}\n", what); };
  }

  std::vector<bench::Result> results;
  std::vector<std::string> skipped;
  int status = 0;
  for (const bench::Benchmark* benchmark : chosen) {
    if (benchmark->needs_kvm && !env.kvm) {
      skipped.push_back(benchmark->name);
      continue;
    }
    try {
      for (bench::Result& result : benchmark->run(env)) results.push_back(std::move(result));
    } catch (const Error& error) {
      fmt::print(stderr, "sptelab bench: {} failed: {}\n", benchmark->name, error.what());
      status = std::max(status, static_cast<int>(error.status()));
    }
  }

  if (json) {
    fmt::print("{}", bench::format_json(bench::describe_machine(), results));
  } else {
    bench::Machine machine = bench::describe_machine();
    fmt::print("machine: {} CPUs, {} MiB, Linux {}, KVM {}, {} ({})\n\n{}", machine.cpus,
               machine.memory_bytes >> 20, machine.kernel, machine.kvm_backend, machine.compiler,
               machine.build_type, bench::format_table(results));
  }
  if (!skipped.empty()) {
    std::string names;
    for (const std::string& name : skipped) names += (names.empty() ? "" : ", ") + name;
    fmt::print(stderr,
               "sptelab bench: skipped {} ({}); the remap benchmarks ran on software vCPUs "
               "instead of KVM. Run as a user who can open /dev/kvm for the full set.\n",
               names, *no_kvm);
    status = std::max(status, static_cast<int>(ExitStatus::kEnvironment));
  }
  return status;
}

}  // namespace sptelab::tools
