#include "bench/runs/catalog.h"

#include <algorithm>

#include <fmt/format.h>

namespace sptelab::bench {

const std::vector<Benchmark>& benchmarks() {
  static const std::vector<Benchmark> all = [] {
    std::vector<Benchmark> list;
    for (auto group : {fault_benchmarks, zap_benchmarks, remap_benchmarks, trace_benchmarks,
                       explore_benchmarks}) {
      for (Benchmark& benchmark : group()) list.push_back(std::move(benchmark));
    }
    return list;
  }();
  return all;
}

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  size_t middle = values.size() / 2;
  return values.size() % 2 ? values[middle] : (values[middle - 1] + values[middle]) / 2;
}

std::string samples_text(const std::vector<double>& samples, int decimals) {
  std::string text;
  for (double sample : samples) {
    text += fmt::format("{}{:.{}f}", text.empty() ? "" : " ", sample, decimals);
  }
  return text;
}

}  // namespace sptelab::bench
