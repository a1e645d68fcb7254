#include "spte/violations.h"

#include "trace/trace.h"

namespace sptelab::spte {

const char* violation_kind_name(ViolationKind kind) {
  switch (kind) {
    case ViolationKind::kStaleSpte:
      return "stale-spte";
    case ViolationKind::kUseAfterFree:
      return "use-after-free";
    case ViolationKind::kLostWrite:
      return "lost-write";
    case ViolationKind::kDoubleHolder:
      return "double-holder";
    case ViolationKind::kStaleRead:
      return "stale-read";
    case ViolationKind::kWriteAfterWrprotect:
      return "write-after-wrprotect";
    case ViolationKind::kCount:
      break;
  }
  return "unknown";
}

void ViolationLog::report(Violation violation) {
  violation.thread = trace::this_thread_id();
  trace::emit(trace::Kind::kViolation, static_cast<uint64_t>(violation.kind), violation.gfn,
              violation.pfn);
  std::lock_guard lock(mutex_);
  violations_.push_back(std::move(violation));
}

std::vector<Violation> ViolationLog::all() const {
  std::lock_guard lock(mutex_);
  return violations_;
}

size_t ViolationLog::count() const {
  std::lock_guard lock(mutex_);
  return violations_.size();
}

size_t ViolationLog::count(ViolationKind kind) const {
  std::lock_guard lock(mutex_);
  size_t n = 0;
  for (const auto& violation : violations_) n += violation.kind == kind;
  return n;
}

void ViolationLog::clear() {
  std::lock_guard lock(mutex_);
  violations_.clear();
}

}  // namespace sptelab::spte
