// Detector findings shared by the secondary MMU, the software vCPU and the
// race scenarios. A violation says what went wrong, on which gfn and frame,
// and which thread saw it; it is also emitted as a trace event so the
// timeline around it can be shown.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "mm/types.h"

namespace sptelab::spte {

enum class ViolationKind : uint8_t {
  kStaleSpte,  // auditor: a present spte maps another frame than the host PTE, or more permission
  kUseAfterFree,         // an spte or an in-flight access reached a freed or reused frame
  kLostWrite,            // a write made through one mapping is not visible through the other
  kDoubleHolder,         // two threads held the same guest spinlock at once
  kStaleRead,            // a guest read returned content the host had already replaced
  kWriteAfterWrprotect,  // a write reached a page whose host PTE was write-protected
  kCount
};
const char* violation_kind_name(ViolationKind kind);

struct Violation {
  ViolationKind kind = ViolationKind::kStaleSpte;
  uint64_t gfn = 0;
  mm::Pfn pfn = mm::kNoPfn;
  uint32_t thread = 0;  // trace thread id of the thread that saw it
  std::string detail;
};

// Thread-safe log of violations; every report is also a trace event.
class ViolationLog {
 public:
  void report(Violation violation);
  std::vector<Violation> all() const;
  size_t count() const;
  size_t count(ViolationKind kind) const;
  void clear();

 private:
  mutable std::mutex mutex_;
  std::vector<Violation> violations_;
};

}  // namespace sptelab::spte
