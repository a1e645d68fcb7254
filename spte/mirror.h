// What the secondary MMU tells the thing that actually uses its sptes (the
// software vCPU's TLB, or the hypervisor's guest window that the real KVM
// shadow MMU caches). A mirror update must take effect before it returns:
// once a zap returns, no access through the old translation may happen.
#pragma once

#include <cstdint>
#include <functional>

#include "mm/types.h"

namespace sptelab::spte {

using Gfn = uint64_t;

enum class Access : uint8_t { kNone, kRead, kWrite };

// gfn .. gfn+count-1 now map pfn .. pfn+count-1 with `access`; for kNone the
// pfn is meaningless and the pages become inaccessible.
struct MirrorUpdate {
  Gfn gfn = 0;
  mm::Pfn pfn = mm::kNoPfn;
  uint32_t count = 1;
  Access access = Access::kNone;
};

class Mirror {
 public:
  virtual ~Mirror() = default;
  virtual void update(const MirrorUpdate& update) = 0;
};

enum class FaultOutcome : uint8_t {
  kFixed,      // an spte with the needed access is present now
  kRetry,      // the fault raced with an invalidation: re-enter and fault again
  kNoMemslot,  // the gfn is outside every memslot: the guest touched memory it has not got
  kNoMemory,   // the host could not provide a page (out of frames)
  kBadAccess,  // write to a read-only memslot
  // Not a fault outcome the MMU returns: a software vCPU's access found its
  // translation pointing at a freed frame (reported as a violation).
  kUseAfterFree,
};
const char* fault_outcome_name(FaultOutcome outcome);

// The face of the secondary MMU that an execution engine (software vCPU or
// the KVM hypervisor) uses. spte::Mmu implements it.
class GuestMemory {
 public:
  virtual ~GuestMemory() = default;

  // Resolves a secondary-MMU fault on gfn through the configured protocol.
  virtual FaultOutcome fault(Gfn gfn, bool write, uint32_t vcpu) = 0;

  // Runs `fn` on the frame gfn maps, with the spte held stable (no zap can
  // complete meanwhile). Returns false without calling fn if no spte with the
  // needed access is present: fault first, then try again.
  virtual bool access(Gfn gfn, bool write, const std::function<void(uint8_t* frame)>& fn) = 0;

  virtual void set_mirror(Mirror* mirror) = 0;
  virtual uint64_t gfn_count() const = 0;  // guest RAM size in pages
};

}  // namespace sptelab::spte
