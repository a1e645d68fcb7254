// The clock the benchmarks time host work with: the calling thread's CPU
// time. On a loaded machine the wall clock mostly measures how long a thread
// waited for a CPU; everything timed here runs on one thread (a vCPU's, or
// the one calling madvise), so its CPU time is the cost itself.
#pragma once

#include <time.h>

namespace sptelab::bench {

inline double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

}  // namespace sptelab::bench
