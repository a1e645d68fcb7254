#include "trace/latency.h"

#include <fmt/core.h>

#include <algorithm>
#include <map>
#include <optional>

#include "base/table.h"

namespace sptelab::trace {
namespace {

enum Series : size_t { kFault, kInvalidation, kPtlHold, kShootdown, kExit, kSeriesCount };

// Open spans, per thread: a thread runs one fault, one shootdown and one
// exit at a time, and nests notifier ranges.
struct ThreadSpans {
  std::optional<uint64_t> fault, exit, shootdown;
  uint64_t last_ack = 0;
  std::vector<std::pair<const Event*, bool>> ranges;  // range_start and whether it counts
  bool fault_counts = false, exit_counts = false, shootdown_counts = false;
};

class Measurer {
 public:
  explicit Measurer(std::vector<LatencySeries>& series) : series_(series) {}

  void add(const Event& event, bool counts) {
    ThreadSpans& spans = threads_[event.thread];
    // A shootdown ends at its last acknowledgement: the flusher emits them
    // one after another, before anything else.
    if (spans.shootdown && event.kind != Kind::kTlbFlushAck) close_shootdown(spans);
    switch (event.kind) {
      case Kind::kFaultBegin:
        spans.fault = event.ts_ns;  // an unfinished earlier fault was abandoned
        spans.fault_counts = counts;
        break;
      case Kind::kFaultFixed:
        if (spans.fault && spans.fault_counts) record(kFault, event.ts_ns - *spans.fault);
        spans.fault.reset();
        break;
      case Kind::kNotifyRangeStart:
        spans.ranges.emplace_back(&event, counts);
        break;
      case Kind::kNotifyRangeEnd:
        close_range(spans, event);
        break;
      case Kind::kPtlUnlock:
        if (counts) record(kPtlHold, event.args[1]);
        break;
      case Kind::kTlbFlush:
        spans.shootdown = spans.last_ack = event.ts_ns;
        spans.shootdown_counts = counts;
        break;
      case Kind::kTlbFlushAck:
        spans.last_ack = event.ts_ns;
        break;
      case Kind::kVcpuExit:
        spans.exit = event.ts_ns;
        spans.exit_counts = counts;
        break;
      case Kind::kVcpuEntry:
        if (spans.exit && spans.exit_counts) record(kExit, event.ts_ns - *spans.exit);
        spans.exit.reset();
        break;
      default:
        break;
    }
  }

  void finish() {
    for (auto& [thread, spans] : threads_) {
      if (spans.shootdown) close_shootdown(spans);
    }
  }

 private:
  void record(Series series, uint64_t ns) { series_[series].samples.push_back(ns); }

  void close_shootdown(ThreadSpans& spans) {
    if (spans.shootdown_counts) record(kShootdown, spans.last_ack - *spans.shootdown);
    spans.shootdown.reset();
  }

  // The innermost open range with the same bounds (ranges nest).
  void close_range(ThreadSpans& spans, const Event& end) {
    for (auto it = spans.ranges.rbegin(); it != spans.ranges.rend(); ++it) {
      const Event& start = *it->first;
      if (start.args[0] != end.args[0] || start.args[1] != end.args[1]) continue;
      if (it->second) record(kInvalidation, end.ts_ns - start.ts_ns);
      spans.ranges.erase(std::next(it).base());
      return;
    }
  }

  std::vector<LatencySeries>& series_;
  std::map<uint32_t, ThreadSpans> threads_;
};

std::string microseconds(uint64_t ns) {
  return fmt::format("{:.2f}", ns / 1000.0);
}

std::string duration_label(uint64_t ns) {
  if (ns >= 1000000000) return fmt::format("{} s", ns / 1000000000);
  if (ns >= 1000000) return fmt::format("{} ms", ns / 1000000);
  if (ns >= 1000) return fmt::format("{} us", ns / 1000);
  return fmt::format("{} ns", ns);
}

// Bucket edges 0, 1, 2, 5, 10, 20, 50, ... ns up to 500 s: round labels, and
// three buckets a decade are enough to see where the mass and the tail are.
std::vector<uint64_t> bucket_edges() {
  std::vector<uint64_t> edges = {0};  // [0, 1 ns): spans too short for the clock
  for (uint64_t decade = 1; decade <= 100'000'000'000; decade *= 10) {
    for (uint64_t step : {1, 2, 5}) edges.push_back(decade * step);
  }
  return edges;
}

size_t bucket_of(const std::vector<uint64_t>& edges, uint64_t ns) {
  auto above = std::upper_bound(edges.begin(), edges.end(), ns);
  return above == edges.begin() ? 0 : static_cast<size_t>(above - edges.begin()) - 1;
}

// Counts per bucket from the smallest sample's bucket to the largest's.
std::string histogram(const LatencySeries& series) {
  constexpr uint64_t kBarWidth = 40;
  static const std::vector<uint64_t> edges = bucket_edges();
  std::map<size_t, uint64_t> buckets;
  for (uint64_t ns : series.samples) ++buckets[bucket_of(edges, ns)];
  uint64_t most = 0;
  for (const auto& [bucket, count] : buckets) most = std::max(most, count);
  std::string out = fmt::format("\n{} ({}):\n", series.name, series.span);
  const size_t last = std::min(buckets.rbegin()->first, edges.size() - 2);
  for (size_t bucket = buckets.begin()->first; bucket <= last; ++bucket) {
    const uint64_t count = buckets.contains(bucket) ? buckets[bucket] : 0;
    const uint64_t bar = (count * kBarWidth + most - 1) / most;
    std::string line = fmt::format("  {:>6} - {:<6} {:>9}  {}", duration_label(edges[bucket]),
                                   duration_label(edges[bucket + 1]), count,
                                   std::string(static_cast<size_t>(bar), '#'));
    out += line.erase(line.find_last_not_of(' ') + 1) + "\n";
  }
  return out;
}

}  // namespace

uint64_t LatencySeries::percentile(double p) const {
  if (samples.empty()) return 0;
  const auto rank = static_cast<size_t>(p * static_cast<double>(samples.size()) + 0.999999);
  return samples[std::clamp<size_t>(rank, 1, samples.size()) - 1];
}

std::vector<LatencySeries> measure_latencies(const TraceFile& file,
                                             const std::vector<size_t>& selected) {
  std::vector<LatencySeries> series = {
      {"spte fault", "kvm_page_fault -> kvm_page_fault_fixed", {}},
      {"invalidation", "mmu_notifier_invalidate_range_start -> _end", {}},
      {"PTL hold", "ptl_lock -> ptl_unlock", {}},
      {"TLB shootdown", "tlb_flush -> its last tlb_flush_ack", {}},
      {"vCPU exit", "kvm_exit -> kvm_entry", {}},
  };
  Measurer measurer(series);
  const std::vector<Event>& events = file.snapshot.events;
  size_t next = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    const bool counts = next < selected.size() && selected[next] == i;
    if (counts) ++next;
    measurer.add(events[i], counts);
  }
  measurer.finish();
  for (LatencySeries& one : series) std::sort(one.samples.begin(), one.samples.end());
  return series;
}

std::string format_latencies(const std::vector<LatencySeries>& series) {
  Table table({{"what", "", false, true},
               {"count", "spans measured"},
               {"min", "shortest, microseconds"},
               {"p50", "median, microseconds"},
               {"p99", "99th percentile, microseconds"},
               {"max", "longest, microseconds"},
               {"span", "", false, true}});
  for (const LatencySeries& one : series) {
    const bool any = !one.samples.empty();
    table.add_row({one.name, std::to_string(one.samples.size()),
                   any ? microseconds(one.samples.front()) : "-",
                   any ? microseconds(one.percentile(0.50)) : "-",
                   any ? microseconds(one.percentile(0.99)) : "-",
                   any ? microseconds(one.samples.back()) : "-", one.span});
  }
  std::string out = "\nlatencies:\n" + table.format(0);
  for (const LatencySeries& one : series) {
    if (!one.samples.empty()) out += histogram(one);
  }
  return out;
}

}  // namespace sptelab::trace
