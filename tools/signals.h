// SIGINT and SIGTERM for the long-running commands (run, race): instead of
// killing the process, a signal asks the run to stop (base/interrupt.h), so
// the command prints what it has finished, writes its trace, removes its
// tracefs instance and exits 128 + the signal's number (130 for SIGINT, 143
// for SIGTERM). A third signal ends the process at once.
#pragma once

#include <functional>

namespace sptelab::tools {

// Blocks SIGINT and SIGTERM in the calling thread and in every thread it
// starts afterwards, and starts (once) a thread that waits for them. Call it
// before any other thread exists.
void handle_stop_signals();

// While alive, a stop signal also calls `stop` (on the signal thread), e.g.
// to stop a VM's vCPUs.
class OnStopSignal {
 public:
  explicit OnStopSignal(std::function<void(int signal)> stop);
  ~OnStopSignal();
  OnStopSignal(const OnStopSignal&) = delete;
  OnStopSignal& operator=(const OnStopSignal&) = delete;
};

// "SIGINT", "SIGTERM".
const char* signal_name(int signal);
// The exit status for a run stopped by `signal`: 128 + its number.
int interrupted_status(int signal);

}  // namespace sptelab::tools
