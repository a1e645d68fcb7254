// Randomized stress on software vCPUs: over a fixed number of host
// operations, every scheme the deterministic interleavings break is caught,
// and every scheme they cannot break has no violation at all.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "scenarios/delays.h"
#include "scenarios/interleavings.h"
#include "scenarios/race.h"

namespace sptelab::scenarios {
namespace {

using host::HostOp;
using spte::Scheme;

// Host operations per stale-spte run: every racy scheme shows its failure
// well within this many on these machines, loaded or not (the delays wait
// for the other side rather than for time).
constexpr uint64_t kStaleOps = 600;

// A scheme leaves a stale spte behind a remap if any decisive interleaving
// does (scenarios/interleavings.h, itself asserted in interleavings_test).
// An sva device's IOTLB is flushed by every host TLB flush, under every
// placement that forwards arch_invalidate_secondary_tlbs: only none leaves it
// stale.
bool leaves_stale_spte(const Scheme& scheme) {
  if (scheme.protocol == spte::Protocol::kSva) {
    return scheme.placement == mmu_notifier::Placement::kNone;
  }
  for (Interleaving interleaving : all_interleavings()) {
    if (run_interleaving(scheme, interleaving, HostOp::kRemap).stale_spte) return true;
  }
  return false;
}

RaceConfig soft_config(ScenarioKind scenario, const Scheme& scheme, HostOp op, uint64_t ops) {
  RaceConfig config;
  config.scenario = scenario;
  config.scheme = scheme;
  config.op = op;
  config.backend = Backend::kSoft;
  config.operations = ops;
  config.max_seconds = 120;
  return config;
}

std::string describe(const RaceResult& result) {
  std::string out = result.config.scheme.name() + ": " + std::to_string(result.violations) +
                    " violation(s) in " + std::to_string(result.operations) + " ops";
  for (const auto& example : result.examples) out += "\n  " + example;
  return out;
}

class StaleSpteRace : public testing::TestWithParam<Scheme> {};

TEST_P(StaleSpteRace, CaughtExactlyWhenAnInterleavingLeavesAStaleSpte) {
  const Scheme& scheme = GetParam();
  const bool racy = leaves_stale_spte(scheme);
  // A racy scheme gets ten times the operations but stops at its first
  // violation: on a loaded machine the delays' window is sometimes missed
  // for a few hundred operations in a row.
  RaceConfig config = soft_config(ScenarioKind::kStaleSpte, scheme, HostOp::kRemap,
                                  racy ? 10 * kStaleOps : kStaleOps);
  config.stop_at_first_violation = racy;
  RaceResult result = run_race(config);
  ASSERT_FALSE(result.timed_out) << describe(result);
  if (!racy) {
    EXPECT_EQ(result.operations, kStaleOps);
  }
  EXPECT_GT(result.guest_work, 0u);
  if (racy) {
    EXPECT_GT(result.violations, 0u) << describe(result);
    EXPECT_GE(result.first_violation_ms, 0) << describe(result);
  } else {
    EXPECT_EQ(result.violations, 0u) << describe(result);
    EXPECT_LT(result.first_violation_ms, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(AllSchemes, StaleSpteRace, testing::ValuesIn(spte::all_schemes()),
                         [](const testing::TestParamInfo<Scheme>& param) {
                           std::string name = param.param.name();
                           for (char& c : name) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

struct CoherenceCase {
  const char* scheme;
  HostOp op;
  bool racy;
  mm::KernelEra era = mm::kDefaultKernelEra;
};

class CoherenceRace : public testing::TestWithParam<CoherenceCase> {};

// The third-thread argument with the lock and counter in the page: lost
// increments and double holders for the schemes that let a vCPU keep the old
// page, none for the correct ones.
TEST_P(CoherenceRace, LostIncrementsOnlyWhereTheSchemeIsRacy) {
  const CoherenceCase& c = GetParam();
  RaceResult result =
      run_race(soft_config(ScenarioKind::kCoherence, *spte::parse_scheme(c.scheme), c.op, 400));
  ASSERT_FALSE(result.timed_out) << describe(result);
  EXPECT_GT(result.guest_work, 0u);
  if (c.racy) {
    EXPECT_GT(result.violations, 0u) << describe(result);
  } else {
    EXPECT_EQ(result.violations, 0u) << describe(result);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Representative, CoherenceRace,
    testing::Values(CoherenceCase{"none+seq-count", HostOp::kRemap, true},
                    CoherenceCase{"range-before+seq-count", HostOp::kRemap, true},
                    CoherenceCase{"start-end+seq-count", HostOp::kRemap, false},
                    CoherenceCase{"ptl-page+seq", HostOp::kRemap, false},
                    CoherenceCase{"none+seq", HostOp::kMigrate, true},
                    CoherenceCase{"start-end+seq-count", HostOp::kMigrate, false},
                    CoherenceCase{"start-end+interval", HostOp::kMigrate, false},
                    CoherenceCase{"start-end+seq-count", HostOp::kCow, false},
                    CoherenceCase{"start-end+seq-count", HostOp::kKsm, false},
                    CoherenceCase{"start-end+seq-count", HostOp::kMkclean, false},
                    CoherenceCase{"start-end+seq-count", HostOp::kMprotect, false},
                    CoherenceCase{"start-end+seq-count", HostOp::kDontneed, false},
                    // The hole takes the counter and the lock word with the
                    // page; what it discarded is counted aside under the lock.
                    CoherenceCase{"none+seq-count", HostOp::kPunchHole, true},
                    CoherenceCase{"start-end+seq-count", HostOp::kPunchHole, false},
                    // The IOMMU-SVA device: flushed only from the host's TLB
                    // flush, which placement none never forwards.
                    CoherenceCase{"none+sva", HostOp::kRemap, true},
                    CoherenceCase{"start-end+sva", HostOp::kRemap, false},
                    CoherenceCase{"range-after+sva", HostOp::kRemap, false},
                    CoherenceCase{"none+sva", HostOp::kMigrate, true},
                    CoherenceCase{"ptl-page+sva", HostOp::kMigrate, false},
                    CoherenceCase{"start-end+sva", HostOp::kKsm, false},
                    CoherenceCase{"none+sva", HostOp::kPunchHole, true},
                    CoherenceCase{"start-end+sva", HostOp::kPunchHole, false}),
    [](const testing::TestParamInfo<CoherenceCase>& param) {
      std::string name = std::string(param.param.scheme) + "_" + host::host_op_name(param.param.op);
      for (char& c : name) {
        if (!isalnum(static_cast<unsigned char>(c))) c = '_';
      }
      return name;
    });

class LockfreeRace : public testing::TestWithParam<CoherenceCase> {};

// The third thread without a lock: the remapper never waits for the
// workers, the counters follow the page (the fold at the PTE switch for
// remap), and only an increment through a stale spte can go missing.
TEST_P(LockfreeRace, LostIncrementsOnlyWhereTheSchemeIsRacy) {
  const CoherenceCase& c = GetParam();
  RaceConfig config =
      soft_config(ScenarioKind::kLockfree, *spte::parse_scheme(c.scheme), c.op, 300);
  config.era = c.era;
  RaceResult result = run_race(config);
  ASSERT_FALSE(result.timed_out) << describe(result);
  EXPECT_GT(result.guest_work, 0u);
  ASSERT_EQ(result.detectors.front().name, "lost_increments");
  if (c.racy) {
    EXPECT_GT(result.violations, 0u) << describe(result);
  } else {
    EXPECT_EQ(result.violations, 0u) << describe(result);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Representative, LockfreeRace,
    // The third-thread race of 2008: remap_file_pages switched the PTE under
    // the PTL, and range-after told the secondary MMU only after a host
    // thread could use the new page. Since 4.0 remap is a zap then a
    // populate fault under the mmap write lock: no host thread reaches the
    // page until every notifier of the zap has run (explorer: ok at bound 2).
    testing::Values(CoherenceCase{"range-after+seq", HostOp::kRemap, true, mm::KernelEra::k2_6_27},
                    CoherenceCase{"range-after+seq-count", HostOp::kRemap, true,
                                  mm::KernelEra::k2_6_27},
                    CoherenceCase{"range-after+seq", HostOp::kRemap, false},
                    CoherenceCase{"range-after+seq-count", HostOp::kRemap, false},
                    CoherenceCase{"none+seq", HostOp::kRemap, true},
                    CoherenceCase{"start-end+seq-count", HostOp::kRemap, false},
                    CoherenceCase{"ptl-page+seq", HostOp::kRemap, false},
                    CoherenceCase{"start-end+seq-count", HostOp::kMigrate, false},
                    CoherenceCase{"start-end+seq-count", HostOp::kCow, false},
                    // A write through an spte that kept write permission after
                    // mprotect(PROT_READ) or page_mkclean returned.
                    CoherenceCase{"none+seq", HostOp::kMprotect, true},
                    CoherenceCase{"none+seq", HostOp::kMkclean, true},
                    CoherenceCase{"start-end+seq-count", HostOp::kMprotect, false},
                    CoherenceCase{"start-end+seq-count", HostOp::kMkclean, false},
                    // punch-hole: the counters the hole discards are counted
                    // aside once the page has left the cache and every mapping.
                    CoherenceCase{"range-after+naive", HostOp::kPunchHole, true},
                    CoherenceCase{"start-end+seq-count", HostOp::kPunchHole, false},
                    CoherenceCase{"range-after+seq-count", HostOp::kPunchHole, false},
                    CoherenceCase{"none+sva", HostOp::kMprotect, true},
                    CoherenceCase{"start-end+sva", HostOp::kMprotect, false},
                    CoherenceCase{"start-end+sva", HostOp::kMkclean, false}),
    [](const testing::TestParamInfo<CoherenceCase>& param) {
      std::string name = std::string(param.param.scheme) + "_" + host::host_op_name(param.param.op);
      if (param.param.era != mm::kDefaultKernelEra)
        name += std::string("_") + mm::kernel_era_name(param.param.era);
      for (char& c : name) {
        if (!isalnum(static_cast<unsigned char>(c))) c = '_';
      }
      return name;
    });

TEST(RaceRepeatability, SameSeedSameVerdicts) {
  for (const char* name : {"start-end+seq", "start-end+seq-count"}) {
    RaceConfig config =
        soft_config(ScenarioKind::kStaleSpte, *spte::parse_scheme(name), HostOp::kRemap, 1000);
    config.seed = 7;
    bool first = run_race(config).violations > 0;
    bool second = run_race(config).violations > 0;
    EXPECT_EQ(first, second) << name;
  }
}

// --scheduled: one thread at a time under a seeded chooser. The same seed
// repeats every count; another seed is another schedule.
RaceConfig scheduled_config(ScenarioKind scenario, const char* scheme, HostOp op, uint64_t seed) {
  RaceConfig config = soft_config(scenario, *spte::parse_scheme(scheme), op, 200);
  config.scheduled = true;
  config.seed = seed;
  config.delays.clear();
  return config;
}

std::vector<uint64_t> counts_of(const RaceResult& r) {
  std::vector<uint64_t> counts = {r.violations,    r.operations,  r.operations_applied,
                                  r.guest_work,    r.vcpu_work,   r.spte_faults,
                                  r.fault_retries, r.sptes_zapped};
  for (const DetectorCount& detector : r.detectors) counts.push_back(detector.count);
  return counts;
}

TEST(ScheduledRace, TheSameSeedRepeatsEveryCount) {
  for (ScenarioKind scenario :
       {ScenarioKind::kCoherence, ScenarioKind::kLockfree, ScenarioKind::kStaleSpte}) {
    const RaceConfig config = scheduled_config(scenario, "range-before+seq", HostOp::kRemap, 7);
    const RaceResult first = run_race(config);
    const RaceResult second = run_race(config);
    EXPECT_FALSE(first.timed_out);
    EXPECT_GT(first.guest_work, 0u) << scenario_name(scenario);
    EXPECT_EQ(counts_of(first), counts_of(second)) << scenario_name(scenario);
    RaceConfig other = config;
    other.seed = 8;
    EXPECT_NE(counts_of(run_race(other)), counts_of(first)) << scenario_name(scenario);
  }
}

// The scheduled race of one scenario and op (seed 1) under two schemes:
// the racy one is caught, the correct one stays clean. Returns the clean run.
RaceResult expect_caught_only_under(ScenarioKind scenario, HostOp op, const char* racy,
                                    const char* correct) {
  const RaceResult caught = run_race(scheduled_config(scenario, racy, op, 1));
  EXPECT_GT(caught.violations, 0u) << describe(caught);
  RaceResult clean = run_race(scheduled_config(scenario, correct, op, 1));
  EXPECT_EQ(clean.violations, 0u) << describe(clean);
  return clean;
}

// The chooser's switches are the windows: a racy scheme is caught, a
// correct one stays clean, in the same number of operations.
TEST(ScheduledRace, CatchesTheRacySchemeOnly) {
  const RaceResult racy =
      run_race(scheduled_config(ScenarioKind::kLockfree, "none+seq", HostOp::kMprotect, 1));
  EXPECT_GT(racy.violations, 0u) << describe(racy);
  const RaceResult late =
      run_race(scheduled_config(ScenarioKind::kStaleSpte, "range-before+seq", HostOp::kRemap, 1));
  EXPECT_GT(late.violations, 0u) << describe(late);
  for (ScenarioKind scenario : {ScenarioKind::kLockfree, ScenarioKind::kStaleSpte}) {
    const RaceResult correct =
        run_race(scheduled_config(scenario, "start-end+seq-count", HostOp::kRemap, 1));
    EXPECT_EQ(correct.violations, 0u) << describe(correct);
  }
  // The run that showed the explorer wrong: MADV_DONTNEED frees anonymous
  // pages before range-after's late invalidation (docs/schemes.md).
  expect_caught_only_under(ScenarioKind::kStaleSpte, HostOp::kDontneed, "range-after+seq",
                           "start-end+seq-count");
}

// The explorer's punch-hole column on the stale-spte race: start-end+seq
// installs an spte inside the zap's bracket and the hole frees the page
// under it; start-end+seq-count does not.
TEST(ScheduledRace, PunchHoleFreesThePageUnderTheRacySchemesSpteOnly) {
  const RaceResult correct = expect_caught_only_under(ScenarioKind::kStaleSpte, HostOp::kPunchHole,
                                                      "start-end+seq", "start-end+seq-count");
  EXPECT_GT(correct.guest_work, 0u);
}

TEST(ScheduledRace, NeedsSoftVcpusAndAnOperationCount) {
  RaceConfig kvm = scheduled_config(ScenarioKind::kCoherence, "none+seq", HostOp::kRemap, 1);
  kvm.backend = Backend::kKvm;
  EXPECT_THROW(run_race(kvm), Error);
  RaceConfig timed = scheduled_config(ScenarioKind::kCoherence, "none+seq", HostOp::kRemap, 1);
  timed.for_duration = true;
  EXPECT_THROW(run_race(timed), Error);
}

// A PTL hold an injected delay lengthened measures the delay: the cost
// columns leave it out and count it apart.
TEST(RaceCosts, PtlHoldsLengthenedByADelayAreLeftOut) {
  // stale-spte: every operation changes a present PTE (the coherence race
  // skips one when it cannot take the application's lock).
  RaceConfig config = soft_config(ScenarioKind::kStaleSpte, *spte::parse_scheme("ptl-page+seq"),
                                  HostOp::kRemap, 30);
  config.delays = {parse_delay("host_after_pte_clear=2000000")};  // 2 ms inside the PTL
  const RaceResult result = run_race(config);
  EXPECT_GE(result.ptl_holds_delayed, 10u) << describe(result);
  EXPECT_GT(result.ptl_holds, 0u);
  EXPECT_LT(result.ptl_hold_p99_ns, 2000000u);
}

TEST(RaceConfigCheck, BadVcpuCountIsBadInput) {
  RaceConfig config =
      soft_config(ScenarioKind::kCoherence, *spte::parse_scheme("none+seq"), HostOp::kRemap, 10);
  config.vcpus = 0;
  EXPECT_THROW(run_race(config), Error);
  config.vcpus = 1;
  config.operations = 0;
  EXPECT_THROW(run_race(config), Error);
}

TEST(RaceOutput, JsonHasTheContractFields) {
  RaceResult result = run_race(soft_config(
      ScenarioKind::kCoherence, *spte::parse_scheme("start-end+seq-count"), HostOp::kMigrate, 50));
  std::string json = race_json({result});
  for (const char* field : {"\"scenario\": \"coherence\"", "\"op\": \"migrate\"",
                            "\"scheme\": \"start-end+seq-count\"", "\"backend\": \"soft\"",
                            "\"violations\": 0", "\"first_violation_ms\": null", "\"ops_per_s\""}) {
    EXPECT_NE(json.find(field), std::string::npos) << field << " in " << json;
  }
  EXPECT_NE(json.find("\"trace_error\": null"), std::string::npos) << json;
  std::string table = format_race_table({result});
  EXPECT_NE(table.find("start-end+seq-count"), std::string::npos);
}

// race --expect: each row against the explorer's verdict for its cell.
TEST(RaceOutput, RowsThatDisagreeWithTheExplorerAreMarked) {
  RaceResult found, missed, clean, unexpected;
  for (RaceResult* r : {&found, &missed, &clean, &unexpected}) {
    r->config.scheme = *spte::parse_scheme("none+seq");
    r->detectors = {{"stale_sptes", 0}};
  }
  found.expected_racy = missed.expected_racy = true;
  clean.expected_racy = unexpected.expected_racy = false;
  found.violations = unexpected.violations = 3;
  found.config.scheme = *spte::parse_scheme("none+naive");
  clean.config.scheme = *spte::parse_scheme("start-end+seq-count");
  unexpected.config.scheme = *spte::parse_scheme("ptl-page+seq");
  EXPECT_TRUE(found.agrees_with_explorer());
  EXPECT_FALSE(missed.agrees_with_explorer());
  EXPECT_TRUE(clean.agrees_with_explorer());
  EXPECT_FALSE(unexpected.agrees_with_explorer());
  EXPECT_TRUE(RaceResult{}.agrees_with_explorer());  // no verdict asked for
  const std::string table = format_race_table({found, missed, clean, unexpected});
  EXPECT_THAT(table, ::testing::ContainsRegex("none\\+naive +racy +yes "));
  EXPECT_THAT(table, ::testing::ContainsRegex("none\\+seq +racy +MISSED "));
  EXPECT_THAT(table, ::testing::ContainsRegex("start-end\\+seq-count +- +yes "));
  EXPECT_THAT(table, ::testing::ContainsRegex("ptl-page\\+seq +- +RACY "));
  EXPECT_NE(race_json({unexpected}).find("\"agrees\": false"), std::string::npos);
  // A racy cell whose property another scenario witnesses: either outcome.
  missed.expected_witnessed = false;
  EXPECT_TRUE(missed.agrees_with_explorer());
  EXPECT_THAT(format_race_table({missed}), ::testing::ContainsRegex("none\\+seq +racy\\? +yes "));
}

// A trace write that failed after the run (a full disk) threw out of
// run_race: the race's row was lost with it.
TEST(RaceOutput, AFailedTraceWriteKeepsTheResult) {
  RaceConfig config =
      soft_config(ScenarioKind::kCoherence, *spte::parse_scheme("none+naive"), HostOp::kRemap, 200);
  config.trace_path = "/nonexistent/race.bin";  // never opened: the writer below fails first
  std::string written_to;
  config.write_trace = [&](const std::string& path, const trace::TraceFile& file) {
    written_to = path;
    EXPECT_FALSE(file.snapshot.events.empty());
    throw Error(ExitStatus::kEnvironment,
                "writing the trace to " + path + " failed: No space left on device");
  };
  RaceResult result = run_race(config);
  EXPECT_EQ(written_to, config.trace_path);
  EXPECT_EQ(result.operations, 200u);
  EXPECT_GT(result.guest_work, 0u);
  EXPECT_EQ(result.detectors.size(), 5u);  // every detector's verdict survives
  EXPECT_EQ(result.trace_error,
            "writing the trace to /nonexistent/race.bin failed: No space left on device");
  EXPECT_NE(race_json({result}).find("\"trace_error\": \"writing the trace"), std::string::npos);
}

}  // namespace
}  // namespace sptelab::scenarios
