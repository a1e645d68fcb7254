#include "base/sched.h"

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "base/error.h"
#include "base/handoff.h"
#include "base/inject.h"

namespace sptelab::sched {

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kStart:
      return "start";
    case Kind::kPoint:
      return "point";
    case Kind::kAcquire:
      return "acquire";
    case Kind::kAcquireShared:
      return "acquire-shared";
    case Kind::kRead:
      return "read";
    case Kind::kWrite:
      return "write";
    case Kind::kSpin:
      return "spin";
  }
  return "unknown";
}

const char* end_reason_name(EndReason reason) {
  switch (reason) {
    case EndReason::kCompleted:
      return "completed";
    case EndReason::kDeadlock:
      return "deadlock";
    case EndReason::kStepLimit:
      return "step-limit";
  }
  return "unknown";
}

bool dependent(const Step& a, const Step& b) {
  if (a.kind == Kind::kStart || b.kind == Kind::kStart) return false;  // touches nothing yet
  if (a.object == nullptr || b.object == nullptr) return true;
  if (a.object != b.object) return false;
  const bool a_reads = a.kind == Kind::kRead || a.kind == Kind::kAcquireShared;
  const bool b_reads = b.kind == Kind::kRead || b.kind == Kind::kAcquireShared;
  return !(a_reads && b_reads);
}

namespace detail {

// The OS threads an Execution's threads run on. Creating and joining three
// threads cost about 350 us here, as much as a whole schedule of a cell, so
// they are kept for the next execution. A worker runs one job at a time and
// says so on its own `done`, which outlives every Execution: run() must not
// free its State while a worker may still be inside a semaphore release.
//
// An execution's workers all run on one CPU, the one its caller runs on.
// Exactly one of them runs at a time, so a second CPU buys nothing, and a
// hand-over to a thread sleeping on another CPU costs an inter-processor
// interrupt, which in a VM is an exit to the host: with the threads spread
// over both CPUs a cell spent 86% of its time in futex calls (14 us each),
// and pinned to one CPU the same search ran 3.2 times faster (22.0 s ->
// 6.9 s, start-end+seq-count/cow/coherence). Following the caller keeps
// two searches in one machine apart: the kernel balances the callers, and
// their workers follow at the next execution.
class WorkerPool {
 public:
  static constexpr int kAnyCpu = -1;

  struct Worker {
    Handoff start;
    Handoff done;
    std::function<void()> job;
    pthread_t thread{};
    int cpu = kAnyCpu;  // the CPU it is pinned to
  };

  static WorkerPool& instance() {
    // Never destroyed: idle workers block in `start` until the process ends.
    static WorkerPool* pool = new WorkerPool;
    return *pool;
  }

  // An idle worker (one already on `cpu` if there is one), pinned to `cpu`.
  Worker* take(int cpu) {
    Worker* worker = take_idle(cpu);
    if (worker == nullptr) worker = start_worker();
    pin(*worker, cpu);
    return worker;
  }

  void give_back(Worker* worker) {
    std::lock_guard lock(mutex_);
    idle_.push_back(worker);
  }

 private:
  Worker* take_idle(int cpu) {
    std::lock_guard lock(mutex_);
    if (idle_.empty()) return nullptr;
    auto on_cpu = std::find_if(idle_.rbegin(), idle_.rend(),
                               [cpu](const Worker* worker) { return worker->cpu == cpu; });
    auto chosen = on_cpu != idle_.rend() ? std::prev(on_cpu.base()) : std::prev(idle_.end());
    Worker* worker = *chosen;
    idle_.erase(chosen);
    return worker;
  }

  static Worker* start_worker() {
    auto* worker = new Worker;  // owned by the pool for the process's life
    std::thread thread([worker] {
      for (;;) {
        worker->start.acquire();
        worker->job();
        worker->job = nullptr;
        worker->done.release();
      }
    });
    worker->thread = thread.native_handle();
    thread.detach();
    return worker;
  }

  // Best effort: where the affinity cannot be set (a cpuset that forbids
  // it), the worker runs wherever the kernel puts it, only slower.
  static void pin(Worker& worker, int cpu) {
    if (cpu == kAnyCpu || worker.cpu == cpu) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(worker.thread, sizeof(set), &set) == 0) worker.cpu = cpu;
  }

  std::mutex mutex_;
  std::vector<Worker*> idle_;
};

struct ThreadSlot {
  Execution::State* state = nullptr;
  size_t index = 0;
  std::string name;
  std::function<void()> body;
  Handoff go;
  bool spin_blocked = false;  // a failed wait, until another thread steps
  std::exception_ptr error;
  WorkerPool::Worker* worker = nullptr;  // while run() runs
};

thread_local ThreadSlot* current_slot = nullptr;

}  // namespace detail

bool active() {
  return detail::current_slot != nullptr;
}

using detail::ThreadSlot;

struct Execution::State {
  State(Chooser& chooser_in, uint64_t max_steps_in)
      : chooser(chooser_in), max_steps(max_steps_in) {}

  Chooser& chooser;
  uint64_t max_steps;
  uint64_t steps = 0;
  std::vector<std::unique_ptr<ThreadSlot>> slots;
  std::vector<ThreadState> view;  // what the chooser sees
  std::atomic<bool> abandoned{false};
  bool unwind = false;  // abandoned threads throw Abandoned (else they run on freely)
  EndReason reason = EndReason::kCompleted;
  std::atomic<size_t> finished{0};
  Handoff all_done;

  void refresh_enabled() {
    compute_enabled();
    // A failed wait with no other thread able to step: look again (a retry
    // may succeed now; a wait that never can ends at the step limit).
    bool any_enabled = false;
    for (const ThreadState& thread : view) any_enabled |= thread.enabled;
    if (any_enabled) return;
    for (auto& slot : slots) slot->spin_blocked = false;
    compute_enabled();
  }

  void compute_enabled() {
    for (size_t i = 0; i < slots.size(); ++i) {
      ThreadState& thread = view[i];
      if (thread.finished) {
        thread.enabled = false;
      } else if (thread.pending.kind == Kind::kSpin) {
        thread.enabled = !slots[i]->spin_blocked;
      } else {
        thread.enabled = !thread.pending.ready || thread.pending.ready(thread.pending.object);
      }
    }
  }

  // Lets every thread run freely so that each unwinds at its next
  // scheduling point and releases what it holds.
  void abandon(EndReason why, size_t self) {
    reason = why;
    unwind = why == EndReason::kDeadlock;
    abandoned.store(true, std::memory_order_release);
    for (size_t i = 0; i < slots.size(); ++i) {
      if (i != self && !view[i].finished) slots[i]->go.release();
    }
  }

  // Picks the next thread from thread `self` (which just announced a step
  // or finished) and hands over to it. Returns the chosen thread, or
  // slots.size() when the execution was abandoned.
  size_t hand_over(size_t self) {
    refresh_enabled();
    bool any_enabled = false;
    for (const ThreadState& thread : view) any_enabled |= thread.enabled;
    if (!any_enabled || steps >= max_steps) {
      abandon(any_enabled ? EndReason::kStepLimit : EndReason::kDeadlock, self);
      return slots.size();
    }
    size_t next = chooser.choose(view, self);
    if (next >= view.size() || !view[next].enabled) {
      throw_internal("explore: the chooser picked a thread that cannot run");
    }
    ++steps;
    // Another thread's progress ends a failed wait; another failed wait is
    // not progress (two spinners must not keep each other runnable while
    // the thread they wait for never gets chosen).
    if (view[next].pending.kind != Kind::kSpin) {
      for (size_t i = 0; i < slots.size(); ++i) {
        if (i != next) slots[i]->spin_blocked = false;
      }
    }
    if (next != self) slots[next]->go.release();
    return next;
  }

  void finish(ThreadSlot& slot) {
    detail::current_slot = nullptr;
    const bool last = finished.fetch_add(1, std::memory_order_acq_rel) + 1 == slots.size();
    if (abandoned.load(std::memory_order_acquire)) {
      if (last) all_done.release();
      return;
    }
    view[slot.index].finished = true;
    if (last) {
      all_done.release();
      return;
    }
    hand_over(slot.index);
  }

  void thread_main(ThreadSlot& slot) {
    detail::current_slot = &slot;
    slot.go.acquire();
    if (!abandoned.load(std::memory_order_acquire)) {
      try {
        slot.body();
      } catch (const Abandoned&) {
      } catch (...) {
        slot.error = std::current_exception();
      }
    }
    finish(slot);
  }
};

namespace detail {

namespace {

// After a thread is resumed: an abandoned execution unwinds it, unless it is
// already unwinding (a destructor passing a scheduling point).
void unwind_if_abandoned(const Execution::State& state) {
  if (state.abandoned.load(std::memory_order_acquire) && state.unwind &&
      std::uncaught_exceptions() == 0) {
    throw Abandoned();
  }
}

}  // namespace

void point(const Step& step) {
  ThreadSlot& slot = *current_slot;
  Execution::State& state = *slot.state;
  if (state.abandoned.load(std::memory_order_acquire)) {
    unwind_if_abandoned(state);
    return;
  }
  state.view[slot.index].pending = step;
  size_t next = state.hand_over(slot.index);
  if (next != slot.index && next != state.slots.size()) slot.go.acquire();
  unwind_if_abandoned(state);
}

void spin(const void* object, const char* label) {
  ThreadSlot& slot = *current_slot;
  if (slot.state->abandoned.load(std::memory_order_acquire)) {
    unwind_if_abandoned(*slot.state);
    std::this_thread::yield();
    return;
  }
  slot.spin_blocked = true;
  detail::point(Step{.kind = Kind::kSpin, .object = object, .label = label});
}

}  // namespace detail

void relax(const void* object, const char* label) {
  if (active()) {
    detail::spin(object, label);
  } else {
    std::this_thread::yield();
  }
}

struct StayOnOneCpu::Saved {
  cpu_set_t affinity;
};

StayOnOneCpu::StayOnOneCpu() {
  auto saved = std::make_unique<Saved>();
  const int cpu = sched_getcpu();
  if (cpu < 0 || sched_getaffinity(0, sizeof(saved->affinity), &saved->affinity) != 0) return;
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(cpu, &one);
  if (sched_setaffinity(0, sizeof(one), &one) == 0) saved_ = std::move(saved);
}

StayOnOneCpu::~StayOnOneCpu() {
  if (saved_) sched_setaffinity(0, sizeof(saved_->affinity), &saved_->affinity);
}

Execution::Execution(Chooser& chooser, uint64_t max_steps)
    : state_(std::make_unique<State>(chooser, max_steps)) {}

Execution::~Execution() = default;

size_t Execution::add_thread(std::string name, std::function<void()> body) {
  auto slot = std::make_unique<ThreadSlot>();
  slot->state = state_.get();
  slot->index = state_->slots.size();
  slot->name = std::move(name);
  slot->body = std::move(body);
  state_->slots.push_back(std::move(slot));
  state_->view.push_back(ThreadState{.pending = Step{.kind = Kind::kStart, .label = "start"}});
  return state_->slots.size() - 1;
}

const std::string& Execution::thread_name(size_t index) const {
  return state_->slots.at(index)->name;
}

EndReason Execution::run() {
  State& state = *state_;
  if (state.slots.empty()) return EndReason::kCompleted;
  // Injection points dispatch (and so schedule) only while something is armed.
  inject::detail::armed_count.fetch_add(1, std::memory_order_relaxed);
  const int cpu = sched_getcpu();
  for (auto& slot : state.slots) {
    slot->worker = detail::WorkerPool::instance().take(cpu < 0 ? detail::WorkerPool::kAnyCpu : cpu);
    slot->worker->job = [&state, raw = slot.get()] { state.thread_main(*raw); };
    slot->worker->start.release();
  }
  state.refresh_enabled();
  size_t first = state.chooser.choose(state.view, kNoThread);
  if (first >= state.view.size() || !state.view[first].enabled) {
    throw_internal("explore: the chooser picked a thread that cannot run");
  }
  ++state.steps;
  state.slots[first]->go.release();
  state.all_done.acquire();
  for (auto& slot : state.slots) {
    slot->worker->done.acquire();
    detail::WorkerPool::instance().give_back(slot->worker);
    slot->worker = nullptr;
  }
  inject::detail::armed_count.fetch_sub(1, std::memory_order_relaxed);
  return state.reason;
}

std::exception_ptr Execution::error(size_t index) const {
  return state_->slots.at(index)->error;
}

uint64_t Execution::steps() const {
  return state_->steps;
}

}  // namespace sptelab::sched
