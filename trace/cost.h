// What tracing costs per event, for `sptelab bench` and the benchmarks: the
// emit fast path is one clock read, a struct copy into the thread's ring
// and a release store of the ring head.
#pragma once

#include <cstdint>

namespace sptelab::trace {

struct EmitCost {
  double enabled_ns = 0;   // per emit() while tracing is on
  double disabled_ns = 0;  // per emit() while tracing is off (one relaxed load)
  uint64_t events = 0;     // emits timed in each state
};

// Times `events` emits in each state on a thread of its own, whose ring is
// emptied afterwards so no session sees them. Tracing is switched on and
// off for the measurement and left as it was: call it while no traced run
// is going on.
EmitCost measure_emit_cost(uint64_t events = 1000000);

}  // namespace sptelab::trace
