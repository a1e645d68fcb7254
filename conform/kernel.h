// The real kernel's side of `sptelab conform`: this process maps the three
// slots (2 MiB aligned, each inside a PROT_NONE reservation so no other
// mapping touches their blocks), makes them the memslots of a KVM VM with no
// vCPU (KVM's MMU notifier hears every change of the process's mappings,
// vCPU or not), runs each op with the real system calls, and reads the
// ranges from the kvm:kvm_unmap_hva_range tracepoint through a private
// tracefs instance (trace/kernel.h). A trace_marker line before each op says
// which op the ranges after it belong to. The tracepoint fires for every
// range of the process: only those overlapping a slot count.
#pragma once

#include <string>
#include <vector>

#include "conform/side.h"
#include "trace/kernel.h"

namespace sptelab::conform {

class KernelSide final : public Side {
 public:
  std::string name() const override;  // "Linux 6.18.44 (KVM, kvm:kvm_unmap_hva_range)"
  // Throws Error(kEnvironment) naming what is missing: /dev/kvm (or KVM
  // refusing a VM or a memslot) or tracefs.
  std::vector<OpRanges> run(const Script& script, size_t max_ops) override;
};

// The ranges of a capture attributed to ops [0, ops): a marker line
// "sptelab-conform op N" starts op N; kvm:kvm_unmap_hva_range events that
// overlap a slot of `layout` become its ranges. Exposed for tests.
std::vector<OpRanges> attribute_kernel_ranges(const trace::KernelTrace& trace,
                                              const SlotLayout& layout, size_t ops);
// The marker text written before op `index`.
std::string kernel_op_marker(size_t index);

}  // namespace sptelab::conform
