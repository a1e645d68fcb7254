// Test doubles for the notifier chain: a subscription that records every
// callback as readable text, and an interval subscription that follows the
// owner protocol (own lock, set_seq, record).
#pragma once

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mm/types.h"
#include "mmu_notifier/chain.h"

namespace sptelab::mmu_notifier::testing {

// Spins (yielding) until another thread sets `flag`.
inline void wait_for(const std::atomic<bool>& flag) {
  while (!flag.load()) std::this_thread::yield();
}

inline std::string hex(uint64_t value) {
  char buffer[24];
  std::snprintf(buffer, sizeof buffer, "%#llx", static_cast<unsigned long long>(value));
  return buffer;
}

// An opaque address-space key: the chain never dereferences it.
inline mm::Mm* fake_mm() {
  static char storage;
  return reinterpret_cast<mm::Mm*>(&storage);
}

inline mm::InvalidateRange range(uint64_t start, uint64_t end,
                                 mm::InvalidateEvent event = mm::InvalidateEvent::kClear,
                                 bool blockable = true) {
  return {fake_mm(), start, end, event, blockable};
}

class Recorder : public Subscription {
 public:
  explicit Recorder(std::string name = "recorder", bool sleeps = false)
      : name_(std::move(name)), sleeps_(sleeps) {}

  std::string_view name() const override { return name_; }
  bool may_sleep() const override { return sleeps_; }

  void invalidate_page(mm::Mm* mm, uint64_t addr) override {
    record(mm, "invalidate_page(" + hex(addr) + ")");
  }
  void invalidate_range(mm::Mm* mm, uint64_t start, uint64_t end,
                        mm::InvalidateEvent event) override {
    record(mm, "invalidate_range(" + hex(start) + "," + hex(end) +
                   ",event=" + std::to_string(static_cast<int>(event)) + ")");
  }
  int invalidate_range_start(const mm::InvalidateRange& r) override {
    record(r.mm, "invalidate_range_start(" + hex(r.start) + "," + hex(r.end) + ")");
    return start_answer;
  }
  void invalidate_range_end(const mm::InvalidateRange& r) override {
    record(r.mm, "invalidate_range_end(" + hex(r.start) + "," + hex(r.end) + ")");
  }
  bool clear_flush_young(mm::Mm* mm, uint64_t start, uint64_t end) override {
    record(mm, "clear_flush_young(" + hex(start) + "," + hex(end) + ")");
    return young_answer;
  }
  bool clear_young(mm::Mm* mm, uint64_t start, uint64_t end) override {
    record(mm, "clear_young(" + hex(start) + "," + hex(end) + ")");
    return young_answer;
  }
  bool test_young(mm::Mm* mm, uint64_t addr) override {
    record(mm, "test_young(" + hex(addr) + ")");
    return young_answer;
  }
  void change_pte(mm::Mm* mm, uint64_t addr, mm::Pte pte) override {
    record(mm, "change_pte(" + hex(addr) + "," + hex(pte.raw()) + ")");
  }
  void release(mm::Mm* mm) override { record(mm, "release"); }

  std::vector<std::string> take() {
    std::lock_guard lock(mutex_);
    std::vector<std::string> out;
    out.swap(calls_);
    return out;
  }
  bool wrong_mm_seen() const {
    std::lock_guard lock(mutex_);
    return wrong_mm_;
  }

  bool young_answer = false;
  int start_answer = 0;

 private:
  void record(mm::Mm* mm, std::string call) {
    std::lock_guard lock(mutex_);
    if (mm != fake_mm()) wrong_mm_ = true;
    calls_.push_back(std::move(call));
  }

  std::string name_;
  bool sleeps_;
  mutable std::mutex mutex_;
  std::vector<std::string> calls_;
  bool wrong_mm_ = false;
};

// Follows the owner protocol of mmu_interval_notifier: take the owner lock,
// set_seq(cur_seq), then invalidate (here: record).
class IntervalRecorder : public IntervalSubscription {
 public:
  IntervalRecorder(uint64_t start, uint64_t end, std::string name = "interval", bool sleeps = false)
      : IntervalSubscription(start, end), name_(std::move(name)), sleeps_(sleeps) {}

  std::string_view name() const override { return name_; }
  bool may_sleep() const override { return sleeps_; }

  bool invalidate(const mm::InvalidateRange& r, uint64_t cur_seq) override {
    std::lock_guard lock(mutex);
    set_seq(cur_seq);
    seqs.push_back(cur_seq);
    ranges.push_back({r.start, r.end});
    events.push_back(r.event);
    return answer;
  }

  std::mutex mutex;  // the owner's lock
  std::vector<uint64_t> seqs;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<mm::InvalidateEvent> events;
  bool answer = true;

 private:
  std::string name_;
  bool sleeps_;
};

}  // namespace sptelab::mmu_notifier::testing
