// A test double for spte::GuestMemory: a fixed gfn -> frame table over a
// PhysMem, faulted in lazily (so the guest really exits on first touch), with
// the knobs the hypervisor tests need: a memslot hole, zapping or migrating a
// gfn from any thread, and hooks that run right after a fault or an access.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <mutex>
#include <vector>

#include "mm/phys_mem.h"
#include "spte/mirror.h"

namespace sptelab::hypervisor::testing {

class FakeMemory final : public spte::GuestMemory {
 public:
  FakeMemory(mm::PhysMem& phys, uint64_t gfn_count);
  ~FakeMemory() override;

  spte::FaultOutcome fault(spte::Gfn gfn, bool write, uint32_t vcpu) override;
  bool access(spte::Gfn gfn, bool write, const std::function<void(uint8_t*)>& fn) override;
  void set_mirror(spte::Mirror* mirror) override;
  uint64_t gfn_count() const override { return pfns_.size(); }

  // gfns at or above `limit` answer kNoMemslot although they are RAM.
  void set_memslot_limit(uint64_t limit) { memslot_limit_ = limit; }
  // Runs (outside the gfn's lock) after a fault was fixed / an access ran.
  void set_after_fault(std::function<void(spte::Gfn, bool write)> hook);
  void set_after_access(std::function<void(spte::Gfn, bool write)> hook);

  // The spte goes away: the window makes the page inaccessible.
  void zap(spte::Gfn gfn);
  // Zap, copy the frame to a newly allocated one and free the old: the next
  // fault maps the new frame.
  void migrate(spte::Gfn gfn);

  bool present(spte::Gfn gfn);
  mm::Pfn pfn(spte::Gfn gfn);
  uint64_t faults(spte::Gfn gfn) const { return faults_[gfn].load(); }
  uint64_t migrations() const { return migrations_.load(); }

 private:
  std::mutex& lock_for(spte::Gfn gfn) { return locks_[gfn % locks_.size()]; }

  mm::PhysMem& phys_;
  std::vector<mm::Pfn> pfns_;     // under lock_for(gfn)
  std::vector<uint8_t> present_;  // under lock_for(gfn)
  std::vector<std::atomic<uint64_t>> faults_;
  std::array<std::mutex, 64> locks_;
  spte::Mirror* mirror_ = nullptr;
  std::atomic<uint64_t> memslot_limit_{~0ull};
  std::atomic<uint64_t> migrations_{0};
  std::function<void(spte::Gfn, bool)> after_fault_;
  std::function<void(spte::Gfn, bool)> after_access_;
};

}  // namespace sptelab::hypervisor::testing
