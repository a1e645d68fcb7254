// The whole-run benchmarks of `sptelab bench`: what each is called, whether
// it needs /dev/kvm, and the function that runs it. Every benchmark measures
// its baseline in the same process, right next to the measured runs (the
// runs alternate), and reports one or more rows (report.h).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "bench/runs/report.h"

namespace sptelab::bench {

struct BenchEnv {
  std::string touch_guest;  // benchtouch.elf
  std::string race_guest;   // the built-in race guest
  bool kvm = true;          // /dev/kvm is usable
  bool quick = false;       // smaller sizes, one repetition: a smoke test
  std::function<void(const std::string& what)> progress;  // may be empty

  void say(const std::string& what) const {
    if (progress) progress(what);
  }
  uint32_t repetitions() const { return quick ? 1 : 5; }
};

struct Benchmark {
  std::string name;
  std::string summary;  // one line for `sptelab bench --help`
  // Cannot run at all without /dev/kvm (others fall back to the software
  // vCPUs and say so in their notes).
  bool needs_kvm = true;
  std::function<std::vector<Result>(const BenchEnv&)> run;
};

// Every benchmark, in the order `sptelab bench` runs them.
const std::vector<Benchmark>& benchmarks();

// The groups (catalog.cpp assembles them).
std::vector<Benchmark> fault_benchmarks();
std::vector<Benchmark> zap_benchmarks();
std::vector<Benchmark> remap_benchmarks();
std::vector<Benchmark> trace_benchmarks();
std::vector<Benchmark> explore_benchmarks();

double median(std::vector<double> values);

// The samples a median came from, space-separated, for a result's notes.
std::string samples_text(const std::vector<double>& samples, int decimals);

}  // namespace sptelab::bench
