// Test double for mm::NotifierHooks: records every call (with the spinlock
// depth of the caller) and emits a kCheckpoint trace event, so that a trace
// snapshot shows the notifier points interleaved with PTL, PTE, TLB and page
// events in program order.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "base/spinlock.h"
#include "mm/notifier_hooks.h"
#include "trace/trace.h"

namespace sptelab::mm::testing {

enum class HookPoint : uint64_t {
  kBeforeChange = 1,
  kInPtlCleared,
  kAfterUnlock,
  kAfterRelease,
  kChangePte,
  kClearFlushYoung,
  kClearYoung,
  kTestYoung,
  kRelease,
  kSecondaryTlbs,
};

inline const char* hook_point_name(HookPoint point) {
  switch (point) {
    case HookPoint::kBeforeChange:
      return "before_change";
    case HookPoint::kInPtlCleared:
      return "in_ptl_cleared";
    case HookPoint::kAfterUnlock:
      return "after_unlock";
    case HookPoint::kAfterRelease:
      return "after_release";
    case HookPoint::kChangePte:
      return "change_pte";
    case HookPoint::kClearFlushYoung:
      return "clear_flush_young";
    case HookPoint::kClearYoung:
      return "clear_young";
    case HookPoint::kTestYoung:
      return "test_young";
    case HookPoint::kRelease:
      return "release";
    case HookPoint::kSecondaryTlbs:
      return "secondary_tlbs";
  }
  return "?";
}

struct HookCall {
  HookPoint point;
  Mm* mm = nullptr;
  uint64_t start = 0;
  uint64_t end = 0;
  InvalidateEvent event = InvalidateEvent::kClear;
  uint64_t pte = 0;
  int atomic_depth = 0;  // spinlocks held by the caller
};

class RecordingHooks : public NotifierHooks {
 public:
  void before_change(const InvalidateRange& range) override {
    record(HookPoint::kBeforeChange, range.mm, range.start, range.end, range.event);
  }
  void in_ptl_cleared(const InvalidateRange& page) override {
    record(HookPoint::kInPtlCleared, page.mm, page.start, page.end, page.event);
  }
  void after_unlock(const InvalidateRange& range) override {
    record(HookPoint::kAfterUnlock, range.mm, range.start, range.end, range.event);
  }
  void after_release(const InvalidateRange& range) override {
    record(HookPoint::kAfterRelease, range.mm, range.start, range.end, range.event);
  }
  void change_pte(Mm* mm, uint64_t addr, Pte pte) override {
    record(HookPoint::kChangePte, mm, addr, addr, InvalidateEvent::kClear, pte.raw());
  }
  void arch_invalidate_secondary_tlbs(Mm* mm, uint64_t start, uint64_t end) override {
    record(HookPoint::kSecondaryTlbs, mm, start, end, InvalidateEvent::kClear);
  }
  bool clear_flush_young(Mm* mm, uint64_t start, uint64_t end) override {
    record(HookPoint::kClearFlushYoung, mm, start, end, InvalidateEvent::kClear);
    return secondary_young.load();
  }
  bool clear_young(Mm* mm, uint64_t start, uint64_t end) override {
    record(HookPoint::kClearYoung, mm, start, end, InvalidateEvent::kClear);
    return secondary_young.load();
  }
  bool test_young(Mm* mm, uint64_t addr) override {
    record(HookPoint::kTestYoung, mm, addr, addr, InvalidateEvent::kClear);
    return secondary_young.load();
  }
  void release(Mm* mm) override {
    record(HookPoint::kRelease, mm, 0, 0, InvalidateEvent::kRelease);
  }

  std::vector<HookCall> calls() const {
    std::lock_guard lock(mutex_);
    return calls_;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    calls_.clear();
  }

  // What the "secondary MMU" answers to the young callbacks.
  std::atomic<bool> secondary_young{false};

 private:
  void record(HookPoint point, Mm* mm, uint64_t start, uint64_t end, InvalidateEvent event,
              uint64_t pte = 0) {
    trace::emit(trace::Kind::kCheckpoint, static_cast<uint64_t>(point), start);
    std::lock_guard lock(mutex_);
    calls_.push_back({point, mm, start, end, event, pte, AtomicContext::depth()});
  }

  mutable std::mutex mutex_;
  std::vector<HookCall> calls_;
};

}  // namespace sptelab::mm::testing
