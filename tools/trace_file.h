// Writes a trace snapshot as text, one event a line (like trace-cmd report):
//   <seconds since the first event> <thread> <event> <arg>=<value> ...
#pragma once

#include <string>

#include "trace/trace.h"

namespace sptelab::tools {

// Error(kBadInput) if the file cannot be written.
void write_trace_text(const std::string& path, const trace::Snapshot& snapshot);

}  // namespace sptelab::tools
