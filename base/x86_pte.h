// The x86-64 page-table entry format (Intel SDM vol. 3, 4.5), shared by
// everything that builds or reads one: the emulated host's page tables and
// sptes (mm/, spte/), the guest page tables the hypervisor builds and walks,
// and the trace exporters that decode them. The same bits at every level.
#pragma once

#include <cstdint>

namespace sptelab::x86 {

inline constexpr uint64_t kPtePresent = 1ull << 0;
inline constexpr uint64_t kPteWritable = 1ull << 1;
inline constexpr uint64_t kPteUser = 1ull << 2;
inline constexpr uint64_t kPteAccessed = 1ull << 5;
inline constexpr uint64_t kPteDirty = 1ull << 6;
inline constexpr uint64_t kPteLarge = 1ull << 7;  // PS: a 2 MiB or 1 GiB page (PDE, PDPTE)
inline constexpr uint64_t kPteAddressMask = 0x000ffffffffff000ull;

// Bits 9-11 are ignored by hardware; the emulated host MM uses two of them
// (mm::Pte): a non-present migration entry, and PROT_NONE (mapped but
// inaccessible, like Linux's _PAGE_PROTNONE).
inline constexpr uint64_t kPteSoftMigration = 1ull << 9;
inline constexpr uint64_t kPteSoftProtNone = 1ull << 10;

// The control-register bits a guest page walk depends on (SDM vol. 3, 2.5
// and 4.1): paging on, 5-level paging, long mode active.
inline constexpr uint64_t kCr0Paging = 1ull << 31;
inline constexpr uint64_t kCr4La57 = 1ull << 12;
inline constexpr uint64_t kEferLma = 1ull << 10;

}  // namespace sptelab::x86
