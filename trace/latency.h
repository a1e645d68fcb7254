// Latencies in a trace, like the tables `perf kvm stat` ends with: how long
// spte faults, invalidations, page-table-lock holds, TLB shootdowns and vCPU
// exits took, as percentiles and a power-of-two histogram (trace --summary).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trace/file.h"

namespace sptelab::trace {

struct LatencySeries {
  std::string name;                     // "spte fault"
  std::string span;                     // "kvm_page_fault -> kvm_page_fault_fixed"
  std::vector<uint64_t> samples;        // nanoseconds, sorted
  uint64_t percentile(double p) const;  // nearest rank; 0 when empty
};

// One series per measured thing, each in the order above. A span counts
// when the event that opens it is among `selected` (indexes into
// file.snapshot.events, ascending); its closing event is looked for on the
// same thread whether selected or not. Spans still open at the trace's end
// are left out.
std::vector<LatencySeries> measure_latencies(const TraceFile& file,
                                             const std::vector<size_t>& selected);

// A table (count, min, p50, p99, max in microseconds), then a histogram per
// series with samples.
std::string format_latencies(const std::vector<LatencySeries>& series);

}  // namespace sptelab::trace
