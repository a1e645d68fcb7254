// `sptelab conform`'s comparison: the kernel's and the emulator's ranges of
// each op side by side, and whether they agree, as a table or JSON.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "conform/ranges.h"
#include "conform/script.h"
#include "conform/side.h"

namespace sptelab::conform {

struct OpResult {
  ScriptOp op;
  OpRanges kernel;
  OpRanges emulator;
  bool agrees() const { return same_ranges(kernel, emulator); }
};

struct Report {
  std::string kernel;  // Side::name() of each side
  std::string emulator;
  size_t script_ops = 0;  // ops in the script; ops.size() is fewer when interrupted
  std::vector<OpResult> ops;
  int interrupted = 0;  // the stop signal, 0 if none

  size_t differing() const;
};

// Runs the kernel side first (it stops at a stop signal), then the
// emulator over the ops the kernel finished, and pairs the results.
Report compare(const Script& script, Side& kernel, Side& emulator);

// The table (fits 100 columns, a legend under it) and a summary line.
std::string format_table(const Report& report);
// {"kernel", "emulator", "script_ops", "agree", "differ", "interrupted"?,
//  "ops": [{"line", "op", "kernel": [{"slot", "first", "end"}],
//  "emulator": [{"slot", "first", "end", "event"}], "agrees"}]}
std::string format_json(const Report& report);

}  // namespace sptelab::conform
