// Shared fixture for the mm unit tests: a small host (frames, a file, an
// address space with recording notifier hooks, one host CPU) and a helper
// that turns a trace snapshot into the sequence of steps an ordering test
// compares with the documented order.
#pragma once

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "base/inject.h"
#include "mm/audit.h"
#include "mm/file.h"
#include "mm/host_cpu.h"
#include "mm/mm.h"
#include "mm/phys_mem.h"
#include "tests/mm/recording_hooks.h"
#include "trace/trace.h"

namespace sptelab::mm::testing {

using trace::Kind;

// The step kinds an ordering test looks at by default.
inline const std::set<Kind>& ordering_kinds() {
  static const std::set<Kind> kinds = {
      Kind::kPtlLock,     Kind::kPtlUnlock, Kind::kPteSet,  Kind::kPteClear,   Kind::kTlbFlush,
      Kind::kTlbFlushAck, Kind::kPageFree,  Kind::kRmapAdd, Kind::kRmapRemove, Kind::kCheckpoint};
  return kinds;
}

inline std::string step_name(const trace::Event& event) {
  switch (event.kind) {
    case Kind::kCheckpoint:
      return hook_point_name(static_cast<HookPoint>(event.args[0]));
    case Kind::kTlbFlushAck:
      return "tlb_ack";
    case Kind::kMmapLock:
      return event.args[0] ? "mmap_lock_write" : "mmap_lock_read";
    case Kind::kMmapUnlock:
      return event.args[0] ? "mmap_unlock_write" : "mmap_unlock_read";
    default:
      return std::string(trace::info(event.kind).name);
  }
}

// The recorded steps of the calling test, in program order.
inline std::vector<std::string> steps(const std::set<Kind>& kinds = ordering_kinds()) {
  std::vector<std::string> out;
  for (const trace::Event& event : trace::snapshot().events) {
    if (kinds.count(event.kind)) out.push_back(step_name(event));
  }
  return out;
}

inline std::set<Kind> with(std::set<Kind> kinds, std::initializer_list<Kind> more) {
  kinds.insert(more);
  return kinds;
}

class MmTest : public ::testing::Test {
 protected:
  static constexpr size_t kFrames = 256;

  MmTest() { mm.set_notifier_hooks(&hooks); }
  ~MmTest() override { inject::clear_all(); }

  std::vector<std::string> audit_all() {
    std::vector<std::string> problems = audit(phys, {&mm}, {&file});
    for (const std::string& problem : problems) ADD_FAILURE() << "audit: " << problem;
    return problems;
  }

  // Maps `pages` anonymous pages read/write and writes `value` + i to the
  // first word of page i through the CPU.
  uint64_t anon_written(size_t pages, uint64_t value) {
    uint64_t addr = mm.mmap_anon(pages * kPageSize, kProtRead | kProtWrite);
    for (size_t i = 0; i < pages; ++i) cpu.store64(addr + i * kPageSize, value + i);
    return addr;
  }
  Pfn pfn_at(uint64_t addr) { return mm.read_pte_lockless(addr).pfn(); }

  PhysMem phys{kFrames};
  RecordingHooks hooks;
  File file{phys, "data", 16};
  Mm mm{phys};
  HostCpu cpu{mm, 0};
};

}  // namespace sptelab::mm::testing
