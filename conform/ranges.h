// Invalidated ranges as `sptelab conform` compares them: pages of one slot,
// whatever address the slot has in the process that produced them.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "conform/script.h"

namespace sptelab::conform {

inline constexpr uint64_t kPageSize = 4096;
// Each slot starts on a 2 MiB boundary, so the huge-page block brackets of a
// VMA split land on the same pages on both sides.
inline constexpr uint64_t kBlockSize = uint64_t{2} << 20;

struct SlotRange {
  Slot slot = Slot::kAnon;
  // Pages relative to the slot's start; a range that reaches beyond the
  // slot keeps its true ends (a block bracket may start before page 0).
  int64_t first = 0;
  int64_t end = 0;
  // The emulator's notifier event ("clear", "unmap", "protection_vma", ...);
  // empty for the kernel: kvm:kvm_unmap_hva_range carries no event type.
  std::string event;

  bool same_pages(const SlotRange& other) const {
    return slot == other.slot && first == other.first && end == other.end;
  }
};

// The ranges one side invalidated during one op, in the order it did.
using OpRanges = std::vector<SlotRange>;

// Whether two sides agree on an op: the same ranges in the same order
// (events are not compared; the kernel reports none).
bool same_ranges(const OpRanges& kernel, const OpRanges& emulator);

// The layout both sides use, 2 MiB blocks from a base that lies with the
// whole layout inside one 1 GiB region: block 0 holds the primer, a page
// each side maps and writes before the script, so that the page-table
// levels above the slots exist on both sides from the start (a VMA split
// brackets its 2 MiB block whenever the PMD table is there, mm_find_pmd;
// the kernel's process would otherwise have it from its other mappings in
// the same 1 GiB, the emulated one not); the anon slot takes blocks 1-2,
// memfd block 4, file block 6, and the blocks between stay empty.
inline constexpr uint64_t kLayoutBlocks = 8;
inline constexpr uint64_t kLayoutRegion = uint64_t{1} << 30;

// Where the slots start in one address space.
class SlotLayout {
 public:
  SlotLayout() = default;
  explicit SlotLayout(std::array<uint64_t, kAllSlots.size()> bases) : bases_(bases) {}
  // The layout above at `base` (2 MiB aligned, the layout within one 1 GiB).
  static SlotLayout at(uint64_t base);
  // The first 2 MiB-aligned base at or after `start` whose layout does not
  // cross a 1 GiB boundary; within start + 2 * kLayoutBlocks + 1 blocks.
  static uint64_t base_after(uint64_t start);
  uint64_t primer() const { return primer_; }

  uint64_t start(Slot slot) const { return bases_[static_cast<size_t>(slot)]; }
  uint64_t address(Slot slot, uint64_t page) const { return start(slot) + page * kPageSize; }
  // The virtual range [start, end) as pages of the slot it overlaps (pages
  // rounded outwards); nullopt if it overlaps none.
  std::optional<SlotRange> to_slot_range(uint64_t start, uint64_t end) const;

 private:
  std::array<uint64_t, kAllSlots.size()> bases_{};
  uint64_t primer_ = 0;
};

// "anon[0,512) anon[100,116)": each range as SLOT[FIRST,END); a run of
// adjacent ranges of equal size k covering [a,b) of one slot as
// "SLOT[a,b)/k" (pageout's one-page ranges: "memfd[16,20)/1"); "-" for none.
std::string format_ranges(const OpRanges& ranges);

}  // namespace sptelab::conform
