// Host-side access to guest-physical memory through the secondary MMU: every
// page is faulted in through GuestMemory::fault and touched only inside
// GuestMemory::access, so the host never reads or writes a frame that the
// emulated spte does not map at that moment. The loader, the system-area
// builder, the MMIO completion and the crash dump all go through here.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "spte/mirror.h"

namespace sptelab::hypervisor {

// Why a guest-physical access could not be done.
struct MemoryFailure {
  uint64_t gpa = 0;
  spte::FaultOutcome outcome = spte::FaultOutcome::kNoMemslot;
  std::string describe() const;
};

// For setup writes (loader, system area) that cannot fail on a sane memory:
// out of frames is the environment's problem (exit 3), anything else is a bug
// (exit 4).
[[noreturn]] void throw_setup_failure(const std::string& what, const MemoryFailure& failure);

struct GuestPhysicalStats {
  uint64_t faults = 0;          // GuestMemory::fault calls
  uint64_t fault_retries = 0;   // kRetry answers
  uint64_t access_retries = 0;  // access() found the spte zapped after a kFixed fault
};

class GuestPhysical {
 public:
  // vcpu: the vCPU index the faults are attributed to (the loader uses 0).
  // abort: when set, a fault that keeps answering kRetry gives up with a
  // kRetry failure (a vCPU whose run is ending must not wait for an
  // invalidation that may never close).
  GuestPhysical(spte::GuestMemory& memory, uint32_t vcpu, const std::atomic<bool>* abort = nullptr)
      : memory_(memory), vcpu_(vcpu), abort_(abort) {}

  uint64_t ram_bytes() const { return memory_.gfn_count() << 12; }

  // Guest-physical [0, bytes) is plain host memory at `base` (the system
  // area's own memslot, VmConfig::system_memslot), not `memory`: accesses
  // there touch it directly and never fault.
  void set_fixed(uint8_t* base, uint64_t bytes) {
    fixed_ = base;
    fixed_pages_ = bytes >> 12;
  }
  bool is_fixed(spte::Gfn gfn) const { return gfn < fixed_pages_; }

  // Faults gfn in (retrying while the fault protocol says so) and runs fn on
  // the frame with the spte held stable. fn may run only once.
  std::optional<MemoryFailure> with_page(spte::Gfn gfn, bool write,
                                         const std::function<void(uint8_t* frame)>& fn);

  std::optional<MemoryFailure> read(uint64_t gpa, void* out, size_t len);
  std::optional<MemoryFailure> write(uint64_t gpa, const void* in, size_t len);
  std::optional<MemoryFailure> zero(uint64_t gpa, size_t len);

  // A guest access of 1, 2, 4 or 8 bytes inside one page, done as one atomic
  // load or store when aligned (the guest may race with it natively), so an
  // MMIO-completed access tears no more than the guest's own would.
  std::optional<MemoryFailure> load(uint64_t gpa, void* out, size_t len);
  std::optional<MemoryFailure> store(uint64_t gpa, const void* in, size_t len);

  // Faults gfn in without touching it.
  std::optional<MemoryFailure> fault_in(spte::Gfn gfn, bool write);

  const GuestPhysicalStats& stats() const { return stats_; }

 private:
  std::optional<MemoryFailure> fault(spte::Gfn gfn, bool write);
  template <typename PageFn>
  std::optional<MemoryFailure> for_each_page(uint64_t gpa, size_t len, bool write, PageFn&& fn);

  spte::GuestMemory& memory_;
  uint32_t vcpu_;
  const std::atomic<bool>* abort_;
  uint8_t* fixed_ = nullptr;
  uint64_t fixed_pages_ = 0;
  GuestPhysicalStats stats_;
};

}  // namespace sptelab::hypervisor
