#include "tests/hypervisor/fake_memory.h"

#include <cstring>
#include <stdexcept>

namespace sptelab::hypervisor::testing {

FakeMemory::FakeMemory(mm::PhysMem& phys, uint64_t gfn_count)
    : phys_(phys),
      pfns_(phys.alloc_contiguous(gfn_count)),
      present_(gfn_count, 0),
      faults_(gfn_count) {
  if (pfns_.size() != gfn_count) throw std::runtime_error("FakeMemory: not enough frames");
}

FakeMemory::~FakeMemory() {
  for (mm::Pfn pfn : pfns_) phys_.put(pfn);
}

void FakeMemory::set_mirror(spte::Mirror* mirror) {
  mirror_ = mirror;
}

void FakeMemory::set_after_fault(std::function<void(spte::Gfn, bool)> hook) {
  after_fault_ = std::move(hook);
}

void FakeMemory::set_after_access(std::function<void(spte::Gfn, bool)> hook) {
  after_access_ = std::move(hook);
}

spte::FaultOutcome FakeMemory::fault(spte::Gfn gfn, bool write, uint32_t /*vcpu*/) {
  if (gfn >= pfns_.size() || gfn >= memslot_limit_.load()) return spte::FaultOutcome::kNoMemslot;
  faults_[gfn].fetch_add(1);
  {
    std::lock_guard lock(lock_for(gfn));
    if (!present_[gfn]) {
      if (mirror_ != nullptr) mirror_->update({gfn, pfns_[gfn], 1, spte::Access::kWrite});
      present_[gfn] = 1;
    }
  }
  if (after_fault_) after_fault_(gfn, write);
  return spte::FaultOutcome::kFixed;
}

bool FakeMemory::access(spte::Gfn gfn, bool write, const std::function<void(uint8_t*)>& fn) {
  if (gfn >= pfns_.size()) return false;
  {
    std::lock_guard lock(lock_for(gfn));
    if (!present_[gfn]) return false;
    fn(phys_.direct_map(pfns_[gfn]));
  }
  if (after_access_) after_access_(gfn, write);
  return true;
}

void FakeMemory::zap(spte::Gfn gfn) {
  std::lock_guard lock(lock_for(gfn));
  if (!present_[gfn]) return;
  if (mirror_ != nullptr) mirror_->update({gfn, mm::kNoPfn, 1, spte::Access::kNone});
  present_[gfn] = 0;
}

void FakeMemory::migrate(spte::Gfn gfn) {
  mm::Pfn fresh = phys_.alloc();
  if (fresh == mm::kNoPfn) throw std::runtime_error("FakeMemory: out of frames to migrate to");
  std::lock_guard lock(lock_for(gfn));
  // Like migration: no access through the old translation once the mirror
  // update returns, then copy, then point the table at the new frame.
  if (present_[gfn] && mirror_ != nullptr) {
    mirror_->update({gfn, mm::kNoPfn, 1, spte::Access::kNone});
  }
  present_[gfn] = 0;
  std::memcpy(phys_.direct_map(fresh), phys_.direct_map(pfns_[gfn]), mm::kPageSize);
  phys_.put(pfns_[gfn]);
  pfns_[gfn] = fresh;
  migrations_.fetch_add(1);
}

bool FakeMemory::present(spte::Gfn gfn) {
  std::lock_guard lock(lock_for(gfn));
  return present_[gfn];
}

mm::Pfn FakeMemory::pfn(spte::Gfn gfn) {
  std::lock_guard lock(lock_for(gfn));
  return pfns_[gfn];
}

}  // namespace sptelab::hypervisor::testing
