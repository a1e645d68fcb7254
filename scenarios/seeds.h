// The seed races (issue 12): host-MM bugs Linux actually had, each in its
// buggy and its fixed form, as a rig of roles over one emulated host. The
// same rig runs two ways:
//
//  - explored: each role is a thread of a sched::Execution and the explorer
//    chooses every step (explore/scenario.h, a cell with a race set);
//  - raced: `sptelab race NAME --variant buggy|fixed` runs the roles as real
//    threads, round after round, with one delay that widens the window, and
//    checks the race's property after every round.
//
// The variant is a property of the emulated host: it selects the order in
// mm/ (per Mm, like ZapRmapOrder) for the lifetime of a VariantScope; mm/
// never knows a race by name.
//
// Witness: who holds the stale translation the bug leaves behind. kHost: a
// host CPU's TLB (the bug as the kernel threads describe it). kGuest: the
// vCPU's spte, kept coherent by the scheme's notifiers; with it a cell says
// whether the host bug reaches the secondary MMU under that scheme.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/mutation.h"
#include "mm/kernel_era.h"
#include "spte/scheme.h"

namespace sptelab::scenarios {

enum class SeedRace : uint8_t { kDelayedRmap, kDontneedTlb, kGupFastRevalidate, kPagewalkPtl };
const std::vector<SeedRace>& all_seed_races();
const char* seed_race_name(SeedRace race);
std::optional<SeedRace> parse_seed_race(std::string_view name);
// One line: what races, and the thread it comes from (with its year).
std::string describe(SeedRace race);
// The roles' thread names, in thread-index order.
std::vector<std::string> seed_role_names(SeedRace race);

enum class Variant : uint8_t { kFixed, kBuggy };
const char* variant_name(Variant variant);
std::optional<Variant> parse_variant(std::string_view name);

// A variant that is a process-wide mutant rather than a per-Mm order
// (gup-fast-revalidate's buggy GUP-fast is base/mutation.h's
// gup-fast-no-recheck); kNone otherwise. Whoever runs a rig scopes it
// (mutation::Scoped) around the rig's whole life.
mutation::Mutant variant_mutant(SeedRace race, Variant variant);

enum class Witness : uint8_t { kHost, kGuest };
const char* witness_name(Witness witness);
std::optional<Witness> parse_witness(std::string_view name);

// The scheme a seed race runs under unless told otherwise: the reference
// design, so that a violation is the host's and not the scheme's.
spte::Scheme default_seed_scheme();

struct SeedViolation {
  std::string property;  // e.g. "lost-at-writeback"
  std::string detail;
};

// One race's emulated host and roles. Single-threaded except run_role,
// which each role's thread calls once per round.
class SeedRig {
 public:
  SeedRig(SeedRace race, Variant variant, Witness witness, const spte::Scheme& scheme,
          mm::KernelEra era = mm::process_kernel_era());
  ~SeedRig();
  SeedRig(const SeedRig&) = delete;
  SeedRig& operator=(const SeedRig&) = delete;

  SeedRace race() const;
  // The roles' thread names, in thread-index order.
  std::vector<std::string> role_names() const;
  // Brings the host back to the state a round starts from.
  void prepare();
  void run_role(size_t index);
  // After a round, with every role finished: the violated property, if any
  // (each violation of the lab's log is returned once).
  std::optional<SeedViolation> check();
  // At most how many stores a storing role makes per round (1 explored: one
  // is enough for every order; the race runner's writers keep storing until
  // the zapper's operation has returned, as the programs of the threads do,
  // so that they are still storing in the window).
  void set_writes_per_round(uint32_t writes);

  // Where the race runner widens the window: the role delayed there and
  // the injection point (base/inject.h) it is delayed at.
  size_t delayed_role() const;
  int delay_point() const;
  // Where the zapper (role 0) waits, on the same rounds, until the delayed
  // role has reached its point; -1: nowhere (the zapper is the delayed role).
  int lead_point() const;
  // The role that, on the same rounds, begins its operation only once the
  // delayed role has reached its point; -1: none. delayed-rmap's cleaner:
  // its writeback otherwise ends, most rounds, before the zapper has even
  // taken the PTL, and the window is tried only when the scheduler happens
  // to put the cleaner late.
  int follower_role() const;

  struct State;  // internal to scenarios/seeds.cpp

 private:
  std::unique_ptr<State> state_;
};

// ---- the race command ------------------------------------------------------

struct SeedRaceConfig {
  SeedRace race = SeedRace::kDelayedRmap;
  Variant variant = Variant::kFixed;
  spte::Scheme scheme = default_seed_scheme();
  uint64_t rounds = 200000;   // one operation of each role per round
  double max_seconds = 600;   // a safety limit; a fixed run of 100,000 rounds takes minutes
  bool for_duration = false;  // free-running for max_seconds
  uint64_t seed = 1;          // the delay's coin
  mm::KernelEra era = mm::kDefaultKernelEra;
  bool stop_at_first_violation = true;
};

struct SeedRaceResult {
  SeedRaceConfig config;
  uint64_t violations = 0;
  std::string property;  // of the first violation
  std::string detail;
  double first_violation_ms = -1;  // -1: none
  uint64_t rounds = 0;
  double seconds = 0;
  bool timed_out = false;
  std::string counterexample;  // the violating round's events, one per line
};

// `progress(rounds done, rounds planned)` is called from the runner's
// thread every 1024 rounds (planned is UINT64_MAX for a run by duration).
using SeedProgressFn = std::function<void(uint64_t done, uint64_t planned)>;
SeedRaceResult run_seed_race(const SeedRaceConfig& config, const SeedProgressFn& progress = {});
std::string format_seed_race(const SeedRaceResult& result);
std::string seed_race_json(const SeedRaceResult& result);

}  // namespace sptelab::scenarios
