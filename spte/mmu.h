// The secondary MMU: a KVM-like shadow MMU that knows the host MM only through
// GUP and the MMU-notifier chain, exactly like KVM knows Linux. It keeps one
// spte per guest frame (x86 PTE format: under shadow paging KVM's sptes are
// x86 PTEs too), synchronises its faults with host invalidations through one of
// four protocols, and tells a Mirror (software vCPU TLBs, or the hypervisor's
// guest window) about every change before the change returns.
//
// Under the fifth protocol, sva, the same per-gfn table is an IOMMU's IOTLB:
// a device bound to the address space (IOMMU SVA) shares the host page table,
// so an entry is a cached translation, not a copy the MMU owns. A miss walks
// the host page table under mmu_lock (the IOTLB lock), with no GUP and no page
// reference, and the only invalidation it heeds is
// arch_invalidate_secondary_tlbs from the host's TLB flush (sva_fault,
// flush_iotlb).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/spinlock.h"
#include "mm/gup.h"
#include "mm/types.h"
#include "spte/mirror.h"
#include "spte/scheme.h"
#include "spte/violations.h"

namespace sptelab::mm {
class Mm;
class PhysMem;
}  // namespace sptelab::mm

namespace sptelab::mmu_notifier {
class Chain;
class Subscription;
}  // namespace sptelab::mmu_notifier

namespace sptelab::spte {

using Spte = mm::Pte;  // present, writable, accessed, dirty, pfn: same bits

struct MmuStats {
  uint64_t faults = 0;
  uint64_t fixed = 0;
  uint64_t retries = 0;
  uint64_t fast_fixes = 0;  // spte already present: access tracking or a spurious fault
  uint64_t installs = 0;
  uint64_t zaps = 0;  // sptes zapped
  uint64_t write_protects = 0;
  uint64_t invalidations = 0;  // notifier invalidations received
  uint64_t mirror_updates = 0;
  uint64_t protection_waits = 0;  // GUP refused by a VMA without the permission: retried
  uint64_t scanned_words = 0;     // present-bitmap words examined by zaps (cost of invalidation)
};

struct MmuOptions {
  Protocol protocol = Protocol::kSeqCount;
  // Map the neighbouring pages whose host PTEs are already present (and
  // frames contiguous) within the aligned block of this many pages around a
  // fault: KVM calls it prefetch, Linux fault-around. One mirror update then
  // covers the whole run. 0 or 1: no prefetch.
  uint32_t fault_around = 0;
  // KVM maps a page writable on a read fault when the host PTE already
  // allows writes (hva_to_pfn's "writable" answer), saving a second fault.
  // The spte is then marked dirty at once: a mirror like the KVM window
  // cannot report guest writes, so a writable spte must count as dirty when
  // it is zapped (KVM without A/D bits does the same).
  bool map_writable_on_read = true;
};

class Mmu final : public GuestMemory {
 public:
  Mmu(mm::Mm& mm, mmu_notifier::Chain& chain, MmuOptions options, ViolationLog& violations);
  ~Mmu() override;
  Mmu(const Mmu&) = delete;
  Mmu& operator=(const Mmu&) = delete;

  // Guest frames base_gfn .. base_gfn+npages-1 are backed by host virtual
  // memory at hva. Add all memslots before the first fault.
  void add_memslot(Gfn base_gfn, uint64_t npages, uint64_t hva, bool readonly = false);

  // GuestMemory
  FaultOutcome fault(Gfn gfn, bool write, uint32_t vcpu) override;
  bool access(Gfn gfn, bool write, const std::function<void(uint8_t* frame)>& fn) override;
  void set_mirror(Mirror* mirror) override;
  uint64_t gfn_count() const override;

  // Reads an spte under mmu_lock and, if present with the needed access,
  // calls fill(spte, generation) still under the lock (a TLB fill that no zap
  // can overtake). Returns whether fill was called.
  bool read_spte(Gfn gfn, bool write, const std::function<void(Spte, uint64_t)>& fill);
  Spte spte(Gfn gfn) const;  // racy snapshot, for reports and tests

  // Auditor, at quiescent points: every present spte maps the frame the host
  // PTE maps, with no more permission, and that frame is live. Reports what it
  // finds into the violation log and returns the count.
  size_t audit();
  // The same audit, its findings counted by kind: an spte on a freed frame is
  // a use-after-free, one disagreeing with the host PTE over a live frame a
  // stale spte.
  struct AuditFindings {
    size_t freed = 0;
    size_t stale = 0;
    size_t total() const { return freed + stale; }
  };
  AuditFindings audit_findings();

  void zap_all();
  MmuStats stats() const;
  Protocol protocol() const { return options_.protocol; }
  mm::Mm& host_mm() { return mm_; }
  ViolationLog& violations() { return violations_; }

  // Sequence state the protocols read, for traces and tests.
  uint64_t invalidate_seq() const { return invalidate_seq_.load(std::memory_order_acquire); }
  uint64_t open_invalidations() const { return open_count_.load(std::memory_order_acquire); }

 private:
  struct Memslot;
  class Subscriber;
  class IntervalSubscriber;
  class SvaSubscriber;
  friend class Subscriber;
  friend class IntervalSubscriber;
  friend class SvaSubscriber;

  // Notifier side (called by the subscribers).
  void invalidate_now(uint64_t start, uint64_t end);  // single call: begin and end at once
  void invalidate_begin(uint64_t start, uint64_t end);
  void invalidate_end(uint64_t start, uint64_t end);
  void interval_invalidate(Memslot& slot, uint64_t start, uint64_t end, uint64_t seq);
  bool clear_young(uint64_t start, uint64_t end);
  bool test_young(uint64_t addr);
  void change_pte(uint64_t addr, mm::Pte pte);
  void release();
  void flush_iotlb(uint64_t start, uint64_t end);  // sva: arch_invalidate_secondary_tlbs

  // The sva protocol's fault path: an IOTLB miss and its page request.
  FaultOutcome sva_fault(Memslot& slot, Gfn gfn, bool write);
  bool sva_walk_and_fill(Memslot& slot, Gfn gfn, bool write);
  FaultOutcome sva_page_request(uint64_t hva, bool write);
  bool sva() const { return options_.protocol == Protocol::kSva; }

  Memslot* slot_for(Gfn gfn);
  const Memslot* slot_for(Gfn gfn) const;
  bool retry_needed(const Memslot& slot, uint64_t hva, uint64_t seq, uint64_t interval_seq) const;
  bool fix_present(Memslot& slot, Gfn gfn, bool write);
  FaultOutcome gup_failure(uint64_t hva, mm::GupError error);
  // Sets the spte; the caller tells the mirror.
  void install(Memslot& slot, Gfn gfn, mm::Pfn pfn, bool writable, bool dirty);
  // Prefetches neighbours of a just-installed spte; returns the mirror
  // update that maps gfn and them.
  MirrorUpdate fault_around(Memslot& slot, Gfn gfn, mm::Pfn pfn, bool writable);
  // Callers hold mmu_lock_ (each asserts it). store_spte is what every spte
  // install does (a fault's, a prefetch's, change_pte's): record the frame's
  // generation (use-after-free detection), set the spte, mark it present;
  // statistics and the trace event are the caller's.
  void store_spte(Memslot& slot, Gfn gfn, Spte spte);
  void zap_hva_range(uint64_t start, uint64_t end);
  void zap_gfns(Memslot& slot, Gfn first, Gfn last_exclusive);
  void retire_spte(Memslot& slot, Gfn gfn, Spte old);
  void mirror(const MirrorUpdate& update);
  template <typename Fn>
  void for_each_slot_range(uint64_t start, uint64_t end, Fn&& fn);

  mm::Mm& mm_;
  mm::PhysMem& phys_;
  mmu_notifier::Chain& chain_;
  MmuOptions options_;
  ViolationLog& violations_;
  Mirror* mirror_ = nullptr;

  mutable SpinLock mmu_lock_{"mmu_lock", LockRank::kMmuLock};
  std::vector<std::unique_ptr<Memslot>> slots_;
  std::atomic<uint64_t> invalidate_seq_{0};
  std::atomic<uint64_t> open_count_{0};
  uint64_t open_start_ = 0;  // union of the open invalidations' ranges (under mmu_lock_)
  uint64_t open_end_ = 0;
  std::unique_ptr<mmu_notifier::Subscription> subscriber_;

  struct AtomicStats {
    std::atomic<uint64_t> faults{0}, fixed{0}, retries{0}, fast_fixes{0}, installs{0}, zaps{0},
        write_protects{0}, invalidations{0}, mirror_updates{0}, protection_waits{0},
        scanned_words{0};
  };
  AtomicStats stats_;
};

}  // namespace sptelab::spte
