#include "scenarios/gate.h"

namespace sptelab::scenarios {

Gate::Gate(inject::Point point, Role role) : point_(point), role_(role) {
  inject::set_hook(point_, [this](inject::Point, const inject::Context&) {
    if (ThreadRole::current() == role_) park();
  });
}

Gate::~Gate() {
  open();
  inject::set_hook(point_, {});
}

// One-shot: only the first arrival parks; later passes go straight through.
void Gate::park() {
  std::unique_lock lock(mutex_);
  if (arrived_.load(std::memory_order_relaxed)) return;
  arrived_.store(true, std::memory_order_release);
  cv_.notify_all();
  cv_.wait(lock, [this] { return open_; });
}

void Gate::wait_arrived() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [this] { return arrived_.load(std::memory_order_relaxed); });
}

void Gate::open() {
  std::lock_guard lock(mutex_);
  open_ = true;
  cv_.notify_all();
}

}  // namespace sptelab::scenarios
