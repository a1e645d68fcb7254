#include "hypervisor/native_fault.h"

#include <capstone/capstone.h>

#include <algorithm>

#include <fmt/core.h>

#include "base/x86_pte.h"

namespace sptelab::hypervisor {
namespace {

constexpr uint64_t kPage = 4096;
constexpr size_t kMaxInstruction = 15;

// A general register's value, with its width in bytes (8 or 4).
struct RegValue {
  uint64_t value = 0;
  bool is32 = false;
};

std::optional<RegValue> register_value(unsigned reg, const kvm_regs& r, uint64_t next_rip) {
  switch (reg) {
    case X86_REG_INVALID:
      return RegValue{0, false};
    case X86_REG_RIP:
      return RegValue{next_rip, false};  // rip-relative counts from the next instruction
    case X86_REG_EIP:
      return RegValue{next_rip & 0xffffffff, true};
    case X86_REG_RAX:
      return RegValue{r.rax, false};
    case X86_REG_RBX:
      return RegValue{r.rbx, false};
    case X86_REG_RCX:
      return RegValue{r.rcx, false};
    case X86_REG_RDX:
      return RegValue{r.rdx, false};
    case X86_REG_RSI:
      return RegValue{r.rsi, false};
    case X86_REG_RDI:
      return RegValue{r.rdi, false};
    case X86_REG_RBP:
      return RegValue{r.rbp, false};
    case X86_REG_RSP:
      return RegValue{r.rsp, false};
    case X86_REG_R8:
      return RegValue{r.r8, false};
    case X86_REG_R9:
      return RegValue{r.r9, false};
    case X86_REG_R10:
      return RegValue{r.r10, false};
    case X86_REG_R11:
      return RegValue{r.r11, false};
    case X86_REG_R12:
      return RegValue{r.r12, false};
    case X86_REG_R13:
      return RegValue{r.r13, false};
    case X86_REG_R14:
      return RegValue{r.r14, false};
    case X86_REG_R15:
      return RegValue{r.r15, false};
    case X86_REG_EAX:
      return RegValue{r.rax & 0xffffffff, true};
    case X86_REG_EBX:
      return RegValue{r.rbx & 0xffffffff, true};
    case X86_REG_ECX:
      return RegValue{r.rcx & 0xffffffff, true};
    case X86_REG_EDX:
      return RegValue{r.rdx & 0xffffffff, true};
    case X86_REG_ESI:
      return RegValue{r.rsi & 0xffffffff, true};
    case X86_REG_EDI:
      return RegValue{r.rdi & 0xffffffff, true};
    case X86_REG_EBP:
      return RegValue{r.rbp & 0xffffffff, true};
    case X86_REG_ESP:
      return RegValue{r.rsp & 0xffffffff, true};
    case X86_REG_R8D:
      return RegValue{r.r8 & 0xffffffff, true};
    case X86_REG_R9D:
      return RegValue{r.r9 & 0xffffffff, true};
    case X86_REG_R10D:
      return RegValue{r.r10 & 0xffffffff, true};
    case X86_REG_R11D:
      return RegValue{r.r11 & 0xffffffff, true};
    case X86_REG_R12D:
      return RegValue{r.r12 & 0xffffffff, true};
    case X86_REG_R13D:
      return RegValue{r.r13 & 0xffffffff, true};
    case X86_REG_R14D:
      return RegValue{r.r14 & 0xffffffff, true};
    case X86_REG_R15D:
      return RegValue{r.r15 & 0xffffffff, true};
    default:
      return std::nullopt;
  }
}

// In 64-bit mode only fs and gs have a base.
uint64_t segment_base(unsigned segment, const kvm_sregs& s) {
  if (segment == X86_REG_FS) return s.fs.base;
  if (segment == X86_REG_GS) return s.gs.base;
  return 0;
}

// Capstone 4 marks some read-modify-writes as reads (cmpxchg); the CPU
// checks them for write, and so must we.
bool always_writes(const cs_insn& insn) {
  if (insn.detail->x86.prefix[0] == X86_PREFIX_LOCK) return true;
  switch (insn.id) {
    case X86_INS_CMPXCHG:
    case X86_INS_CMPXCHG8B:
    case X86_INS_CMPXCHG16B:
    case X86_INS_XADD:
    case X86_INS_XCHG:
      return true;
    default:
      return false;
  }
}

bool has_no_memory_access(unsigned id) {
  switch (id) {
    case X86_INS_LEA:
    case X86_INS_NOP:
    case X86_INS_PREFETCH:
    case X86_INS_PREFETCHNTA:
    case X86_INS_PREFETCHT0:
    case X86_INS_PREFETCHT1:
    case X86_INS_PREFETCHT2:
    case X86_INS_PREFETCHW:
      return true;
    default:
      return false;
  }
}

class Decoder {
 public:
  Decoder() {
    ok_ = cs_open(CS_ARCH_X86, CS_MODE_64, &handle_) == CS_ERR_OK &&
          cs_option(handle_, CS_OPT_DETAIL, CS_OPT_ON) == CS_ERR_OK;
  }
  ~Decoder() {
    if (ok_) cs_close(&handle_);
  }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  std::optional<DecodedInstruction> decode(const uint8_t* bytes, size_t size, uint64_t rip,
                                           const kvm_regs& regs, const kvm_sregs& sregs) {
    if (!ok_ || size == 0) return std::nullopt;
    cs_insn* insn = nullptr;
    if (cs_disasm(handle_, bytes, std::min(size, kMaxInstruction), rip, 1, &insn) != 1) {
      return std::nullopt;
    }
    DecodedInstruction out;
    out.length = insn->size;
    out.text = fmt::format("{} {}", insn->mnemonic, insn->op_str);
    if (!out.text.empty() && out.text.back() == ' ') out.text.pop_back();
    out.accesses.push_back({rip, insn->size, false, true});
    const uint64_t next = rip + insn->size;
    const cs_x86& x86 = insn->detail->x86;
    bool ok = true;
    if (!has_no_memory_access(insn->id)) {
      for (uint8_t i = 0; i < x86.op_count; ++i) {
        const cs_x86_op& op = x86.operands[i];
        if (op.type != X86_OP_MEM) continue;
        auto base = register_value(static_cast<unsigned>(op.mem.base), regs, next);
        auto index = register_value(static_cast<unsigned>(op.mem.index), regs, next);
        if (!base || !index) {
          ok = false;  // an addressing mode this decoder does not know
          break;
        }
        uint64_t address = base->value + index->value * static_cast<uint64_t>(op.mem.scale) +
                           static_cast<uint64_t>(op.mem.disp);
        if (base->is32 || index->is32) address &= 0xffffffff;  // 0x67 prefix
        address += segment_base(static_cast<unsigned>(op.mem.segment), sregs);
        bool write = (op.access & CS_AC_WRITE) != 0 || always_writes(*insn);
        out.accesses.push_back({address, std::max<uint32_t>(op.size, 1), write, false});
      }
    }
    // Implicit stack accesses (Capstone lists only the explicit operands).
    const uint64_t rsp = regs.rsp;
    switch (insn->id) {
      case X86_INS_PUSH:
      case X86_INS_PUSHFQ:
      case X86_INS_PUSHF: {
        uint32_t width = insn->id == X86_INS_PUSHF ? 2 : 8;
        if (insn->id == X86_INS_PUSH && x86.op_count > 0 && x86.operands[0].size == 2) width = 2;
        out.accesses.push_back({rsp - width, width, true, false});
        break;
      }
      case X86_INS_CALL:
        out.accesses.push_back({rsp - 8, 8, true, false});
        break;
      case X86_INS_POP:
      case X86_INS_POPFQ:
      case X86_INS_RET:
        out.accesses.push_back({rsp, 8, false, false});
        break;
      case X86_INS_POPF:
        out.accesses.push_back({rsp, 2, false, false});
        break;
      case X86_INS_LEAVE:
        out.accesses.push_back({regs.rbp, 8, false, false});
        break;
      default:
        break;
    }
    cs_free(insn, 1);
    if (!ok) return std::nullopt;
    return out;
  }

 private:
  csh handle_ = 0;
  bool ok_ = false;
};

bool allows(spte::Access have, bool write) {
  return write ? have == spte::Access::kWrite : have != spte::Access::kNone;
}

void add_need(std::vector<PageNeed>& needs, spte::Gfn gfn, bool write) {
  for (PageNeed& need : needs) {
    if (need.gfn == gfn) {
      need.write = need.write || write;
      return;
    }
  }
  needs.push_back({gfn, write});
}

}  // namespace

std::optional<DecodedInstruction> decode_accesses(const uint8_t* bytes, size_t size, uint64_t rip,
                                                  const kvm_regs& regs, const kvm_sregs& sregs) {
  thread_local Decoder decoder;
  return decoder.decode(bytes, size, rip, regs, sregs);
}

std::optional<uint64_t> translate_linear(const NativeFaultView& view, const kvm_sregs& s,
                                         uint64_t linear) {
  if (!(s.cr0 & x86::kCr0Paging)) return linear;
  if (s.cr4 & x86::kCr4La57) return std::nullopt;
  uint64_t table = s.cr3 & x86::kPteAddressMask;
  for (int level = 4; level >= 1; --level) {
    unsigned shift = 12 + 9 * static_cast<unsigned>(level - 1);
    uint64_t entry = 0;
    if (!view.read_mapped(table + ((linear >> shift) & 511) * 8, &entry, sizeof entry) ||
        !(entry & x86::kPtePresent)) {
      return std::nullopt;
    }
    if (level == 1 || ((level == 2 || level == 3) && (entry & x86::kPteLarge))) {
      uint64_t page_mask = (uint64_t{1} << shift) - 1;
      return ((entry & x86::kPteAddressMask) & ~page_mask) | (linear & page_mask);
    }
    table = entry & x86::kPteAddressMask;
  }
  return std::nullopt;
}

NativeFault resolve_native_fault(const kvm_regs& regs, const kvm_sregs& sregs,
                                 const NativeFaultView& view) {
  NativeFault out;
  const uint64_t ram = view.ram_bytes();
  // The RAM gfn behind a linear address, if the guest maps it.
  auto gfn_of = [&](uint64_t linear) -> std::optional<spte::Gfn> {
    std::optional<uint64_t> gpa = translate_linear(view, sregs, linear);
    if (!gpa || *gpa >= ram) return std::nullopt;
    return *gpa / kPage;
  };

  // The fetch: rip's own page first (rip is the fetch address then).
  const uint64_t rip = regs.rip;
  std::optional<spte::Gfn> code = gfn_of(rip);
  if (!code) {
    out.why = fmt::format("rip {:#x} is not mapped by the guest's page tables", rip);
    return out;
  }
  if (!allows(view.access(*code), false)) {
    out.accesses.push_back({rip, 1, false, true});
    out.needs.push_back({*code, false});
    return out;
  }
  uint8_t bytes[kMaxInstruction] = {};
  size_t got = std::min<size_t>(kMaxInstruction, kPage - (rip & (kPage - 1)));
  if (!view.read_mapped(*code * kPage + (rip & (kPage - 1)), bytes, got)) {
    out.why = fmt::format("the code at rip {:#x} could not be read", rip);
    return out;
  }
  std::optional<spte::Gfn> next_code;
  if (got < kMaxInstruction) {  // the instruction may go on in the next page
    next_code = gfn_of(rip + got);
    if (next_code && allows(view.access(*next_code), false) &&
        view.read_mapped(*next_code * kPage, bytes + got, kMaxInstruction - got)) {
      got = kMaxInstruction;
    }
  }
  std::optional<DecodedInstruction> insn = decode_accesses(bytes, got, rip, regs, sregs);
  if (!insn) {
    if (got < kMaxInstruction && next_code) {
      // It does not decode from the first page alone: its tail is in the
      // next page, which is inaccessible. A fetch fault there.
      out.accesses.push_back({rip + got, 1, false, true});
      out.needs.push_back({*next_code, false});
      return out;
    }
    out.why = fmt::format("the instruction at rip {:#x} does not decode", rip);
    return out;
  }
  out.instruction = insn->text;
  out.accesses = insn->accesses;
  // Every page each access touches: [address, address + size) may straddle.
  for (const LinearAccess& access : insn->accesses) {
    uint64_t first = access.address & ~(kPage - 1);
    uint64_t last = (access.address + access.size - 1) & ~(kPage - 1);
    for (uint64_t page = first;; page += kPage) {
      std::optional<spte::Gfn> gfn = gfn_of(std::max(page, access.address));
      if (gfn && !allows(view.access(*gfn), access.write)) add_need(out.needs, *gfn, access.write);
      if (page == last) break;
    }
  }
  if (out.needs.empty()) {
    out.why = fmt::format("no access of `{}` at rip {:#x} touches a page the window denies",
                          insn->text, rip);
  }
  return out;
}

NativeFault resolve_native_fault(const kvm_run& run, const NativeFaultView& view) {
  return resolve_native_fault(run.s.regs.regs, run.s.regs.sregs, view);
}

}  // namespace sptelab::hypervisor
