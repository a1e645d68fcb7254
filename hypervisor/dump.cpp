#include "hypervisor/dump.h"

#include <capstone/capstone.h>

#include <algorithm>

#include <fmt/core.h>

#include "base/x86_pte.h"
#include "hypervisor/guest_physical.h"

namespace sptelab::hypervisor {
namespace {

constexpr size_t kBytesBefore = 32;
constexpr size_t kBytesAfter = 64;
constexpr size_t kInstructionsBefore = 5;
constexpr size_t kInstructionsAfter = 6;

const char* level_name(int level) {
  switch (level) {
    case 4:
      return "PML4E";
    case 3:
      return "PDPTE";
    case 2:
      return "PDE";
    default:
      return "PTE";
  }
}

bool canonical(uint64_t linear) {
  uint64_t top = linear >> 47;
  return top == 0 || top == 0x1ffff;
}

// Capstone handle, closed on scope exit.
class Disassembler {
 public:
  Disassembler() { ok_ = cs_open(CS_ARCH_X86, CS_MODE_64, &handle_) == CS_ERR_OK; }
  ~Disassembler() {
    if (ok_) cs_close(&handle_);
  }
  Disassembler(const Disassembler&) = delete;
  Disassembler& operator=(const Disassembler&) = delete;

  struct Instruction {
    uint64_t address;
    std::vector<uint8_t> bytes;
    std::string text;
  };

  std::vector<Instruction> decode(const uint8_t* code, size_t size, uint64_t address,
                                  size_t max_count) const {
    std::vector<Instruction> out;
    if (!ok_ || size == 0) return out;
    cs_insn* insns = nullptr;
    size_t count = cs_disasm(handle_, code, size, address, max_count, &insns);
    for (size_t i = 0; i < count; ++i) {
      std::string text = insns[i].mnemonic;
      if (insns[i].op_str[0] != '\0') text += fmt::format(" {}", insns[i].op_str);
      out.push_back({insns[i].address,
                     std::vector<uint8_t>(insns[i].bytes, insns[i].bytes + insns[i].size), text});
    }
    if (count > 0) cs_free(insns, count);
    return out;
  }

 private:
  csh handle_ = 0;
  bool ok_ = false;
};

std::string format_instruction(const Disassembler::Instruction& insn, bool at_rip) {
  std::string hex;
  for (uint8_t byte : insn.bytes) hex += fmt::format("{:02x} ", byte);
  return fmt::format("{} {:#018x}:  {:<30} {}\n", at_rip ? "=>" : "  ", insn.address, hex,
                     insn.text);
}

std::string format_segment(const char* name, const kvm_segment& segment) {
  return fmt::format("{:<3}={:04x} base={:#x} limit={:#x} type={} dpl={} p={} l={} db={} g={}\n",
                     name, segment.selector, segment.base, segment.limit, segment.type, segment.dpl,
                     segment.present, segment.l, segment.db, segment.g);
}

}  // namespace

PageWalk walk_guest_page_tables(GuestPhysical& memory, const kvm_sregs& sregs, uint64_t linear) {
  PageWalk walk;
  if (!(sregs.cr0 & x86::kCr0Paging)) {
    walk.translated = true;
    walk.gpa = linear;
    walk.writable = true;
    return walk;
  }
  if (!(sregs.efer & x86::kEferLma)) {
    walk.problem =
        "paging is on but the vCPU is not in long mode; the dump walks only 4-level "
        "long-mode tables";
    return walk;
  }
  if (sregs.cr4 & x86::kCr4La57) {
    walk.problem = "5-level paging is on; the dump walks only 4-level tables";
    return walk;
  }
  if (!canonical(linear)) {
    walk.problem = fmt::format("{:#x} is not a canonical address", linear);
    return walk;
  }
  uint64_t table = sregs.cr3 & x86::kPteAddressMask;
  walk.writable = true;
  for (int level = 4; level >= 1; --level) {
    unsigned shift = 12 + 9 * static_cast<unsigned>(level - 1);
    uint64_t entry_gpa = table + ((linear >> shift) & 511) * 8;
    uint64_t entry = 0;
    if (auto failure = memory.read(entry_gpa, &entry, sizeof(entry))) {
      walk.problem = fmt::format("cannot read the {}: {}", level_name(level), failure->describe());
      return walk;
    }
    walk.steps.push_back({level, entry_gpa, entry});
    if (!(entry & x86::kPtePresent)) {
      walk.problem = fmt::format("{} is not present", level_name(level));
      return walk;
    }
    walk.writable = walk.writable && (entry & x86::kPteWritable);
    if (level == 1 || ((level == 2 || level == 3) && (entry & x86::kPteLarge))) {
      uint64_t page_mask = (uint64_t{1} << shift) - 1;
      walk.translated = true;
      walk.gpa = ((entry & x86::kPteAddressMask) & ~page_mask) | (linear & page_mask);
      return walk;
    }
    table = entry & x86::kPteAddressMask;
  }
  return walk;
}

std::vector<uint8_t> read_guest_virtual(GuestPhysical& memory, const kvm_sregs& sregs,
                                        uint64_t linear, size_t len) {
  std::vector<uint8_t> out;
  while (out.size() < len) {
    uint64_t at = linear + out.size();
    size_t chunk = std::min<size_t>(len - out.size(), 4096 - (at & 4095));
    PageWalk walk = walk_guest_page_tables(memory, sregs, at);
    if (!walk.translated) break;
    std::vector<uint8_t> bytes(chunk);
    if (memory.read(walk.gpa, bytes.data(), chunk)) break;
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  return out;
}

std::string format_registers(const kvm_regs& r, const kvm_sregs& s) {
  std::string out;
  out += fmt::format("rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}\n", r.rax, r.rbx, r.rcx,
                     r.rdx);
  out += fmt::format("rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}\n", r.rsi, r.rdi, r.rbp,
                     r.rsp);
  out += fmt::format("r8 ={:#018x} r9 ={:#018x} r10={:#018x} r11={:#018x}\n", r.r8, r.r9, r.r10,
                     r.r11);
  out += fmt::format("r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}\n", r.r12, r.r13, r.r14,
                     r.r15);
  out += fmt::format("rip={:#018x} rflags={:#x}\n", r.rip, r.rflags);
  out += fmt::format("cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}\n", s.cr0, s.cr2, s.cr3,
                     s.cr4, s.efer);
  out += format_segment("cs", s.cs);
  out += format_segment("ss", s.ss);
  out += format_segment("ds", s.ds);
  out += format_segment("tr", s.tr);
  out += fmt::format("gdt base={:#x} limit={:#x}  idt base={:#x} limit={:#x}\n", s.gdt.base,
                     s.gdt.limit, s.idt.base, s.idt.limit);
  return out;
}

std::string format_page_walk(const PageWalk& walk, uint64_t linear) {
  std::string out = fmt::format("page walk for {:#x}:\n", linear);
  for (const WalkStep& step : walk.steps) {
    out += fmt::format("  {:<5} at gpa {:#x} = {:#018x}\n", level_name(step.level), step.entry_gpa,
                       step.entry);
  }
  if (walk.translated) {
    out += fmt::format("  -> gpa {:#x} ({})\n", walk.gpa, walk.writable ? "writable" : "read-only");
  } else {
    out += fmt::format("  -> no translation: {}\n", walk.problem);
  }
  return out;
}

std::optional<std::string> disassemble_one(const std::vector<uint8_t>& bytes, uint64_t address) {
  Disassembler disassembler;
  auto insns = disassembler.decode(bytes.data(), bytes.size(), address, 1);
  if (insns.empty()) return std::nullopt;
  return insns.front().text;
}

std::string disassemble_around(GuestPhysical& memory, const kvm_sregs& sregs, uint64_t rip) {
  std::vector<uint8_t> after = read_guest_virtual(memory, sregs, rip, kBytesAfter);
  if (after.empty()) return fmt::format("code at {:#x}: not readable\n", rip);
  uint64_t before_start = rip >= kBytesBefore ? rip - kBytesBefore : 0;
  std::vector<uint8_t> before = read_guest_virtual(memory, sregs, before_start, rip - before_start);
  if (before.size() != rip - before_start) before.clear();

  Disassembler disassembler;
  std::vector<uint8_t> code = before;
  code.insert(code.end(), after.begin(), after.end());
  // x86 cannot be decoded backwards. Decodings from different starts
  // converge on the real instruction boundaries after a few instructions, so
  // take the latest start that lands exactly on rip with enough context
  // (earlier starts risk a bogus instruction swallowing real ones), else the
  // landing decoding with the most instructions.
  std::vector<Disassembler::Instruction> lead;
  for (size_t start = before.size(); start-- > 0;) {
    auto insns = disassembler.decode(code.data() + start, before.size() - start,
                                     rip - (before.size() - start), 0);
    uint64_t covered = 0;
    for (const auto& insn : insns) covered += insn.bytes.size();
    if (covered != before.size() - start) continue;
    if (insns.size() > lead.size()) lead = std::move(insns);
    if (lead.size() >= kInstructionsBefore) break;
  }
  std::string out = fmt::format("code around rip {:#x}:\n", rip);
  size_t skip = lead.size() > kInstructionsBefore ? lead.size() - kInstructionsBefore : 0;
  for (size_t i = skip; i < lead.size(); ++i) out += format_instruction(lead[i], false);
  auto trail = disassembler.decode(after.data(), after.size(), rip, kInstructionsAfter);
  if (trail.empty()) {
    out += fmt::format("=> {:#018x}:  (bytes do not decode)\n", rip);
  }
  for (size_t i = 0; i < trail.size(); ++i) out += format_instruction(trail[i], i == 0);
  return out;
}

std::string format_crash_dump(uint32_t vcpu, const CrashDump& crash, const kvm_regs& regs,
                              const kvm_sregs& sregs, GuestPhysical& memory) {
  std::string out = fmt::format("vcpu{}: {}\n", vcpu, crash.headline);
  for (const std::string& detail : crash.details) out += fmt::format("  {}\n", detail);
  out += format_registers(regs, sregs);
  out += disassemble_around(memory, sregs, regs.rip);
  out += format_page_walk(walk_guest_page_tables(memory, sregs, regs.rip), regs.rip);
  return out;
}

}  // namespace sptelab::hypervisor
