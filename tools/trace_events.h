// --trace-events N: the size of each thread's trace ring, shared by the
// commands that record traces (run, race).
#pragma once

#include <bit>
#include <cstdint>
#include <optional>

#include "tools/options.h"
#include "trace/trace.h"

namespace sptelab::tools {

// The ring sizes trace/ accepts: 2^10 to 2^26 events (48 bytes each, so at
// most 3 GiB per thread).
inline constexpr uint64_t kMinTraceEvents = uint64_t{1} << 10;
inline constexpr uint64_t kMaxTraceEvents = uint64_t{1} << 26;

// Sets the ring size of the threads created from now on to --trace-events
// N, rounded up to a power of two; without the option, to `fallback_log2`
// (none: the trace layer's default stays).
inline void apply_trace_events_option(const Options& options,
                                      std::optional<unsigned> fallback_log2) {
  if (!options.value("trace-events")) {
    if (fallback_log2) trace::set_ring_capacity_log2(*fallback_log2);
    return;
  }
  const uint64_t events =
      unsigned_option(options, "trace-events", 0, kMinTraceEvents, kMaxTraceEvents);
  trace::set_ring_capacity_log2(static_cast<size_t>(std::bit_width(std::bit_ceil(events)) - 1));
}

}  // namespace sptelab::tools
