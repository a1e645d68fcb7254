#include "hypervisor/operand.h"

#include <capstone/capstone.h>

namespace sptelab::hypervisor {
namespace {

std::optional<uint64_t> register_value(x86_reg reg, const kvm_regs& r, uint64_t next_rip) {
  switch (reg) {
    case X86_REG_INVALID:
      return 0;
    case X86_REG_RIP:
      return next_rip;  // rip-relative operands count from the next instruction
    case X86_REG_RAX:
      return r.rax;
    case X86_REG_RBX:
      return r.rbx;
    case X86_REG_RCX:
      return r.rcx;
    case X86_REG_RDX:
      return r.rdx;
    case X86_REG_RSI:
      return r.rsi;
    case X86_REG_RDI:
      return r.rdi;
    case X86_REG_RBP:
      return r.rbp;
    case X86_REG_RSP:
      return r.rsp;
    case X86_REG_R8:
      return r.r8;
    case X86_REG_R9:
      return r.r9;
    case X86_REG_R10:
      return r.r10;
    case X86_REG_R11:
      return r.r11;
    case X86_REG_R12:
      return r.r12;
    case X86_REG_R13:
      return r.r13;
    case X86_REG_R14:
      return r.r14;
    case X86_REG_R15:
      return r.r15;
    default:
      return std::nullopt;  // 32-bit or segment-based addressing: not used by our guests
  }
}

class DetailDisassembler {
 public:
  DetailDisassembler() {
    ok_ = cs_open(CS_ARCH_X86, CS_MODE_64, &handle_) == CS_ERR_OK &&
          cs_option(handle_, CS_OPT_DETAIL, CS_OPT_ON) == CS_ERR_OK;
  }
  ~DetailDisassembler() {
    if (ok_) cs_close(&handle_);
  }
  DetailDisassembler(const DetailDisassembler&) = delete;
  DetailDisassembler& operator=(const DetailDisassembler&) = delete;

  std::optional<uint64_t> address(const std::vector<uint8_t>& bytes, uint64_t rip,
                                  const kvm_regs& regs) {
    if (!ok_ || bytes.empty()) return std::nullopt;
    cs_insn* insn = nullptr;
    if (cs_disasm(handle_, bytes.data(), bytes.size(), rip, 1, &insn) != 1) return std::nullopt;
    std::optional<uint64_t> result;
    const cs_x86& x86 = insn->detail->x86;
    for (uint8_t i = 0; i < x86.op_count && !result; ++i) {
      if (x86.operands[i].type != X86_OP_MEM) continue;
      const x86_op_mem& mem = x86.operands[i].mem;
      auto base = register_value(static_cast<x86_reg>(mem.base), regs, rip + insn->size);
      auto index = register_value(static_cast<x86_reg>(mem.index), regs, rip + insn->size);
      if (!base || !index || mem.segment != X86_REG_INVALID) continue;
      result = *base + *index * static_cast<uint64_t>(mem.scale) + static_cast<uint64_t>(mem.disp);
    }
    cs_free(insn, 1);
    return result;
  }

 private:
  csh handle_ = 0;
  bool ok_ = false;
};

}  // namespace

std::optional<uint64_t> memory_operand_address(const std::vector<uint8_t>& bytes, uint64_t rip,
                                               const kvm_regs& regs) {
  thread_local DetailDisassembler disassembler;
  return disassembler.address(bytes, rip, regs);
}

}  // namespace sptelab::hypervisor
