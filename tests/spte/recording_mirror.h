// A Mirror that records every update, as the hypervisor's window would see
// them, for tests of what the secondary MMU tells its user.
#pragma once

#include <mutex>
#include <utility>
#include <vector>

#include "spte/mirror.h"

namespace sptelab::spte::testing {

class RecordingMirror : public Mirror {
 public:
  void update(const MirrorUpdate& update) override {
    std::lock_guard lock(mutex_);
    updates_.push_back(update);
  }
  // The updates since the last take.
  std::vector<MirrorUpdate> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(updates_, {});
  }

 private:
  std::mutex mutex_;
  std::vector<MirrorUpdate> updates_;
};

}  // namespace sptelab::spte::testing
