#include "hypervisor/direct_memory.h"

#include <fmt/core.h>

#include "base/error.h"
#include "trace/trace.h"

namespace sptelab::hypervisor {

DirectMemory::DirectMemory(mm::PhysMem& phys, uint64_t gfn_count) : phys_(phys) {
  if (gfn_count == 0) throw_internal("direct memory: zero pages of guest RAM");
  frames_ = phys_.alloc_contiguous(gfn_count);
  bool complete = frames_.size() == gfn_count;
  for (mm::Pfn pfn : frames_) complete = complete && pfn != mm::kNoPfn;
  if (!complete) {
    for (mm::Pfn pfn : frames_) {
      if (pfn != mm::kNoPfn) phys_.put(pfn);
    }
    throw_environment(
        fmt::format("guest RAM: physical memory cannot give {} frames ({} free of "
                    "{}); use a smaller --mem",
                    gfn_count, phys_.stats().free, phys_.frame_count()));
  }
}

DirectMemory::~DirectMemory() {
  for (mm::Pfn pfn : frames_) phys_.put(pfn);
}

spte::FaultOutcome DirectMemory::fault(spte::Gfn gfn, bool write, uint32_t /*vcpu*/) {
  faults_.fetch_add(1, std::memory_order_relaxed);
  trace::emit(trace::Kind::kFaultBegin, gfn, write, 0, 0);
  if (gfn >= frames_.size()) return spte::FaultOutcome::kNoMemslot;
  mm::Pfn pfn = frames_[gfn];
  if (mirror_ != nullptr) mirror_->update({gfn, pfn, 1, spte::Access::kWrite});
  trace::emit(trace::Kind::kFaultFixed, gfn, pfn, mm::Pte::make(pfn, true).raw());
  return spte::FaultOutcome::kFixed;
}

bool DirectMemory::access(spte::Gfn gfn, bool /*write*/, const std::function<void(uint8_t*)>& fn) {
  if (gfn >= frames_.size()) return false;
  fn(phys_.direct_map(frames_[gfn]));
  return true;
}

void DirectMemory::set_mirror(spte::Mirror* mirror) {
  mirror_ = mirror;
  if (mirror_ == nullptr) return;
  // One update per run of consecutive frames: one mmap, one VMA.
  uint64_t run_start = 0;
  for (uint64_t gfn = 1; gfn <= frames_.size(); ++gfn) {
    bool run_continues = gfn < frames_.size() && frames_[gfn] == frames_[gfn - 1] + 1 &&
                         gfn - run_start < UINT32_MAX;
    if (run_continues) continue;
    uint64_t count = gfn - run_start;
    mirror_->update(
        {run_start, frames_[run_start], static_cast<uint32_t>(count), spte::Access::kWrite});
    trace::emit(trace::Kind::kSpteInstall, run_start, 0,
                mm::Pte::make(frames_[run_start], true).raw());
    run_start = gfn;
  }
}

}  // namespace sptelab::hypervisor
