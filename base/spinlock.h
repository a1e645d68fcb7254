// A spinlock that also tracks "atomic context" per thread, so that code which
// may sleep can tell it is running where the host holds a spinlock. That is
// the check behind the 2008 objection to calling sleeping notifiers from inside
// the page-table lock (linux-mm, January 2008, "[PATCH] mmu notifiers").
#pragma once

#include <atomic>
#include <thread>

#include "base/lock_order.h"
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
  // `name` is a static string naming the lock in explored timelines and
  // lock-order reports; `rank` its place in base/lock_order.h's order.
  explicit SpinLock(const char* name, LockRank rank = LockRank::kUnranked)
      : name_(name), rank_(rank) {}
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

  void lock() {
    const bool checking = lock_order::enabled();
    if (checking) lock_order::before_acquire(rank_, name_);
    if (sched::active()) {
      lock_scheduled();
    } else {
      spin_until_acquired();
    }
    if (checking) lock_order::acquired(this, rank_, name_);
  }

  bool try_lock() {
    sched::point(sched::Step{.kind = sched::Kind::kAcquire, .object = this, .label = name_});
    if (locked_.load(std::memory_order_relaxed) ||
        locked_.exchange(true, std::memory_order_acquire)) {
      return false;
    }
    AtomicContext::enter();
    if (lock_order::enabled()) lock_order::acquired(this, rank_, name_);  // a try: not checked
    return true;
  }

  void unlock() {
    if (lock_order::enabled()) lock_order::released(this);
    AtomicContext::leave();
    locked_.store(false, std::memory_order_release);
  }

  // lockdep_assert_held(): where a comment says "callers hold" this lock.
  // Checked while lock checking is on (base/lock_order.h).
  void assert_held() const {
    if (lock_order::enabled() && !lock_order::held_by_this_thread(this)) {
      lock_order::not_held(name_);
    }
  }

  bool is_locked() const { return locked_.load(std::memory_order_relaxed); }
  const char* name() const { return name_; }

 private:
  void spin_until_acquired() {
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
  LockRank rank_ = LockRank::kUnranked;
};

}  // namespace sptelab
