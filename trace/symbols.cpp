#include "trace/symbols.h"

#include <array>
#include <vector>

#include <fmt/format.h>

#include "base/inject.h"
#include "base/x86_pte.h"

namespace sptelab::trace {
namespace {

using namespace std::string_view_literals;

// mm::InvalidateEvent (Linux's enum mmu_notifier_event), in value order.
constexpr std::array kInvalidateEvents = {
    "unmap"sv,      "clear"sv,   "protection_vma"sv, "protection_page"sv,
    "soft_dirty"sv, "release"sv, "migrate"sv,        "exclusive"sv,
};

// mm::MmOp, in value order.
constexpr std::array kMmOps = {
    "migrate"sv, "remap"sv,    "break_cow"sv, "fork"sv,      "dontneed"sv,
    "munmap"sv,  "mprotect"sv, "mkclean"sv,   "writeback"sv, "ksm_merge"sv,
    "reclaim"sv, "age"sv,      "exit"sv,      "wp_clean"sv,  "punch_hole"sv,
};

// mm::FaultResult, in value order.
constexpr std::array kFaultResults = {"ok"sv, "sigsegv"sv, "oom"sv, "retry"sv};

// mmu_notifier::Callback, in value order.
constexpr std::array kCallbacks = {
    "invalidate_page"sv,
    "invalidate_range"sv,
    "invalidate_range_start"sv,
    "invalidate_range_end"sv,
    "clear_flush_young"sv,
    "clear_young"sv,
    "test_young"sv,
    "change_pte"sv,
    "release"sv,
    "interval_invalidate"sv,
    "arch_invalidate_secondary_tlbs"sv,
};

// spte::ViolationKind, in value order.
constexpr std::array kDetectors = {"stale-spte"sv, "use-after-free"sv,
                                   "lost-write"sv, "double-holder"sv,
                                   "stale-read"sv, "write-after-wrprotect"sv};

// KVM_EXIT_* from linux/kvm.h (a stable kernel ABI), in value order.
constexpr std::array kExitReasons = {
    "UNKNOWN"sv,
    "EXCEPTION"sv,
    "IO"sv,
    "HYPERCALL"sv,
    "DEBUG"sv,
    "HLT"sv,
    "MMIO"sv,
    "IRQ_WINDOW_OPEN"sv,
    "SHUTDOWN"sv,
    "FAIL_ENTRY"sv,
    "INTR"sv,
    "SET_TPR"sv,
    "TPR_ACCESS"sv,
    "S390_SIEIC"sv,
    "S390_RESET"sv,
    "DCR"sv,
    "NMI"sv,
    "INTERNAL_ERROR"sv,
    "OSI"sv,
    "PAPR_HCALL"sv,
    "S390_UCONTROL"sv,
    "WATCHDOG"sv,
    "S390_TSCH"sv,
    "EPR"sv,
    "SYSTEM_EVENT"sv,
    "S390_STSI"sv,
    "IOAPIC_EOI"sv,
    "HYPERV"sv,
    "ARM_NISV"sv,
    "X86_RDMSR"sv,
    "X86_WRMSR"sv,
    "DIRTY_RING_FULL"sv,
    "AP_RESET_HOLD"sv,
    "X86_BUS_LOCK"sv,
    "XEN"sv,
    "RISCV_SBI"sv,
    "RISCV_CSR"sv,
    "NOTIFY"sv,
};

bool is_one_of(std::string_view name, std::initializer_list<std::string_view> names) {
  for (std::string_view candidate : names) {
    if (name == candidate) return true;
  }
  return false;
}

}  // namespace

std::string_view kvm_exit_name(uint32_t reason) {
  return reason < kExitReasons.size() ? kExitReasons[reason] : "unknown"sv;
}

// inject::Point, in value order (names from base/inject.h).
std::span<const std::string_view> inject_point_names() {
  static const std::vector<std::string_view> names = [] {
    std::vector<std::string_view> all;
    for (size_t i = 0; i < static_cast<size_t>(inject::Point::kCount); ++i) {
      all.push_back(inject::name(static_cast<inject::Point>(i)));
    }
    return all;
  }();
  return names;
}

std::span<const std::string_view> value_names(Kind kind, size_t arg) {
  switch (kind) {
    case Kind::kDelayInjected:
      if (arg == 0) return inject_point_names();
      break;
    case Kind::kNotifyInvalidateRange:
    case Kind::kNotifyRangeStart:
    case Kind::kNotifyRangeEnd:
      if (arg == 2) return kInvalidateEvents;
      break;
    case Kind::kMmOpBegin:
    case Kind::kMmOpEnd:
      if (arg == 0) return kMmOps;
      break;
    case Kind::kHostFaultDone:
      if (arg == 2) return kFaultResults;
      break;
    case Kind::kSleepInAtomic:
      if (arg == 0) return kCallbacks;
      break;
    case Kind::kViolation:
      if (arg == 0) return kDetectors;
      break;
    case Kind::kVcpuExit:
      if (arg == 1) return kExitReasons;
      break;
    default:
      break;
  }
  return {};
}

ArgStyle arg_style(Kind kind, size_t arg) {
  if (!value_names(kind, arg).empty()) return ArgStyle::kSymbol;
  std::string_view name = info(kind).args[arg];
  if (is_one_of(name, {"spte", "old_spte", "pte", "old_pte", "new_pte"})) return ArgStyle::kPte;
  if (is_one_of(name, {"pfn", "table_pfn"})) return ArgStyle::kFrame;
  if (is_one_of(name,
                {"addr", "start", "end", "rip", "gpa", "gfn", "value", "insn_lo", "insn_hi"})) {
    return ArgStyle::kHex;
  }
  if (name == "hold_ns" || name == "ns") return ArgStyle::kNanoseconds;
  return ArgStyle::kDecimal;
}

std::string describe_pte(uint64_t pte) {
  constexpr std::array<std::pair<uint64_t, std::string_view>, 7> kBits = {{
      {x86::kPtePresent, "P"},
      {x86::kPteWritable, "W"},
      {x86::kPteUser, "U"},
      {x86::kPteAccessed, "A"},
      {x86::kPteDirty, "D"},
      {x86::kPteSoftMigration, "MIG"},
      {x86::kPteSoftProtNone, "PROTNONE"},
  }};
  fmt::memory_buffer bits;
  for (const auto& [bit, name] : kBits) {
    if (!(pte & bit)) continue;
    if (bits.size() > 0) bits.push_back('+');
    bits.append(name);
  }
  if (bits.size() == 0) bits.push_back('-');
  return fmt::format("pfn={:#x} {}", (pte & x86::kPteAddressMask) >> 12, fmt::to_string(bits));
}

std::string format_arg(Kind kind, size_t arg, uint64_t value) {
  switch (arg_style(kind, arg)) {
    case ArgStyle::kSymbol: {
      auto names = value_names(kind, arg);
      if (value < names.size()) return std::string(names[value]);
      return fmt::format("{}?", value);
    }
    case ArgStyle::kPte:
      if (value == 0) return "0x0";
      return fmt::format("{:#x} ({})", value, describe_pte(value));
    case ArgStyle::kFrame:
      if (value == ~uint64_t{0}) return "none";
      return fmt::format("{:#x}", value);
    case ArgStyle::kHex:
      return fmt::format("{:#x}", value);
    case ArgStyle::kNanoseconds:
      return fmt::format("{}ns", value);
    case ArgStyle::kDecimal:
      break;
  }
  return fmt::format("{}", value);
}

}  // namespace sptelab::trace
