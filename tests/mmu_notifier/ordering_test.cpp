// Integration: every mm operation x every placement, with the real host MM
// driving the real chain. The whole sequence (PTL acquire/release, PTE change,
// TLB flush, notifier callbacks, page free) is recorded with the trace and
// checked against the order each placement documents (mmu_notifier/README.md).
//
// A tap between the Mm and the Chain marks each host point with a checkpoint
// event, so the checks can see where the host passed a point even under
// placements that issue no callback there.
//
// Set SPTELAB_PRINT_TIMELINES=1 to print each case's timeline (the source of
// the table in mmu_notifier/README.md).

#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mm/file.h"
#include "mm/host_cpu.h"
#include "mm/mm.h"
#include "mm/ops.h"
#include "mm/phys_mem.h"
#include "mmu_notifier/chain.h"
#include "trace/trace.h"

namespace sptelab::mmu_notifier {
namespace {

using mm::kPageSize;
using trace::Kind;

// Checkpoint ids the tap emits (arg 0); arg 1 is the range start.
constexpr uint64_t kTapBase = 0x7a90;
uint64_t tap_id(HookPoint point) {
  return kTapBase + static_cast<uint64_t>(point);
}

class Tap final : public mm::NotifierHooks {
 public:
  explicit Tap(Chain& chain) : chain_(chain) {}
  void before_change(const mm::InvalidateRange& r) override {
    mark(HookPoint::kBeforeChange, r.start);
    chain_.before_change(r);
  }
  void in_ptl_cleared(const mm::InvalidateRange& r) override {
    mark(HookPoint::kInPtlCleared, r.start);
    chain_.in_ptl_cleared(r);
  }
  void after_unlock(const mm::InvalidateRange& r) override {
    mark(HookPoint::kAfterUnlock, r.start);
    chain_.after_unlock(r);
  }
  void after_release(const mm::InvalidateRange& r) override {
    mark(HookPoint::kAfterRelease, r.start);
    chain_.after_release(r);
  }
  void change_pte(mm::Mm* m, uint64_t addr, mm::Pte pte) override {
    chain_.change_pte(m, addr, pte);
  }
  void arch_invalidate_secondary_tlbs(mm::Mm* m, uint64_t start, uint64_t end) override {
    chain_.arch_invalidate_secondary_tlbs(m, start, end);
  }
  bool clear_flush_young(mm::Mm* m, uint64_t start, uint64_t end) override {
    return chain_.clear_flush_young(m, start, end);
  }
  bool clear_young(mm::Mm* m, uint64_t start, uint64_t end) override {
    return chain_.clear_young(m, start, end);
  }
  bool test_young(mm::Mm* m, uint64_t addr) override { return chain_.test_young(m, addr); }
  void release(mm::Mm* m) override { chain_.release(m); }

 private:
  static void mark(HookPoint point, uint64_t start) {
    trace::emit(Kind::kCheckpoint, tap_id(point), start);
  }
  Chain& chain_;
};

// Counts the invalidation callbacks it receives.
class Counter final : public Subscription {
 public:
  explicit Counter(bool sleeps) : sleeps_(sleeps) {}
  std::string_view name() const override { return sleeps_ ? "sleeper" : "counter"; }
  bool may_sleep() const override { return sleeps_; }
  void invalidate_page(mm::Mm*, uint64_t) override { ++calls; }
  void invalidate_range(mm::Mm*, uint64_t, uint64_t, mm::InvalidateEvent) override { ++calls; }
  int invalidate_range_start(const mm::InvalidateRange&) override {
    ++calls;
    return 0;
  }
  void invalidate_range_end(const mm::InvalidateRange&) override { ++calls; }
  int calls = 0;

 private:
  bool sleeps_;
};

// A small host: frames, a shared file, one address space with one CPU.
struct Host {
  explicit Host(Placement placement, bool sleeping_subscriber = false)
      : chain(placement), tap(chain), subscriber(sleeping_subscriber) {
    mm.set_notifier_hooks(&tap);
    chain.register_subscription(&subscriber);
  }
  ~Host() { chain.unregister_subscription(&subscriber); }

  uint64_t anon_written(size_t pages, uint64_t value) {
    uint64_t addr = mm.mmap_anon(pages * kPageSize, mm::kProtRead | mm::kProtWrite);
    for (size_t i = 0; i < pages; ++i) cpu.store64(addr + i * kPageSize, value + i);
    return addr;
  }
  uint64_t file_mapped(bool write) {
    uint64_t addr = mm.mmap_file(file, 0, kPageSize, mm::kProtRead | mm::kProtWrite, true);
    if (write) {
      cpu.store64(addr, 1);
    } else {
      cpu.load64(addr);
    }
    return addr;
  }
  mm::Pfn pfn_at(uint64_t addr) { return mm.read_pte_lockless(addr).pfn(); }

  Chain chain;
  Tap tap;
  Counter subscriber;
  mm::PhysMem phys{256};
  mm::File file{phys, "data", 16};
  mm::Mm mm{phys};
  std::unique_ptr<mm::Mm> child;  // destroyed before mm
  mm::HostCpu cpu{mm, 0};
};

// One mm operation: `prepare` builds the state (untraced) and returns the
// operation to trace.
struct Operation {
  const char* name;
  // True if the PTE is cleared with ptep_clear_flush (flush inside the PTL,
  // before in_ptl_cleared); false for the batched flushes of zap and
  // mprotect (after the PTL is dropped, or a forced flush at the end of the
  // table), and of 6.18's reclaim and migration (TTU_BATCH_FLUSH) and
  // remap (since 4.0 a munmap-style zap).
  bool flush_inside_ptl;
  std::function<std::function<void()>(Host&)> prepare;
};

const std::vector<Operation>& operations() {
  static const std::vector<Operation> ops = {
      {"migrate", false,
       [](Host& h) {
         uint64_t addr = h.anon_written(1, 9);
         return std::function<void()>([&h, addr] { ASSERT_TRUE(mm::migrate_page(h.mm, addr)); });
       }},
      {"remap", false,
       [](Host& h) {
         uint64_t addr = h.file_mapped(/*write=*/true);
         return std::function<void()>(
             [&h, addr] { ASSERT_TRUE(mm::remap_file_page(h.mm, addr, 5)); });
       }},
      {"cow", true,
       [](Host& h) {
         uint64_t addr = h.anon_written(1, 5);
         h.child = h.mm.fork();  // the page is now shared copy-on-write
         return std::function<void()>(
             [&h, addr] { ASSERT_EQ(mm::break_cow(h.mm, addr), mm::FaultResult::kOk); });
       }},
      {"dontneed", false,
       [](Host& h) {
         uint64_t addr = h.anon_written(2, 1);
         return std::function<void()>(
             [&h, addr] { ASSERT_TRUE(mm::madvise_dontneed(h.mm, addr, 2 * kPageSize)); });
       }},
      {"munmap", false,
       [](Host& h) {
         uint64_t addr = h.anon_written(2, 1);
         return std::function<void()>(
             [&h, addr] { ASSERT_TRUE(mm::munmap(h.mm, addr, 2 * kPageSize)); });
       }},
      {"mprotect", false,
       [](Host& h) {
         uint64_t addr = h.anon_written(2, 1);
         return std::function<void()>(
             [&h, addr] { ASSERT_TRUE(mm::mprotect(h.mm, addr, 2 * kPageSize, mm::kProtRead)); });
       }},
      {"wp_clean", false,
       [](Host& h) {
         uint64_t addr = h.file_mapped(/*write=*/true);
         return std::function<void()>(
             [&h, addr] { ASSERT_EQ(mm::wp_clean_range(h.mm, addr, kPageSize), 1u); });
       }},
      {"mkclean", true,
       [](Host& h) {
         h.file_mapped(/*write=*/true);  // dirty shared page: writeback cleans it
         return std::function<void()>([&h] { ASSERT_TRUE(mm::writeback_page(h.file, 0)); });
       }},
      {"ksm", true,
       [](Host& h) {
         uint64_t a = h.mm.mmap_anon(2 * kPageSize, mm::kProtRead | mm::kProtWrite);
         h.cpu.store64(a, 42);  // same content in both pages
         h.cpu.store64(a + kPageSize, 42);
         return std::function<void()>(
             [&h, a] { ASSERT_TRUE(mm::ksm_merge(h.mm, a, a + kPageSize)); });
       }},
      {"reclaim", false,
       [](Host& h) {
         uint64_t addr = h.file_mapped(/*write=*/false);
         mm::Pfn pfn = h.pfn_at(addr);
         return std::function<void()>([&h, pfn] {
           ASSERT_EQ(mm::reclaim_page(h.phys, pfn, /*honor_references=*/false),
                     mm::ReclaimResult::kReclaimed);
         });
       }},
  };
  return ops;
}

bool is_notify(Kind kind) {
  return kind == Kind::kNotifyInvalidatePage || kind == Kind::kNotifyInvalidateRange ||
         kind == Kind::kNotifyRangeStart || kind == Kind::kNotifyRangeEnd;
}

Kind notify_kind(Callback callback) {
  switch (callback) {
    case Callback::kInvalidatePage:
      return Kind::kNotifyInvalidatePage;
    case Callback::kInvalidateRange:
      return Kind::kNotifyInvalidateRange;
    case Callback::kInvalidateRangeStart:
      return Kind::kNotifyRangeStart;
    default:
      return Kind::kNotifyRangeEnd;
  }
}

std::optional<HookPoint> tap_point(const trace::Event& event) {
  if (event.kind != Kind::kCheckpoint) return std::nullopt;
  uint64_t id = event.args[0];
  if (id < kTapBase || id >= kTapBase + static_cast<uint64_t>(HookPoint::kCount)) {
    return std::nullopt;
  }
  return static_cast<HookPoint>(id - kTapBase);
}

// The events an ordering check looks at, in program order (one thread).
std::vector<trace::Event> traced(const std::function<void()>& run) {
  trace::Session session;
  run();
  std::vector<trace::Event> out;
  for (const trace::Event& event : trace::snapshot().events) {
    switch (event.kind) {
      case Kind::kPtlLock:
      case Kind::kPtlUnlock:
      case Kind::kPteSet:
      case Kind::kPteClear:
      case Kind::kTlbFlush:
      case Kind::kPageFree:
      case Kind::kCheckpoint:
        out.push_back(event);
        break;
      default:
        if (is_notify(event.kind)) out.push_back(event);
    }
  }
  return out;
}

std::string token(const trace::Event& event) {
  if (std::optional<HookPoint> point = tap_point(event)) {
    return std::string("<") + hook_point_name(*point) + ">";
  }
  switch (event.kind) {
    case Kind::kPtlLock:
      return "lock";
    case Kind::kPtlUnlock:
      return "unlock";
    case Kind::kPteSet:
      return "set";
    case Kind::kPteClear:
      return "clear";
    case Kind::kTlbFlush:
      return "flush";
    case Kind::kPageFree:
      return "free";
    case Kind::kNotifyInvalidatePage:
      return "INVALIDATE_PAGE";
    case Kind::kNotifyInvalidateRange:
      return "INVALIDATE_RANGE";
    case Kind::kNotifyRangeStart:
      return "RANGE_START";
    case Kind::kNotifyRangeEnd:
      return "RANGE_END";
    default:
      return "?";
  }
}

std::string timeline(const std::vector<trace::Event>& events) {
  std::string out;
  for (const trace::Event& event : events) {
    if (!out.empty()) out += ' ';
    out += token(event);
  }
  return out;
}

// [begin, end) indices of each before_change .. after_release bracket.
std::vector<std::pair<size_t, size_t>> brackets(const std::vector<trace::Event>& events) {
  std::vector<std::pair<size_t, size_t>> out;
  bool open = false;
  size_t open_at = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    std::optional<HookPoint> point = tap_point(events[i]);
    if (point == HookPoint::kBeforeChange) {
      EXPECT_FALSE(open) << "brackets nest at event " << i;
      open = true;
      open_at = i;
    } else if (point == HookPoint::kAfterRelease) {
      EXPECT_TRUE(open) << "after_release without before_change at " << i;
      // The callback issued at after_release belongs to the bracket.
      size_t end = i + 1 < events.size() && is_notify(events[i + 1].kind) ? i + 2 : i + 1;
      if (open) out.emplace_back(open_at, end);
      open = false;
    }
  }
  EXPECT_FALSE(open) << "a bracket was left open";
  return out;
}

bool changes_pte(const trace::Event& event) {
  return event.kind == Kind::kPteSet || event.kind == Kind::kPteClear;
}

class Ordering : public ::testing::TestWithParam<std::tuple<size_t, Placement>> {
 protected:
  const Operation& op() const { return operations()[std::get<0>(GetParam())]; }
  Placement placement() const { return std::get<1>(GetParam()); }
};

// Every checkpoint is immediately followed by the callback its placement
// prescribes there, and no other invalidation callback appears.
void expect_callbacks_at_their_points(const std::vector<trace::Event>& events,
                                      Placement placement) {
  size_t expected_notifications = 0;
  for (size_t i = 0; i < events.size(); ++i) {
    std::optional<HookPoint> point = tap_point(events[i]);
    if (!point) continue;
    std::optional<Callback> callback = invalidation_at(placement, *point);
    if (!callback) continue;
    ++expected_notifications;
    ASSERT_LT(i + 1, events.size());
    EXPECT_EQ(events[i + 1].kind, notify_kind(*callback))
        << "after " << hook_point_name(*point) << " at " << i;
    EXPECT_EQ(events[i + 1].args[0], events[i].args[1]) << "range start / address";
  }
  size_t notifications = 0;
  for (const trace::Event& event : events) notifications += is_notify(event.kind);
  EXPECT_EQ(notifications, expected_notifications);
}

void expect_ptl_page_order(const std::vector<trace::Event>& events, bool flush_inside_ptl) {
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].kind != Kind::kNotifyInvalidatePage) continue;
    const uint64_t addr = events[i].args[0];
    // Backwards: the PTE of addr was cleared (and, with ptep_clear_flush,
    // flushed) after the PTL was taken, and not set again yet.
    bool cleared = false, flushed = false, locked = false;
    for (size_t j = i; j-- > 0;) {
      const trace::Event& e = events[j];
      if (e.kind == Kind::kPtlUnlock) break;
      if (e.kind == Kind::kTlbFlush && e.args[0] <= addr && addr < e.args[1]) flushed = true;
      if (e.kind == Kind::kPteSet && e.args[0] == addr && !cleared) {
        ADD_FAILURE() << "the new PTE was set before invalidate_page(" << addr << ")";
      }
      if (e.kind == Kind::kPteClear && e.args[0] == addr) cleared = true;
      if (e.kind == Kind::kPtlLock) {
        locked = true;
        break;
      }
    }
    EXPECT_TRUE(locked) << "invalidate_page(" << addr << ") outside the PTL";
    EXPECT_TRUE(cleared) << "invalidate_page(" << addr << ") before the PTE was cleared";
    EXPECT_EQ(flushed, flush_inside_ptl) << "TLB flush of " << addr << " before invalidate_page";
    // Forwards: still inside the PTL; no page freed before the unlock.
    bool unlocked = false;
    for (size_t j = i + 1; j < events.size() && !unlocked; ++j) {
      unlocked = events[j].kind == Kind::kPtlUnlock;
      EXPECT_NE(events[j].kind, Kind::kPageFree) << "page freed inside the PTL";
    }
    EXPECT_TRUE(unlocked);
  }
}

void expect_bracket_order(const std::vector<trace::Event>& events, Placement placement) {
  for (auto [begin, end] : brackets(events)) {
    std::optional<size_t> start, stop, single, first_change, last_change, last_unlock, first_lock;
    std::vector<size_t> frees;
    for (size_t i = begin; i < end; ++i) {
      const trace::Event& e = events[i];
      if (e.kind == Kind::kNotifyRangeStart) start = i;
      if (e.kind == Kind::kNotifyRangeEnd) stop = i;
      if (e.kind == Kind::kNotifyInvalidateRange) single = i;
      if (changes_pte(e)) {
        if (!first_change) first_change = i;
        last_change = i;
      }
      if (e.kind == Kind::kPtlLock && !first_lock) first_lock = i;
      if (e.kind == Kind::kPtlUnlock) last_unlock = i;
      if (e.kind == Kind::kPageFree) frees.push_back(i);
    }
    switch (placement) {
      case Placement::kStartEnd:
        ASSERT_TRUE(start && stop);
        if (first_lock) {
          EXPECT_LT(*start, *first_lock) << "range_start after a PTL was taken";
        }
        if (first_change) {
          EXPECT_LT(*start, *first_change);
        }
        if (last_unlock) {
          EXPECT_GT(*stop, *last_unlock) << "range_end before the last PTL unlock";
        }
        if (last_change) {
          EXPECT_GT(*stop, *last_change);
        }
        for (size_t free : frees) {
          EXPECT_LT(*stop, free) << "page freed before range_end";
        }
        break;
      case Placement::kRangeBefore:
        ASSERT_TRUE(single);
        if (first_lock) {
          EXPECT_LT(*single, *first_lock);
        }
        if (first_change) {
          EXPECT_LT(*single, *first_change);
        }
        break;
      case Placement::kRangeAfter:
        ASSERT_TRUE(single);
        if (last_unlock) {
          EXPECT_GT(*single, *last_unlock);
        }
        if (last_change) {
          EXPECT_GT(*single, *last_change);
        }
        for (size_t free : frees) {
          EXPECT_GT(*single, free) << "invalidate_range before a free";
        }
        break;
      case Placement::kNone:
      case Placement::kPtlPage:
        EXPECT_FALSE(start || stop || single);
        break;
    }
  }
}

TEST_P(Ordering, CallbacksSitWhereThePlacementSays) {
  Host host(placement());
  std::function<void()> run = op().prepare(host);
  host.subscriber.calls = 0;
  std::vector<trace::Event> events = traced(run);
  ASSERT_FALSE(brackets(events).empty()) << op().name << " passed no notifier points";

  if (std::getenv("SPTELAB_PRINT_TIMELINES")) {
    std::printf("%-9s %-12s %s\n", op().name, placement_name(placement()),
                timeline(events).c_str());
  }
  SCOPED_TRACE(timeline(events));
  expect_callbacks_at_their_points(events, placement());
  if (placement() == Placement::kPtlPage) expect_ptl_page_order(events, op().flush_inside_ptl);
  expect_bracket_order(events, placement());

  // The subscription got exactly the callbacks the trace shows, none in
  // atomic context that it could not take.
  size_t notifications = 0;
  for (const trace::Event& event : events) notifications += is_notify(event.kind);
  EXPECT_EQ(static_cast<size_t>(host.subscriber.calls), notifications);
  EXPECT_TRUE(host.chain.violations().empty());
}

// The 2008 argument in one assertion: a subscription that sleeps is called
// inside the PTL only under ptl-page.
TEST_P(Ordering, SleepingSubscriberIsInAtomicContextOnlyUnderPtlPage) {
  Host host(placement(), /*sleeping_subscriber=*/true);
  std::function<void()> run = op().prepare(host);
  host.chain.clear_violations();  // fork, in the COW case's preparation, is not under test
  std::vector<trace::Event> events = traced(run);
  size_t pages = 0;
  for (const trace::Event& event : events) pages += event.kind == Kind::kNotifyInvalidatePage;
  size_t in_atomic = 0;
  for (const Violation& violation : host.chain.violations()) {
    EXPECT_EQ(violation.kind, ViolationKind::kSleepInAtomic);
    // change_pte (COW, KSM, before 6.10) and arch_invalidate_secondary_tlbs
    // (from a flush inside the PTL) reach every placement that forwards
    // them; only invalidations count here.
    if (violation.callback == Callback::kChangePte ||
        violation.callback == Callback::kArchInvalidateSecondaryTlbs) {
      continue;
    }
    EXPECT_EQ(violation.callback, Callback::kInvalidatePage);
    ++in_atomic;
  }
  EXPECT_EQ(in_atomic, pages);
  if (placement() == Placement::kPtlPage) {
    EXPECT_GT(in_atomic, 0u);
  } else {
    EXPECT_EQ(in_atomic, 0u);
  }
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<size_t, Placement>>& param_info) {
  std::string name = std::string(operations()[std::get<0>(param_info.param)].name) + "_" +
                     placement_name(std::get<1>(param_info.param));
  std::erase(name, '-');
  return name;
}

INSTANTIATE_TEST_SUITE_P(EveryOperationEveryPlacement, Ordering,
                         ::testing::Combine(::testing::Range<size_t>(0, 10),
                                            ::testing::ValuesIn(kAllPlacements)),
                         case_name);

TEST(OrderingCatalog, CoversEveryOperationOnce) {
  ASSERT_EQ(operations().size(), 10u);  // the Range above
}

}  // namespace
}  // namespace sptelab::mmu_notifier
