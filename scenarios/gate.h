// Deterministic interleavings: a Gate parks the first thread of a given role
// that reaches an injection point, until the driver opens it. Threads declare
// their role once (ThreadRole), so a gate never catches the wrong thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "base/inject.h"

namespace sptelab::scenarios {

enum class Role : uint8_t { kNone, kVcpu, kRemapper, kHostThread };

class ThreadRole {
 public:
  explicit ThreadRole(Role role) : previous_(current_) { current_ = role; }
  ~ThreadRole() { current_ = previous_; }
  ThreadRole(const ThreadRole&) = delete;
  ThreadRole& operator=(const ThreadRole&) = delete;
  static Role current() { return current_; }
  // For a thread that keeps one role to its end (a vCPU thread started by
  // the hypervisor, which knows nothing of roles).
  static void set_for_this_thread(Role role) { current_ = role; }

 private:
  Role previous_;
  static inline thread_local Role current_ = Role::kNone;
};

class Gate {
 public:
  Gate(inject::Point point, Role role);
  ~Gate();  // opens the gate and disarms the point
  Gate(const Gate&) = delete;
  Gate& operator=(const Gate&) = delete;

  bool arrived() const { return arrived_.load(std::memory_order_acquire); }
  void wait_arrived();
  void open();

 private:
  void park();

  inject::Point point_;
  Role role_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::atomic<bool> arrived_{false};
  bool open_ = false;
};

}  // namespace sptelab::scenarios
