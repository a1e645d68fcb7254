// The cooperative scheduler that `sptelab explore` runs the real emulator code
// under. The threads of one Execution are ordinary OS threads, but exactly one
// of them runs at a time: at every scheduling point (an injection point, a
// lock acquire, a declared shared load or store, a failed wait) the running
// thread announces the step it is about to take and a Chooser decides which
// thread takes the next step. A schedule is the sequence of those choices;
// nothing depends on wall-clock time, so a schedule replays exactly.
//
// The approach is CHESS's (Musuvathi and Qadeer, "Iterative context bounding
// for systematic testing of multithreaded programs", PLDI 2007): a thread
// that cannot go on (a held lock, a spin-wait on another thread's progress)
// is disabled, and a switch away from an enabled thread is a preemption.
//
// Outside an Execution every hook is one thread-local load.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace sptelab::sched {

enum class Kind : uint8_t {
  kStart,          // the thread has not run yet
  kPoint,          // a named place in a protocol (an injection point)
  kAcquire,        // takes a lock exclusively
  kAcquireShared,  // takes a reader-writer lock for reading
  kRead,           // a lockless load of shared state
  kWrite,          // a store or read-modify-write of shared state
  kSpin,           // a failed wait: runnable once another thread made progress (a
                   // step other than a failed wait), or when no other thread can step
};
const char* kind_name(Kind kind);

// The step a thread is about to take. `object` names what it touches
// (nullptr: anything, which makes it dependent with every step); `label` is
// a static string for timelines.
struct Step {
  Kind kind = Kind::kPoint;
  const void* object = nullptr;
  const char* label = "";
  uint64_t detail = 0;  // an address, gfn or pfn for timelines
  // Acquires: whether the lock can be taken now (nullptr: always).
  bool (*ready)(const void* object) = nullptr;
};

// Whether the order of two steps of different threads can matter. Steps on
// different objects commute; so do two reads (or two shared acquires) of the
// same object. A step without an object conflicts with everything.
bool dependent(const Step& a, const Step& b);

namespace detail {
void point(const Step& step);
void spin(const void* object, const char* label);
}  // namespace detail

// Whether the calling thread belongs to a running Execution. Out of line:
// GCC's UBSan reports a null load through the TLS wrapper of an extern
// thread_local read from another translation unit.
bool active();

// A scheduling point before `step` (no-op outside an Execution).
inline void point(const Step& step) {
  if (active()) detail::point(step);
}

// A failed wait inside a spin loop: under an Execution the thread is disabled
// until another thread has taken a step; elsewhere it yields the CPU.
void relax(const void* object = nullptr, const char* label = "spin");

// condition_variable::wait that, under an Execution, turns into a spin on the
// predicate so that the thread it waits for can be scheduled.
template <typename Lock, typename Predicate>
void wait(std::condition_variable& cv, Lock& lock, Predicate ready) {
  if (!active()) {
    cv.wait(lock, ready);
    return;
  }
  while (!ready()) {
    lock.unlock();
    detail::spin(&cv, "wait");
    lock.lock();
  }
}

// Thrown at a scheduling point when the Execution is abandoned after a
// deadlock, so that the threads unwind and release the locks they hold. (An
// execution that hits its step limit is not unwound: its threads run on
// freely, with real concurrency, to their ends.)
class Abandoned : public std::exception {
 public:
  const char* what() const noexcept override { return "exploration abandoned"; }
};

inline constexpr size_t kNoThread = ~size_t{0};

struct ThreadState {
  bool finished = false;
  bool enabled = false;
  Step pending;  // the step it takes when chosen
};

// The search strategy: picks the thread that takes the next step.
class Chooser {
 public:
  virtual ~Chooser() = default;
  // threads[current] is the thread that took the last step (kNoThread for
  // the first choice). At least one thread is enabled; the answer must be an
  // enabled thread.
  virtual size_t choose(const std::vector<ThreadState>& threads, size_t current) = 0;
};

enum class EndReason : uint8_t { kCompleted, kDeadlock, kStepLimit };
const char* end_reason_name(EndReason reason);

// Pins the calling thread to the CPU it runs on until destroyed, then gives
// it back its affinity. A search holds one while it runs executions: their
// workers follow the caller's CPU (Execution::run), and the caller, woken at
// each execution's end, then stays with them instead of being woken across
// CPUs (see WorkerPool in base/sched.cpp). Best effort: where the affinity
// cannot be read or set, nothing changes.
class StayOnOneCpu {
 public:
  StayOnOneCpu();
  ~StayOnOneCpu();
  StayOnOneCpu(const StayOnOneCpu&) = delete;
  StayOnOneCpu& operator=(const StayOnOneCpu&) = delete;

 private:
  struct Saved;
  std::unique_ptr<Saved> saved_;  // null: nothing was changed
};

class Execution {
 public:
  Execution(Chooser& chooser, uint64_t max_steps);
  ~Execution();
  Execution(const Execution&) = delete;
  Execution& operator=(const Execution&) = delete;

  // Adds a thread; threads start when run() is called, in the chooser's order.
  size_t add_thread(std::string name, std::function<void()> body);
  const std::string& thread_name(size_t index) const;

  // Runs every thread to its end under the chooser. A body's exception other
  // than Abandoned is kept (error()); the others go on.
  EndReason run();
  std::exception_ptr error(size_t index) const;
  uint64_t steps() const;

  struct State;  // internal to base/sched.cpp

 private:
  std::unique_ptr<State> state_;
};

}  // namespace sptelab::sched
