// `sptelab bench --quick --json` end to end: the JSON document has the CLI
// contract's shape and every row a positive, finite ratio. No timing is
// asserted (the machine is shared and noisy); only that the benchmarks ran
// and measured something.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <string>

#include "tests/hypervisor/kvm_env.h"
#include "tests/tools/cli.h"
#include "tests/trace/json.h"

namespace sptelab::bench {
namespace {

using tools::testing::CliResult;
using tools::testing::run_sptelab;
using trace::testing::Json;
using trace::testing::parse_json;

void expect_machine(const Json& machine) {
  ASSERT_TRUE(machine.is_object());
  for (const char* key : {"cpus", "memory_bytes"}) {
    ASSERT_TRUE(machine.has(key) && machine[key].is_number()) << key;
    EXPECT_GT(machine[key].number(), 0) << key;
  }
  for (const char* key : {"kernel", "kvm_backend", "compiler", "build_type"}) {
    ASSERT_TRUE(machine.has(key) && machine[key].is_string()) << key;
    EXPECT_FALSE(machine[key].string().empty()) << key;
  }
}

// Every row: name, unit, value, baseline, ratio; ratio positive and finite.
std::set<std::string> expect_rows(const Json& benchmarks) {
  std::set<std::string> names;
  EXPECT_TRUE(benchmarks.is_array());
  if (!benchmarks.is_array()) return names;
  for (const Json& row : benchmarks.array()) {
    EXPECT_TRUE(row.is_object());
    if (!row.is_object()) continue;
    for (const char* key : {"name", "unit"}) {
      EXPECT_TRUE(row.has(key) && row[key].is_string()) << key;
    }
    const std::string name = row.has("name") ? row["name"].string() : "?";
    bool numbers = true;
    for (const char* key : {"value", "baseline", "ratio"}) {
      bool number = row.has(key) && row[key].is_number();
      EXPECT_TRUE(number) << name << ": " << key;
      numbers = numbers && number;
      if (number) {
        EXPECT_TRUE(std::isfinite(row[key].number())) << name << ": " << key;
      }
    }
    if (!numbers) continue;
    EXPECT_GT(row["ratio"].number(), 0) << name;
    EXPECT_GT(row["baseline"].number(), 0) << name;
    EXPECT_TRUE(names.insert(name).second) << "duplicate row " << name;
  }
  return names;
}

TEST(BenchSmoke, QuickJsonHasTheContractShapeAndPositiveRatios) {
  CliResult run = run_sptelab({"bench", "--quick", "--json"});
  const bool kvm = hypervisor::testing::kvm_unavailable_reason().empty();
  // Without KVM the KVM benchmarks are skipped (exit 3) and the rest run.
  ASSERT_EQ(run.status, kvm ? 0 : 3) << run.err;
  Json document = parse_json(run.out);
  ASSERT_TRUE(document.is_object());
  EXPECT_EQ(document.object().size(), 2u) << "only machine and benchmarks";
  ASSERT_TRUE(document.has("machine"));
  ASSERT_TRUE(document.has("benchmarks"));
  expect_machine(document["machine"]);
  std::set<std::string> names = expect_rows(document["benchmarks"]);
  EXPECT_TRUE(names.count("remap_start-end+seq-count"));
  EXPECT_TRUE(names.count("trace_overhead"));
  EXPECT_TRUE(names.count("explore_sleep_sets"));
  if (kvm) {
    for (const char* name :
         {"spte_fault_seq", "spte_fault_random", "spte_fault_native", "fault_scale", "range_zap"}) {
      EXPECT_TRUE(names.count(name)) << name;
    }
  } else {
    EXPECT_NE(run.err.find("skipped"), std::string::npos) << run.err;
  }
}

// `sptelab bench explore` runs that benchmark alone (it needs no /dev/kvm):
// one row per cell searched and one for the sleep sets.
TEST(BenchSmoke, ExploreRunsAloneByName) {
  CliResult run = run_sptelab({"bench", "explore", "--quick", "--json"});
  ASSERT_EQ(run.status, 0) << run.err;
  Json document = parse_json(run.out);
  ASSERT_TRUE(document.has("benchmarks"));
  std::set<std::string> names = expect_rows(document["benchmarks"]);
  EXPECT_EQ(names, (std::set<std::string>{"explore_start-end+seq-count/remap/coherence",
                                          "explore_start-end+naive/ksm/stale-spte",
                                          "explore_sleep_sets"}));
  for (const Json& row : document["benchmarks"].array()) {
    if (row["name"].string() == "explore_sleep_sets") {
      EXPECT_EQ(row["unit"].string(), "s");
      continue;
    }
    EXPECT_EQ(row["unit"].string(), "schedules/s");
    ASSERT_TRUE(row.has("verdict") && row["verdict"].is_string());
    EXPECT_GT(row["schedules"].number(), 0);
  }
}

TEST(BenchSmoke, UnknownBenchmarkIsBadUsageNamingTheChoices) {
  CliResult run = run_sptelab({"bench", "no_such_benchmark"});
  EXPECT_EQ(run.status, 2);
  EXPECT_NE(run.err.find("spte_fault_seq"), std::string::npos) << run.err;
}

TEST(BenchSmoke, HelpListsEveryBenchmark) {
  CliResult run = run_sptelab({"bench", "--help"});
  ASSERT_EQ(run.status, 0);
  for (const char* name :
       {"spte_fault_seq", "spte_fault_random", "spte_fault_native", "fault_scale", "range_zap",
        "remap_start-end+seq-count", "remap_ptl-page+seq-count", "trace_overhead", "explore"}) {
    EXPECT_NE(run.out.find(name), std::string::npos) << name;
  }
}

}  // namespace
}  // namespace sptelab::bench
