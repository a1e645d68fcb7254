// `sptelab crosscheck`: the explorer's verdict for each (scheme, op) set
// against real guests. A cell the explorer calls racy must show a violation
// on the real backend, and the matrix reports how fast (time to the first
// violation over several seeds, free-running, or guided by the explorer's
// counterexample where free-running misses); a cell it calls coherent must
// run a long free-running race without one. A disagreement is a bug in the
// explorer or in the real-guest path.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "explore/campaign.h"
#include "scenarios/race.h"

namespace sptelab::explore {

struct CrosscheckOptions {
  scenarios::Backend backend = scenarios::Backend::kKvm;
  std::string guest_path;                 // kvm: the race guest ELF
  uint32_t seeds = 5;                     // racy cells: runs per mode
  double attempt_seconds = 2;             // racy cells: each run's limit
  uint64_t coherent_operations = 100000;  // coherent cells: the run's length
  uint32_t vcpus = 1;
  mm::KernelEra era = mm::kDefaultKernelEra;  // the emulated host's, explorer and race alike
};

// One run on a racy cell: free-running first; guided if that found nothing.
struct Attempt {
  uint64_t seed = 0;
  bool guided = false;
  bool found = false;
  double first_violation_ms = -1;
  uint64_t operations = 0;
};

struct CrosscheckResult {
  spte::Scheme scheme;
  host::HostOp op = host::HostOp::kRemap;
  // The explorer (both of its scenarios, bound 2).
  bool explorer_racy = false;
  std::string property;
  int preemptions = 0;
  ScenarioKind explorer_scenario = ScenarioKind::kCoherence;
  // The real runs.
  ScenarioKind race_scenario = ScenarioKind::kLockfree;
  std::vector<Attempt> attempts;  // racy: one per seed
  uint64_t operations = 0;        // coherent: the long run's operations
  uint64_t violations = 0;        // coherent: what it found
  // A coherent cell whose real run found a violation is searched again at
  // bound 3: the table's bound 2 is a bound, not a proof.
  bool deeper_searched = false;
  bool deeper_racy = false;
  std::string deeper_property;
  int deeper_preemptions = 0;
  std::string example;  // the first violation a real run described
  double seconds = 0;

  // Median over the seeds of the time to the first violation; a seed that
  // found none counts as never (negative when half or more found none).
  double median_ms() const;
  uint32_t guided_seeds() const;
  bool agrees() const;
};

// The explorer's verdict for a (scheme, op) cell as crosscheck asks it:
// both of its scenarios at the bound of docs/schemes.md (2), the racy one
// with the fewest preemptions, on the host of `era`. `race --expect`
// compares its rows with it.
CellResult explorer_verdict(const spte::Scheme& scheme, host::HostOp op,
                            mm::KernelEra era = mm::kDefaultKernelEra);

// The race scenario in which a real guest shows the explorer's `property`
// for `op` (lost writes and write-protect violations in
// coherence-lockfree, stale sptes and reads in stale-spte).
ScenarioKind race_scenario_for(const std::string& property, host::HostOp op);

using CrosscheckProgress =
    std::function<void(const CrosscheckResult& done, size_t index, size_t total)>;

CrosscheckResult crosscheck_cell(const spte::Scheme& scheme, host::HostOp op,
                                 const CrosscheckOptions& options);
std::vector<CrosscheckResult> crosscheck(const std::vector<spte::Scheme>& schemes,
                                         const std::vector<host::HostOp>& ops,
                                         const CrosscheckOptions& options,
                                         const CrosscheckProgress& progress = {});

// One row per scheme, one column per op (fits 100 columns), legend below.
std::string format_crosscheck_table(const std::vector<CrosscheckResult>& results,
                                    const CrosscheckOptions& options);
// The table plus one line per cell with the explorer's verdict and every run.
std::string format_crosscheck_markdown(const std::vector<CrosscheckResult>& results,
                                       const CrosscheckOptions& options);
std::string format_crosscheck_json(const std::vector<CrosscheckResult>& results,
                                   const CrosscheckOptions& options);

}  // namespace sptelab::explore
