#include "spte/mmu.h"

#include <algorithm>
#include <cassert>
#include <mutex>

#include <fmt/core.h>

#include "base/error.h"
#include "base/inject.h"
#include "base/mutation.h"
#include "mm/fault.h"
#include "mm/gup.h"
#include "mm/mm.h"
#include "mm/phys_mem.h"
#include "mmu_notifier/chain.h"
#include "trace/trace.h"

namespace sptelab::spte {

using mm::kPageSize;
using mm::Pfn;
using trace::Kind;

// One memslot: a flat spte array indexed by gfn offset, the frame generation
// each spte was installed against (use-after-free detection), and a bitmap of
// present sptes so that zapping a range skips empty words: the cost follows
// the sptes in the range, not the size of the table.
struct Mmu::Memslot {
  Gfn base_gfn = 0;
  uint64_t npages = 0;
  uint64_t hva = 0;
  bool readonly = false;
  std::unique_ptr<std::atomic<uint64_t>[]> sptes;
  std::unique_ptr<uint64_t[]> generations;  // under mmu_lock
  std::vector<uint64_t> present;            // bitmap, under mmu_lock
  std::unique_ptr<IntervalSubscriber> interval;

  uint64_t hva_end() const { return hva + npages * kPageSize; }
  uint64_t index(Gfn gfn) const { return gfn - base_gfn; }
  uint64_t hva_of(Gfn gfn) const { return hva + index(gfn) * kPageSize; }
  bool contains(Gfn gfn) const { return gfn >= base_gfn && gfn < base_gfn + npages; }
  Spte load(Gfn gfn) const { return Spte(sptes[index(gfn)].load(std::memory_order_acquire)); }
  void store(Gfn gfn, Spte spte) { sptes[index(gfn)].store(spte.raw(), std::memory_order_release); }
  void mark_present(Gfn gfn, bool on) {
    uint64_t i = index(gfn);
    if (on) {
      present[i / 64] |= uint64_t{1} << (i % 64);
    } else {
      present[i / 64] &= ~(uint64_t{1} << (i % 64));
    }
  }
};

// Classic subscription (KVM's kvm_mmu_notifier_ops): every callback takes
// mmu_lock, which is a spinlock, so the callbacks never sleep.
class Mmu::Subscriber final : public mmu_notifier::Subscription {
 public:
  explicit Subscriber(Mmu& mmu) : mmu_(mmu) {}
  bool may_sleep() const override { return false; }
  void invalidate_page(mm::Mm*, uint64_t addr) override {
    mmu_.invalidate_now(addr, addr + kPageSize);
  }
  void invalidate_range(mm::Mm*, uint64_t start, uint64_t end, mm::InvalidateEvent) override {
    mmu_.invalidate_now(start, end);
  }
  int invalidate_range_start(const mm::InvalidateRange& range) override {
    mmu_.invalidate_begin(range.start, range.end);
    return 0;
  }
  void invalidate_range_end(const mm::InvalidateRange& range) override {
    mmu_.invalidate_end(range.start, range.end);
  }
  bool clear_flush_young(mm::Mm*, uint64_t start, uint64_t end) override {
    return mmu_.clear_young(start, end);
  }
  bool clear_young(mm::Mm*, uint64_t start, uint64_t end) override {
    return mmu_.clear_young(start, end);
  }
  bool test_young(mm::Mm*, uint64_t addr) override { return mmu_.test_young(addr); }
  void change_pte(mm::Mm*, uint64_t addr, mm::Pte pte) override { mmu_.change_pte(addr, pte); }
  void release(mm::Mm*) override { mmu_.release(); }

 private:
  Mmu& mmu_;
};

// Interval subscription over one memslot (mmu_interval_notifier, as GPU/HMM
// drivers use it): the callback updates the interval's sequence under the
// driver lock and zaps.
class Mmu::IntervalSubscriber final : public mmu_notifier::IntervalSubscription {
 public:
  IntervalSubscriber(Mmu& mmu, Memslot& slot)
      : mmu_notifier::IntervalSubscription(slot.hva, slot.hva_end()), mmu_(mmu), slot_(slot) {}
  bool may_sleep() const override { return false; }
  bool invalidate(const mm::InvalidateRange& range, uint64_t cur_seq) override {
    mmu_.interval_invalidate(slot_, range.start, range.end, cur_seq);
    return true;
  }

 private:
  Mmu& mmu_;
  Memslot& slot_;
};

// An IOMMU-SVA binding (iommu_sva_bind_device -> the driver's
// mmu_notifier_ops: intel_mmuops in drivers/iommu/intel/svm.c, sva_mn_ops in
// drivers/iommu/amd/pasid.c). Since 6.6 its only invalidation callback is
// arch_invalidate_secondary_tlbs, which the host issues from its TLB flush
// (inside the PTL where the flush is); invalidate_range_start/end, the
// 2008 callbacks, interval invalidations and change_pte leave its IOTLB
// alone, and it has no young callbacks: the walk sets the accessed bit in the
// host PTE itself, where aging finds it. release is mm teardown (the
// driver's mm_release clears the PASID entry, so nothing can walk any more).
class Mmu::SvaSubscriber final : public mmu_notifier::Subscription {
 public:
  explicit SvaSubscriber(Mmu& mmu) : mmu_(mmu) {}
  std::string_view name() const override { return "sva"; }
  // Called from the TLB flush, maybe inside the PTL: the IOTLB flush
  // spins on the invalidation queue, it never sleeps.
  bool may_sleep() const override { return false; }
  void arch_invalidate_secondary_tlbs(mm::Mm*, uint64_t start, uint64_t end) override {
    mmu_.flush_iotlb(start, end);
  }
  void release(mm::Mm*) override { mmu_.release(); }

 private:
  Mmu& mmu_;
};

Mmu::Mmu(mm::Mm& host_mm, mmu_notifier::Chain& chain, MmuOptions options, ViolationLog& violations)
    : mm_(host_mm),
      phys_(host_mm.phys()),
      chain_(chain),
      options_(options),
      violations_(violations) {
  if (sva()) {
    subscriber_ = std::make_unique<SvaSubscriber>(*this);
  } else if (options_.protocol != Protocol::kInterval) {
    subscriber_ = std::make_unique<Subscriber>(*this);
  }
  if (subscriber_) chain_.register_subscription(subscriber_.get());
}

Mmu::~Mmu() {
  if (subscriber_) chain_.unregister_subscription(subscriber_.get());
  for (auto& slot : slots_) {
    if (slot->interval) chain_.unregister_interval(slot->interval.get());
  }
}

void Mmu::add_memslot(Gfn base_gfn, uint64_t npages, uint64_t hva, bool readonly) {
  if (npages == 0) throw_bad_input("memslot with zero pages");
  if (hva % kPageSize != 0) throw_bad_input("memslot host address is not page aligned");
  for (const auto& slot : slots_) {
    if (base_gfn < slot->base_gfn + slot->npages && slot->base_gfn < base_gfn + npages) {
      throw_bad_input("memslots overlap in guest physical space");
    }
  }
  auto slot = std::make_unique<Memslot>();
  slot->base_gfn = base_gfn;
  slot->npages = npages;
  slot->hva = hva;
  slot->readonly = readonly;
  slot->sptes = std::make_unique<std::atomic<uint64_t>[]>(npages);
  slot->generations = std::make_unique<uint64_t[]>(npages);
  slot->present.assign((npages + 63) / 64, 0);
  if (options_.protocol == Protocol::kInterval) {
    slot->interval = std::make_unique<IntervalSubscriber>(*this, *slot);
    chain_.register_interval(slot->interval.get());
  }
  std::lock_guard lock(mmu_lock_);
  slots_.push_back(std::move(slot));
}

void Mmu::set_mirror(Mirror* mirror) {
  std::lock_guard lock(mmu_lock_);
  mirror_ = mirror;
}

uint64_t Mmu::gfn_count() const {
  uint64_t end = 0;
  for (const auto& slot : slots_) end = std::max(end, slot->base_gfn + slot->npages);
  return end;
}

Mmu::Memslot* Mmu::slot_for(Gfn gfn) {
  for (auto& slot : slots_) {
    if (slot->contains(gfn)) return slot.get();
  }
  return nullptr;
}

const Mmu::Memslot* Mmu::slot_for(Gfn gfn) const {
  for (const auto& slot : slots_) {
    if (slot->contains(gfn)) return slot.get();
  }
  return nullptr;
}

// ---- fault path -------------------------------------------------------------

FaultOutcome Mmu::fault(Gfn gfn, bool write, uint32_t vcpu) {
  (void)vcpu;
  stats_.faults.fetch_add(1, std::memory_order_relaxed);
  Memslot* slot = slot_for(gfn);
  if (!slot) return FaultOutcome::kNoMemslot;
  if (write && slot->readonly) return FaultOutcome::kBadAccess;
  if (fix_present(*slot, gfn, write)) return FaultOutcome::kFixed;
  if (sva()) return sva_fault(*slot, gfn, write);

  // Snapshot the invalidation state *before* looking the page up: an
  // invalidation that completes after this point is seen by the check under
  // mmu_lock (KVM: mmu_invalidate_seq read, smp_rmb, then gfn_to_pfn).
  const uint64_t hva = slot->hva_of(gfn);
  uint64_t seq = invalidate_seq_.load(std::memory_order_acquire);
  uint64_t interval_seq = 0;
  if (options_.protocol == Protocol::kInterval) interval_seq = chain_.read_begin(*slot->interval);
  trace::emit(Kind::kFaultBegin, gfn, write,
              options_.protocol == Protocol::kInterval ? interval_seq : seq,
              open_count_.load(std::memory_order_relaxed));
  inject::at(inject::Point::kSpteFaultAfterSnapshot, {.addr = hva, .gfn = gfn});

  mm::GupResult page = mm::get_user_page(mm_, hva, write);
  if (!page.ok) return gup_failure(hva, page.error);
  inject::at(inject::Point::kSpteFaultAfterGup, {.addr = hva, .gfn = gfn, .pfn = page.pfn});

  bool retry = false;
  {
    std::lock_guard lock(mmu_lock_);
    inject::at(inject::Point::kSpteFaultUnderLock, {.addr = hva, .gfn = gfn, .pfn = page.pfn});
    retry = retry_needed(*slot, hva, seq, interval_seq);
    if (!retry) {
      const bool writable =
          page.writable && !slot->readonly && (write || options_.map_writable_on_read);
      install(*slot, gfn, page.pfn, writable, writable);
      // One mirror update for the page and its prefetched neighbours: on
      // the KVM window that is one mmap for the whole run.
      mirror(fault_around(*slot, gfn, page.pfn, writable));
    }
  }
  // Modern KVM keeps no reference once the spte is installed: from here on
  // only the notifiers keep the spte coherent.
  phys_.put(page.pfn);
  if (retry) {
    stats_.retries.fetch_add(1, std::memory_order_relaxed);
    trace::emit(Kind::kFaultRetry, gfn, invalidate_seq_.load(std::memory_order_relaxed),
                open_count_.load(std::memory_order_relaxed));
    return FaultOutcome::kRetry;
  }
  stats_.fixed.fetch_add(1, std::memory_order_relaxed);
  trace::emit(Kind::kFaultFixed, gfn, page.pfn, slot->load(gfn).raw());
  return FaultOutcome::kFixed;
}

// An IOTLB miss (Intel's PRS / AMD's PPR flow, drivers/iommu/iommu-sva.c):
// the IOMMU walks the host page table; if the walk faults, the device sends
// a page request, the host serves it (iommu_sva_handle_iopf) and the device
// retries. No GUP, no page reference, no sequence: the IOTLB entry is safe
// because the host flushes its TLBs, and with them this IOTLB, before it
// frees or reuses a page it unmapped, as it must for its own CPUs.
FaultOutcome Mmu::sva_fault(Memslot& slot, Gfn gfn, bool write) {
  const uint64_t hva = slot.hva_of(gfn);
  trace::emit(Kind::kFaultBegin, gfn, write, 0, 0);
  if (!sva_walk_and_fill(slot, gfn, write)) {
    const FaultOutcome served = sva_page_request(hva, write);
    if (served != FaultOutcome::kFixed) return served;
    if (!sva_walk_and_fill(slot, gfn, write)) {
      // The host changed the PTE again between serving the request and
      // the second walk: the device retries the access.
      stats_.retries.fetch_add(1, std::memory_order_relaxed);
      trace::emit(Kind::kFaultRetry, gfn, 0, 0);
      return FaultOutcome::kRetry;
    }
  }
  stats_.fixed.fetch_add(1, std::memory_order_relaxed);
  trace::emit(Kind::kFaultFixed, gfn, slot.load(gfn).pfn(), slot.load(gfn).raw());
  return FaultOutcome::kFixed;
}

// The walk and the fill happen under mmu_lock, the lock flush_iotlb takes:
// an invalidation either completes before the walk (which then reads the
// new PTE, since the host flushes after changing it) or waits for the fill
// and zaps it, as the IOMMU's invalidation-wait descriptor waits for walks in
// flight. The walk sets accessed, and dirty for a write, in the host PTE
// (hardware A/D, like a CPU's walker); the entry is writable only after a
// write walk, so a later write first walks again and sets dirty in the PTE.
bool Mmu::sva_walk_and_fill(Memslot& slot, Gfn gfn, bool write) {
  const uint64_t hva = slot.hva_of(gfn);
  std::lock_guard lock(mmu_lock_);
  const mm::Pte pte = mm_.hardware_walk(hva, write, "iommu_walk");
  if (!pte.present()) return false;
  inject::at(inject::Point::kSpteFaultUnderLock, {.addr = hva, .gfn = gfn, .pfn = pte.pfn()});
  const bool writable = write && !slot.readonly;
  install(slot, gfn, pte.pfn(), writable, writable);
  mirror({gfn, pte.pfn(), 1, writable ? Access::kWrite : Access::kRead});
  return true;
}

// iommu_sva_handle_iopf: under mmap_lock for read, find the VMA, check the
// access against it and run handle_mm_fault. A refused request is what a
// failed GUP is to the other protocols (gup_failure).
FaultOutcome Mmu::sva_page_request(uint64_t hva, bool write) {
  mm::FaultResult result;
  {
    mm::MmapReadGuard guard(mm_);
    result = mm::handle_mm_fault(mm_, hva, write);
  }
  switch (result) {
    case mm::FaultResult::kOk:
    case mm::FaultResult::kRetry:
      return FaultOutcome::kFixed;
    case mm::FaultResult::kOom:
      return gup_failure(hva, mm::GupError::kNoMemory);
    case mm::FaultResult::kSigSegv:
      break;
  }
  return gup_failure(hva, mm::GupError::kBadAccess);
}

// KVM turns a failed GUP into -EFAULT for the VMM. A VMA that still exists
// but has lost the permission (the host mprotect()ed guest RAM for a moment)
// is waited out instead, as a userfaultfd write-protect fault would be, so
// that the mprotect race can run; no VMA at all is a real error.
FaultOutcome Mmu::gup_failure(uint64_t hva, mm::GupError error) {
  if (error == mm::GupError::kNoMemory) return FaultOutcome::kNoMemory;
  mm::MmapReadGuard guard(mm_);
  if (mm_.find_vma(hva) != nullptr) {
    stats_.protection_waits.fetch_add(1, std::memory_order_relaxed);
    return FaultOutcome::kRetry;
  }
  return FaultOutcome::kBadAccess;
}

// An spte that is present with enough permission but was hidden from the
// mirror (access tracking after a young-clear) or a fault that lost a race
// with another vCPU's fix: restore the mirror without a GUP.
bool Mmu::fix_present(Memslot& slot, Gfn gfn, bool write) {
  std::lock_guard lock(mmu_lock_);
  Spte spte = slot.load(gfn);
  if (!spte.present() || (write && !spte.writable())) return false;
  Spte updated = spte.with(Spte::kAccessed | (write ? Spte::kDirty : 0));
  if (updated != spte) slot.store(gfn, updated);
  mirror({gfn, spte.pfn(), 1, spte.writable() ? Access::kWrite : Access::kRead});
  stats_.fast_fixes.fetch_add(1, std::memory_order_relaxed);
  stats_.fixed.fetch_add(1, std::memory_order_relaxed);
  return true;
}

bool Mmu::retry_needed(const Memslot& slot, uint64_t hva, uint64_t seq,
                       uint64_t interval_seq) const {
  switch (options_.protocol) {
    case Protocol::kNaive:
      return false;
    case Protocol::kSeq:
      return invalidate_seq_.load(std::memory_order_relaxed) != seq;
    case Protocol::kSeqCount:
      // KVM's mmu_invalidate_retry_gfn(): an open invalidation covering the
      // page forces a retry even though the sequence has not moved yet.
      if (open_count_.load(std::memory_order_relaxed) > 0 && hva >= open_start_ &&
          hva < open_end_ && !mutation::active(mutation::Mutant::kSeqCountIgnoresOpenRange)) {
        return true;
      }
      return invalidate_seq_.load(std::memory_order_relaxed) != seq;
    case Protocol::kInterval:
      return chain_.read_retry(*slot.interval, interval_seq) &&
             !mutation::active(mutation::Mutant::kIntervalSkipsSeqCheck);
    case Protocol::kSva:
      // sva_fault never asks: its walk and fill share the IOTLB lock with
      // every flush, so there is nothing to retry.
      throw_internal("the sva protocol has no sequence to check");
  }
  return true;
}

void Mmu::install(Memslot& slot, Gfn gfn, Pfn pfn, bool writable, bool dirty) {
  Spte old = slot.load(gfn);
  if (old.present() && old.pfn() != pfn) retire_spte(slot, gfn, old);
  Spte spte = Spte::make(pfn, writable).with(Spte::kAccessed | (dirty ? Spte::kDirty : 0));
  store_spte(slot, gfn, spte);
  stats_.installs.fetch_add(1, std::memory_order_relaxed);
  trace::emit(Kind::kSpteInstall, gfn, old.raw(), spte.raw());
}

void Mmu::store_spte(Memslot& slot, Gfn gfn, Spte spte) {
  mmu_lock_.assert_held();
  slot.generations[slot.index(gfn)] = phys_.generation(spte.pfn());
  slot.store(gfn, spte);
  slot.mark_present(gfn, true);
}

// Prefetch (KVM's direct_pte_prefetch, Linux's do_fault_around): within the
// aligned block of options_.fault_around pages around gfn, install sptes for
// the neighbours on either side whose host PTEs are present and whose frames
// continue pfn's run, so that one mirror update maps the whole run. A
// neighbour gets the faulting page's access if its host PTE allows it (a
// writable prefetch counts as dirty, as map_writable_on_read does: the
// mirror cannot report writes); prefetched sptes are not marked accessed.
//
// Safe under the faulting page's check: we hold mmu_lock and the retry check
// passed, so a host PTE read here that changes later is invalidated later.
// The exception is an invalidation already open (start seen, end not yet)
// whose range covers the neighbour: its PTE may change after this read with
// no further notifier call, so the run stops there.
MirrorUpdate Mmu::fault_around(Memslot& slot, Gfn gfn, Pfn pfn, bool writable) {
  const Access access = writable ? Access::kWrite : Access::kRead;
  const uint64_t block = options_.fault_around;
  if (block <= 1 || sva()) return {gfn, pfn, 1, access};
  const uint64_t offset = slot.index(gfn);
  const Gfn block_first = slot.base_gfn + offset - offset % block;
  const Gfn block_end = std::min(block_first + block, slot.base_gfn + slot.npages);
  auto prefetch = [&](Gfn next) {
    if (slot.load(next).present()) return false;
    const uint64_t hva = slot.hva_of(next);
    if (open_count_.load(std::memory_order_relaxed) > 0 && hva >= open_start_ && hva < open_end_) {
      return false;
    }
    mm::Pte pte = mm_.read_pte_lockless(hva);
    if (!pte.present() || pte.pfn() != pfn + next - gfn) return false;
    if (writable && !pte.writable()) return false;
    Spte spte = Spte::make(pte.pfn(), writable).with(writable ? Spte::kDirty : 0);
    store_spte(slot, next, spte);
    stats_.installs.fetch_add(1, std::memory_order_relaxed);
    trace::emit(Kind::kSpteInstall, next, 0, spte.raw());
    return true;
  };
  Gfn first = gfn;
  while (first > block_first && prefetch(first - 1)) --first;
  Gfn end = gfn + 1;
  while (end < block_end && prefetch(end)) ++end;
  return {first, pfn - (gfn - first), static_cast<uint32_t>(end - first), access};
}

// ---- access and audit ---------------------------------------------------------

// A hardware-style walk of the spte: sets accessed (and dirty for a write)
// like the page walker does, then fills the caller's TLB under the lock.
bool Mmu::read_spte(Gfn gfn, bool write, const std::function<void(Spte, uint64_t)>& fill) {
  std::lock_guard lock(mmu_lock_);
  Memslot* slot = slot_for(gfn);
  if (!slot) return false;
  Spte spte = slot->load(gfn);
  if (!spte.present() || (write && !spte.writable())) return false;
  Spte walked = spte.with(Spte::kAccessed | (write ? Spte::kDirty : 0));
  if (walked != spte) slot->store(gfn, walked);
  fill(walked, slot->generations[slot->index(gfn)]);
  return true;
}

Spte Mmu::spte(Gfn gfn) const {
  const Memslot* slot = slot_for(gfn);
  return slot ? slot->load(gfn) : Spte();
}

bool Mmu::access(Gfn gfn, bool write, const std::function<void(uint8_t* frame)>& fn) {
  std::lock_guard lock(mmu_lock_);
  Memslot* slot = slot_for(gfn);
  if (!slot) return false;
  Spte spte = slot->load(gfn);
  if (!spte.present() || (write && !spte.writable())) return false;
  if (phys_.generation(spte.pfn()) != slot->generations[slot->index(gfn)]) {
    violations_.report({ViolationKind::kUseAfterFree, gfn, spte.pfn(), 0,
                        "guest access through an spte whose frame was freed or reused"});
  }
  fn(phys_.direct_map(spte.pfn()));
  Spte updated = spte.with(Spte::kAccessed | (write ? Spte::kDirty : 0));
  if (updated != spte) slot->store(gfn, updated);
  return true;
}

size_t Mmu::audit() {
  return audit_findings().total();
}

Mmu::AuditFindings Mmu::audit_findings() {
  AuditFindings found;
  std::lock_guard lock(mmu_lock_);
  for (auto& slot : slots_) {
    for (uint64_t i = 0; i < slot->npages; ++i) {
      Gfn gfn = slot->base_gfn + i;
      Spte spte = slot->load(gfn);
      if (!spte.present()) continue;
      mm::Pte pte = mm_.read_pte_lockless(slot->hva_of(gfn));
      std::string problem;
      if (phys_.generation(spte.pfn()) != slot->generations[i]) {
        violations_.report({ViolationKind::kUseAfterFree, gfn, spte.pfn(), 0,
                            "present spte maps a frame that was freed or reused"});
        ++found.freed;
        continue;
      }
      if (!pte.present()) {
        problem = "host PTE is not present";
      } else if (pte.pfn() != spte.pfn()) {
        problem = fmt::format("host PTE maps pfn {:#x}", pte.pfn());
      } else if (spte.writable() && !pte.writable()) {
        problem = "spte is writable but the host PTE is read-only";
      }
      if (!problem.empty()) {
        violations_.report({ViolationKind::kStaleSpte, gfn, spte.pfn(), 0,
                            fmt::format("spte maps pfn {:#x}: {}", spte.pfn(), problem)});
        ++found.stale;
      }
    }
  }
  return found;
}

// ---- invalidation -------------------------------------------------------------

template <typename Fn>
void Mmu::for_each_slot_range(uint64_t start, uint64_t end, Fn&& fn) {
  for (auto& slot : slots_) {
    uint64_t lo = std::max(start, slot->hva);
    uint64_t hi = std::min(end, slot->hva_end());
    if (lo >= hi) continue;
    Gfn first = slot->base_gfn + (lo - slot->hva) / kPageSize;
    Gfn last = slot->base_gfn + (hi - slot->hva + kPageSize - 1) / kPageSize;
    fn(*slot, first, last);
  }
}

void Mmu::zap_hva_range(uint64_t start, uint64_t end) {
  mmu_lock_.assert_held();
  for_each_slot_range(start, end,
                      [&](Memslot& slot, Gfn first, Gfn last) { zap_gfns(slot, first, last); });
}

// Zaps every present spte in [first, last): its dirty and accessed bits go to
// the page, then the mirror stops using the frames, one update per run of
// consecutive zapped gfns, before this returns.
void Mmu::zap_gfns(Memslot& slot, Gfn first, Gfn last) {
  mmu_lock_.assert_held();
  Gfn run_start = 0;
  uint32_t run_length = 0;
  auto flush_run = [&] {
    if (run_length == 0) return;
    inject::at(inject::Point::kSpteZapBeforeMirror, {.gfn = run_start});
    if (!mutation::active(mutation::Mutant::kZapForgetsMirror)) {
      mirror({run_start, mm::kNoPfn, run_length, Access::kNone});
    }
    run_length = 0;
  };
  uint64_t i = slot.index(first);
  const uint64_t end = slot.index(last);
  uint64_t last_word = ~uint64_t{0};
  while (i < end) {
    if (i / 64 != last_word) {
      last_word = i / 64;
      stats_.scanned_words.fetch_add(1, std::memory_order_relaxed);
    }
    uint64_t word = slot.present[i / 64] >> (i % 64);
    if (word == 0) {
      flush_run();
      i = (i / 64 + 1) * 64;  // skip a word of absent sptes
      continue;
    }
    if ((word & 1) == 0) {
      flush_run();
      ++i;
      continue;
    }
    Gfn gfn = slot.base_gfn + i;
    retire_spte(slot, gfn, slot.load(gfn));
    if (run_length == 0) run_start = gfn;
    ++run_length;
    ++i;
  }
  flush_run();
}

// Clears one spte and hands its state back to the page. A frame whose
// generation moved has been freed since the spte was installed: the spte
// outlived its frame, the worst outcome a race can have.
void Mmu::retire_spte(Memslot& slot, Gfn gfn, Spte old) {
  mmu_lock_.assert_held();
  slot.store(gfn, Spte());
  slot.mark_present(gfn, false);
  stats_.zaps.fetch_add(1, std::memory_order_relaxed);
  trace::emit(Kind::kSpteZap, gfn, old.raw());
  Pfn pfn = old.pfn();
  if (phys_.generation(pfn) != slot.generations[slot.index(gfn)]) {
    violations_.report({ViolationKind::kUseAfterFree, gfn, pfn, 0,
                        "spte zapped after its frame was freed: it outlived the frame"});
    return;
  }
  // An IOTLB entry holds no state of its own: the walk set accessed and
  // dirty in the host PTE, where the host looks for them.
  if (sva()) return;
  mm::Page& page = phys_.page(pfn);
  if (old.dirty()) page.set(mm::kPageDirty);
  if (old.accessed()) page.set(mm::kPageAccessed);
}

void Mmu::mirror(const MirrorUpdate& update) {
  mmu_lock_.assert_held();
  stats_.mirror_updates.fetch_add(1, std::memory_order_relaxed);
  if (mirror_) mirror_->update(update);
}

void Mmu::invalidate_now(uint64_t start, uint64_t end) {
  std::lock_guard lock(mmu_lock_);
  stats_.invalidations.fetch_add(1, std::memory_order_relaxed);
  zap_hva_range(start, end);
  invalidate_seq_.fetch_add(1, std::memory_order_release);
}

void Mmu::invalidate_begin(uint64_t start, uint64_t end) {
  std::lock_guard lock(mmu_lock_);
  stats_.invalidations.fetch_add(1, std::memory_order_relaxed);
  // KVM keeps the union of the open ranges (mmu_invalidate_range_start/end).
  if (open_count_.load(std::memory_order_relaxed) == 0) {
    open_start_ = start;
    open_end_ = end;
  } else {
    open_start_ = std::min(open_start_, start);
    open_end_ = std::max(open_end_, end);
  }
  open_count_.fetch_add(1, std::memory_order_release);
  zap_hva_range(start, end);
}

void Mmu::invalidate_end(uint64_t, uint64_t) {
  std::lock_guard lock(mmu_lock_);
  // The sequence moves first, so a fault that sees the count drop also sees
  // the new sequence (KVM: kvm_mmu_invalidate_end).
  if (!mutation::active(mutation::Mutant::kEndKeepsSeq)) {
    invalidate_seq_.fetch_add(1, std::memory_order_release);
  }
  if (open_count_.load(std::memory_order_relaxed) == 0) {
    throw_internal("invalidate_range_end without a matching start");
  }
  open_count_.fetch_sub(1, std::memory_order_release);
}

void Mmu::interval_invalidate(Memslot& slot, uint64_t start, uint64_t end, uint64_t seq) {
  std::lock_guard lock(mmu_lock_);
  stats_.invalidations.fetch_add(1, std::memory_order_relaxed);
  chain_.set_seq(*slot.interval, seq);
  uint64_t lo = std::max(start, slot.hva);
  uint64_t hi = std::min(end, slot.hva_end());
  if (lo >= hi) return;
  zap_gfns(slot, slot.base_gfn + (lo - slot.hva) / kPageSize,
           slot.base_gfn + (hi - slot.hva + kPageSize - 1) / kPageSize);
}

// Aging: report and clear the accessed bit, and hide the page from the mirror
// so the next access faults and sets it again (KVM's access tracking for
// hardware without accessed bits).
bool Mmu::clear_young(uint64_t start, uint64_t end) {
  std::lock_guard lock(mmu_lock_);
  bool young = false;
  for_each_slot_range(start, end, [&](Memslot& slot, Gfn first, Gfn last) {
    for (Gfn gfn = first; gfn < last; ++gfn) {
      Spte spte = slot.load(gfn);
      if (!spte.present() || !spte.accessed()) continue;
      young = true;
      Spte aged = spte.without(Spte::kAccessed);
      slot.store(gfn, aged);
      trace::emit(Kind::kSpteAge, gfn, spte.raw(), aged.raw());
      mirror({gfn, mm::kNoPfn, 1, Access::kNone});
    }
  });
  return young;
}

bool Mmu::test_young(uint64_t addr) {
  std::lock_guard lock(mmu_lock_);
  bool young = false;
  for_each_slot_range(addr, addr + kPageSize, [&](Memslot& slot, Gfn first, Gfn last) {
    for (Gfn gfn = first; gfn < last; ++gfn) young |= slot.load(gfn).accessed();
  });
  return young;
}

// set_pte_at_notify(): the host replaced the page read-only (KSM, COW). Like
// KVM's kvm_set_spte_gfn, point a present spte at the new frame read-only; a
// writable new PTE is never announced this way, zap to be safe.
void Mmu::change_pte(uint64_t addr, mm::Pte pte) {
  std::lock_guard lock(mmu_lock_);
  for_each_slot_range(addr, addr + kPageSize, [&](Memslot& slot, Gfn first, Gfn last) {
    for (Gfn gfn = first; gfn < last; ++gfn) {
      Spte old = slot.load(gfn);
      if (!old.present()) continue;
      if (!pte.present() || pte.writable()) {
        zap_gfns(slot, gfn, gfn + 1);
        continue;
      }
      retire_spte(slot, gfn, old);
      Spte spte = Spte::make(pte.pfn(), false);
      store_spte(slot, gfn, spte);
      stats_.write_protects.fetch_add(1, std::memory_order_relaxed);
      trace::emit(Kind::kSpteProtect, gfn, old.raw(), spte.raw());
      mirror({gfn, pte.pfn(), 1, Access::kRead});
    }
  });
}

// The driver's arch_invalidate_secondary_tlbs (intel_arch_invalidate_secondary_tlbs,
// sva_arch_invalidate_secondary_tlbs): flush the IOTLB and the device's ATC
// for [start, end) and wait for the flush to complete before returning.
void Mmu::flush_iotlb(uint64_t start, uint64_t end) {
  std::lock_guard lock(mmu_lock_);
  stats_.invalidations.fetch_add(1, std::memory_order_relaxed);
  if (mutation::active(mutation::Mutant::kSvaSkipsIotlbFlush)) return;
  zap_hva_range(start, end);
}

void Mmu::release() {
  zap_all();
}

void Mmu::zap_all() {
  std::lock_guard lock(mmu_lock_);
  for (auto& slot : slots_) zap_gfns(*slot, slot->base_gfn, slot->base_gfn + slot->npages);
}

MmuStats Mmu::stats() const {
  MmuStats s;
  s.faults = stats_.faults.load();
  s.fixed = stats_.fixed.load();
  s.retries = stats_.retries.load();
  s.fast_fixes = stats_.fast_fixes.load();
  s.installs = stats_.installs.load();
  s.zaps = stats_.zaps.load();
  s.write_protects = stats_.write_protects.load();
  s.invalidations = stats_.invalidations.load();
  s.mirror_updates = stats_.mirror_updates.load();
  s.protection_waits = stats_.protection_waits.load();
  s.scanned_words = stats_.scanned_words.load();
  return s;
}

}  // namespace sptelab::spte
