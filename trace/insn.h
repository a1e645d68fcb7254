// Guest instructions in the trace: the hypervisor records up to 16 bytes at
// the vCPU's rip after an exit (Kind::kVcpuInsn); the exporters decode them
// with Capstone, so the hot path never disassembles.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "trace/trace.h"

namespace sptelab::trace {

inline constexpr size_t kMaxInsnBytes = 16;

// Packs bytes[0..len) (len <= 16) little-endian into two arguments and emits
// kVcpuInsn(rip, lo, hi, len).
void emit_vcpu_insn(uint64_t rip, const uint8_t* bytes, size_t len);

// The bytes a kVcpuInsn event carries.
std::vector<uint8_t> insn_bytes(const Event& event);

// The first instruction in bytes, as "lock xadd qword ptr [rax], rdx";
// nullopt if Capstone cannot decode it (or is unavailable).
std::optional<std::string> decode_insn(std::span<const uint8_t> bytes, uint64_t address);

// "<lock xadd qword ptr [rax], rdx>", or "<undecodable: f0 48>" for a
// kVcpuInsn event.
std::string describe_insn(const Event& event);

}  // namespace sptelab::trace
