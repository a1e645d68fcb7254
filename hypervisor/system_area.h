// The x86-64 structures sptelab builds in guest RAM below the image: per-vCPU
// stacks, exception stacks and TSSs, an IDT whose gates lead to tiny
// exception stubs, a GDT with a 64-bit code segment, and the identity map of
// all guest RAM in 4 KiB pages. Page 0 stays unused so that a guest's null
// pointer write cannot corrupt them.
//
// The exception stubs exist because the real shadow MMU reads guest page
// tables through the guest window: when a page-table page is inaccessible
// there (its spte was zapped), KVM injects a #PF into the guest instead of
// exiting (hypervisor/README.md, "Measured facts"). A stub reports the
// exception on port SPTELAB_PORT_EXCEPTION and the exit loop either resumes
// the guest (the #PF was such a spurious one) or ends the run with a dump.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sptelab::hypervisor {

class GuestPhysical;
struct ElfImage;

inline constexpr uint16_t kCodeSelector = 0x08;
inline constexpr uint16_t kDataSelector = 0x10;
inline constexpr uint16_t kUserDataSelector = 0x18;  // DPL 3 (native mode), RPL 3: 0x1b
inline constexpr uint16_t kUserCodeSelector = 0x20;  // DPL 3, 64-bit, RPL 3: 0x23
inline constexpr uint16_t kFirstTssSelector = 0x28;
inline constexpr uint32_t kExceptionVectors = 32;
inline constexpr uint32_t kMaxVcpus = 253;  // TSS descriptors in a one-page GDT

// Stub code: push rax; mov eax, vector; out SPTELAB_PORT_EXCEPTION, eax; hlt.
// When the port exit is seen, rsp points at the saved rax, then the error
// code (vectors that push one), then the CPU's exception frame.
inline constexpr uint64_t kStubBytes = 16;
inline constexpr uint64_t kStubPortExitOffset = 8;  // rip after the out
bool exception_has_error_code(uint32_t vector);
const char* exception_name(uint32_t vector);

struct SystemRegion {
  std::string name;
  uint64_t start = 0;
  uint64_t end = 0;
};

struct SystemLayout {
  uint64_t ram_bytes = 0;
  uint32_t vcpus = 0;

  uint64_t stacks = 0;            // vCPU i: [stacks + i * stack bytes, + stack bytes)
  uint64_t exception_stacks = 0;  // vCPU i: one page, the IST1 stack
  uint64_t tss = 0;               // vCPU i: tss + i * kTssStride
  uint64_t idt = 0;               // 32 gates, then the stubs at idt + kStubsOffset
  uint64_t gdt = 0;
  uint64_t pml4 = 0;  // then the PDPTs, PDs and PTs, contiguous
  uint64_t pdpts = 0, pds = 0, pts = 0;
  uint64_t pdpt_count = 0, pd_count = 0, pt_count = 0;
  uint64_t end = 0;  // first byte after the system area

  // A 104-byte TSS, then the I/O permission bitmap for ports below
  // kTssIoPorts and its 0xff terminator (the limit covers them; ports beyond
  // it are closed at CPL3). Scenario ports 0x100..0x1ff, plus the three
  // after them that a 32-bit access to 0x1ff also checks.
  static constexpr uint64_t kTssStride = 256;
  static constexpr uint64_t kTssIoBitmap = 104;
  static constexpr uint32_t kTssIoPorts = 0x208;
  static constexpr uint64_t kTssBytes = kTssIoBitmap + kTssIoPorts / 8 + 1;
  static constexpr uint64_t kStubsOffset = 0x200;

  uint64_t stack_top(uint32_t vcpu) const;
  uint64_t exception_stack_top(uint32_t vcpu) const;
  uint64_t tss_address(uint32_t vcpu) const { return tss + vcpu * kTssStride; }
  uint16_t tss_selector(uint32_t vcpu) const;
  uint16_t gdt_limit() const;
  uint16_t idt_limit() const { return kExceptionVectors * 16 - 1; }
  uint64_t stub(uint32_t vector) const { return idt + kStubsOffset + vector * kStubBytes; }
  // The vector whose stub's port exit leaves rip here, or -1.
  int stub_vector_at(uint64_t rip) const;
  std::vector<SystemRegion> regions() const;
};

// Throws Error(kBadInput) for 0 or too many vCPUs.
SystemLayout plan_system_layout(uint64_t ram_bytes, uint32_t vcpus);

// Throws Error(kBadInput) if the system area does not fit below the image.
void check_image_fits(const SystemLayout& layout, const ElfImage& image);

// Writes every structure (and zeroes the stacks) through the secondary MMU.
void write_system_area(const SystemLayout& layout, GuestPhysical& memory);

}  // namespace sptelab::hypervisor
