// A spinlock that also tracks "atomic context" per thread, so that code which
// may sleep can tell it is running where the host holds a spinlock. That is
// the check behind the 2008 objection to calling sleeping notifiers from inside
// the page-table lock (seeds/2008-01-andrea-mmu-notifier-ptl.txt).
#pragma once

#include <atomic>
#include <thread>

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
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

  void lock() {
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

 private:
  std::atomic<bool> locked_{false};
};

}  // namespace sptelab
