// The binary trace file (`--trace FILE`): a versioned header, then sections
// of a tag, a length and a CRC-32 each, so a reader can skip sections it does
// not know and tells a corrupt file from a truncated one. docs/tracing.md has
// the byte layout. The file carries its own kind table (names and argument
// names), so a file stays readable when kinds are appended to event.h, and
// the ring overflow per thread, which every reader reports.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "trace/trace.h"

namespace sptelab::trace {

inline constexpr uint32_t kFileVersion = 1;

// The thread id of real-kernel events merged from tracefs (Kind::kKernel):
// they belong to no ring.
inline constexpr uint32_t kKernelThread = 0xffffffff;

// Key/value strings about the run: "command", "scheme", "scenario", "guest",
// ... Keys may repeat; order is kept.
using Metadata = std::vector<std::pair<std::string, std::string>>;

struct TraceFile {
  uint32_t version = kFileVersion;
  Snapshot snapshot;  // events ordered by time, threads, overflow
  Metadata metadata;
  // Texts of the real-kernel events: a Kind::kKernel event's "id" indexes
  // this table (see trace/kernel.h).
  std::vector<std::string> strings;
  // A file written by a newer sptelab may hold kinds this build does not
  // know: their events are left out and counted here, never silently.
  uint64_t unknown_events = 0;
  std::vector<std::string> unknown_kinds;

  // The time of the first event (the origin of relative times), 0 if empty.
  uint64_t start_ns() const;
  std::string thread_name(uint32_t id) const;
  std::optional<std::string> meta(std::string_view key) const;
};

TraceFile make_trace_file(Snapshot snapshot, Metadata metadata = {});

// Error(kBadInput) if the file cannot be written.
void write_trace_file(const std::string& path, const Snapshot& snapshot,
                      const Metadata& metadata = {});
void write_trace_file(const std::string& path, const TraceFile& file);

// Error(kBadInput) saying what is wrong for a missing, corrupt, truncated or
// unsupported file.
TraceFile read_trace_file(const std::string& path);

// The same on bytes in memory; `source` names them in error messages.
std::string encode_trace(const TraceFile& file);
TraceFile decode_trace(std::string_view bytes, const std::string& source);

}  // namespace sptelab::trace
