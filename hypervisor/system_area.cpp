#include "hypervisor/system_area.h"

#include <array>
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"
#include "base/x86_pte.h"
#include "guest/sptelab_abi.h"
#include "hypervisor/elf.h"
#include "hypervisor/guest_physical.h"
#include "mm/types.h"

namespace sptelab::hypervisor {
namespace {

using mm::kPageSize;

// Page-table entry bits (Intel SDM vol. 3, 4.5). Accessed and dirty are set up
// front so that the CPU (or KVM's shadow walker) never has to write them back
// into a page-table page that might be inaccessible in the window.
// User-accessible at every level, for guests in native mode (CPL3); CPL0
// code is unaffected (no SMEP/SMAP in CR4).
constexpr uint64_t kTableFlags =
    x86::kPtePresent | x86::kPteWritable | x86::kPteUser | x86::kPteAccessed;
constexpr uint64_t kLeafFlags = kTableFlags | x86::kPteDirty;

constexpr uint64_t kSystemBase = kPageSize;  // page 0 left unused
constexpr uint64_t kEntriesPerTable = 512;

// Flat 64-bit code (L=1, D=0) and data segments, DPL 0, and the same at DPL 3.
constexpr uint64_t kCodeDescriptor = 0x00af9b000000ffffull;
constexpr uint64_t kDataDescriptor = 0x00cf93000000ffffull;
constexpr uint64_t kUserCodeDescriptor = 0x00affb000000ffffull;
constexpr uint64_t kUserDataDescriptor = 0x00cff3000000ffffull;

// The ports a CPL3 guest may use (guest/README.md, "Native mode"). A 32-bit
// `out` to port p is checked against the bits of p..p+3, so the ports right
// after the 32-bit ABI ports are open too (sptelab refuses them anyway). The
// exception port stays closed: only sptelab's stubs report there.
bool open_at_cpl3(uint32_t port) {
  if (port == SPTELAB_PORT_CONSOLE) return true;
  if (port >= SPTELAB_PORT_ARG && port <= SPTELAB_PORT_EXIT + 3) return true;
  return port >= SPTELAB_PORT_SCENARIO_BASE && port < SystemLayout::kTssIoPorts;
}

uint64_t div_round_up(uint64_t value, uint64_t unit) {
  return (value + unit - 1) / unit;
}

using Page = std::array<uint64_t, kEntriesPerTable>;

void write_page(GuestPhysical& memory, uint64_t gpa, const Page& page, const char* what) {
  if (auto failure = memory.write(gpa, page.data(), kPageSize)) {
    throw_setup_failure(fmt::format("writing the guest's {}", what), *failure);
  }
}

void write_page_tables(const SystemLayout& layout, GuestPhysical& memory) {
  Page page{};
  for (uint64_t i = 0; i < layout.pdpt_count; ++i) {
    page[i] = (layout.pdpts + i * kPageSize) | kTableFlags;
  }
  write_page(memory, layout.pml4, page, "PML4");
  // Entry k of the PDPTs (all of them, as one array) points at PD k; entry j
  // of the PDs at PT j; entry n of the PTs maps guest frame n.
  auto write_level = [&](uint64_t tables, uint64_t table_count, uint64_t entries, auto&& entry_for,
                         const char* what) {
    for (uint64_t t = 0; t < table_count; ++t) {
      page.fill(0);
      for (uint64_t i = 0; i < kEntriesPerTable; ++i) {
        uint64_t n = t * kEntriesPerTable + i;
        if (n < entries) page[i] = entry_for(n);
      }
      write_page(memory, tables + t * kPageSize, page, what);
    }
  };
  uint64_t ram_pages = layout.ram_bytes / kPageSize;
  write_level(
      layout.pdpts, layout.pdpt_count, layout.pd_count,
      [&](uint64_t n) { return (layout.pds + n * kPageSize) | kTableFlags; }, "PDPT");
  write_level(
      layout.pds, layout.pd_count, layout.pt_count,
      [&](uint64_t n) { return (layout.pts + n * kPageSize) | kTableFlags; }, "PD");
  write_level(
      layout.pts, layout.pt_count, ram_pages,
      [&](uint64_t n) { return (n * kPageSize) | kLeafFlags; }, "page tables");
}

void write_gdt(const SystemLayout& layout, GuestPhysical& memory) {
  Page page{};
  page[kCodeSelector / 8] = kCodeDescriptor;
  page[kDataSelector / 8] = kDataDescriptor;
  page[kUserDataSelector / 8] = kUserDataDescriptor;
  page[kUserCodeSelector / 8] = kUserCodeDescriptor;
  for (uint32_t vcpu = 0; vcpu < layout.vcpus; ++vcpu) {
    // A 16-byte available 64-bit TSS descriptor (type 9, present).
    uint64_t base = layout.tss_address(vcpu);
    uint64_t limit = SystemLayout::kTssBytes - 1;
    uint64_t low = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) |
                   (((limit >> 16) & 0xf) << 48) | (((base >> 24) & 0xff) << 56);
    size_t index = layout.tss_selector(vcpu) / 8;
    page[index] = low;
    page[index + 1] = base >> 32;
  }
  write_page(memory, layout.gdt, page, "GDT");
}

void write_tss(const SystemLayout& layout, GuestPhysical& memory) {
  uint64_t pages = div_round_up(layout.vcpus * SystemLayout::kTssStride, kPageSize);
  std::vector<uint8_t> bytes(pages * kPageSize, 0);
  for (uint32_t vcpu = 0; vcpu < layout.vcpus; ++vcpu) {
    uint8_t* tss = bytes.data() + vcpu * SystemLayout::kTssStride;
    uint64_t ist1 = layout.exception_stack_top(vcpu);
    std::memcpy(tss + 4, &ist1, 8);   // rsp0: the stack for exceptions from CPL3
    std::memcpy(tss + 36, &ist1, 8);  // ist1: every exception gate uses it
    uint16_t io_map = SystemLayout::kTssIoBitmap;
    std::memcpy(tss + 102, &io_map, 2);
    uint8_t* bitmap = tss + SystemLayout::kTssIoBitmap;  // a set bit closes the port
    for (uint32_t port = 0; port < SystemLayout::kTssIoPorts; ++port) {
      if (!open_at_cpl3(port)) bitmap[port / 8] |= static_cast<uint8_t>(1u << (port % 8));
    }
    bitmap[SystemLayout::kTssIoPorts / 8] = 0xff;  // the terminator byte
  }
  if (auto failure = memory.write(layout.tss, bytes.data(), bytes.size())) {
    throw_setup_failure("writing the guest's TSS", *failure);
  }
}

void write_idt_and_stubs(const SystemLayout& layout, GuestPhysical& memory) {
  std::array<uint8_t, kPageSize> bytes{};
  for (uint32_t vector = 0; vector < kExceptionVectors; ++vector) {
    uint64_t stub = layout.stub(vector);
    // Interrupt gate, present, DPL 0, IST 1.
    uint64_t low = (stub & 0xffff) | (uint64_t{kCodeSelector} << 16) | (1ull << 32) |
                   (0x8eull << 40) | (((stub >> 16) & 0xffff) << 48);
    uint64_t high = stub >> 32;
    std::memcpy(bytes.data() + vector * 16, &low, 8);
    std::memcpy(bytes.data() + vector * 16 + 8, &high, 8);

    uint8_t* code = bytes.data() + SystemLayout::kStubsOffset + vector * kStubBytes;
    std::memset(code, 0xcc, kStubBytes);  // int3 padding
    code[0] = 0x50;                       // push rax
    code[1] = 0xb8;                       // mov eax, imm32
    std::memcpy(code + 2, &vector, 4);
    code[6] = 0xe7;  // out imm8, eax
    code[7] = SPTELAB_PORT_EXCEPTION;
    code[8] = 0xf4;  // hlt
    code[9] = 0xeb;  // jmp back to the hlt
    code[10] = 0xfd;
  }
  if (auto failure = memory.write(layout.idt, bytes.data(), bytes.size())) {
    throw_setup_failure("writing the guest's IDT", *failure);
  }
}

std::string human_bytes(uint64_t bytes) {
  if (bytes % (1ull << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  if (bytes % (1ull << 10) == 0) return fmt::format("{} KiB", bytes >> 10);
  return fmt::format("{} bytes", bytes);
}

}  // namespace

bool exception_has_error_code(uint32_t vector) {
  switch (vector) {
    case 8:
    case 10:
    case 11:
    case 12:
    case 13:
    case 14:
    case 17:
    case 21:
    case 29:
    case 30:
      return true;
    default:
      return false;
  }
}

const char* exception_name(uint32_t vector) {
  static constexpr std::array<const char*, kExceptionVectors> kNames = {
      "#DE divide error",
      "#DB debug",
      "NMI",
      "#BP breakpoint",
      "#OF overflow",
      "#BR bound range",
      "#UD invalid opcode",
      "#NM device not available",
      "#DF double fault",
      "coprocessor segment overrun",
      "#TS invalid TSS",
      "#NP segment not present",
      "#SS stack-segment fault",
      "#GP general protection",
      "#PF page fault",
      "reserved (15)",
      "#MF x87 floating-point",
      "#AC alignment check",
      "#MC machine check",
      "#XM SIMD floating-point",
      "#VE virtualization",
      "#CP control protection",
      "reserved (22)",
      "reserved (23)",
      "reserved (24)",
      "reserved (25)",
      "reserved (26)",
      "reserved (27)",
      "#HV hypervisor injection",
      "#VC VMM communication",
      "#SX security",
      "reserved (31)",
  };
  return vector < kExceptionVectors ? kNames[vector] : "unknown vector";
}

uint64_t SystemLayout::stack_top(uint32_t vcpu) const {
  return stacks + (uint64_t{vcpu} + 1) * SPTELAB_STACK_BYTES;
}

uint64_t SystemLayout::exception_stack_top(uint32_t vcpu) const {
  return exception_stacks + (uint64_t{vcpu} + 1) * kPageSize;
}

uint16_t SystemLayout::tss_selector(uint32_t vcpu) const {
  return static_cast<uint16_t>(kFirstTssSelector + vcpu * 16);
}

uint16_t SystemLayout::gdt_limit() const {
  return static_cast<uint16_t>(kFirstTssSelector + vcpus * 16 - 1);
}

int SystemLayout::stub_vector_at(uint64_t rip) const {
  uint64_t first = stub(0);
  if (rip < first || rip >= stub(kExceptionVectors)) return -1;
  if ((rip - first) % kStubBytes != kStubPortExitOffset) return -1;
  return static_cast<int>((rip - first) / kStubBytes);
}

std::vector<SystemRegion> SystemLayout::regions() const {
  return {
      {"stacks", stacks, exception_stacks},
      {"exception stacks", exception_stacks, tss},
      {"TSS", tss, idt},
      {"IDT and exception stubs", idt, gdt},
      {"GDT", gdt, pml4},
      {"page tables", pml4, end},
  };
}

SystemLayout plan_system_layout(uint64_t ram_bytes, uint32_t vcpus) {
  if (vcpus == 0 || vcpus > kMaxVcpus) {
    throw_bad_input(fmt::format("{} vCPUs: sptelab runs 1 to {} vCPUs", vcpus, kMaxVcpus));
  }
  if (ram_bytes == 0 || ram_bytes % kPageSize != 0) {
    throw_bad_input(
        fmt::format("guest RAM of {} bytes is not a positive multiple of 4 KiB", ram_bytes));
  }
  SystemLayout layout;
  layout.ram_bytes = ram_bytes;
  layout.vcpus = vcpus;
  layout.stacks = kSystemBase;
  layout.exception_stacks = layout.stacks + uint64_t{vcpus} * SPTELAB_STACK_BYTES;
  layout.tss = layout.exception_stacks + uint64_t{vcpus} * kPageSize;
  layout.idt = layout.tss + div_round_up(vcpus * SystemLayout::kTssStride, kPageSize) * kPageSize;
  layout.gdt = layout.idt + kPageSize;
  layout.pml4 = layout.gdt + kPageSize;
  layout.pt_count = div_round_up(ram_bytes, kPageSize * kEntriesPerTable);
  layout.pd_count = div_round_up(layout.pt_count, kEntriesPerTable);
  layout.pdpt_count = div_round_up(layout.pd_count, kEntriesPerTable);
  if (layout.pdpt_count > kEntriesPerTable) {
    throw_bad_input(fmt::format("guest RAM of {} is more than one PML4 can map", ram_bytes));
  }
  layout.pdpts = layout.pml4 + kPageSize;
  layout.pds = layout.pdpts + layout.pdpt_count * kPageSize;
  layout.pts = layout.pds + layout.pd_count * kPageSize;
  layout.end = layout.pts + layout.pt_count * kPageSize;
  return layout;
}

void check_image_fits(const SystemLayout& layout, const ElfImage& image) {
  if (layout.end <= image.lowest_address()) return;
  throw_bad_input(fmt::format(
      "guest image {}: page tables, GDT, IDT and stacks for {} of RAM and {} vCPU(s) need guest "
      "memory {:#x}..{:#x} ({}), but the image starts at {:#x}; use less --mem or fewer vCPUs, "
      "or link the guest higher (the built-in guests load at {:#x})",
      image.name, human_bytes(layout.ram_bytes), layout.vcpus, kSystemBase, layout.end,
      human_bytes(layout.end - kSystemBase), image.lowest_address(), SPTELAB_GUEST_LOAD_ADDRESS));
}

void write_system_area(const SystemLayout& layout, GuestPhysical& memory) {
  if (auto failure = memory.zero(layout.stacks, layout.tss - layout.stacks)) {
    throw_setup_failure("zeroing the guest's stacks", *failure);
  }
  write_tss(layout, memory);
  write_idt_and_stubs(layout, memory);
  write_gdt(layout, memory);
  write_page_tables(layout, memory);
}

}  // namespace sptelab::hypervisor
