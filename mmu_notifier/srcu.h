// A small sleepable-RCU for the notifier chain (Linux's mm/mmu_notifier.c
// walks its subscription list under srcu_read_lock and unregister waits with
// synchronize_srcu). Readers may block inside their read section; a writer
// that changed the list waits only for readers that could have seen the old
// list, never for readers that arrive later.
//
// Scheme: two reader counters and an epoch bit. A reader increments the
// counter the epoch names and decrements that same counter when it leaves.
// synchronize() flips the epoch and waits for the counter that was current to
// drain, twice, so both counters are seen empty after the writer's update.
// New readers go to the other counter, so a steady stream of readers cannot
// hold a writer off. All counter and epoch operations are sequentially
// consistent: a reader's increment and its later load of the list, against
// the writer's store of the list and its later load of the counter, form the
// store-buffering pattern that seq_cst orders (either the writer sees the
// reader counted, or the reader sees the new list).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>

namespace sptelab::mmu_notifier {

class Srcu {
 public:
  Srcu() = default;
  Srcu(const Srcu&) = delete;
  Srcu& operator=(const Srcu&) = delete;

  // Returns the index to pass to read_unlock.
  unsigned read_lock() {
    unsigned index = epoch_.load(std::memory_order_seq_cst) & 1;
    readers_[index].count.fetch_add(1, std::memory_order_seq_cst);
    return index;
  }
  void read_unlock(unsigned index) {
    readers_[index].count.fetch_sub(1, std::memory_order_seq_cst);
  }

  // Waits until every read section that began before this call has ended.
  // Must not be called from inside a read section of the same Srcu: it would
  // wait for itself (Linux's synchronize_srcu has the same rule).
  void synchronize();

  // Completed grace periods (for tests and stats).
  uint64_t grace_periods() const { return grace_periods_.load(std::memory_order_relaxed); }

 private:
  struct alignas(64) Counter {
    std::atomic<int64_t> count{0};
  };

  std::atomic<unsigned> epoch_{0};
  std::array<Counter, 2> readers_;
  std::mutex writer_mutex_;  // one grace period at a time
  std::atomic<uint64_t> grace_periods_{0};
};

// RAII read section.
class SrcuReadGuard {
 public:
  explicit SrcuReadGuard(Srcu& srcu) : srcu_(srcu), index_(srcu.read_lock()) {}
  ~SrcuReadGuard() { srcu_.read_unlock(index_); }
  SrcuReadGuard(const SrcuReadGuard&) = delete;
  SrcuReadGuard& operator=(const SrcuReadGuard&) = delete;

 private:
  Srcu& srcu_;
  unsigned index_;
};

}  // namespace sptelab::mmu_notifier
