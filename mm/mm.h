// An address space of the emulated host (Linux's mm_struct): mmap_lock, VMAs,
// a 4-level x86-64 page table stored in frames with split page-table locks,
// the cpumask of host CPUs that may cache its translations, and the PTE
// primitives every mm operation is built from.
//
// Page-table frames are never freed before ~Mm. Lockless walkers (GUP-fast,
// a HostCpu's TLB miss, read_pte_lockless) read tables without any lock;
// Linux keeps a table alive for them with RCU or by waiting for the IPI of a
// TLB shootdown. Never freeing gives the same guarantee with no machinery.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "base/rwlock.h"
#include "base/spinlock.h"
#include "mm/kernel_era.h"
#include "mm/notifier_hooks.h"
#include "mm/phys_mem.h"
#include "mm/types.h"

namespace sptelab::mm {

class File;
class HostCpu;

inline constexpr uint32_t kProtNone = 0;
inline constexpr uint32_t kProtRead = 1;
inline constexpr uint32_t kProtWrite = 2;
// 4-level paging: user addresses are below 2^47.
inline constexpr uint64_t kUserAddressEnd = uint64_t{1} << 47;
// One last-level table maps 2 MiB.
inline constexpr uint64_t kPteTableSpan = uint64_t{1} << 21;

struct Vma {
  uint64_t start = 0;
  uint64_t end = 0;
  uint32_t prot = kProtNone;
  File* file = nullptr;  // nullptr: anonymous memory
  uint64_t pgoff = 0;    // file page of `start`
  bool shared = false;   // MAP_SHARED (file mappings only)

  bool anon() const { return file == nullptr; }
  bool contains(uint64_t addr) const { return addr >= start && addr < end; }
  bool readable() const { return prot & (kProtRead | kProtWrite); }
  bool writable() const { return prot & kProtWrite; }
  uint64_t file_index(uint64_t addr) const { return pgoff + ((addr - start) >> kPageShift); }
};

// A PTE in its last-level table frame; the frame's Page holds the split PTL.
struct PteSlot {
  uint64_t* entry = nullptr;
  Pfn table = kNoPfn;
  explicit operator bool() const { return entry != nullptr; }
};

// When a zap removes the rmap entry of a dirty shared-file page. Linux 6.2
// (linux-mm, Nov 2022, Linus Torvalds, "[PATCH 4/4] mm: delay
// page_remove_rmap() until after the TLB has been flushed") delays it until
// the TLB flush inside the PTL so that page_mkclean() serialises with the
// zap; before, it was removed at once and a CPU with a stale dirty TLB entry
// could write to a page that mkclean had just cleaned (lost dirty data).
enum class ZapRmapOrder : uint8_t { kDelayUntilFlush, kImmediate };

// When MADV_DONTNEED flushes the TLB for PTEs it cleared without a forced
// flush (anon pages, clean file pages). kBatched is mmu_gather's order: the
// flush comes in tlb_finish_mmu, after the PTL is dropped, so a fault can
// install a new page at the address while another CPU still caches the old
// translation (linux-mm, Oct 2022, Jann Horn, "Re: [PATCH 01/13] mm: Update
// ptep_get_lockless()s comment"). kBeforePtlUnlock flushes every table's
// cleared range before its PTL is dropped (Peter Zijlstra's proposal in that
// thread, a forced flush for MADV_DONTNEED).
enum class DontneedFlush : uint8_t { kBatched, kBeforePtlUnlock };

// Whether the page walker (wp_clean_range, mm/ops.h) holds the PTL while its
// per-PTE step reads and rewrites an entry. Linux's walk_pte_range mapped the
// table without the lock until Linus Torvalds proposed taking it (linux-mm,
// Oct 2019, "Re: [PATCH v3 3/7] mm: Add write-protect and clean utilities
// for address space ranges"): a zap could clear the entry the callback held
// a copy of, and the callback then wrote its modified copy back, mapping a
// page again that the zap had already unmapped. kLocked is
// pte_offset_map_lock's walk; kUnlocked is the walk before it.
enum class WalkPteLock : uint8_t { kLocked, kUnlocked };

struct MmStats {
  uint64_t faults = 0;
  uint64_t cow_copies = 0;
  uint64_t cow_reuses = 0;
  uint64_t zero_page_maps = 0;
  uint64_t migration_waits = 0;
  uint64_t tlb_flushes = 0;
  uint64_t page_tables = 0;  // table frames, root included
};

class Mm {
 public:
  explicit Mm(PhysMem& phys);
  // exit_mmap: hooks->release(this) first (mmu_notifier_release), then every
  // VMA is zapped without further notifier calls (release has detached the
  // subscriptions, as in Linux) and the page tables are freed. Release runs
  // with rmap walkers excluded (PhysMem::rmap_walk_lock held exclusively), so
  // it must not start a migration, mkclean or reclaim itself. Destroy the
  // HostCpus of this mm first; GUP references may outlive it.
  ~Mm();
  Mm(const Mm&) = delete;
  Mm& operator=(const Mm&) = delete;

  PhysMem& phys() const { return phys_; }
  // Attach once, before the mm is used (nullptr: no notifier).
  void set_notifier_hooks(NotifierHooks* hooks) { hooks_ = hooks; }
  NotifierHooks* notifier_hooks() const { return hooks_; }
  // The kernel era this address space behaves like (mm/kernel_era.h; a new
  // Mm starts with process_kernel_era()); also resets the zap's rmap order
  // to that era's. Set before the mm is used.
  void set_era(KernelEra era);
  KernelEra era() const { return era_; }
  void set_zap_rmap_order(ZapRmapOrder order) { zap_rmap_order_ = order; }
  ZapRmapOrder zap_rmap_order() const { return zap_rmap_order_; }
  void set_dontneed_flush(DontneedFlush flush) { dontneed_flush_ = flush; }
  DontneedFlush dontneed_flush() const { return dontneed_flush_; }
  void set_walk_pte_lock(WalkPteLock lock) { walk_pte_lock_ = lock; }
  WalkPteLock walk_pte_lock() const { return walk_pte_lock_; }

  // --- mmap_lock (traced: kMmapLock / kMmapUnlock) ---
  void mmap_read_lock();
  void mmap_read_unlock();
  void mmap_write_lock();
  void mmap_write_unlock();

  // --- VMAs (each takes mmap_lock for write) ---
  // Returns the start address. fixed_addr 0 lets the mm choose; a fixed
  // range must be page aligned and free (MAP_FIXED_NOREPLACE), and merges
  // with neighbours that agree on protection and backing, as Linux's
  // vma_merge_new_range. Bad arguments throw Error(kBadInput).
  uint64_t mmap_anon(uint64_t size, uint32_t prot, uint64_t fixed_addr = 0);
  uint64_t mmap_file(File& file, uint64_t pgoff, uint64_t size, uint32_t prot, bool shared,
                     uint64_t fixed_addr = 0);
  // The VMA containing addr, or nullptr. Caller holds mmap_lock.
  const Vma* find_vma(uint64_t addr) const;
  // mmap_assert_locked(): checked while lock checking is on (base/lock_order.h).
  void assert_mmap_locked() const { mmap_lock_.assert_held(); }
  std::vector<Vma> vma_snapshot();  // takes mmap_lock for read

  // --- page tables ---
  // Lockless walk to the PTE of addr; empty if a level is missing.
  PteSlot walk(uint64_t addr) const;
  // Walk that allocates missing levels under page_table_lock; empty only
  // when no frame is free or addr is not a user address.
  PteSlot walk_alloc(uint64_t addr);
  // The slot of addr, given the slot `first` of first_addr in the same
  // last-level table (addr and first_addr within one 2 MiB span).
  static PteSlot slot_at(PteSlot first, uint64_t first_addr, uint64_t addr);
  Pte read_pte_lockless(uint64_t addr) const;  // ptep_get_lockless
  // The hardware page walk of a host CPU's TLB miss or an IOMMU's walk of a
  // PASID table: lockless; if the PTE is present and allows the access, sets
  // its accessed bit (and dirty for a write) with a locked cmpxchg, walking
  // again when the PTE changed under it, and returns the PTE as updated.
  // Returns a non-present Pte when the access would fault. `label` names
  // the walker's scheduling point under `explore`.
  Pte hardware_walk(uint64_t addr, bool write, const char* label);
  Pte lookup_pte(uint64_t addr);  // under the PTL
  // Every non-none PTE (audits, at quiescent points).
  void for_each_pte(const std::function<void(uint64_t addr, Pte pte)>& fn) const;
  // Every page-table frame, root included.
  std::vector<Pfn> table_frames() const;

  // --- PTE primitives (the caller holds the PTL of slot.table) ---
  static Pte load_pte(PteSlot slot);
  // A scheduling point under `explore` before a lockless PTE load (write:
  // the caller may also update the A/D bits); a no-op otherwise.
  static void announce_pte_access(PteSlot slot, bool write, const char* label, uint64_t addr);
  // set_pte_at over an entry no hardware can be using (none, migration or
  // PROT_NONE, or one just cleared).
  void install_pte(PteSlot slot, uint64_t addr, Pte pte);
  // set_pte_at through an unlocked mapping of the table, as page-table
  // walkers did before walk_pte_range took the PTL (the pagewalk-ptl seed
  // race's bug): install_pte without its "callers hold the PTL" check.
  void set_pte_unlocked(PteSlot slot, uint64_t addr, Pte pte);
  // ptep_get_and_clear: atomic, so A/D bits a CPU sets concurrently are in
  // the returned value.
  Pte clear_pte(PteSlot slot, uint64_t addr);
  // ptep_clear_flush: clear, then shoot the translation down everywhere.
  Pte clear_pte_flush(PteSlot slot, uint64_t addr);
  // cmpxchg: permission upgrades and A/D updates (ptep_set_access_flags).
  bool update_pte(PteSlot slot, uint64_t addr, Pte expected, Pte desired);
  // ptep_set_wrprotect: atomically clears the write bit, keeps A/D.
  Pte wrprotect_pte(PteSlot slot, uint64_t addr);
  // ptep_test_and_clear_young: clears A, no flush (x86 does not flush).
  bool test_and_clear_young(PteSlot slot, uint64_t addr);

  // --- host CPUs and TLB shootdown ---
  // Invalidates [start, end) in every CPU of the cpumask and returns when
  // each has acknowledged (trace kTlbFlush, then one kTlbFlushAck per CPU).
  void flush_tlb_range(uint64_t start, uint64_t end);
  void add_cpu(HostCpu* cpu);
  void remove_cpu(HostCpu* cpu);
  size_t cpu_count() const;

  // fork(): a child mm sharing every private page copy-on-write. The child
  // has no notifier hooks (a secondary MMU belongs to the parent).
  std::unique_ptr<Mm> fork();

  MmStats stats() const;
  void count_fault() { faults_.fetch_add(1, std::memory_order_relaxed); }
  void count_cow_copy() { cow_copies_.fetch_add(1, std::memory_order_relaxed); }
  void count_cow_reuse() { cow_reuses_.fetch_add(1, std::memory_order_relaxed); }
  void count_zero_page_map() { zero_page_maps_.fetch_add(1, std::memory_order_relaxed); }
  void count_migration_wait() { migration_waits_.fetch_add(1, std::memory_order_relaxed); }

  // VMA surgery for munmap/mprotect (caller holds mmap_lock for write).
  // Splits VMAs at start and end; returns whether [start, end) is fully
  // covered by VMAs.
  // A cut inside a 2 MiB block brackets that block first (Linux's
  // __split_huge_pmd, era 2.6.38 on).
  bool split_vmas(uint64_t start, uint64_t end);
  // Merges the VMAs of [start, end) with each other and with the neighbours
  // at either end where protection and backing agree (vma_merge).
  void merge_vmas(uint64_t start, uint64_t end);
  void remove_vmas(uint64_t start, uint64_t end);
  // Maps `vma` over a range with no VMA (the new VMA of a MAP_FIXED mmap once
  // the old one is unmapped); an overlap throws Error(kInternal).
  void add_vma(const Vma& vma);
  void set_prot(uint64_t start, uint64_t end, uint32_t prot);
  std::vector<Vma> vmas_in(uint64_t start, uint64_t end) const;  // clipped to the range

  // ~File of a file this mm still maps (a teardown out of order): the file's
  // i_mmap is gone, so the mm stops publishing its VMAs there.
  void forget_file(File* file);

 private:
  uint64_t* entry_in(Pfn table, size_t index) const;
  uint64_t insert_vma(Vma vma, uint64_t size, uint64_t fixed_addr);
  // The PMD table of addr exists (mm_find_pmd would return it).
  bool has_pmd_table(uint64_t addr) const;
  void split_huge_pmd_if_needed(const Vma& vma, uint64_t cut);
  void copy_private_ptes(Mm& child, const Vma& vma);
  // Publishes the VMAs of every file this mm maps, or mapped until now, to
  // that file's i_mmap (File::set_mappings). Caller holds mmap_lock for write.
  void sync_file_mappings();
  void unpublish_file_mappings();

  PhysMem& phys_;
  NotifierHooks* hooks_ = nullptr;
  KernelEra era_ = kDefaultKernelEra;
  ZapRmapOrder zap_rmap_order_ = ZapRmapOrder::kDelayUntilFlush;
  DontneedFlush dontneed_flush_ = DontneedFlush::kBatched;
  WalkPteLock walk_pte_lock_ = WalkPteLock::kLocked;
  RwLock mmap_lock_{"mmap_lock", LockRank::kMmapLock};
  std::map<uint64_t, Vma> vmas_;     // by start, under mmap_lock
  std::set<File*> mapped_files_;     // files whose i_mmap lists this mm, under mmap_lock
  std::set<File*> forgotten_files_;  // destroyed while still mapped, under mmap_lock
  Pfn pgd_ = kNoPfn;
  mutable SpinLock page_table_lock_{
      "page_table_lock"};    // mm->page_table_lock: populating upper levels
  std::vector<Pfn> tables_;  // every table frame, under page_table_lock_
  mutable SpinLock cpus_lock_{"mm_cpumask"};
  std::vector<HostCpu*> cpus_;  // mm_cpumask
  std::atomic<uint64_t> faults_{0};
  std::atomic<uint64_t> cow_copies_{0};
  std::atomic<uint64_t> cow_reuses_{0};
  std::atomic<uint64_t> zero_page_maps_{0};
  std::atomic<uint64_t> migration_waits_{0};
  std::atomic<uint64_t> tlb_flushes_{0};
};

// The split page-table lock of one last-level table (pte_offset_map_lock).
// Traces kPtlLock on acquire and kPtlUnlock with the hold time on release.
class PtlGuard {
 public:
  PtlGuard(PhysMem& phys, Pfn table);
  ~PtlGuard() { unlock(); }
  PtlGuard(const PtlGuard&) = delete;
  PtlGuard& operator=(const PtlGuard&) = delete;
  void unlock();

 private:
  PhysMem& phys_;
  Pfn table_;
  uint64_t acquired_ns_ = 0;
  bool held_ = true;
};

class MmapReadGuard {
 public:
  explicit MmapReadGuard(Mm& mm) : mm_(mm) { mm_.mmap_read_lock(); }
  ~MmapReadGuard() { mm_.mmap_read_unlock(); }
  MmapReadGuard(const MmapReadGuard&) = delete;
  MmapReadGuard& operator=(const MmapReadGuard&) = delete;

 private:
  Mm& mm_;
};

class MmapWriteGuard {
 public:
  explicit MmapWriteGuard(Mm& mm) : mm_(mm) { mm_.mmap_write_lock(); }
  ~MmapWriteGuard() { mm_.mmap_write_unlock(); }
  MmapWriteGuard(const MmapWriteGuard&) = delete;
  MmapWriteGuard& operator=(const MmapWriteGuard&) = delete;

 private:
  Mm& mm_;
};

// --- rmap (page_add_*_rmap / page_remove_rmap): the entry and mapcount
// change together under Page::rmap_lock; callers hold the PTL of the PTE.
void rmap_add(PhysMem& phys, Pfn pfn, const RmapEntry& entry);
void rmap_remove(PhysMem& phys, Pfn pfn, Mm* mm, uint64_t addr);
std::vector<RmapEntry> rmap_snapshot(PhysMem& phys, Pfn pfn);

// Waits until the migration entry at `slot` is gone (migration_entry_wait).
void wait_for_migration(Mm& mm, PteSlot slot, Pte entry);

}  // namespace sptelab::mm
