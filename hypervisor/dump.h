// What a run that ends badly prints: registers, the instructions around RIP
// decoded with Capstone, and the guest page-table walk for RIP. Guest memory
// is read through the secondary MMU (GuestPhysical), faulting pages in as
// needed, so the dump shows what the guest would see.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sptelab::hypervisor {

class GuestPhysical;

struct WalkStep {
  int level = 0;  // 4 = PML4 ... 1 = PT
  uint64_t entry_gpa = 0;
  uint64_t entry = 0;
};

struct PageWalk {
  std::vector<WalkStep> steps;
  bool translated = false;
  uint64_t gpa = 0;       // when translated
  bool writable = false;  // every level allows writes
  std::string problem;    // when not translated
};

// Walks the guest's 4-level page tables (long mode; 2 MiB and 1 GiB pages
// too) for a linear address. With paging off the address is the gpa.
PageWalk walk_guest_page_tables(GuestPhysical& memory, const kvm_sregs& sregs, uint64_t linear);

// Reads guest-virtual memory: translates each page, then reads through the
// secondary MMU. Stops at the first byte that cannot be read.
std::vector<uint8_t> read_guest_virtual(GuestPhysical& memory, const kvm_sregs& sregs,
                                        uint64_t linear, size_t len);

std::string format_registers(const kvm_regs& regs, const kvm_sregs& sregs);
std::string format_page_walk(const PageWalk& walk, uint64_t linear);
// A few instructions before RIP (when a decoding lines up with it) and after.
std::string disassemble_around(GuestPhysical& memory, const kvm_sregs& sregs, uint64_t rip);
// One instruction as text ("lock xadd dword ptr [rip + 0x100], eax"), if decodable.
std::optional<std::string> disassemble_one(const std::vector<uint8_t>& bytes, uint64_t address);

struct CrashDump {
  std::string headline;  // why the run ended
  std::vector<std::string> details;
};

// The full dump of one vCPU.
std::string format_crash_dump(uint32_t vcpu, const CrashDump& crash, const kvm_regs& regs,
                              const kvm_sregs& sregs, GuestPhysical& memory);

}  // namespace sptelab::hypervisor
