// The emulator's side of `sptelab conform`: the three slots as VMAs of one
// emulated address space (mm::Mm over its own PhysMem, a memfd-like and a
// disk-like mm::File), with a start-end notifier chain whose one
// subscription records every invalidate_range_start and its event. Each
// script op is the emulated host's operation of the same name; where Linux
// treats the two files differently (msync of tmpfs is a no-op), so does
// this side.
#pragma once

#include <string>
#include <vector>

#include "conform/side.h"
#include "mm/kernel_era.h"

namespace sptelab::conform {

class EmulatorSide final : public Side {
 public:
  explicit EmulatorSide(mm::KernelEra era);

  std::string name() const override;
  std::vector<OpRanges> run(const Script& script, size_t max_ops) override;

  // Where the slots are in the emulated address space.
  static SlotLayout layout();

 private:
  mm::KernelEra era_;
};

}  // namespace sptelab::conform
