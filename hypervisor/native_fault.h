// Native-mode spte faults (guest/README.md, "Native mode"). On this KVM
// backend a CPL3 access to a window page that is inaccessible (or read-only,
// for a write) makes KVM_RUN fail with EFAULT and no address at all; rip is at
// the instruction, which has not executed. This decodes that instruction
// with Capstone, lists every memory access it makes (explicit operands, the
// stack of push/pop/call/ret/leave, the current element of a string
// instruction, the instruction fetch itself), checks each [address,
// address + size) against what the window allows now, and names the pages
// that need an spte fault. The exit loop resolves them through the same
// emulated fault path as an MMIO exit and re-enters: the instruction re-runs
// natively.
//
// The seam: everything comes from the kvm_run structure (the registers
// KVM_CAP_SYNC_REGS stores there) and a NativeFaultView, so the whole
// decision is unit-tested without /dev/kvm.
#pragma once

#include <linux/kvm.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "spte/mirror.h"

namespace sptelab::hypervisor {

// One memory access of an instruction, by linear address.
struct LinearAccess {
  uint64_t address = 0;
  uint32_t size = 0;
  bool write = false;  // a read-modify-write counts as a write
  bool fetch = false;  // the instruction's own bytes
  bool operator==(const LinearAccess&) const = default;
};

struct DecodedInstruction {
  uint32_t length = 0;
  std::string text;  // "lock xadd qword ptr [rax], rcx"
  std::vector<LinearAccess> accesses;
};

// nullopt if the bytes do not decode. `sregs` gives the fs/gs bases.
std::optional<DecodedInstruction> decode_accesses(const uint8_t* bytes, size_t size, uint64_t rip,
                                                  const kvm_regs& regs, const kvm_sregs& sregs);

// What the resolver needs from the VM.
class NativeFaultView {
 public:
  virtual ~NativeFaultView() = default;
  // Copies guest-physical memory that is accessible now, without faulting
  // anything in; false if a page of the range is not.
  virtual bool read_mapped(uint64_t gpa, void* out, size_t len) const = 0;
  // What the guest window allows on gfn now (the system memslot: kWrite).
  virtual spte::Access access(spte::Gfn gfn) const = 0;
  virtual uint64_t ram_bytes() const = 0;
};

struct PageNeed {
  spte::Gfn gfn = 0;
  bool write = false;
  bool operator==(const PageNeed&) const = default;
};

struct NativeFault {
  // The pages to fault in, in the order found; empty: the EFAULT matches no
  // inaccessible page (see `why`).
  std::vector<PageNeed> needs;
  std::string instruction;  // disassembly, when it decoded
  std::vector<LinearAccess> accesses;
  std::string why;  // when needs is empty
};

// The guest's 4-level long-mode translation of `linear`, read through view
// (nullopt: not mapped, or a table page is not readable now).
std::optional<uint64_t> translate_linear(const NativeFaultView& view, const kvm_sregs& sregs,
                                         uint64_t linear);

NativeFault resolve_native_fault(const kvm_regs& regs, const kvm_sregs& sregs,
                                 const NativeFaultView& view);
// The same, from the registers KVM stored in the run structure
// (kvm_valid_regs = KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS).
NativeFault resolve_native_fault(const kvm_run& run, const NativeFaultView& view);

}  // namespace sptelab::hypervisor
