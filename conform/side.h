// One side of `sptelab conform`: something that runs a script's ops in order
// and says which ranges of the slots each op invalidated. The real kernel
// (conform/kernel.h), a recording of it (conform/recording.h) and the
// emulator (conform/emulator.h) are the three.
#pragma once

#include <string>
#include <vector>

#include "conform/ranges.h"
#include "conform/script.h"

namespace sptelab::conform {

class Side {
 public:
  virtual ~Side() = default;
  // What ran, for the report: "Linux 6.18.44 (KVM)", "emulator, era 6.18".
  virtual std::string name() const = 0;
  // Runs ops [0, max_ops) of the script (all of them if there are fewer)
  // and returns one entry per op run. The kernel's side returns fewer when
  // a stop signal arrived (base/interrupt.h): the ops finished before it;
  // the emulator's then runs exactly those (compare()). Throws
  // Error(kEnvironment) when this side cannot run here, Error(kInternal)
  // when an op failed.
  virtual std::vector<OpRanges> run(const Script& script, size_t max_ops) = 0;
};

}  // namespace sptelab::conform
