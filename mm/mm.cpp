#include "mm/mm.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <mutex>
#include <thread>

#include "base/error.h"
#include "base/mutation.h"
#include "mm/file.h"
#include "mm/host_cpu.h"
#include "mm/notify.h"
#include "mm/zap.h"
#include "trace/trace.h"

namespace sptelab::mm {

using trace::Kind;

namespace {

// Entry of an upper-level table pointing at the next level.
constexpr uint64_t kTableEntryBits = Pte::kPresent | Pte::kWritable | Pte::kUser;
// Where the mm places mappings it chooses itself, bottom-up, with a guard
// page between neighbours so that running off the end of one faults.
constexpr uint64_t kMmapBase = uint64_t{1} << 44;
constexpr int kLevels = 4;

size_t level_index(uint64_t addr, int level) {
  return (addr >> (kPageShift + 9 * static_cast<unsigned>(level))) & 511;
}

uint64_t load_entry(uint64_t* entry) {
  return std::atomic_ref<uint64_t>(*entry).load(std::memory_order_acquire);
}

}  // namespace

Mm::Mm(PhysMem& phys) : phys_(phys) {
  set_era(process_kernel_era());
  pgd_ = phys_.alloc(kPageTable);
  if (pgd_ == kNoPfn) {
    throw_environment(
        "no free frame for the root page table of a new address space; "
        "give the emulated host more memory");
  }
  tables_.push_back(pgd_);
}

Mm::~Mm() {
  {
    std::lock_guard lock(cpus_lock_);
    if (!cpus_.empty()) {
      std::fprintf(stderr,
                   "sptelab internal error: address space destroyed while %zu host CPU(s) still "
                   "use it; destroy the HostCpu objects first\n",
                   cpus_.size());
      std::abort();
    }
  }
  // unlink_file_vma first: a truncation walking a file's i_mmap no longer
  // finds this mm once this returns, and one that found it has finished.
  unpublish_file_mappings();
  {
    detail::OpTrace op(MmOp::kExit, 0, kUserAddressEnd);
    // Exclusive first: a migration or reclaim on another thread may be inside
    // a notifier bracket on this mm through its rmap entries; it finishes
    // before the subscriptions go, and none starts until the PTEs are gone.
    std::unique_lock walkers(phys_.rmap_walk_lock());
    if (hooks_) hooks_->release(this);
    hooks_ = nullptr;
    MmapWriteGuard lock(*this);
    for (const auto& [start, vma] : vmas_) {
      detail::zap_range(*this, vma.start, vma.end, InvalidateEvent::kRelease, false);
    }
    vmas_.clear();
  }
  for (Pfn table : tables_) phys_.put(table);
}

void Mm::set_era(KernelEra era) {
  era_ = era;
  zap_rmap_order_ =
      era_delays_zap_rmap(era) ? ZapRmapOrder::kDelayUntilFlush : ZapRmapOrder::kImmediate;
}

// --- mmap_lock ---

void Mm::mmap_read_lock() {
  mmap_lock_.lock_shared();
  trace::emit(Kind::kMmapLock, 0);
}

void Mm::mmap_read_unlock() {
  trace::emit(Kind::kMmapUnlock, 0);
  mmap_lock_.unlock_shared();
}

void Mm::mmap_write_lock() {
  mmap_lock_.lock();
  trace::emit(Kind::kMmapLock, 1);
}

void Mm::mmap_write_unlock() {
  trace::emit(Kind::kMmapUnlock, 1);
  mmap_lock_.unlock();
}

// --- VMAs ---

uint64_t Mm::insert_vma(Vma vma, uint64_t size, uint64_t fixed_addr) {
  if (size == 0 || size > kUserAddressEnd - kPageSize) {
    throw_bad_input(
        fmt::format("mmap of {:#x} bytes: ask for at least one page and less than "
                    "the {:#x}-byte address space",
                    size, kUserAddressEnd));
  }
  size = page_align_up(size);
  if (vma.prot & ~(kProtRead | kProtWrite)) {
    throw_bad_input(
        fmt::format("mmap prot {:#x} has unknown bits; use kProtRead|kProtWrite", vma.prot));
  }
  MmapWriteGuard lock(*this);
  uint64_t start = fixed_addr;
  if (fixed_addr != 0) {
    if (fixed_addr % kPageSize != 0 || fixed_addr > kUserAddressEnd - size) {
      throw_bad_input(
          fmt::format("fixed mmap address {:#x} (+{:#x}) is not page aligned or not "
                      "below {:#x}",
                      fixed_addr, size, kUserAddressEnd));
    }
    if (!vmas_in(fixed_addr, fixed_addr + size).empty()) {
      throw_bad_input(fmt::format("fixed mmap at {:#x} (+{:#x}) overlaps an existing mapping",
                                  fixed_addr, size));
    }
  } else {
    start = kMmapBase;
    for (const auto& [vma_start, existing] : vmas_) {
      if (existing.end + kPageSize <= start) continue;
      if (existing.start >= start + size + kPageSize) break;
      start = existing.end + kPageSize;
    }
    if (start > kUserAddressEnd - size) {
      throw_bad_input(fmt::format("no room for a mapping of {:#x} bytes", size));
    }
  }
  vma.start = start;
  vma.end = start + size;
  vmas_.emplace(vma.start, vma);
  forgotten_files_.erase(vma.file);  // a live File, maybe at a dead one's address
  // vma_merge_new_range: a fixed mapping next to a compatible VMA becomes
  // part of it (one the mm places itself has a guard page on each side).
  if (fixed_addr != 0) {
    merge_vmas(vma.start, vma.end);
  } else {
    sync_file_mappings();
  }
  return start;
}

uint64_t Mm::mmap_anon(uint64_t size, uint32_t prot, uint64_t fixed_addr) {
  Vma vma;
  vma.prot = prot;
  return insert_vma(vma, size, fixed_addr);
}

uint64_t Mm::mmap_file(File& file, uint64_t pgoff, uint64_t size, uint32_t prot, bool shared,
                       uint64_t fixed_addr) {
  Vma vma;
  vma.prot = prot;
  vma.file = &file;
  vma.pgoff = pgoff;
  vma.shared = shared;
  return insert_vma(vma, size, fixed_addr);
}

const Vma* Mm::find_vma(uint64_t addr) const {
  assert_mmap_locked();
  auto it = vmas_.upper_bound(addr);
  if (it == vmas_.begin()) return nullptr;
  --it;
  return it->second.contains(addr) ? &it->second : nullptr;
}

std::vector<Vma> Mm::vma_snapshot() {
  MmapReadGuard lock(*this);
  std::vector<Vma> out;
  for (const auto& [start, vma] : vmas_) out.push_back(vma);
  return out;
}

std::vector<Vma> Mm::vmas_in(uint64_t start, uint64_t end) const {
  std::vector<Vma> out;
  for (const auto& [vma_start, vma] : vmas_) {
    if (vma.end <= start || vma.start >= end) continue;
    Vma clipped = vma;
    clipped.start = std::max(vma.start, start);
    clipped.end = std::min(vma.end, end);
    clipped.pgoff = vma.pgoff + ((clipped.start - vma.start) >> kPageShift);
    out.push_back(clipped);
  }
  return out;
}

bool Mm::has_pmd_table(uint64_t addr) const {
  if (addr >= kUserAddressEnd) return false;
  Pfn table = pgd_;
  for (int level = kLevels - 1; level > 1; --level) {
    const uint64_t entry = load_entry(entry_in(table, level_index(addr, level)));
    if (!(entry & Pte::kPresent)) return false;
    table = Pte(entry).pfn();
  }
  return true;
}

// __split_vma -> vma_adjust_trans_huge -> split_huge_pmd_if_needed: a cut
// that is not 2 MiB aligned, inside a 2 MiB block lying wholly in the VMA
// being cut, goes through __split_huge_pmd whenever the block's PMD table
// exists (mm_find_pmd), huge PMD or not. That brackets the whole block with
// MMU_NOTIFY_CLEAR around pmd_lock, which finds nothing to split here (the
// emulated host has no THP: every VMA is MADV_NOHUGEPAGE), so secondary
// MMUs drop the block's mappings although no PTE changed.
void Mm::split_huge_pmd_if_needed(const Vma& vma, uint64_t cut) {
  if (!era_splits_huge_pmd_on_vma_split(era_)) return;
  const uint64_t block = cut & ~(kPteTableSpan - 1);
  if (block == cut || block < vma.start || block + kPteTableSpan > vma.end) return;
  if (!has_pmd_table(cut)) return;
  const InvalidateRange range{this, block, block + kPteTableSpan, InvalidateEvent::kClear, true};
  detail::notify_before(*this, range);
  { std::lock_guard pmd_lock(page_table_lock_); }
  detail::notify_after_unlock(*this, range);
  detail::notify_after_release(*this, range);
}

bool Mm::split_vmas(uint64_t start, uint64_t end) {
  for (uint64_t cut : {start, end}) {
    const Vma* vma = find_vma(cut);
    if (!vma || vma->start == cut) continue;
    split_huge_pmd_if_needed(*vma, cut);
    Vma tail = *vma;
    tail.pgoff = vma->pgoff + ((cut - vma->start) >> kPageShift);
    tail.start = cut;
    vmas_[vma->start].end = cut;
    vmas_.emplace(cut, tail);
  }
  sync_file_mappings();
  uint64_t covered = start;
  for (const Vma& vma : vmas_in(start, end)) {
    if (vma.start != covered) return false;
    covered = vma.end;
  }
  return covered == end;
}

// vma_merge_existing_range after mprotect_fixup: neighbours that agree on
// protection and backing (and, for a file, continue its page offsets)
// become one VMA again, so later operations see the kernel's VMA layout.
// No notifier: nothing is split, the block checks find no cut to make.
void Mm::merge_vmas(uint64_t start, uint64_t end) {
  auto it = vmas_.upper_bound(start);
  if (it != vmas_.begin()) --it;
  if (it != vmas_.begin() && it->second.start == start) --it;  // the neighbour below
  while (it != vmas_.end() && it->second.start < end) {
    auto next = std::next(it);
    if (next == vmas_.end()) break;
    Vma& vma = it->second;
    const Vma& following = next->second;
    const bool mergeable =
        vma.end == following.start && vma.prot == following.prot && vma.file == following.file &&
        vma.shared == following.shared &&
        (vma.anon() || following.pgoff == vma.pgoff + ((vma.end - vma.start) >> kPageShift));
    if (mergeable) {
      vma.end = following.end;
      vmas_.erase(next);
    } else {
      it = next;
    }
  }
  sync_file_mappings();
}

void Mm::remove_vmas(uint64_t start, uint64_t end) {
  split_vmas(start, end);
  std::erase_if(vmas_, [&](const auto& item) {
    return item.second.start >= start && item.second.end <= end;
  });
  sync_file_mappings();
}

void Mm::add_vma(const Vma& vma) {
  if (vma.start >= vma.end || !vmas_in(vma.start, vma.end).empty()) {
    throw_internal(fmt::format("add_vma [{:#x}, {:#x}) overlaps a mapping", vma.start, vma.end));
  }
  vmas_.emplace(vma.start, vma);
  sync_file_mappings();
}

void Mm::sync_file_mappings() {
  std::map<File*, std::vector<FileMapping>> by_file;
  for (File* file : mapped_files_) by_file[file];  // a file no longer mapped: no entries
  for (const auto& [start, vma] : vmas_) {
    if (vma.file != nullptr && !forgotten_files_.contains(vma.file)) {
      by_file[vma.file].push_back(FileMapping{this, vma.start, vma.end, vma.pgoff, vma.shared});
    }
  }
  mapped_files_.clear();
  for (auto& [file, mappings] : by_file) {
    if (!mappings.empty()) mapped_files_.insert(file);
    file->set_mappings(this, std::move(mappings));
  }
}

void Mm::unpublish_file_mappings() {
  MmapWriteGuard lock(*this);
  for (File* file : mapped_files_) file->set_mappings(this, {});
  mapped_files_.clear();
}

void Mm::forget_file(File* file) {
  MmapWriteGuard lock(*this);
  mapped_files_.erase(file);
  forgotten_files_.insert(file);
}

void Mm::set_prot(uint64_t start, uint64_t end, uint32_t prot) {
  for (auto& [vma_start, vma] : vmas_) {
    if (vma.start >= start && vma.end <= end) vma.prot = prot;
  }
}

// --- page tables ---

uint64_t* Mm::entry_in(Pfn table, size_t index) const {
  return reinterpret_cast<uint64_t*>(phys_.direct_map(table)) + index;
}

PteSlot Mm::walk(uint64_t addr) const {
  if (addr >= kUserAddressEnd) return {};
  Pfn table = pgd_;
  for (int level = kLevels - 1; level > 0; --level) {
    uint64_t entry = load_entry(entry_in(table, level_index(addr, level)));
    if (!(entry & Pte::kPresent)) return {};
    table = Pte(entry).pfn();
  }
  return {entry_in(table, level_index(addr, 0)), table};
}

PteSlot Mm::walk_alloc(uint64_t addr) {
  if (addr >= kUserAddressEnd) return {};
  Pfn table = pgd_;
  for (int level = kLevels - 1; level > 0; --level) {
    uint64_t* slot = entry_in(table, level_index(addr, level));
    uint64_t entry = load_entry(slot);
    if (!(entry & Pte::kPresent)) {
      // __pte_alloc: allocate outside the lock, install under
      // page_table_lock unless someone else did first.
      Pfn fresh = phys_.alloc(kPageTable);
      if (fresh == kNoPfn) return {};
      bool used = false;
      {
        std::lock_guard lock(page_table_lock_);
        entry = load_entry(slot);
        if (!(entry & Pte::kPresent)) {
          entry = (fresh << kPageShift) | kTableEntryBits;
          // Release: a lockless walker that sees the entry sees a zeroed table.
          std::atomic_ref<uint64_t>(*slot).store(entry, std::memory_order_release);
          tables_.push_back(fresh);
          used = true;
        }
      }
      if (!used) phys_.put(fresh);
    }
    table = Pte(entry).pfn();
  }
  return {entry_in(table, level_index(addr, 0)), table};
}

PteSlot Mm::slot_at(PteSlot first, uint64_t first_addr, uint64_t addr) {
  return {first.entry + ((addr - first_addr) >> kPageShift), first.table};
}

Pte Mm::read_pte_lockless(uint64_t addr) const {
  PteSlot slot = walk(addr);
  if (!slot) return Pte();
  announce_pte_access(slot, false, "pte_lockless", addr);
  return load_pte(slot);
}

Pte Mm::hardware_walk(uint64_t addr, bool write, const char* label) {
  PteSlot slot = walk(addr);
  if (!slot) return Pte();
  announce_pte_access(slot, true, label, addr);
  for (;;) {
    Pte pte = load_pte(slot);
    if (!pte.present() || (write && !pte.writable())) return Pte();
    Pte updated = pte.with(Pte::kAccessed | (write ? Pte::kDirty : 0));
    uint64_t raw = pte.raw();
    if (updated == pte ||
        std::atomic_ref<uint64_t>(*slot.entry)
            .compare_exchange_strong(raw, updated.raw(), std::memory_order_acq_rel)) {
      return updated;
    }
    // The PTE changed under the walk: walk again.
  }
}

Pte Mm::lookup_pte(uint64_t addr) {
  PteSlot slot = walk(addr);
  if (!slot) return Pte();
  PtlGuard ptl(phys_, slot.table);
  return load_pte(slot);
}

void Mm::for_each_pte(const std::function<void(uint64_t addr, Pte pte)>& fn) const {
  std::function<void(Pfn, int, uint64_t)> visit = [&](Pfn table, int level, uint64_t base) {
    for (size_t i = 0; i < 512; ++i) {
      uint64_t entry = load_entry(entry_in(table, i));
      uint64_t addr = base + (uint64_t{i} << (kPageShift + 9 * static_cast<unsigned>(level)));
      if (level == 0) {
        if (entry != 0) fn(addr, Pte(entry));
      } else if (entry & Pte::kPresent) {
        visit(Pte(entry).pfn(), level - 1, addr);
      }
    }
  };
  visit(pgd_, kLevels - 1, 0);
}

std::vector<Pfn> Mm::table_frames() const {
  std::lock_guard lock(page_table_lock_);
  return tables_;
}

// --- PTE primitives ---

namespace {

// Under `explore`, every PTE store (and every lockless PTE load, in its
// callers) is a scheduling point: the PTL orders writers, but hardware walkers
// and GUP-fast read and update PTEs without it.
void pte_point(sched::Kind kind, const PteSlot& slot, const char* label, uint64_t addr) {
  sched::point(sched::Step{.kind = kind, .object = slot.entry, .label = label, .detail = addr});
}

}  // namespace

void Mm::announce_pte_access(PteSlot slot, bool write, const char* label, uint64_t addr) {
  pte_point(write ? sched::Kind::kWrite : sched::Kind::kRead, slot, label, addr);
}

Pte Mm::load_pte(PteSlot slot) {
  return Pte(std::atomic_ref<uint64_t>(*slot.entry).load(std::memory_order_acquire));
}

void Mm::install_pte(PteSlot slot, uint64_t addr, Pte pte) {
  phys_.page(slot.table).ptl.assert_held();
  pte_point(sched::Kind::kWrite, slot, "set_pte", addr);
  uint64_t old =
      std::atomic_ref<uint64_t>(*slot.entry).exchange(pte.raw(), std::memory_order_acq_rel);
  trace::emit(Kind::kPteSet, addr, old, pte.raw());
}

void Mm::set_pte_unlocked(PteSlot slot, uint64_t addr, Pte pte) {
  pte_point(sched::Kind::kWrite, slot, "set_pte", addr);
  uint64_t old =
      std::atomic_ref<uint64_t>(*slot.entry).exchange(pte.raw(), std::memory_order_acq_rel);
  trace::emit(Kind::kPteSet, addr, old, pte.raw());
}

Pte Mm::clear_pte(PteSlot slot, uint64_t addr) {
  phys_.page(slot.table).ptl.assert_held();
  pte_point(sched::Kind::kWrite, slot, "clear_pte", addr);
  Pte old(std::atomic_ref<uint64_t>(*slot.entry).exchange(0, std::memory_order_acq_rel));
  trace::emit(Kind::kPteClear, addr, old.raw());
  return old;
}

Pte Mm::clear_pte_flush(PteSlot slot, uint64_t addr) {
  Pte old = clear_pte(slot, addr);
  if (old.present()) flush_tlb_range(addr, addr + kPageSize);
  return old;
}

bool Mm::update_pte(PteSlot slot, uint64_t addr, Pte expected, Pte desired) {
  pte_point(sched::Kind::kWrite, slot, "update_pte", addr);
  uint64_t raw = expected.raw();
  if (!std::atomic_ref<uint64_t>(*slot.entry)
           .compare_exchange_strong(raw, desired.raw(), std::memory_order_acq_rel)) {
    return false;
  }
  trace::emit(Kind::kPteSet, addr, expected.raw(), desired.raw());
  return true;
}

Pte Mm::wrprotect_pte(PteSlot slot, uint64_t addr) {
  phys_.page(slot.table).ptl.assert_held();
  pte_point(sched::Kind::kWrite, slot, "wrprotect_pte", addr);
  Pte old(
      std::atomic_ref<uint64_t>(*slot.entry).fetch_and(~Pte::kWritable, std::memory_order_acq_rel));
  trace::emit(Kind::kPteSet, addr, old.raw(), old.without(Pte::kWritable).raw());
  return old;
}

bool Mm::test_and_clear_young(PteSlot slot, uint64_t addr) {
  phys_.page(slot.table).ptl.assert_held();
  pte_point(sched::Kind::kWrite, slot, "clear_young", addr);
  Pte old(
      std::atomic_ref<uint64_t>(*slot.entry).fetch_and(~Pte::kAccessed, std::memory_order_acq_rel));
  if (old.accessed())
    trace::emit(Kind::kPteSet, addr, old.raw(), old.without(Pte::kAccessed).raw());
  return old.accessed();
}

// --- host CPUs ---

void Mm::flush_tlb_range(uint64_t start, uint64_t end) {
  inject::at(inject::Point::kTlbBeforeFlush, inject::Context{.addr = start});
  tlb_flushes_.fetch_add(1, std::memory_order_relaxed);
  {
    // Holding cpus_lock_ keeps every CPU alive (~HostCpu removes itself under
    // it) until it has acknowledged.
    std::lock_guard lock(cpus_lock_);
    trace::emit(Kind::kTlbFlush, start, end, cpus_.size());
    const bool no_ack = mutation::active(mutation::Mutant::kShootdownNoAck);
    for (HostCpu* cpu : cpus_) {
      if (no_ack) {
        cpu->shootdown_later(start, end);
        continue;
      }
      cpu->shootdown(start, end);
      trace::emit(Kind::kTlbFlushAck, static_cast<uint64_t>(cpu->id()), start, end);
    }
  }
  // flush_tlb_mm_range ends with mmu_notifier_arch_invalidate_secondary_tlbs
  // (6.6+), still inside the caller's PTL where there is one.
  if (hooks_ && era_has_arch_invalidate_secondary_tlbs(era_)) {
    hooks_->arch_invalidate_secondary_tlbs(this, start, end);
  }
}

void Mm::add_cpu(HostCpu* cpu) {
  std::lock_guard lock(cpus_lock_);
  cpus_.push_back(cpu);
}

void Mm::remove_cpu(HostCpu* cpu) {
  std::lock_guard lock(cpus_lock_);
  std::erase(cpus_, cpu);
}

size_t Mm::cpu_count() const {
  std::lock_guard lock(cpus_lock_);
  return cpus_.size();
}

MmStats Mm::stats() const {
  MmStats stats;
  stats.faults = faults_.load(std::memory_order_relaxed);
  stats.cow_copies = cow_copies_.load(std::memory_order_relaxed);
  stats.cow_reuses = cow_reuses_.load(std::memory_order_relaxed);
  stats.zero_page_maps = zero_page_maps_.load(std::memory_order_relaxed);
  stats.migration_waits = migration_waits_.load(std::memory_order_relaxed);
  stats.tlb_flushes = tlb_flushes_.load(std::memory_order_relaxed);
  std::lock_guard lock(page_table_lock_);
  stats.page_tables = tables_.size();
  return stats;
}

// --- fork ---

std::unique_ptr<Mm> Mm::fork() {
  detail::OpTrace op(MmOp::kFork, 0, kUserAddressEnd);
  auto child = std::make_unique<Mm>(phys_);
  child->era_ = era_;
  child->zap_rmap_order_ = zap_rmap_order_;
  MmapWriteGuard lock(*this);
  MmapWriteGuard child_lock(*child);
  child->vmas_ = vmas_;
  child->forgotten_files_ = forgotten_files_;
  child->sync_file_mappings();
  // Shared mappings are not copied: the child refaults them from the page
  // cache (copy_page_range skips VMAs without anon pages).
  for (const auto& [start, vma] : vmas_) {
    if (!vma.shared) copy_private_ptes(*child, vma);
  }
  return child;
}

// copy_page_range -> copy_present_pte for a COW mapping: write-protect the
// parent's PTE (ptep_set_wrprotect), map the same page read-only in the
// child. Linux brackets each VMA with invalidate_range_start/end
// (MMU_NOTIFY_PROTECTION_PAGE) and flushes the parent's TLB at the end of
// dup_mmap; here the flush comes before the closing point, so that every
// operation ends with no host TLB holding more permission than its PTE.
void Mm::copy_private_ptes(Mm& child, const Vma& vma) {
  const InvalidateRange range{this, vma.start, vma.end, InvalidateEvent::kProtectionPage, true};
  detail::notify_before(*this, range);
  uint64_t flush_start = std::numeric_limits<uint64_t>::max();
  uint64_t flush_end = 0;
  for (uint64_t table_addr = vma.start; table_addr < vma.end;) {
    const uint64_t table_end =
        std::min(vma.end, (table_addr & ~(kPteTableSpan - 1)) + kPteTableSpan);
    const PteSlot src_first = walk(table_addr);
    if (!src_first) {
      table_addr = table_end;
      continue;
    }
    const PteSlot dst_first = child.walk_alloc(table_addr);
    if (!dst_first) {
      throw_environment(
          "out of emulated physical frames while copying page tables for fork; "
          "give the emulated host more memory");
    }
    uint64_t addr = table_addr;
    while (addr < table_end) {
      PteSlot migrating;
      Pte migration_entry;
      detail::inject_at(inject::Point::kHostBeforePtl, addr);
      {
        // Child first, then parent: copy_pte_range's order.
        PtlGuard dst_ptl(phys_, dst_first.table);
        PtlGuard src_ptl(phys_, src_first.table);
        for (; addr < table_end; addr += kPageSize) {
          const PteSlot src = slot_at(src_first, table_addr, addr);
          Pte pte = load_pte(src);
          if (pte.none()) continue;
          if (pte.is_migration()) {
            // The rmap of a page under migration no longer lists this
            // mapping, so the child cannot share the entry: wait it out.
            migrating = src;
            migration_entry = pte;
            break;
          }
          const Pfn pfn = pte.pfn();
          if (pte.writable()) {
            pte = wrprotect_pte(src, addr);
            detail::inject_at(inject::Point::kHostAfterPteClear, addr, pfn);
            detail::notify_in_ptl(*this, addr, InvalidateEvent::kProtectionPage);
            flush_start = std::min(flush_start, addr);
            flush_end = std::max(flush_end, addr + kPageSize);
          }
          const PteSlot dst = slot_at(dst_first, table_addr, addr);
          const Pte child_pte = pte.without(Pte::kWritable | Pte::kAccessed);
          if (!phys_.is_zero_pfn(pfn)) {
            phys_.get(pfn);
            rmap_add(phys_, pfn, RmapEntry{&child, addr, false});
          }
          child.install_pte(dst, addr, child_pte);
        }
      }
      detail::inject_at(inject::Point::kHostAfterPtlUnlock, addr);
      if (migrating) wait_for_migration(*this, migrating, migration_entry);
    }
    table_addr = table_end;
  }
  if (flush_end > flush_start) flush_tlb_range(flush_start, flush_end);
  detail::notify_after_unlock(*this, range);
  detail::notify_after_release(*this, range);
}

// --- PTL ---

PtlGuard::PtlGuard(PhysMem& phys, Pfn table) : phys_(phys), table_(table) {
  phys_.page(table_).ptl.lock();
  if (trace::enabled()) {
    acquired_ns_ = trace::detail::now_ns();
    trace::emit(Kind::kPtlLock, table_);
  }
}

void PtlGuard::unlock() {
  if (!held_) return;
  held_ = false;
  if (trace::enabled()) {
    uint64_t hold_ns = acquired_ns_ ? trace::detail::now_ns() - acquired_ns_ : 0;
    trace::emit(Kind::kPtlUnlock, table_, hold_ns);
  }
  phys_.page(table_).ptl.unlock();
}

// --- rmap ---

void rmap_add(PhysMem& phys, Pfn pfn, const RmapEntry& entry) {
  Page& page = phys.page(pfn);
  {
    std::lock_guard lock(page.rmap_lock);
    page.rmap.push_back(entry);
    page.mapcount.fetch_add(1, std::memory_order_acq_rel);
  }
  trace::emit(Kind::kRmapAdd, pfn, entry.addr);
}

void rmap_remove(PhysMem& phys, Pfn pfn, Mm* mm, uint64_t addr) {
  Page& page = phys.page(pfn);
  {
    std::lock_guard lock(page.rmap_lock);
    auto it = std::find_if(page.rmap.begin(), page.rmap.end(), [&](const RmapEntry& entry) {
      return entry.mm == mm && entry.addr == addr;
    });
    if (it == page.rmap.end()) {
      throw_internal(fmt::format("rmap of pfn {:#x} has no entry for address {:#x}", pfn, addr));
    }
    page.rmap.erase(it);
    page.mapcount.fetch_sub(1, std::memory_order_acq_rel);
  }
  trace::emit(Kind::kRmapRemove, pfn, addr);
}

std::vector<RmapEntry> rmap_snapshot(PhysMem& phys, Pfn pfn) {
  Page& page = phys.page(pfn);
  std::lock_guard lock(page.rmap_lock);
  return page.rmap;
}

void wait_for_migration(Mm& mm, PteSlot slot, Pte entry) {
  mm.count_migration_wait();
  // Linux sleeps on the page lock the migration holds; the entry is replaced
  // before that lock is dropped, so waiting for the entry is equivalent.
  for (;;) {
    Pte now = Mm::load_pte(slot);
    if (!now.is_migration() || now.pfn() != entry.pfn()) return;
    sched::relax(slot.entry, "migration_entry_wait");
  }
}

}  // namespace sptelab::mm
