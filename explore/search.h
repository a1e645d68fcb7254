// The search over schedules. A schedule is the list of thread indexes chosen
// at successive scheduling points; the code is re-run from scratch for each.
//
//  - Exhaustive, preemption-bounded (iterative context bounding, as CHESS):
//    every schedule with at most `bound` preemptions (switches away from a
//    thread that could have gone on), bound 0 first, then 1, ..., so the
//    first violation found has the fewest preemptions.
//  - Sleep sets (Godefroid's partial-order reduction), restricted so that
//    the bound stays exact: after the subtree in which the running thread t
//    went on has been explored, t sleeps in the subtrees where another
//    thread preempts it, until a step dependent with t's runs; a schedule
//    in which every runnable thread sleeps only reorders independent steps
//    of one already explored, with no more preemptions, and is not branched
//    further ("pruned"). Why not every explored alternative sleeps:
//    search.cpp, DfsChooser.
//  - PCT (Burckhardt et al., ASPLOS 2010): random priorities with d-1
//    priority-change points, for bugs deeper than the bound.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "base/sched.h"
#include "explore/scenario.h"

namespace sptelab::explore {

using Schedule = std::vector<uint32_t>;

// Runs one execution of the system under the chooser; returns its outcome.
using RunFn = std::function<Outcome(sched::Chooser&)>;

struct SearchOptions {
  int bound = 2;
  bool reduction = true;
  uint64_t max_executions = 200000;  // per cell; a search that hits it is incomplete
};

struct SearchResult {
  bool violated = false;
  Outcome outcome;    // of the violating schedule
  Schedule schedule;  // the violating schedule (choices in order)
  int preemptions = 0;
  uint64_t executions = 0;  // schedules run
  uint64_t pruned = 0;      // of which sleep-set blocked (not branched further)
  bool complete = true;     // false: max_executions stopped the search
  double seconds = 0;
};

SearchResult search_bounded(const RunFn& run, const SearchOptions& options);

struct PctOptions {
  uint64_t runs = 1000;
  int depth = 3;  // d: bugs of depth d are found with probability >= 1/(n k^(d-1))
  uint64_t seed = 1;
};
SearchResult search_pct(const RunFn& run, const PctOptions& options);

// Re-runs one schedule; past its end the default (non-preempting) policy
// continues. `steps`, if given, receives (thread, step) for every choice.
struct ReplayStep {
  uint32_t thread = 0;
  sched::Step step;
  uint64_t ts_ns = 0;  // when the choice was made (trace clock)
  // A preemption: the thread held back by this choice and the step it was
  // about to take (sched::kNoThread: the choice preempted nobody).
  size_t preempted = sched::kNoThread;
  sched::Step preempted_step;
  // A switch away from a thread that cannot go on (it waits for a lock):
  // that thread and the step it waits to take.
  size_t blocked = sched::kNoThread;
  sched::Step blocked_step;
  // Whether the thread held a spinlock (the PTL, mmu_lock, a TLB's lock)
  // when it announced `step`, and the held-back thread when it announced
  // its step: a real thread delayed there would hold off the others.
  bool step_atomic = false;
  bool held_atomic = false;
};
Outcome replay(const RunFn& run, const Schedule& schedule, std::vector<ReplayStep>* steps = nullptr,
               int* preemptions = nullptr);

}  // namespace sptelab::explore
