#include "trace/cost.h"

#include <chrono>
#include <thread>

#include "trace/trace.h"

namespace sptelab::trace {
namespace {

double time_emits(uint64_t events) {
  auto begin = std::chrono::steady_clock::now();
  for (uint64_t i = 0; i < events; ++i) emit(Kind::kCheckpoint, i, i ^ 0x5a5a);
  auto end = std::chrono::steady_clock::now();
  return std::chrono::duration<double, std::nano>(end - begin).count() /
         static_cast<double>(events);
}

}  // namespace

EmitCost measure_emit_cost(uint64_t events) {
  EmitCost cost;
  cost.events = events == 0 ? 1 : events;
  bool was_enabled = enabled();
  std::thread worker([&cost] {
    name_this_thread("emit-cost");
    enable(false);
    cost.disabled_ns = time_emits(cost.events);
    enable(true);
    time_emits(1000);  // the ring's pages are touched once before timing
    cost.enabled_ns = time_emits(cost.events);
    detail::this_thread_ring().clear();
  });
  worker.join();
  enable(was_enabled);
  return cost;
}

}  // namespace sptelab::trace
