#include "spte/mirror.h"

namespace sptelab::spte {

const char* fault_outcome_name(FaultOutcome outcome) {
  switch (outcome) {
    case FaultOutcome::kFixed:
      return "fixed";
    case FaultOutcome::kRetry:
      return "retry";
    case FaultOutcome::kNoMemslot:
      return "no memslot (guest touched memory it has not got)";
    case FaultOutcome::kNoMemory:
      return "host out of memory";
    case FaultOutcome::kBadAccess:
      return "access not permitted (read-only memory)";
    case FaultOutcome::kUseAfterFree:
      return "use-after-free: the translation points at a freed frame";
  }
  return "unknown";
}

}  // namespace sptelab::spte
