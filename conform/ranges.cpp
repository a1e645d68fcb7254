#include "conform/ranges.h"

#include <fmt/format.h>

namespace sptelab::conform {
namespace {

int64_t floor_pages(int64_t bytes) {
  const int64_t page = static_cast<int64_t>(kPageSize);
  return bytes >= 0 ? bytes / page : -((-bytes + page - 1) / page);
}

int64_t ceil_pages(int64_t bytes) {
  return -floor_pages(-bytes);
}

// The run of ranges starting at `at`: adjacent, same slot, same size.
size_t run_length(const OpRanges& ranges, size_t at) {
  const SlotRange& head = ranges[at];
  const int64_t size = head.end - head.first;
  size_t length = 1;
  while (at + length < ranges.size()) {
    const SlotRange& next = ranges[at + length];
    const SlotRange& previous = ranges[at + length - 1];
    if (next.slot != head.slot || next.first != previous.end || next.end - next.first != size)
      break;
    ++length;
  }
  return length;
}

}  // namespace

bool same_ranges(const OpRanges& kernel, const OpRanges& emulator) {
  if (kernel.size() != emulator.size()) return false;
  for (size_t i = 0; i < kernel.size(); ++i) {
    if (!kernel[i].same_pages(emulator[i])) return false;
  }
  return true;
}

SlotLayout SlotLayout::at(uint64_t base) {
  SlotLayout layout({base + 1 * kBlockSize, base + 4 * kBlockSize, base + 6 * kBlockSize});
  layout.primer_ = base;
  return layout;
}

uint64_t SlotLayout::base_after(uint64_t start) {
  uint64_t base = (start + kBlockSize - 1) & ~(kBlockSize - 1);
  const uint64_t last = base + kLayoutBlocks * kBlockSize - 1;
  if (base / kLayoutRegion != last / kLayoutRegion) base = (last / kLayoutRegion) * kLayoutRegion;
  return base;
}

std::optional<SlotRange> SlotLayout::to_slot_range(uint64_t start, uint64_t end) const {
  for (Slot slot : kAllSlots) {
    const uint64_t base = this->start(slot);
    const uint64_t limit = base + slot_pages(slot) * kPageSize;
    if (start >= limit || end <= base) continue;
    SlotRange range;
    range.slot = slot;
    // Both sides are user addresses (below 2^47): the differences fit.
    range.first = floor_pages(static_cast<int64_t>(start) - static_cast<int64_t>(base));
    range.end = ceil_pages(static_cast<int64_t>(end) - static_cast<int64_t>(base));
    return range;
  }
  return std::nullopt;
}

std::string format_ranges(const OpRanges& ranges) {
  if (ranges.empty()) return "-";
  std::string out;
  for (size_t at = 0; at < ranges.size();) {
    const size_t length = run_length(ranges, at);
    const SlotRange& head = ranges[at];
    const SlotRange& tail = ranges[at + length - 1];
    if (!out.empty()) out += ' ';
    out += fmt::format("{}[{},{})", slot_name(head.slot), head.first, tail.end);
    if (length > 1) out += fmt::format("/{}", head.end - head.first);
    at += length;
  }
  return out;
}

}  // namespace sptelab::conform
