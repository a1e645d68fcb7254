// A reader-writer lock (a sleeping lock, like Linux's rw_semaphore) that is
// also a scheduling point under `explore`. It wraps std::shared_mutex and
// keeps a count of its holders so that the explorer can tell whether an
// acquire could proceed without trying it.
#pragma once

#include <atomic>
#include <shared_mutex>

#include "base/lock_order.h"
#include "base/sched.h"

namespace sptelab {

class RwLock {
 public:
  explicit RwLock(const char* name = "rwlock", LockRank rank = LockRank::kUnranked)
      : name_(name), rank_(rank) {}
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;

  void lock() {
    const bool checking = lock_order::enabled();
    if (checking) lock_order::before_acquire(rank_, name_);
    sched::point(sched::Step{.kind = sched::Kind::kAcquire,
                             .object = this,
                             .label = name_,
                             .ready = [](const void* self) {
                               return static_cast<const RwLock*>(self)->holders_.load() == 0;
                             }});
    mutex_.lock();
    holders_.store(kWriter, std::memory_order_relaxed);
    if (checking) lock_order::acquired(this, rank_, name_);
  }
  void unlock() {
    if (lock_order::enabled()) lock_order::released(this);
    holders_.store(0, std::memory_order_relaxed);
    mutex_.unlock();
  }
  void lock_shared() {
    const bool checking = lock_order::enabled();
    if (checking) lock_order::before_acquire(rank_, name_);
    sched::point(sched::Step{.kind = sched::Kind::kAcquireShared,
                             .object = this,
                             .label = name_,
                             .ready = [](const void* self) {
                               return static_cast<const RwLock*>(self)->holders_.load() >= 0;
                             }});
    mutex_.lock_shared();
    holders_.fetch_add(1, std::memory_order_relaxed);
    if (checking) lock_order::acquired(this, rank_, name_);
  }
  void unlock_shared() {
    if (lock_order::enabled()) lock_order::released(this);
    holders_.fetch_sub(1, std::memory_order_relaxed);
    mutex_.unlock_shared();
  }
  // Held by anyone (lockdep-style assertions).
  bool is_locked() const { return holders_.load(std::memory_order_relaxed) != 0; }
  // lockdep_assert_held(), for reading or writing, by the calling thread.
  void assert_held() const {
    if (lock_order::enabled() && !lock_order::held_by_this_thread(this)) {
      lock_order::not_held(name_);
    }
  }

 private:
  static constexpr int kWriter = -1;
  std::shared_mutex mutex_;
  std::atomic<int> holders_{0};  // kWriter, or the number of readers
  const char* name_;
  LockRank rank_;
};

}  // namespace sptelab
