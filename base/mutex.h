// A sleeping lock with a place in the lock order (base/lock_order.h): a
// std::mutex that tells the lock-order check when it is taken and dropped,
// and can assert that the caller holds it (lockdep_assert_held()). For locks
// held across system calls, where a SpinLock would spin through them (the
// guest window's lock is held across its mmap and mprotect calls).
#pragma once

#include <mutex>

#include "base/lock_order.h"

namespace sptelab {

class Mutex {
 public:
  // `name` is a static string naming the lock in lock-order reports.
  explicit Mutex(const char* name, LockRank rank = LockRank::kUnranked)
      : name_(name), rank_(rank) {}
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() {
    const bool checking = lock_order::enabled();
    if (checking) lock_order::before_acquire(rank_, name_);
    mutex_.lock();
    if (checking) lock_order::acquired(this, rank_, name_);
  }

  bool try_lock() {
    if (!mutex_.try_lock()) return false;
    if (lock_order::enabled()) lock_order::acquired(this, rank_, name_);  // a try: not checked
    return true;
  }

  void unlock() {
    if (lock_order::enabled()) lock_order::released(this);
    mutex_.unlock();
  }

  // Where a comment says "callers hold" this lock; checked while lock
  // checking is on.
  void assert_held() const {
    if (lock_order::enabled() && !lock_order::held_by_this_thread(this)) {
      lock_order::not_held(name_);
    }
  }

 private:
  std::mutex mutex_;
  const char* name_;
  LockRank rank_;
};

}  // namespace sptelab
