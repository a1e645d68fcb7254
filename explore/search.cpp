#include "explore/search.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <random>

#include "base/error.h"
#include "base/spinlock.h"
#include "trace/trace.h"

namespace sptelab::explore {
namespace {

using Mask = uint64_t;
constexpr size_t kMaxThreads = 64;

Mask bit(size_t thread) {
  return Mask{1} << thread;
}

// Whether choosing `next` after `current` preempts: `current` could have
// gone on.
bool preempts(const std::vector<sched::ThreadState>& threads, size_t current, size_t next) {
  return current != sched::kNoThread && next != current && threads[current].enabled;
}

bool switches_from_blocked(const std::vector<sched::ThreadState>& threads, size_t current,
                           size_t next) {
  return current != sched::kNoThread && next != current && !threads[current].enabled &&
         !threads[current].finished;
}

// The thread that goes on without a preemption: the current one if it can,
// else the lowest-numbered runnable one.
size_t default_choice(const std::vector<sched::ThreadState>& threads, size_t current) {
  if (current != sched::kNoThread && threads[current].enabled) return current;
  for (size_t t = 0; t < threads.size(); ++t) {
    if (threads[t].enabled) return t;
  }
  return 0;
}

// One choice point of the schedule being explored.
struct Node {
  std::vector<sched::Step> pending;  // each thread's next step
  Mask enabled = 0;
  size_t current = sched::kNoThread;
  uint32_t chosen = 0;
  Mask done = 0;   // alternatives whose subtrees are explored or under way
  Mask sleep = 0;  // threads asleep here
  int preemptions_before = 0;
  bool frozen = false;  // not branched (sleep-set blocked or over the bound)
};

// The depth-first chooser: replays the stack's choices, then extends it with
// the non-preempting default, computing sleep sets on the way.
//
// Sleep sets under a preemption bound. A sleeper t stands for "a schedule
// that takes t's step here, after steps independent of it, reorders one
// already explored: the sibling, at the node where t fell asleep, in which
// t went first" (Godefroid). Without a bound that is the whole argument.
// With one, the reordering must be within the bound too, or it was never
// run; moving t's step forward adds a switch to t and one away from t, and
// removes the switches around its old place. Counting them (the "bound
// dependences" of Coons, Musuvathi and McKinley, "Bounded partial-order
// reduction", OOPSLA 2013):
//  - t was the thread running at that node, which the sibling preempted:
//    continuing it there is free, leaving it after its step costs at most
//    the sibling's preemption. The reordering never costs more; t sleeps.
//  - Any other explored alternative: when t goes on running after its
//    step, the reordering costs one preemption more. At the start, with no
//    thread running yet, "the remapper runs, the vCPU preempts it and runs
//    on" has one preemption, its reordering "the vCPU starts, the remapper
//    runs, the vCPU runs on" two: at bound 1 neither was run. Such a t is
//    not put to sleep.
//  - A switch away from a blocked thread is free, but with t's step moved
//    forward that thread may not be blocked (a lock released inside a step
//    is no scheduling point), and leaving it would cost a preemption: every
//    sleeper wakes where the running thread is blocked.
// Moving t's whole run forward instead covers the second case when every
// step of the run is independent of the steps it moves over and the run
// ends preempted or finished; tried on two coherence cells it ran 3 to
// 7 % fewer schedules than this, not worth its bookkeeping.
class DfsChooser final : public sched::Chooser {
 public:
  DfsChooser(std::vector<Node>& stack, int bound, bool reduction)
      : stack_(stack), bound_(bound), reduction_(reduction) {}

  size_t choose(const std::vector<sched::ThreadState>& threads, size_t current) override {
    if (threads.size() > kMaxThreads) throw_internal("explore: more than 64 threads");
    const size_t depth = depth_++;
    if (depth < stack_.size()) return replay(stack_[depth], threads, current);
    Node node = make_node(threads, current);
    node.chosen = static_cast<uint32_t>(pick(node, threads, current));
    node.done = bit(node.chosen);
    preemptions_ += preempts(threads, current, node.chosen);
    stack_.push_back(std::move(node));
    return stack_.back().chosen;
  }

  bool pruned() const { return frozen_tail_ && blocked_by_sleep_; }
  int preemptions() const { return preemptions_; }

 private:
  size_t replay(const Node& node, const std::vector<sched::ThreadState>& threads, size_t current) {
    if (!threads[node.chosen].enabled || node.current != current) {
      throw_internal(
          "explore: the system did not repeat a schedule's prefix (nondeterministic code "
          "between scheduling points)");
    }
    preemptions_ += preempts(threads, current, node.chosen);
    return node.chosen;
  }

  Node make_node(const std::vector<sched::ThreadState>& threads, size_t current) {
    Node node;
    node.current = current;
    node.preemptions_before = preemptions_;
    for (size_t i = 0; i < threads.size(); ++i) {
      node.pending.push_back(threads[i].pending);
      if (threads[i].enabled) node.enabled |= bit(i);
    }
    const bool blocked =
        current != sched::kNoThread && !threads[current].enabled && !threads[current].finished;
    if (reduction_ && !stack_.empty() && !blocked) node.sleep = inherited_sleep(stack_.back());
    return node;
  }

  // The parent's sleepers, and its running thread if the parent's subtree
  // in which it went on is explored, sleep here unless the step just taken
  // is dependent with theirs (see the class comment for why only those).
  static Mask inherited_sleep(const Node& parent) {
    Mask candidates = parent.sleep & ~bit(parent.chosen);
    if (parent.current != sched::kNoThread && parent.current != parent.chosen) {
      candidates |= parent.done & bit(parent.current);
    }
    Mask sleep = 0;
    const sched::Step& taken = parent.pending[parent.chosen];
    for (size_t t = 0; t < parent.pending.size(); ++t) {
      if ((candidates & bit(t)) && !sched::dependent(parent.pending[t], taken)) sleep |= bit(t);
    }
    return sleep;
  }

  size_t pick(Node& node, const std::vector<sched::ThreadState>& threads, size_t current) {
    if (!frozen_tail_) {
      const Mask awake = node.enabled & ~node.sleep;
      if (current != sched::kNoThread && (awake & bit(current))) return current;
      for (size_t t = 0; t < threads.size(); ++t) {
        if (!(awake & bit(t))) continue;
        if (preemptions_ + preempts(threads, current, t) <= bound_) return t;
      }
      // Every runnable thread sleeps (a reordering of an explored schedule)
      // or would exceed the bound: finish without branching.
      frozen_tail_ = true;
      blocked_by_sleep_ = awake == 0;
    }
    node.frozen = true;
    if (current != sched::kNoThread && (node.enabled & bit(current))) return current;
    return static_cast<size_t>(std::countr_zero(node.enabled));
  }

  std::vector<Node>& stack_;
  int bound_;
  bool reduction_;
  size_t depth_ = 0;
  int preemptions_ = 0;
  bool frozen_tail_ = false;
  bool blocked_by_sleep_ = false;
};

// Moves the stack to the next unexplored schedule within the bound; false
// when there is none.
bool backtrack(std::vector<Node>& stack, int bound) {
  while (!stack.empty()) {
    Node& node = stack.back();
    if (!node.frozen) {
      const Mask todo = node.enabled & ~node.done & ~node.sleep;
      for (size_t t = 0; t < node.pending.size(); ++t) {
        if (!(todo & bit(t))) continue;
        const bool switch_away = node.current != sched::kNoThread && t != node.current &&
                                 (node.enabled & bit(node.current));
        if (node.preemptions_before + switch_away > bound) continue;
        node.done |= bit(t);
        node.chosen = static_cast<uint32_t>(t);
        return true;
      }
    }
    stack.pop_back();
  }
  return false;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The choices of a stack, as a schedule.
Schedule schedule_of(const std::vector<Node>& stack) {
  Schedule schedule;
  for (const Node& node : stack) schedule.push_back(node.chosen);
  return schedule;
}

}  // namespace

SearchResult search_bounded(const RunFn& run, const SearchOptions& options) {
  if (options.bound < 0) throw_bad_input("explore: the preemption bound must be 0 or more");
  const auto start = std::chrono::steady_clock::now();
  sched::StayOnOneCpu one_cpu;  // the executions' threads hand over on one CPU
  SearchResult result;
  for (int bound = 0; bound <= options.bound; ++bound) {
    std::vector<Node> stack;
    do {
      if (result.executions >= options.max_executions) {
        result.complete = false;
        result.seconds = seconds_since(start);
        return result;
      }
      DfsChooser chooser(stack, bound, options.reduction);
      Outcome outcome = run(chooser);
      ++result.executions;
      result.pruned += chooser.pruned();
      if (outcome.violated) {
        result.violated = true;
        result.outcome = std::move(outcome);
        result.schedule = schedule_of(stack);
        result.preemptions = chooser.preemptions();
        result.seconds = seconds_since(start);
        return result;
      }
    } while (backtrack(stack, bound));
  }
  result.seconds = seconds_since(start);
  return result;
}

namespace {

// PCT: distinct random priorities, the highest-priority runnable thread runs;
// at each of depth-1 random steps the running thread drops below all others.
class PctChooser final : public sched::Chooser {
 public:
  PctChooser(size_t threads, std::vector<uint64_t> change_points, std::mt19937_64& random)
      : change_points_(std::move(change_points)) {
    for (size_t i = 0; i < threads; ++i) priority_.push_back(static_cast<int64_t>(i + threads));
    std::shuffle(priority_.begin(), priority_.end(), random);
  }

  size_t choose(const std::vector<sched::ThreadState>& threads, size_t current) override {
    ++step_;
    if (current != sched::kNoThread &&
        std::find(change_points_.begin(), change_points_.end(), step_) != change_points_.end()) {
      priority_[current] = lowest_--;
    }
    size_t best = sched::kNoThread;
    for (size_t t = 0; t < threads.size(); ++t) {
      if (threads[t].enabled && (best == sched::kNoThread || priority_[t] > priority_[best])) {
        best = t;
      }
    }
    preemptions_ += preempts(threads, current, best);
    schedule_.push_back(static_cast<uint32_t>(best));
    return best;
  }

  const Schedule& schedule() const { return schedule_; }
  int preemptions() const { return preemptions_; }
  uint64_t steps() const { return step_; }

 private:
  std::vector<int64_t> priority_;
  std::vector<uint64_t> change_points_;
  int64_t lowest_ = 0;
  uint64_t step_ = 0;
  int preemptions_ = 0;
  Schedule schedule_;
};

}  // namespace

SearchResult search_pct(const RunFn& run, const PctOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  sched::StayOnOneCpu one_cpu;  // the executions' threads hand over on one CPU
  std::mt19937_64 random(options.seed);
  SearchResult result;
  // The first run (no change point) measures how many steps a run takes.
  uint64_t steps = 1;
  size_t threads = 0;
  {
    struct Counter final : sched::Chooser {
      size_t choose(const std::vector<sched::ThreadState>& view, size_t current) override {
        threads = view.size();
        ++steps;
        return default_choice(view, current);
      }
      size_t threads = 0;
      uint64_t steps = 0;
    } counter;
    run(counter);
    steps = std::max<uint64_t>(counter.steps, 1);
    threads = counter.threads;
  }
  for (uint64_t i = 0; i < options.runs; ++i) {
    std::vector<uint64_t> change_points;
    std::uniform_int_distribution<uint64_t> at(1, steps);
    for (int d = 1; d < options.depth; ++d) change_points.push_back(at(random));
    PctChooser chooser(threads, std::move(change_points), random);
    Outcome outcome = run(chooser);
    ++result.executions;
    if (outcome.violated) {
      result.violated = true;
      result.outcome = std::move(outcome);
      result.schedule = chooser.schedule();
      result.preemptions = chooser.preemptions();
      break;
    }
  }
  result.seconds = seconds_since(start);
  return result;
}

namespace {

class ReplayChooser final : public sched::Chooser {
 public:
  ReplayChooser(const Schedule& schedule, std::vector<ReplayStep>* steps)
      : schedule_(schedule), steps_(steps) {}

  size_t choose(const std::vector<sched::ThreadState>& threads, size_t current) override {
    size_t next = index_ < schedule_.size() ? schedule_[index_] : sched::kNoThread;
    if (next != sched::kNoThread && (next >= threads.size() || !threads[next].enabled)) {
      if (mismatch_.empty()) {
        mismatch_ = fmt::format(
            "the schedule's choice {} (thread {}) cannot run at that point: the schedule does "
            "not belong to this cell or to this build",
            index_ + 1, next);
      }
      next = sched::kNoThread;
    }
    // Past the schedule's end (or off it): the non-preempting default.
    if (next == sched::kNoThread) next = default_choice(threads, current);
    ++index_;
    const bool preempted = preempts(threads, current, next);
    preemptions_ += preempted;
    // The chooser runs on the thread that has just announced its step.
    atomic_.resize(threads.size(), false);
    if (current != sched::kNoThread) atomic_[current] = AtomicContext::active();
    if (steps_) {
      ReplayStep step{static_cast<uint32_t>(next), threads[next].pending, trace::detail::now_ns()};
      step.step_atomic = atomic_[next];
      if (preempted) {
        step.preempted = current;
        step.preempted_step = threads[current].pending;
        step.held_atomic = atomic_[current];
      } else if (switches_from_blocked(threads, current, next)) {
        step.blocked = current;
        step.blocked_step = threads[current].pending;
        step.held_atomic = atomic_[current];
      }
      steps_->push_back(step);
    }
    return next;
  }

  int preemptions() const { return preemptions_; }
  const std::string& mismatch() const { return mismatch_; }

 private:
  const Schedule& schedule_;
  std::string mismatch_;
  std::vector<ReplayStep>* steps_;
  std::vector<bool> atomic_;  // per thread: inside a spinlock at its pending step
  size_t index_ = 0;
  int preemptions_ = 0;
};

}  // namespace

Outcome replay(const RunFn& run, const Schedule& schedule, std::vector<ReplayStep>* steps,
               int* preemptions) {
  sched::StayOnOneCpu one_cpu;  // as in the search
  ReplayChooser chooser(schedule, steps);
  Outcome outcome = run(chooser);
  if (!chooser.mismatch().empty()) throw_bad_input("explore --replay: " + chooser.mismatch());
  if (preemptions) *preemptions = chooser.preemptions();
  return outcome;
}

}  // namespace sptelab::explore
