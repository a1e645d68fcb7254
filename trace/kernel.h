// `--kernel`: while a run is traced, capture the real kernel's kvm and kvmmmu
// tracepoints through tracefs, so the emulated sptes and the real shadow MMU
// can be read side by side on one timeline.
//
// The capture works in a private tracefs instance (instances/sptelab-PID-N):
// its own ring buffer, event switches, pid filter and clock, so it neither
// disturbs nor is disturbed by anyone else's tracing, and removing the
// instance at the end restores everything it changed. The instance uses the
// "mono" trace clock, which is CLOCK_MONOTONIC, the clock of sptelab's own
// events, so the two merge by timestamp. trace_pipe prints microseconds:
// kernel events have microsecond resolution.
//
// Where tracefs is missing or not permitted, the capture is inactive and
// says why; the run goes on without it.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "trace/file.h"

namespace sptelab::trace {

// The tracepoints --kernel asks for; those this kernel lacks are skipped.
std::vector<std::string> default_kernel_events();

struct KernelCaptureOptions {
  std::vector<std::string> events = default_kernel_events();  // "system:name"
  // Only events of this process's threads (set_event_pid + event-fork, so
  // threads created later are followed too).
  bool this_process_only = true;
  uint32_t buffer_kb = 4096;  // per CPU
};

// What a capture collected. Events are Kind::kKernel on thread
// kKernelThread: args = {index into strings, cpu, pid, gfn or ~0}; a string
// is "system:name: fields" as trace_pipe prints the fields.
struct KernelTrace {
  std::vector<Event> events;
  std::vector<std::string> strings;
  std::map<uint32_t, std::string> tasks;  // pid -> comm
  std::vector<std::string> enabled;       // "system:name" actually enabled
  std::vector<std::string> missing;       // asked for but not in this kernel
  uint64_t lost = 0;                      // events the kernel dropped (buffer overrun)
  std::string problem;                    // why nothing was captured, if so
};

class KernelCapture {
 public:
  explicit KernelCapture(KernelCaptureOptions options = {});
  ~KernelCapture();  // stops and cleans up if stop() was not called
  KernelCapture(const KernelCapture&) = delete;
  KernelCapture& operator=(const KernelCapture&) = delete;

  // Whether events are being captured; if not, problem() says why.
  bool active() const { return active_; }
  const std::string& problem() const { return trace_.problem; }
  // The tracefs instance directory while active (for tests).
  const std::string& instance_dir() const { return instance_; }

  // Stops, removes the instance (and unmounts tracefs if it mounted it),
  // and returns what was captured. Call once.
  KernelTrace stop();

 private:
  void start();
  void reader_main();
  void drain();
  void parse_line(std::string_view line);
  void cleanup();
  uint64_t read_overruns() const;

  KernelCaptureOptions options_;
  KernelTrace trace_;
  bool active_ = false;
  bool stopped_ = false;
  std::string mount_dir_;  // set if this capture mounted tracefs
  std::string tracefs_;    // tracefs root
  std::string instance_;   // our instance directory
  int pipe_fd_ = -1;
  std::string partial_;                           // an unfinished line from the last read
  std::map<std::string, std::string> systems_;    // event name -> system
  std::map<std::string, uint32_t> string_index_;  // deduplication of strings
  std::atomic<bool> stop_reader_{false};
  std::thread reader_;
  std::mutex mutex_;  // trace_ while the reader runs
};

// Adds a capture to a trace file: events merged by time, strings appended,
// and metadata "kernel.events", "kernel.missing", "kernel.lost",
// "kernel.task.PID" (comm) and "kernel.problem".
void merge_kernel_trace(TraceFile& file, KernelTrace kernel);

// Removes the instances "sptelab-PID-N" under `tracefs` whose process PID is
// gone (killed before it could remove them); KernelCapture does this before
// it makes its own. Returns the removed instances' directories.
std::vector<std::string> remove_stale_kernel_instances(const std::string& tracefs);

// Unmounts and removes the tracefs mounts sptelab made under /tmp
// ("/tmp/sptelab-tracefs-PID-XXXXXX") whose process PID is gone, and those
// of older builds (no PID in the name) that no process has a file open in;
// KernelCapture does this first. Returns the removed mount points.
std::vector<std::string> remove_stale_tracefs_mounts();

// For a Kind::kKernel event of a file: "kvmmmu:kvm_mmu_set_spte", the
// fields text, and "comm-pid" of the task it happened in.
std::string_view kernel_event_name(const TraceFile& file, const Event& event);
std::string_view kernel_event_fields(const TraceFile& file, const Event& event);
std::string kernel_task_name(const TraceFile& file, const Event& event);

// Parses one trace_pipe line ("comm-pid [cpu] flags secs.usecs: name:
// fields"); nullopt for lines that are not events. Exposed for tests.
struct KernelLine {
  std::string comm;
  uint32_t pid = 0;
  uint32_t cpu = 0;
  uint64_t ts_ns = 0;
  std::string name;
  std::string fields;
};
std::optional<KernelLine> parse_kernel_line(std::string_view line);

}  // namespace sptelab::trace
