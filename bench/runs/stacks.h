// The guest stacks the fault and zap benchmarks compare, all as
// host::RunStack so that the same guest runs on each:
//
//  direct      hypervisor::DirectMemory (`sptelab run --scheme direct`): guest
//              RAM is a run of memfd frames allocated and zeroed up front and
//              mapped once; the real KVM faults every page in itself.
//  anonymous   a memslot over plain private anonymous memory, nothing
//              allocated up front: the real KVM's fault also allocates and
//              zeroes the page in the real kernel (do_anonymous_page). What
//              most VMMs give a guest; the baseline for fresh host memory and
//              for MADV_DONTNEED.
//  emulated    the scheme's spte::Mmu over the emulated host's anonymous
//              memory, the guest window as its mirror. With
//              HostMemory::kPreallocated the emulated host faults every page
//              of guest RAM in before the guest starts (QEMU's -mem-prealloc),
//              the counterpart of direct; with kOnDemand the spte fault's GUP
//              faults the host page in too, the counterpart of anonymous.
#pragma once

#include <cstdint>

#include "bench/runs/touch_run.h"
#include "spte/scheme.h"

namespace sptelab::bench {

enum class HostMemory : uint8_t { kPreallocated, kOnDemand };

StackBuilder direct_stack(uint64_t ram_bytes);
StackBuilder anonymous_stack(uint64_t ram_bytes);
StackBuilder emulated_stack(uint64_t ram_bytes, const spte::Scheme& scheme, uint32_t fault_around,
                            HostMemory host);

// The userspace address of the anonymous stack's guest RAM (its memslot).
uint8_t* anonymous_ram(host::RunStack& stack);

}  // namespace sptelab::bench
