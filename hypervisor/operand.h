// The linear address an instruction's memory operand refers to, decoded
// with Capstone from the instruction bytes and the vCPU's registers. The exit
// loop needs it when KVM fails to emulate a locked read-modify-write on a
// page the window maps read-only: no MMIO exit named the page, so the
// instruction itself has to.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace sptelab::hypervisor {

// nullopt if the bytes do not decode or the instruction has no memory
// operand whose address can be computed from the general registers.
std::optional<uint64_t> memory_operand_address(const std::vector<uint8_t>& bytes, uint64_t rip,
                                               const kvm_regs& regs);

}  // namespace sptelab::hypervisor
