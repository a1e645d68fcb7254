// Delay injection for race runs: widens the race windows at the named points
// so that a racy scheme shows its failure within seconds. Each armed point
// delays a thread of the given role, by a busy-wait (sleeping is far too
// coarse on these machines) or until the other side makes progress, with
// some probability, drawn from a per-thread
// generator seeded from the run's seed, so a run can be repeated.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/inject.h"
#include "scenarios/gate.h"

namespace sptelab::scenarios {

// What ends a delay early. A fixed delay only opens a window; on a loaded
// machine the thread that should run inside it may not be scheduled at all.
// Waiting for the other side to make progress (yielding meanwhile) puts it
// in the window whatever the scheduler does, up to the delay's bound.
enum class DelayUntil : uint8_t {
  kTime,           // the full delay
  kGuestProgress,  // a vCPU faulted or finished work since the delay began
  // A vCPU fault finished (an spte installed, or the fault told to retry)
  // since the delay began. No wait at all where no fault can come: the
  // point's page still has its spte (ProgressSources::fault_can_come).
  // Finished, not begun: a fault that has only begun has not read the PTE,
  // and the operation going on would change it first; and not work done,
  // which a vCPU busy on its other pages reports within nanoseconds.
  kGuestFault,
  kHostProgress,  // the host invalidated something since the delay began
  kPassed,        // a thread of `until_role` passed `until_point` since it began
};

struct DelayPoint {
  inject::Point point;
  Role role;           // only threads of this role are delayed
  uint32_t delay_ns;   // length, or bound when waiting for progress
  uint32_t per_mille;  // probability of delaying, out of 1000
  DelayUntil until = DelayUntil::kTime;
  // With kPassed: the step of the other side that ends the wait (a guided
  // race takes it from the counterexample: the last point the thread that
  // ran instead passed before the held one went on).
  inject::Point until_point = inject::Point::kHostBeforePtl;
  Role until_role = Role::kNone;
};

// Monotonic counters the progress delays watch (set by the race runner).
struct ProgressSources {
  std::function<uint64_t()> guest;
  std::function<uint64_t()> host;
  // kGuestFault: called as a delay begins, returns whether a fault has
  // finished since, not counting the retry of a fault already in flight
  // then (it read the invalidation state before the window opened: its
  // retry says nothing of the window, and the vCPU faults again).
  std::function<std::function<bool()>()> guest_fault_watch;
  std::function<bool(const inject::Context&)> fault_can_come;  // empty: always
};

// Defaults: one window per interleaving of scenarios/interleavings.h.
std::vector<DelayPoint> default_delays();
// For vCPUs that run natively (KVM native mode), which meet on their own
// the windows they can reach within nanoseconds: only the windows a vCPU
// reaches no faster than a fault's round trip (~37 us here) are held open,
// each until the vCPU's part in it is done.
std::vector<DelayPoint> native_delays();

// Parses "point=ns[@per_mille]" (e.g. "host_after_release=50000@500"): a
// fixed delay. Strict: NS a whole number of nanoseconds up to 4294967295
// (about 4.3 s), PER_MILLE one from 0 to 1000; no signs, spaces, exponents
// or trailing text. Error(kBadInput) naming what is wrong and the form.
DelayPoint parse_delay(const std::string& text);

// Something the runner itself must do at a point, before any delay there
// (coherence-lockfree folds the moved page's counters at the PTE switch).
struct PointObserver {
  inject::Point point;
  inject::Hook hook;
};

// Arms the points for its lifetime. No delay lasts past `deadline` (the
// run's time limit) or past a stop request (base/interrupt.h).
class DelayInjector {
 public:
  DelayInjector(
      std::vector<DelayPoint> points, uint64_t seed, ProgressSources progress = {},
      std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max(),
      std::vector<PointObserver> observers = {});
  ~DelayInjector();
  DelayInjector(const DelayInjector&) = delete;
  DelayInjector& operator=(const DelayInjector&) = delete;
  uint64_t delays_injected() const;

 private:
  std::vector<DelayPoint> points_;
  std::vector<inject::Point> armed_;
  // One pass counter per kPassed delay (index-aligned with points_; unused
  // for the others), bumped by the hook of its until_point.
  std::vector<std::unique_ptr<std::atomic<uint64_t>>> passes_;
  ProgressSources progress_;
  std::chrono::steady_clock::time_point deadline_;
};

// Splitmix64: small, seedable, good enough to spread delays.
inline uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Milliseconds of the steady clock since `start` (a run's first violation).
inline double ms_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

void spin_for_ns(uint64_t ns);

}  // namespace sptelab::scenarios
