// Basic types of the emulated host MM: frame numbers, x86-64 PTEs, ranges.
#pragma once

#include <cstdint>

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
  static constexpr uint64_t kPresent = 1ull << 0;
  static constexpr uint64_t kWritable = 1ull << 1;
  static constexpr uint64_t kUser = 1ull << 2;
  static constexpr uint64_t kAccessed = 1ull << 5;
  static constexpr uint64_t kDirty = 1ull << 6;
  // Software bits (ignored by hardware, 9..11): a non-present migration entry
  // that makes faults wait until the migration is done, like Linux's.
  static constexpr uint64_t kMigration = 1ull << 9;
  static constexpr uint64_t kPfnMask = 0x000ffffffffff000ull;

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
  constexpr Pfn pfn() const { return (raw_ & kPfnMask) >> kPageShift; }

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

class Mm;

// A virtual range [start, end) of one address space being invalidated.
struct InvalidateRange {
  Mm* mm = nullptr;
  uint64_t start = 0;
  uint64_t end = 0;
  InvalidateEvent event = InvalidateEvent::kClear;
  bool blockable = true;  // false: callbacks must not sleep (OOM reaper's case)
};

}  // namespace sptelab::mm
