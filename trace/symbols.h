// How event arguments are shown: the style follows the argument's name (the
// kernel's kvm/kvmmmu tracepoint conventions: addresses, frames and sptes in
// hex, counts in decimal), and enum-valued arguments print the names of their
// values. The trace layer sits below the layers that define those enums, so
// the tables here repeat their names; tests/trace/symbols_test.cpp checks them
// against mm/, mmu_notifier/ and spte/ value by value so they cannot drift.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "trace/event.h"

namespace sptelab::trace {

enum class ArgStyle : uint8_t {
  kDecimal,      // seq=3
  kHex,          // addr=0x7f0000001000
  kFrame,        // pfn=0x12, or pfn=none for ~0 (no frame)
  kPte,          // spte=0x12067 (pfn=0x12 P+W+U+A+D)
  kNanoseconds,  // hold_ns=412ns
  kSymbol,       // event=clear
};

ArgStyle arg_style(Kind kind, size_t arg);

// The names of an enum-valued argument's values, indexed by value; empty if
// the argument is not enum-valued.
std::span<const std::string_view> value_names(Kind kind, size_t arg);

// The name of a KVM_EXIT_* reason of linux/kvm.h without its prefix ("IO",
// "MMIO"), "unknown" past the table: the one table the trace's kvm_exit
// events and the hypervisor's messages share.
std::string_view kvm_exit_name(uint32_t reason);

// "pfn=0x12 P+W+U+A+D" for an x86-64 PTE (Intel SDM vol. 3, 4.5), with the
// emulator's software bits (MIG: migration entry, PROTNONE).
std::string describe_pte(uint64_t pte);

// One argument's value as the text and JSON exports show it (no "name=").
std::string format_arg(Kind kind, size_t arg, uint64_t value);

}  // namespace sptelab::trace
