// The trace event schema shared by every layer. Argument meanings are listed
// per kind; field names in exports follow the kernel's kvm/kvmmmu tracepoints
// where one exists (e.g. kvm_mmu_set_spte: gfn, spte; kvm_unmap_hva_range:
// start, end).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sptelab::trace {

// X-macro: kind, name, then the names of up to four arguments.
#define SPTELAB_TRACE_KINDS(X)                                                                   \
  /* mm/ */                                                                                      \
  X(kPtlLock, "ptl_lock", "table_pfn", "", "", "")                                               \
  X(kPtlUnlock, "ptl_unlock", "table_pfn", "hold_ns", "", "")                                    \
  X(kMmapLock, "mmap_lock", "write", "", "", "")                                                 \
  X(kMmapUnlock, "mmap_unlock", "write", "", "", "")                                             \
  X(kPteSet, "pte_set", "addr", "old_pte", "new_pte", "")                                        \
  X(kPteClear, "pte_clear", "addr", "old_pte", "", "")                                           \
  X(kTlbFlush, "tlb_flush", "start", "end", "cpus", "")                                          \
  X(kTlbFlushAck, "tlb_flush_ack", "cpu", "start", "end", "")                                    \
  X(kTlbFill, "tlb_fill", "cpu", "addr", "pfn", "writable")                                      \
  X(kHostFault, "host_fault", "addr", "write", "", "")                                           \
  X(kHostFaultDone, "host_fault_done", "addr", "pfn", "result", "")                              \
  X(kPageAlloc, "page_alloc", "pfn", "generation", "", "")                                       \
  X(kPageFree, "page_free", "pfn", "generation", "", "")                                         \
  X(kPageDirty, "page_dirty", "pfn", "", "", "")                                                 \
  X(kRmapAdd, "rmap_add", "pfn", "addr", "", "")                                                 \
  X(kRmapRemove, "rmap_remove", "pfn", "addr", "", "")                                           \
  X(kGupFast, "gup_fast", "addr", "pfn", "ok", "")                                               \
  X(kGupSlow, "gup_slow", "addr", "pfn", "ok", "")                                               \
  X(kMmOpBegin, "mm_op_begin", "op", "start", "end", "")                                         \
  X(kMmOpEnd, "mm_op_end", "op", "start", "end", "")                                             \
  /* mmu_notifier/ */                                                                            \
  X(kNotifyInvalidatePage, "mmu_notifier_invalidate_page", "addr", "", "", "")                   \
  X(kNotifyInvalidateRange, "mmu_notifier_invalidate_range", "start", "end", "event", "")        \
  X(kNotifyRangeStart, "mmu_notifier_invalidate_range_start", "start", "end", "event",           \
    "blockable")                                                                                 \
  X(kNotifyRangeEnd, "mmu_notifier_invalidate_range_end", "start", "end", "event", "")           \
  X(kNotifyClearFlushYoung, "mmu_notifier_clear_flush_young", "start", "end", "young", "")       \
  X(kNotifyClearYoung, "mmu_notifier_clear_young", "start", "end", "young", "")                  \
  X(kNotifyTestYoung, "mmu_notifier_test_young", "addr", "young", "", "")                        \
  X(kNotifyChangePte, "mmu_notifier_change_pte", "addr", "pte", "", "")                          \
  X(kNotifyRelease, "mmu_notifier_release", "", "", "", "")                                      \
  X(kIntervalInvalidate, "mmu_interval_invalidate", "start", "end", "seq", "")                   \
  X(kSleepInAtomic, "sleep_in_atomic", "callback", "depth", "", "")                              \
  /* spte/ */                                                                                    \
  X(kSpteInstall, "kvm_mmu_set_spte", "gfn", "old_spte", "spte", "")                             \
  X(kSpteZap, "kvm_mmu_zap_spte", "gfn", "old_spte", "", "")                                     \
  X(kSpteProtect, "kvm_mmu_spte_protect", "gfn", "old_spte", "spte", "")                         \
  X(kSpteAge, "kvm_age_spte", "gfn", "old_spte", "spte", "")                                     \
  X(kFaultBegin, "kvm_page_fault", "gfn", "write", "seq", "open")                                \
  X(kFaultRetry, "kvm_page_fault_retry", "gfn", "seq", "open", "")                               \
  X(kFaultFixed, "kvm_page_fault_fixed", "gfn", "pfn", "spte", "")                               \
  /* hypervisor/ */                                                                              \
  X(kVcpuExit, "kvm_exit", "vcpu", "reason", "rip", "gpa")                                       \
  /* scenarios/ */                                                                               \
  X(kCheckpoint, "checkpoint", "id", "value", "", "")                                            \
  X(kViolation, "violation", "detector", "gfn", "pfn", "detail")                                 \
  /* real kernel tracepoints merged from tracefs */                                              \
  X(kKernel, "kernel", "id", "a", "b", "c")                                                      \
  /* hypervisor/: up to 16 bytes of the instruction at rip (decoded by the exporters) */         \
  X(kVcpuInsn, "kvm_vcpu_insn", "rip", "insn_lo", "insn_hi", "len")                              \
  /* hypervisor/: the vCPU re-enters the guest after handling an exit (the kernel's */           \
  /* kvm_entry); kvm_exit to kvm_entry is the exit's handling time */                            \
  X(kVcpuEntry, "kvm_entry", "vcpu", "", "", "")                                                 \
  /* mmu_notifier/, 6.6+ (appended: earlier kinds keep their values) */                          \
  X(kNotifySecondaryTlbs, "mmu_notifier_arch_invalidate_secondary_tlbs", "start", "end", "", "") \
  /* scenarios/: a race's injected delay at an inject::Point, as long as it lasted */            \
  X(kDelayInjected, "delay_injected", "point", "ns", "", "")

enum class Kind : uint16_t {
#define SPTELAB_TRACE_ENUM(kind, name, a0, a1, a2, a3) kind,
  SPTELAB_TRACE_KINDS(SPTELAB_TRACE_ENUM)
#undef SPTELAB_TRACE_ENUM
      kCount
};

struct KindInfo {
  std::string_view name;
  std::array<std::string_view, 4> args;
};

const KindInfo& info(Kind kind);
std::optional<Kind> kind_from_name(std::string_view name);

struct Event {
  uint64_t ts_ns = 0;   // CLOCK_MONOTONIC
  uint32_t thread = 0;  // ring id, see Ring::id
  Kind kind = Kind::kCount;
  uint16_t flags = 0;
  std::array<uint64_t, 4> args{};
};

}  // namespace sptelab::trace
