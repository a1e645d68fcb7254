// A spinlock that also tracks "atomic context" per thread, so that code which
// may sleep can tell it is running where the host holds a spinlock. That is
// the check behind the 2008 objection to calling sleeping notifiers from inside
// the page-table lock (linux-mm, January 2008, "[PATCH] mmu notifiers").
#pragma once

#include <atomic>
#include <thread>

#include "base/sched.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sptelab {

// Depth of spinlocks held by the calling thread (like preempt_count()).
class AtomicContext {
 public:
  static int depth() { return depth_; }
  static bool active() { return depth_ > 0; }
  static void enter() { ++depth_; }
  static void leave() { --depth_; }

 private:
  static inline thread_local int depth_ = 0;
};

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

class SpinLock {
 public:
  SpinLock() = default;
  // `name` is a static string naming the lock in explored timelines.
  explicit SpinLock(const char* name) : name_(name) {}
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

  void lock() {
    if (sched::active()) {
      lock_scheduled();
      return;
    }
    // Test-and-test-and-set; yield after a while because these machines have
    // two cores and the holder may be descheduled.
    for (unsigned spins = 0;; ++spins) {
      if (!locked_.load(std::memory_order_relaxed) &&
          !locked_.exchange(true, std::memory_order_acquire)) {
        break;
      }
      if (spins < 64) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
    AtomicContext::enter();
  }

  bool try_lock() {
    sched::point(sched::Step{.kind = sched::Kind::kAcquire, .object = this, .label = name_});
    if (locked_.load(std::memory_order_relaxed) ||
        locked_.exchange(true, std::memory_order_acquire)) {
      return false;
    }
    AtomicContext::enter();
    return true;
  }

  void unlock() {
    AtomicContext::leave();
    locked_.store(false, std::memory_order_release);
  }

  bool is_locked() const { return locked_.load(std::memory_order_relaxed); }
  const char* name() const { return name_; }

 private:
  // Under `explore`: a scheduling point before the acquire, where the thread
  // is runnable only while the lock is free.
  void lock_scheduled() {
    sched::point(sched::Step{.kind = sched::Kind::kAcquire,
                             .object = this,
                             .label = name_,
                             .ready = [](const void* lock) {
                               return !static_cast<const SpinLock*>(lock)->is_locked();
                             }});
    while (locked_.exchange(true, std::memory_order_acquire)) sched::relax(this, name_);
    AtomicContext::enter();
  }

  std::atomic<bool> locked_{false};
  const char* name_ = "spinlock";
};

}  // namespace sptelab
