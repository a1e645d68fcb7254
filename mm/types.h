// Basic types of the emulated host MM: frame numbers, x86-64 PTEs, ranges.
#pragma once

#include <cstdint>

#include "base/x86_pte.h"

namespace sptelab::mm {

using Pfn = uint64_t;
inline constexpr uint64_t kPageShift = 12;
inline constexpr uint64_t kPageSize = uint64_t{1} << kPageShift;
inline constexpr Pfn kNoPfn = ~Pfn{0};

inline constexpr uint64_t page_align_down(uint64_t addr) {
  return addr & ~(kPageSize - 1);
}
inline constexpr uint64_t page_align_up(uint64_t addr) {
  return (addr + kPageSize - 1) & ~(kPageSize - 1);
}

// A page-table entry in x86-64 format (Intel SDM vol. 3, 4.5): the same bits
// at every level, so the tables in frames look like real ones.
class Pte {
 public:
  static constexpr uint64_t kPresent = x86::kPtePresent;
  static constexpr uint64_t kWritable = x86::kPteWritable;
  static constexpr uint64_t kUser = x86::kPteUser;
  static constexpr uint64_t kAccessed = x86::kPteAccessed;
  static constexpr uint64_t kDirty = x86::kPteDirty;
  // Software bits (ignored by hardware, 9..11): a non-present migration entry
  // that makes faults wait until the migration is done, like Linux's.
  static constexpr uint64_t kMigration = x86::kPteSoftMigration;
  // Software bit 10: a PROT_NONE mapping. The entry is not present to the
  // hardware but still maps its page (mapcount, rmap, reference), like
  // Linux's _PAGE_PROTNONE, so mprotect(PROT_NONE) keeps the content.
  static constexpr uint64_t kProtNone = x86::kPteSoftProtNone;
  static constexpr uint64_t kPfnMask = x86::kPteAddressMask;

  constexpr Pte() = default;
  constexpr explicit Pte(uint64_t raw) : raw_(raw) {}
  static constexpr Pte make(Pfn pfn, bool writable) {
    return Pte((pfn << kPageShift) | kPresent | kUser | (writable ? kWritable : 0));
  }
  static constexpr Pte migration(Pfn pfn, bool writable) {
    return Pte((pfn << kPageShift) | kMigration | (writable ? kWritable : 0));
  }

  constexpr uint64_t raw() const { return raw_; }
  constexpr bool none() const { return raw_ == 0; }
  constexpr bool present() const { return raw_ & kPresent; }
  constexpr bool writable() const { return raw_ & kWritable; }
  constexpr bool accessed() const { return raw_ & kAccessed; }
  constexpr bool dirty() const { return raw_ & kDirty; }
  constexpr bool is_migration() const { return !present() && (raw_ & kMigration); }
  constexpr bool is_protnone() const {
    return !present() && (raw_ & kProtNone) && !(raw_ & kMigration);
  }
  // The entry maps a page (holds a reference and an rmap entry): present or
  // PROT_NONE. A migration entry holds neither.
  constexpr bool maps_page() const { return present() || is_protnone(); }
  constexpr Pfn pfn() const { return (raw_ & kPfnMask) >> kPageShift; }

  // A migration entry made from this mapping entry: the same bits (write,
  // dirty, accessed, PROT_NONE) with the hardware present bit dropped, so that
  // restoring it (to_mapped) keeps every permission and the dirty state.
  constexpr Pte to_migration() const { return Pte((raw_ & ~kPresent) | kMigration); }
  constexpr Pte to_mapped(Pfn new_pfn) const {
    uint64_t bits = (raw_ & ~(kMigration | kPfnMask)) | (new_pfn << kPageShift);
    if (!(bits & kProtNone)) bits |= kPresent | kUser;
    return Pte(bits);
  }
  // Same translation and permission, whatever the hardware did to A/D.
  constexpr bool same_mapping(Pte other) const {
    return (raw_ & ~(kAccessed | kDirty)) == (other.raw_ & ~(kAccessed | kDirty));
  }

  constexpr Pte with(uint64_t bits) const { return Pte(raw_ | bits); }
  constexpr Pte without(uint64_t bits) const { return Pte(raw_ & ~bits); }
  constexpr bool operator==(const Pte&) const = default;

 private:
  uint64_t raw_ = 0;
};

// Why a range is being invalidated (Linux's enum mmu_notifier_event).
enum class InvalidateEvent : uint8_t {
  kUnmap,           // munmap, zap of a whole VMA
  kClear,           // MADV_DONTNEED, remap, COW: the PTE is cleared/replaced
  kProtectionVma,   // mprotect
  kProtectionPage,  // page_mkclean, KSM write-protect
  kSoftDirty,
  kRelease,  // exit_mmap
  kMigrate,  // page migration
  kExclusive,
};
const char* invalidate_event_name(InvalidateEvent event);

// The mm operations: the "op" argument of trace kMmOpBegin/kMmOpEnd, and
// the host operations a race applies to a guest page (host::HostOp is
// this enum; `--op` offers eight of them, host::all_host_ops()). Two
// race ops are whole cycles, named by the step a secondary MMU must see:
// kCow is fork, then the write that breaks COW (traced as fork, break_cow);
// kKsm is the merge, then the write that breaks the KSM page.
enum class MmOp : uint8_t {
  kMigrate,
  kRemap,
  kBreakCow,
  kFork,
  kDontneed,
  kMunmap,
  kMprotect,
  kMkclean,
  kWriteback,
  kKsmMerge,
  kReclaim,
  kAge,
  kExit,
  kWpClean,  // appended: trace files store the number
  kPunchHole,
  kCount,
  kCow = kBreakCow,
  kKsm = kKsmMerge,
};
// The trace's name ("break_cow"); host::host_op_name gives `--op`'s.
const char* mm_op_name(MmOp op);

class Mm;

// A virtual range [start, end) of one address space being invalidated.
struct InvalidateRange {
  Mm* mm = nullptr;
  uint64_t start = 0;
  uint64_t end = 0;
  InvalidateEvent event = InvalidateEvent::kClear;
  // false: callbacks must not sleep (Linux's OOM reaper). The emulated host
  // has no OOM reaper, so every range it passes is blockable; being inside a
  // spinlock is a separate fact (AtomicContext), not this flag.
  bool blockable = true;
};

}  // namespace sptelab::mm
