#include "trace/insn.h"

#include <capstone/capstone.h>

#include <algorithm>
#include <cstring>

#include <fmt/core.h>

namespace sptelab::trace {
namespace {

// One Capstone handle per thread, opened on first use: cs_open costs far
// more than decoding one instruction, and exports decode thousands.
class Decoder {
 public:
  Decoder() { ok_ = cs_open(CS_ARCH_X86, CS_MODE_64, &handle_) == CS_ERR_OK; }
  ~Decoder() {
    if (ok_) cs_close(&handle_);
  }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  std::optional<std::string> decode(std::span<const uint8_t> bytes, uint64_t address) const {
    if (!ok_ || bytes.empty()) return std::nullopt;
    cs_insn* insn = nullptr;
    size_t count = cs_disasm(handle_, bytes.data(), bytes.size(), address, 1, &insn);
    if (count == 0) return std::nullopt;
    std::string text = insn[0].mnemonic;
    if (insn[0].op_str[0] != '\0') text += fmt::format(" {}", insn[0].op_str);
    cs_free(insn, count);
    return text;
  }

 private:
  csh handle_ = 0;
  bool ok_ = false;
};

}  // namespace

void emit_vcpu_insn(uint64_t rip, const uint8_t* bytes, size_t len) {
  len = std::min(len, kMaxInsnBytes);
  uint8_t packed[kMaxInsnBytes] = {};
  std::memcpy(packed, bytes, len);
  uint64_t lo = 0, hi = 0;
  for (size_t i = 0; i < 8; ++i) {
    lo |= uint64_t{packed[i]} << (8 * i);
    hi |= uint64_t{packed[8 + i]} << (8 * i);
  }
  emit(Kind::kVcpuInsn, rip, lo, hi, len);
}

std::vector<uint8_t> insn_bytes(const Event& event) {
  size_t len = std::min<uint64_t>(event.args[3], kMaxInsnBytes);
  std::vector<uint8_t> bytes(len);
  for (size_t i = 0; i < len; ++i) {
    uint64_t word = i < 8 ? event.args[1] : event.args[2];
    bytes[i] = static_cast<uint8_t>(word >> (8 * (i % 8)));
  }
  return bytes;
}

std::optional<std::string> decode_insn(std::span<const uint8_t> bytes, uint64_t address) {
  thread_local Decoder decoder;
  return decoder.decode(bytes, address);
}

std::string describe_insn(const Event& event) {
  std::vector<uint8_t> bytes = insn_bytes(event);
  if (auto text = decode_insn(bytes, event.args[0])) return fmt::format("<{}>", *text);
  std::string hex;
  for (uint8_t byte : bytes) hex += fmt::format("{}{:02x}", hex.empty() ? "" : " ", byte);
  return fmt::format("<undecodable: {}>", hex.empty() ? "no bytes" : hex);
}

}  // namespace sptelab::trace
