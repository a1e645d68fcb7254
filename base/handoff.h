// A binary semaphore that sleeps in the kernel at once (futex(2)) instead of
// spinning and yielding first, as libstdc++'s std::binary_semaphore does.
//
// The explorer's scheduler hands the single running slot from thread to
// thread thousands of times a second; the thread that receives it is always
// asleep, and the one that gives it goes to sleep right after. A yield loop
// there burns the other core (on a loaded two-core machine it gives the CPU
// to another process): perf showed sched_yield's task switches as 20% of a
// cell's samples.
#pragma once

#include <atomic>
#include <cstdint>

namespace sptelab {

class Handoff {
 public:
  // Blocks until release() has been called since the last acquire().
  void acquire();
  // Lets one acquire() through (at most one pending release is kept).
  void release();

 private:
  std::atomic<uint32_t> posted_{0};
};

}  // namespace sptelab
