#include "base/interrupt.h"

#include <atomic>

namespace sptelab::interrupt {
namespace {

std::atomic<int> requested_signal{0};

}  // namespace

int requested() {
  return requested_signal.load(std::memory_order_relaxed);
}

void request(int signal) {
  int none = 0;
  requested_signal.compare_exchange_strong(none, signal);
}

}  // namespace sptelab::interrupt
