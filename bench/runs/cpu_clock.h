// The clocks the benchmarks time host work with: CPU time, of the calling
// thread or of the process. On a loaded machine the wall clock mostly
// measures how long a thread waited for a CPU; the work timed here runs on
// one thread (a vCPU's, or the one calling madvise) or on threads that take
// turns (the explorer's), so CPU time is the cost itself.
#pragma once

#include <time.h>

namespace sptelab::bench {

inline double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

// The whole process's CPU time, for work spread over threads that run one
// at a time (the explorer's roles under base/sched.h): their sum is the
// work, still without the time a thread waited for a CPU.
inline double process_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

}  // namespace sptelab::bench
