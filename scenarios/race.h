// Race scenarios (`sptelab race`): guest vCPUs and a host thread work on a
// page while a remapper thread applies a host operation to it over and over;
// detectors say whether the scheme kept the guest coherent with the host.
//
//  coherence   The third-thread argument of the 2008 thread. Workers (vCPUs
//              and one host thread) take a spinlock in the target page and
//              increment a counter under it. Detectors: lost increments (the
//              counter is behind the increments the workers finished), two
//              holders of the lock at once, an access reaching a freed frame.
//  coherence-lockfree
//              The third thread without any serialisation: workers (vCPUs
//              and the host thread) lock-xadd their own counter slot in the
//              target page, and the remapper never waits for them. Content
//              follows the page by the op itself (migrate, cow, ksm copy it;
//              for remap the runner folds the old page's counters into the
//              new one at the moment the new PTE is live, before any late
//              invalidation), so an increment that lands on the old frame
//              after that is provably lost: a stale spte wrote it.
//              Detectors: lost increments (a worker's slot behind its done
//              count), use-after-free.
//  stale-spte  vCPUs keep reading versioned pages the remapper keeps
//              changing; after every operation the remapper publishes a new
//              version through the host mapping and the auditor checks every
//              spte. Detectors: stale sptes, stale reads (a version older than
//              one published before the read began), use-after-free.
//
// Both backends run the same protocol on the same guest-RAM layout: soft
// (software vCPUs in C++) and kvm (the built-in `race` guest on real KVM).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "host/host_ops.h"
#include "mm/kernel_era.h"
#include "scenarios/delays.h"
#include "spte/mmu.h"
#include "spte/scheme.h"
#include "trace/file.h"

namespace sptelab::scenarios {

enum class ScenarioKind : uint8_t { kCoherence, kStaleSpte, kLockfree };
const std::vector<ScenarioKind>& all_scenarios();
// coherence and coherence-lockfree: workers write, a host thread takes part.
inline bool is_coherence(ScenarioKind kind) {
  return kind == ScenarioKind::kCoherence || kind == ScenarioKind::kLockfree;
}
const char* scenario_name(ScenarioKind kind);
std::optional<ScenarioKind> parse_scenario(std::string_view name);
std::string describe(ScenarioKind kind);

enum class Backend : uint8_t { kSoft, kKvm };
const char* backend_name(Backend backend);
std::optional<Backend> parse_backend(std::string_view name);

// One worker slot of the control page is the host thread's.
inline constexpr uint32_t kMaxRaceVcpus = 31;

struct RaceConfig {
  ScenarioKind scenario = ScenarioKind::kCoherence;
  spte::Scheme scheme;
  host::HostOp op = host::HostOp::kMigrate;
  Backend backend = Backend::kSoft;
  uint64_t operations = 2000;  // remapper operations: the run's fixed budget
  double max_seconds = 30;     // safety limit; a run that hits it says so
  uint32_t vcpus = 1;
  uint64_t seed = 1;
  mm::KernelEra era = mm::kDefaultKernelEra;  // the emulated host's (--era)
  std::vector<DelayPoint> delays = default_delays();
  bool host_thread = true;  // coherence: a host thread takes part too
  // Record every event (needed for PTL hold times and counterexample
  // timelines); off only to measure what tracing costs.
  bool trace = true;
  // Write the run's trace here (binary, `sptelab trace FILE` reads it).
  std::string trace_path;
  // The command that asked for the run, recorded in the trace ("race" when
  // empty), so a trace file says how to make it again.
  std::string command_line;
  // How: trace::write_trace_file when empty (a seam: tests fail it as a full
  // disk would). A failure is the result's trace_error, not the run's.
  std::function<void(const std::string& path, const trace::TraceFile& file)> write_trace;
  // Also capture the real kernel's kvm/kvmmmu tracepoints (tracefs) into
  // that trace; where tracefs is unavailable, kernel_problem says why.
  bool kernel = false;
  std::string guest_path;  // kvm: the race guest ELF (empty: built-in)
  // kvm: the guest's workload runs at CPL3 (native mode, guest/README.md);
  // false: at CPL0, which PVM emulates at about a microsecond per instruction.
  bool native = true;
  // The run lasts max_seconds by design (free-running for a duration): do
  // not call reaching it a time-out.
  bool for_duration = false;
  // End the run at the first violation (time-to-first-violation runs).
  bool stop_at_first_violation = false;
  // soft: run the remapper, the host thread and the vCPUs one at a time
  // under sched::Execution, a seeded chooser picking who steps next, so the
  // same seed repeats the run exactly (counts, first violation). Injected
  // delays do not apply (the chooser's switches are the windows); a run
  // that ends by max_seconds instead of its operations is not repeatable.
  bool scheduled = false;
  // The delays come from the explorer's counterexample (race --guided): how
  // they were derived, one line per delay; empty for a free or hand-set run.
  std::string guide;
};

struct DetectorCount {
  std::string name;
  uint64_t count = 0;
};

struct RaceResult {
  RaceConfig config;
  uint64_t violations = 0;  // total over all detectors
  std::vector<DetectorCount> detectors;
  double first_violation_ms = -1;   // -1: none
  uint64_t operations = 0;          // remapper operations done
  uint64_t operations_applied = 0;  // of which changed the mapping
  double seconds = 0;
  double ops_per_s = 0;
  uint64_t guest_work = 0;      // increments or page reads completed by the workers
  uint64_t vcpu_work = 0;       // of which by the vCPUs (the host thread's excluded)
  double guest_work_per_s = 0;  // vcpu_work per second
  uint64_t spte_faults = 0;
  uint64_t fault_retries = 0;
  uint64_t sptes_zapped = 0;
  uint64_t ptl_hold_p50_ns = 0;
  uint64_t ptl_hold_p99_ns = 0;
  uint64_t ptl_holds = 0;          // the PTL holds the percentiles come from
  uint64_t ptl_holds_delayed = 0;  // holds an injected delay lengthened, left out
  uint64_t trace_overwritten = 0;  // PTL samples lost to ring wrap-around
  bool timed_out = false;
  std::vector<std::string> examples;  // what happened, for the first violations
  std::string kernel_problem;         // why --kernel captured nothing, if it did not
  std::string trace_error;            // why the trace file was not written, if it was not
  std::string counterexample;         // trace lines around the first violation
  // race --expect: the explorer's verdict for the (scheme, op) cell; unset
  // when not asked.
  std::optional<bool> expected_racy;
  std::string expected_property;  // what the explorer's counterexample violates
  // Whether this scenario's detectors witness that property (crosscheck's
  // race_scenario_for): a racy cell whose race is another scenario's may
  // show a violation here or not.
  bool expected_witnessed = true;
  // Whether the row matches the explorer: a racy cell witnessed here must
  // show a violation, a coherent one none. True when no verdict was asked.
  bool agrees_with_explorer() const {
    if (!expected_racy) return true;
    if (*expected_racy) return !expected_witnessed || violations > 0;
    return violations == 0;
  }
};

using ProgressFn = std::function<void(const RaceConfig&, uint64_t done, uint64_t total)>;

RaceResult run_race(const RaceConfig& config, const ProgressFn& progress = {});

// A guest that crashed or missed the stop (`failure`, the engine's
// message): in a run with violations it did so of them (a vCPU read a freed
// copy of a page it depends on through a stale spte), and the run's result
// keeps it as a note, which this returns; in a clean run it is the run's own
// failure: Error(kInternal).
std::string guest_failure_note(const std::string& failure, uint64_t violations);

// native_delays' fault-in-window wait: whether a vCPU fault has finished
// between two snapshots of the MMU's statistics, not counting the retry of a
// fault already in flight at the first (it read the invalidation state
// before the window opened, and its vCPU faults again).
bool guest_fault_finished(const spte::MmuStats& at_start, const spte::MmuStats& now);

// Table (one row per result, each detector its own column, a legend under
// it) and the JSON document of the CLI contract. The table fits kTableWidth
// columns (the cost columns go first) unless `wide`.
std::string format_race_table(const std::vector<RaceResult>& results, bool wide = false);
std::string race_json(const std::vector<RaceResult>& results);

}  // namespace sptelab::scenarios
