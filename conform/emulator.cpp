#include "conform/emulator.h"

#include <fmt/format.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <utility>

#include "base/error.h"
#include "mm/file.h"
#include "mm/host_cpu.h"
#include "mm/mm.h"
#include "mm/ops.h"
#include "mm/phys_mem.h"
#include "mmu_notifier/chain.h"

namespace sptelab::conform {
namespace {

// The layout's base (conform/ranges.h): 4 GiB, 1 GiB aligned.
constexpr uint64_t kLayoutBase = uint64_t{1} << 32;
// The slots' pages, a copy of each for fork-cow, page tables and spares.
constexpr size_t kFrames = 4096;

// The secondary MMU of the comparison: it only writes down what it is told.
class RangeRecorder final : public mmu_notifier::Subscription {
 public:
  std::string_view name() const override { return "conform-recorder"; }
  int invalidate_range_start(const mm::InvalidateRange& range) override {
    std::lock_guard lock(mutex_);
    ranges_.push_back(range);
    return 0;
  }
  std::vector<mm::InvalidateRange> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(ranges_, {});
  }

 private:
  std::mutex mutex_;
  std::vector<mm::InvalidateRange> ranges_;
};

// One emulated host with the three slots mapped, fresh for each run.
class EmulatedHost {
 public:
  explicit EmulatedHost(mm::KernelEra era) {
    chain_.register_subscription(&recorder_);
    mm_ = std::make_unique<mm::Mm>(phys_);
    mm_->set_era(era);
    mm_->set_notifier_hooks(&chain_);
    const SlotLayout slots = EmulatorSide::layout();
    mm_->mmap_anon(kPageSize, mm::kProtRead | mm::kProtWrite, slots.primer());
    for (Slot slot : kAllSlots) map(slot, 0, slot_pages(slot), slots.start(slot));
    cpu_ = std::make_unique<mm::HostCpu>(*mm_, 0);
    cpu_->store64(slots.primer(), 1);
  }
  ~EmulatedHost() {
    cpu_.reset();
    mm_.reset();  // exit_mmap: release detaches the recorder
  }
  EmulatedHost(const EmulatedHost&) = delete;
  EmulatedHost& operator=(const EmulatedHost&) = delete;

  OpRanges run(const ScriptOp& op) {
    recorder_.take();
    apply(op);
    OpRanges out;
    const SlotLayout slots = EmulatorSide::layout();
    for (const mm::InvalidateRange& range : recorder_.take()) {
      std::optional<SlotRange> in_slot = slots.to_slot_range(range.start, range.end);
      if (!in_slot) continue;
      in_slot->event = mm::invalidate_event_name(range.event);
      out.push_back(*in_slot);
    }
    return out;
  }

 private:
  mm::File& file_of(Slot slot) { return slot == Slot::kMemfd ? memfd_ : disk_file_; }

  void map(Slot slot, uint64_t first, uint64_t count, uint64_t addr) {
    const uint32_t prot = mm::kProtRead | mm::kProtWrite;
    if (slot == Slot::kAnon) {
      mm_->mmap_anon(count * kPageSize, prot, addr);
    } else {
      mm_->mmap_file(file_of(slot), first, count * kPageSize, prot, true, addr);
    }
  }

  void write_pages(uint64_t start, uint64_t count, uint64_t value) {
    for (uint64_t i = 0; i < count; ++i) cpu_->store64(start + i * kPageSize, value);
  }

  // MADV_PAGEOUT: every page mapped in the range goes to reclaim with its
  // references ignored (reclaim_pages); anonymous pages stay (no swap).
  void pageout(uint64_t start, uint64_t count) {
    for (uint64_t i = 0; i < count; ++i) {
      const mm::Pte pte = mm_->read_pte_lockless(start + i * kPageSize);
      if (!pte.maps_page() || phys_.is_zero_pfn(pte.pfn())) continue;
      mm::reclaim_page(phys_, pte.pfn(), false);
    }
  }

  // msync(MS_SYNC) -> vfs_fsync_range over the file pages the VMAs show;
  // tmpfs's fsync does nothing, a disk file writes its dirty pages back.
  void msync(Slot slot, uint64_t start, uint64_t count) {
    if (slot != Slot::kFile) return;
    const std::vector<mm::Vma> vmas = mm_->vma_snapshot();
    for (uint64_t i = 0; i < count; ++i) {
      const uint64_t addr = start + i * kPageSize;
      for (const mm::Vma& vma : vmas) {
        if (vma.contains(addr)) mm::writeback_page(disk_file_, vma.file_index(addr));
      }
    }
  }

  void expect(bool done, const ScriptOp& op) {
    if (!done)
      throw_internal(fmt::format("emulator: '{}' (script line {}) did nothing", op.text, op.line));
  }

  void apply(const ScriptOp& op) {
    const uint64_t start = EmulatorSide::layout().address(op.slot, op.first);
    const uint64_t length = op.count * kPageSize;
    switch (op.kind) {
      case OpKind::kTouch:
        write_pages(start, op.count, op.line);
        return;
      case OpKind::kDontneed:
        expect(mm::madvise_dontneed(*mm_, start, length), op);
        return;
      case OpKind::kMprotect:
        expect(mm::mprotect(*mm_, start, length,
                            op.read_only ? mm::kProtRead : mm::kProtRead | mm::kProtWrite),
               op);
        return;
      case OpKind::kMunmap:
        expect(mm::munmap(*mm_, start, length), op);
        return;
      case OpKind::kMmap:
        map(op.slot, op.first, op.count, start);
        return;
      case OpKind::kForkCow: {
        std::unique_ptr<mm::Mm> child = mm_->fork();
        write_pages(start, op.count, op.line);
        return;  // the child exits here
      }
      case OpKind::kPunchHole:
        mm::punch_hole(file_of(op.slot), op.first, op.count);
        return;
      case OpKind::kPageout:
        pageout(start, op.count);
        return;
      case OpKind::kMsync:
        write_pages(start, op.count, op.line);
        msync(op.slot, start, op.count);
        return;
      case OpKind::kRemap:
        for (uint64_t i = 0; i < op.count; ++i) {
          expect(mm::remap_file_page(*mm_, start + i * kPageSize, op.first + (i + 1) % op.count),
                 op);
        }
        return;
    }
    throw_internal("emulator: unknown script operation");
  }

  mm::PhysMem phys_{kFrames};
  mmu_notifier::Chain chain_{mmu_notifier::Placement::kStartEnd};  // before mm_: ~Mm releases it
  RangeRecorder recorder_;
  mm::File memfd_{phys_, "memfd", slot_pages(Slot::kMemfd)};
  mm::File disk_file_{phys_, "file", slot_pages(Slot::kFile)};
  std::unique_ptr<mm::Mm> mm_;
  std::unique_ptr<mm::HostCpu> cpu_;
};

}  // namespace

EmulatorSide::EmulatorSide(mm::KernelEra era) : era_(era) {}

std::string EmulatorSide::name() const {
  return fmt::format("emulator, era {}, start-end", mm::kernel_era_name(era_));
}

SlotLayout EmulatorSide::layout() {
  return SlotLayout::at(kLayoutBase);
}

std::vector<OpRanges> EmulatorSide::run(const Script& script, size_t max_ops) {
  EmulatedHost host(era_);
  std::vector<OpRanges> out;
  // No stop-signal check: the kernel's side stops at one, and these are
  // the ops it finished, which the report pairs with ours.
  for (const ScriptOp& op : script.ops) {
    if (out.size() >= max_ops) break;
    out.push_back(host.run(op));
  }
  return out;
}

}  // namespace sptelab::conform
