#include "conform/report.h"

#include <fmt/format.h>

#include <algorithm>
#include <csignal>

#include "base/json.h"
#include "base/table.h"

namespace sptelab::conform {
namespace {

std::string signal_text(int signal) {
  if (signal == SIGINT) return "SIGINT";
  if (signal == SIGTERM) return "SIGTERM";
  return fmt::format("signal {}", signal);
}

std::string json_ranges(const OpRanges& ranges, bool with_event) {
  std::string out = "[";
  for (const SlotRange& range : ranges) {
    if (out.size() > 1) out += ", ";
    out += fmt::format(R"({{"slot": {}, "first": {}, "end": {})",
                       json_string(slot_name(range.slot)), range.first, range.end);
    if (with_event) out += fmt::format(R"(, "event": {})", json_string(range.event));
    out += "}";
  }
  return out + "]";
}

// Each range column's share of the 100 columns.
constexpr size_t kRangesWidth = 29;

// The ranges as format_ranges writes them, or, when that is wider than the
// column, how many there are and the pages they span.
std::string ranges_cell(const OpRanges& ranges) {
  std::string full = format_ranges(ranges);
  if (full.size() <= kRangesWidth) return full;
  int64_t first = ranges.front().first;
  int64_t end = ranges.front().end;
  bool one_slot = true;
  for (const SlotRange& range : ranges) {
    first = std::min(first, range.first);
    end = std::max(end, range.end);
    one_slot &= range.slot == ranges.front().slot;
  }
  if (!one_slot) return fmt::format("{} ranges (--json)", ranges.size());
  return fmt::format("{} in {} ranges",
                     format_ranges({SlotRange{ranges.front().slot, first, end, ""}}),
                     ranges.size());
}

}  // namespace

size_t Report::differing() const {
  return static_cast<size_t>(
      std::count_if(ops.begin(), ops.end(), [](const OpResult& op) { return !op.agrees(); }));
}

Report compare(const Script& script, Side& kernel, Side& emulator) {
  Report report;
  report.kernel = kernel.name();
  report.emulator = emulator.name();
  report.script_ops = script.ops.size();
  const std::vector<OpRanges> kernel_ranges = kernel.run(script, script.ops.size());
  const std::vector<OpRanges> emulator_ranges = emulator.run(script, kernel_ranges.size());
  const size_t done = std::min(kernel_ranges.size(), emulator_ranges.size());
  for (size_t i = 0; i < done; ++i) {
    report.ops.push_back(OpResult{script.ops[i], kernel_ranges[i], emulator_ranges[i]});
  }
  return report;
}

std::string format_table(const Report& report) {
  Table table({{"line", "the op's line in the script"},
               {"op", "OP SLOT FIRST COUNT, pages relative to the slot", false, true},
               {"kernel",
                "ranges kvm:kvm_unmap_hva_range reported, as SLOT[FIRST,END) in pages of the "
                "slot; [a,b)/k is a run of adjacent ranges of k pages each; '[a,b) in N ranges': "
                "N ranges within [a,b), each in --json; - none",
                false, true},
               {"emulator", "ranges the emulator's invalidate_range_start got (events: --json)",
                false, true},
               {"agrees", "yes: the same ranges in the same order"}});
  for (const OpResult& result : report.ops) {
    table.add_row({std::to_string(result.op.line), result.op.text, ranges_cell(result.kernel),
                   ranges_cell(result.emulator), result.agrees() ? "yes" : "DIFFER"});
  }
  std::string out = fmt::format("conform: {}\n      vs {}\n\n", report.kernel, report.emulator);
  out += table.format(kTableWidth);
  out += fmt::format("\n{} of {} ops agree", report.ops.size() - report.differing(),
                     report.ops.size());
  if (report.interrupted != 0) {
    out += fmt::format("; interrupted by {} after {} of the script's {} ops",
                       signal_text(report.interrupted), report.ops.size(), report.script_ops);
  }
  return out + "\n";
}

std::string format_json(const Report& report) {
  std::string out =
      fmt::format(R"({{"kernel": {}, "emulator": {}, "script_ops": {}, "agree": {}, "differ": {})",
                  json_string(report.kernel), json_string(report.emulator), report.script_ops,
                  report.ops.size() - report.differing(), report.differing());
  if (report.interrupted != 0) {
    out += fmt::format(R"(, "interrupted": {})", json_string(signal_text(report.interrupted)));
  }
  out += R"(, "ops": [)";
  for (size_t i = 0; i < report.ops.size(); ++i) {
    const OpResult& result = report.ops[i];
    out += fmt::format(R"({}{{"line": {}, "op": {}, "kernel": {}, "emulator": {}, "agrees": {}}})",
                       i == 0 ? "" : ", ", result.op.line, json_string(result.op.text),
                       json_ranges(result.kernel, false), json_ranges(result.emulator, true),
                       result.agrees() ? "true" : "false");
  }
  return out + "]}\n";
}

}  // namespace sptelab::conform
