#include "mm/types.h"

namespace sptelab::mm {

const char* invalidate_event_name(InvalidateEvent event) {
  switch (event) {
    case InvalidateEvent::kUnmap:
      return "unmap";
    case InvalidateEvent::kClear:
      return "clear";
    case InvalidateEvent::kProtectionVma:
      return "protection_vma";
    case InvalidateEvent::kProtectionPage:
      return "protection_page";
    case InvalidateEvent::kSoftDirty:
      return "soft_dirty";
    case InvalidateEvent::kRelease:
      return "release";
    case InvalidateEvent::kMigrate:
      return "migrate";
    case InvalidateEvent::kExclusive:
      return "exclusive";
  }
  return "unknown";
}

const char* mm_op_name(MmOp op) {
  switch (op) {
    case MmOp::kMigrate:
      return "migrate";
    case MmOp::kRemap:
      return "remap";
    case MmOp::kBreakCow:
      return "break_cow";
    case MmOp::kFork:
      return "fork";
    case MmOp::kDontneed:
      return "dontneed";
    case MmOp::kMunmap:
      return "munmap";
    case MmOp::kMprotect:
      return "mprotect";
    case MmOp::kMkclean:
      return "mkclean";
    case MmOp::kWriteback:
      return "writeback";
    case MmOp::kKsmMerge:
      return "ksm_merge";
    case MmOp::kReclaim:
      return "reclaim";
    case MmOp::kAge:
      return "age";
    case MmOp::kWpClean:
      return "wp_clean";
    case MmOp::kPunchHole:
      return "punch_hole";
    case MmOp::kExit:
      return "exit";
    case MmOp::kCount:
      break;
  }
  return "unknown";
}

}  // namespace sptelab::mm
