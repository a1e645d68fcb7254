// Kernel-era profiles: the behaviour of the emulated host MM that changed over
// Linux's history, selected by one value per address space (Mm::set_era).
// Each predicate names the release that changed it and the kernel function
// concerned; the default is the running kernel's, 6.18.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sptelab::mm {

enum class KernelEra : uint8_t {
  k2_6_27,  // MMU notifiers merged (start/end, change_pte); no THP, nonlinear VMAs
  k6_1,     // change_pte, invalidate_range, rmap removed before the zap's flush
  k6_2,     // delayed rmap in zap_pte_range
  k6_6,     // batched migration flush; arch_invalidate_secondary_tlbs
  k6_18,    // no change_pte (removed in 6.10)
};

inline constexpr KernelEra kDefaultKernelEra = KernelEra::k6_18;
inline constexpr std::array<KernelEra, 5> kAllKernelEras = {
    KernelEra::k2_6_27, KernelEra::k6_1, KernelEra::k6_2, KernelEra::k6_6, KernelEra::k6_18};

// "2.6.27", "6.1", "6.2", "6.6", "6.18".
const char* kernel_era_name(KernelEra era);
std::optional<KernelEra> parse_kernel_era(std::string_view name);
// Like parse_kernel_era, but throws Error(kBadInput) naming the valid eras.
KernelEra kernel_era_from_string(std::string_view name);
std::string kernel_era_list();

// The era every new Mm starts with (Mm::set_era changes one address space):
// the CLI's --era, set once before any Mm exists. Default kDefaultKernelEra.
void set_process_kernel_era(KernelEra era);
KernelEra process_kernel_era();

// set_pte_at_notify() -> mmu_notifier_change_pte (COW, KSM): 2.6.27 to 6.9
// (removed in 6.10, "mm/mmu_notifier: remove change_pte", Apr 2024).
constexpr bool era_has_change_pte(KernelEra era) {
  return era < KernelEra::k6_18;
}

// mmu_notifier_arch_invalidate_secondary_tlbs from the host's TLB flush
// (6.6, "mmu_notifiers: Call arch_invalidate_secondary_tlbs() when
// invalidating TLBs", Alistair Popple, Jul 2023).
constexpr bool era_has_arch_invalidate_secondary_tlbs(KernelEra era) {
  return era >= KernelEra::k6_6;
}

// change_protection: the TLB flush after invalidate_range_end (mmu_gather,
// tlb_finish_mmu in do_mprotect_pkey) since 3.16; before, flush_tlb_range
// inside the bracket.
constexpr bool era_mprotect_flushes_after_range_end(KernelEra era) {
  return era > KernelEra::k2_6_27;
}

// try_to_unmap_one with TTU_BATCH_FLUSH (4.3): reclaim clears PTEs without
// flushing and flushes the batch later (try_to_unmap_flush).
constexpr bool era_reclaim_batches_flush(KernelEra era) {
  return era > KernelEra::k2_6_27;
}

// migrate_pages_batch (6.3): the first, asynchronous pass unmaps with
// TTU_BATCH_FLUSH and flushes once before moving.
constexpr bool era_migration_batches_flush(KernelEra era) {
  return era >= KernelEra::k6_6;
}

// __split_vma -> vma_adjust_trans_huge -> __split_huge_pmd (THP, 2.6.38):
// splitting a VMA inside a 2 MiB block brackets the whole block.
constexpr bool era_splits_huge_pmd_on_vma_split(KernelEra era) {
  return era > KernelEra::k2_6_27;
}

// remap_file_pages emulated with do_mmap(MAP_FIXED) (4.0, "mm: replace
// remap_file_pages() syscall with emulation", Kirill Shutemov, 2015);
// before, install_file_pte over present PTEs with mmap_lock held for read.
constexpr bool era_remap_file_pages_emulated(KernelEra era) {
  return era > KernelEra::k2_6_27;
}

// zap_pte_range keeps a dirty shared-file page's rmap until the TLB flush
// (6.2, see ZapRmapOrder in mm.h).
constexpr bool era_delays_zap_rmap(KernelEra era) {
  return era >= KernelEra::k6_2;
}

}  // namespace sptelab::mm
