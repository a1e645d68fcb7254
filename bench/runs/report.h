// What a whole-run benchmark produces and how `sptelab bench` prints it: one
// row per measured quantity, always next to the baseline measured in the same
// run, and the ratio between them. The JSON document is the CLI contract's:
// {"machine": {...}, "benchmarks": [{"name", "unit", "value", "baseline",
// "ratio", ...extra fields}]}.
#pragma once

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

namespace sptelab::bench {

// An extra field of a row: a number or a string.
struct Field {
  std::string key;
  std::variant<double, std::string> value;
};

struct Result {
  std::string name;
  std::string unit;  // of value and baseline
  double value = 0;
  double baseline = 0;
  double ratio = 0;   // value / baseline
  std::string notes;  // one line for the table: what the baseline is, what was picked
  std::vector<Field> extra;

  void add(std::string key, double number) { extra.push_back({std::move(key), number}); }
  void add(std::string key, std::string text) {
    extra.push_back({std::move(key), std::move(text)});
  }
};

// value / baseline; 0 when the baseline is not positive (a run that measured
// nothing), which the smoke test rejects.
double ratio_of(double value, double baseline);

struct Machine {
  uint32_t cpus = 0;
  uint64_t memory_bytes = 0;
  std::string kernel;       // uname -r
  std::string kvm_backend;  // "vmx", "svm", "pvm", or "none" without a usable KVM device
  std::string compiler;
  std::string build_type;
};

Machine describe_machine();

std::string format_table(const std::vector<Result>& results);
std::string format_json(const Machine& machine, const std::vector<Result>& results);

// JSON numbers (finite: shortest round-trip form; NaN and infinities, which
// JSON lacks, as null). Strings: sptelab::json_string (base/json.h).
std::string json_number(double number);

}  // namespace sptelab::bench
