#include "mmu_notifier/srcu.h"

#include <thread>

#include "base/spinlock.h"

namespace sptelab::mmu_notifier {

void Srcu::synchronize() {
  std::lock_guard lock(writer_mutex_);
  // Two flips: a reader still inside from before the previous flip counts on
  // the other counter, so both counters must be seen empty.
  for (int pass = 0; pass < 2; ++pass) {
    unsigned old_index = epoch_.load(std::memory_order_relaxed) & 1;  // only writers change it
    epoch_.store(old_index ^ 1, std::memory_order_seq_cst);
    // A reader that read the old epoch just before the flip may still
    // increment the old counter; it is one short section per thread, so this
    // wait is bounded.
    for (unsigned spins = 0; readers_[old_index].count.load(std::memory_order_seq_cst) != 0;
         ++spins) {
      if (sched::active()) {
        sched::relax(&readers_[old_index], "srcu_grace_period");
      } else if (spins < 32) {
        cpu_relax();
      } else {
        std::this_thread::yield();
      }
    }
  }
  grace_periods_.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace sptelab::mmu_notifier
