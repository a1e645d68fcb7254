// The chain under concurrent dispatch, registration and unregistration.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "mmu_notifier/chain.h"
#include "tests/mmu_notifier/recorder.h"

namespace sptelab::mmu_notifier {
namespace {

using testing::fake_mm;
using testing::range;
using testing::wait_for;

// Counts its calls and notices any that arrive after its owner said it was
// unregistered.
class Probe final : public Subscription {
 public:
  explicit Probe(std::atomic<uint64_t>& late) : late_(late) {}
  void invalidate_page(mm::Mm*, uint64_t) override { hit(); }
  void invalidate_range(mm::Mm*, uint64_t, uint64_t, mm::InvalidateEvent) override { hit(); }
  int invalidate_range_start(const mm::InvalidateRange&) override {
    hit();
    starts.fetch_add(1);
    return 0;
  }
  void invalidate_range_end(const mm::InvalidateRange&) override {
    hit();
    ends.fetch_add(1);
  }
  bool clear_young(mm::Mm*, uint64_t, uint64_t) override {
    hit();
    return false;
  }

  std::atomic<bool> gone{false};  // set by the owner once unregister returned
  std::atomic<uint64_t> calls{0};
  std::atomic<uint64_t> starts{0};
  std::atomic<uint64_t> ends{0};

 private:
  void hit() {
    calls.fetch_add(1, std::memory_order_relaxed);
    if (gone.load()) late_.fetch_add(1);
  }
  std::atomic<uint64_t>& late_;
};

class ConcurrentDispatch : public ::testing::TestWithParam<Placement> {};

TEST_P(ConcurrentDispatch, UnregisteredSubscriptionIsNeverCalledAgain) {
  constexpr int kDispatchers = 2;
  constexpr uint64_t kOpsPerDispatcher = 1500;
  constexpr int kProbes = 60;
  Chain chain(GetParam());
  std::atomic<uint64_t> late{0};
  Probe permanent(late);
  chain.register_subscription(&permanent);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> ops{0};
  std::vector<std::thread> dispatchers;
  for (int t = 0; t < kDispatchers; ++t) {
    dispatchers.emplace_back([&, t] {
      // At least kOpsPerDispatcher, and on until the registrar is done, so
      // the two really overlap.
      for (uint64_t i = 0; i < kOpsPerDispatcher || !stop.load(); ++i) {
        uint64_t addr = (uint64_t(t) << 32) + ((i % 4096) << 12);
        auto op = range(addr, addr + 0x1000);
        chain.before_change(op);
        chain.in_ptl_cleared(op);
        chain.after_unlock(op);
        chain.after_release(op);
        chain.clear_young(fake_mm(), addr, addr + 0x1000);
        ops.fetch_add(1, std::memory_order_relaxed);
        // Two cores: leave the registrar room to run.
        if (i % 16 == 0) std::this_thread::yield();
      }
    });
  }
  std::thread registrar([&] {
    for (int i = 0; i < kProbes; ++i) {
      auto probe = std::make_unique<Probe>(late);
      chain.register_subscription(probe.get());
      for (int spin = 0; spin < 20; ++spin) std::this_thread::yield();
      EXPECT_TRUE(chain.unregister_subscription(probe.get()));
      probe->gone = true;
      // Let dispatchers run past the unregister before the probe is freed:
      // a walker still holding it would be a use-after-free under ASan.
      for (int spin = 0; spin < 20; ++spin) std::this_thread::yield();
    }
    stop = true;
  });
  for (auto& dispatcher : dispatchers) dispatcher.join();
  registrar.join();

  EXPECT_EQ(late.load(), 0u);
  // The permanent subscription saw every notification: nothing was lost
  // while the list was being replaced.
  uint64_t per_op = GetParam() == Placement::kStartEnd ? 2 : 1;
  EXPECT_EQ(permanent.calls.load(), ops.load() * (per_op + 1));  // + clear_young
  EXPECT_EQ(permanent.starts.load(), permanent.ends.load());
  EXPECT_EQ(chain.subscription_count(), 1u);
  EXPECT_GE(chain.stats().grace_periods, uint64_t{kProbes});
}

INSTANTIATE_TEST_SUITE_P(Placements, ConcurrentDispatch,
                         ::testing::Values(Placement::kPtlPage, Placement::kRangeBefore,
                                           Placement::kRangeAfter, Placement::kStartEnd),
                         [](const ::testing::TestParamInfo<Placement>& param_info) {
                           std::string name = placement_name(param_info.param);
                           std::erase(name, '-');
                           return name;
                         });

// ---- interval subscriptions ------------------------------------------------------

TEST(IntervalConcurrency, ReadBeginWaitsWhileAnInvalidationIsOpen) {
  Chain chain(Placement::kStartEnd);
  testing::IntervalRecorder interval(0x10000, 0x20000);
  chain.register_interval(&interval);
  auto op = range(0x10000, 0x11000);
  chain.before_change(op);
  uint64_t open_seq = chain.invalidate_seq();
  ASSERT_EQ(open_seq % 2, 1u);

  std::atomic<bool> closing{false};
  bool saw_closing = false;
  uint64_t begun = 0;
  std::thread reader([&] {
    begun = interval.read_begin();
    saw_closing = closing.load();
  });
  // Give a broken read_begin every chance to return while still open.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  closing = true;
  chain.after_unlock(op);
  reader.join();

  EXPECT_TRUE(saw_closing) << "read_begin returned while the invalidation was open";
  EXPECT_EQ(begun, open_seq);
  EXPECT_FALSE(interval.read_retry(begun));
  chain.unregister_interval(&interval);
}

// Blocks in its callback until told to go on.
class BlockingInterval final : public IntervalSubscription {
 public:
  using IntervalSubscription::IntervalSubscription;
  bool invalidate(const mm::InvalidateRange&, uint64_t cur_seq) override {
    set_seq(cur_seq);
    inside = true;
    wait_for(proceed);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    finished = true;
    return true;
  }
  std::atomic<bool> inside{false}, proceed{false}, finished{false};
};

TEST(IntervalConcurrency, UnregisterWaitsForACallbackInProgress) {
  Chain chain(Placement::kRangeBefore);
  BlockingInterval interval(0x0, 0x10000);
  chain.register_interval(&interval);
  std::thread host([&] { chain.before_change(range(0x1000, 0x2000)); });
  wait_for(interval.inside);
  bool finished_before_return = false;
  std::thread owner([&] {
    chain.unregister_interval(&interval);
    finished_before_return = interval.finished.load();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  interval.proceed = true;
  host.join();
  owner.join();
  EXPECT_TRUE(finished_before_return) << "unregister returned while the callback was running";
  EXPECT_FALSE(interval.registered());
  EXPECT_EQ(chain.interval_count(), 0u);
}

// A miniature secondary MMU using the interval protocol: it caches one host
// value. The host changes the value only inside an invalidation bracket,
// whose callback drops the cache under the owner lock first, so under that
// lock a valid cache always equals the host value. A read_begin that did not
// wait, or a read_retry that missed an invalidation, installs a stale value.
class CachingOwner final : public IntervalSubscription {
 public:
  CachingOwner(uint64_t start, uint64_t end, std::atomic<uint64_t>& host)
      : IntervalSubscription(start, end), host_(host) {}

  bool invalidate(const mm::InvalidateRange&, uint64_t cur_seq) override {
    std::lock_guard lock(mutex_);
    set_seq(cur_seq);
    valid_ = false;
    return true;
  }

  // The fault path: returns false if it has to retry.
  bool fault() {
    uint64_t seq = read_begin();
    uint64_t value = host_.load();  // like GUP: reads the host without the owner lock
    // GUP takes time: leave room for a whole invalidation to land here.
    if (++faults_ % 2 == 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
    std::lock_guard lock(mutex_);
    if (read_retry(seq)) return false;
    cached_ = value;
    valid_ = true;
    if (cached_ != host_.load()) stale_installs_++;
    return true;
  }

  bool coherent() {
    std::lock_guard lock(mutex_);
    return !valid_ || cached_ == host_.load();
  }
  uint64_t stale_installs() {
    std::lock_guard lock(mutex_);
    return stale_installs_;
  }

 private:
  std::atomic<uint64_t>& host_;
  uint64_t faults_ = 0;  // only the faulting thread touches it
  std::mutex mutex_;
  uint64_t cached_ = 0;
  bool valid_ = false;
  uint64_t stale_installs_ = 0;
};

TEST(IntervalConcurrency, FaultProtocolStaysCoherentAgainstInvalidations) {
  constexpr int kChanges = 1500;
  Chain chain(Placement::kStartEnd);
  std::atomic<uint64_t> host{0};
  CachingOwner owner(0x0, 0x1000, host);
  chain.register_interval(&owner);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> attempts{0};
  std::thread faulter([&] {
    while (!stop.load()) {
      owner.fault();
      attempts.fetch_add(1);
    }
  });
  int incoherent = 0;
  for (int i = 0; i < kChanges; ++i) {
    auto op = range(0x0, 0x1000);
    chain.before_change(op);
    std::this_thread::yield();  // widen the window a fault could slip into
    host.fetch_add(1);          // the host PTE changes inside the bracket
    chain.after_unlock(op);
    // Wait for the fault in flight to finish; then the host is quiet, and a
    // fault that raced with this change must have retried.
    uint64_t seen = attempts.load();
    while (attempts.load() < seen + 2) std::this_thread::yield();
    incoherent += owner.coherent() ? 0 : 1;
  }
  stop = true;
  faulter.join();
  EXPECT_EQ(incoherent, 0);
  EXPECT_EQ(owner.stale_installs(), 0u);
  EXPECT_TRUE(owner.fault());  // nothing open: the fault goes through
  EXPECT_TRUE(owner.coherent());
  chain.unregister_interval(&owner);
  EXPECT_EQ(chain.invalidate_seq() % 2, 0u);
}

TEST(IntervalConcurrency, RegisterAndUnregisterDuringInvalidations) {
  constexpr uint64_t kOps = 1500;
  constexpr int kProbes = 100;
  Chain chain(Placement::kStartEnd);
  std::atomic<uint64_t> late{0};

  class LateProbe final : public IntervalSubscription {
   public:
    LateProbe(std::atomic<uint64_t>& late_calls)
        : IntervalSubscription(0x0, 0x100000), late_(late_calls) {}
    bool invalidate(const mm::InvalidateRange&, uint64_t cur_seq) override {
      std::lock_guard lock(mutex_);
      set_seq(cur_seq);
      if (gone.load()) late_.fetch_add(1);
      return true;
    }
    std::atomic<bool> gone{false};

   private:
    std::atomic<uint64_t>& late_;
    std::mutex mutex_;
  };

  std::atomic<int> hosts_done{0};
  std::atomic<bool> registrar_started{false};
  std::vector<std::thread> hosts;
  for (int t = 0; t < 2; ++t) {
    hosts.emplace_back([&, t] {
      wait_for(registrar_started);
      // A fixed count, not "until the registrar is done": read_begin and
      // unregister wait for a moment with no invalidation open at all, which
      // two hosts invalidating back to back may not leave for a long time
      // (Linux's mmu_interval_read_begin has the same property).
      for (uint64_t i = 0; i < kOps; ++i) {
        // Half the ranges overlap the probes, half do not.
        uint64_t addr = (i % 256) << 12 | (uint64_t(t + 1) << 20) * (i % 2);
        auto op = range(addr, addr + 0x1000);
        chain.before_change(op);
        chain.after_unlock(op);
        if (i % 8 == 0) std::this_thread::yield();
      }
      hosts_done.fetch_add(1);
    });
  }
  std::thread registrar([&] {
    registrar_started = true;
    // The hosts never wait for the registrar, so it can keep going until
    // they are done without any risk of livelock.
    for (int i = 0; i < kProbes || hosts_done.load() < 2; ++i) {
      auto probe = std::make_unique<LateProbe>(late);
      chain.register_interval(probe.get());
      probe->read_begin();
      std::this_thread::yield();
      chain.unregister_interval(probe.get());
      probe->gone = true;
    }
  });
  for (auto& host : hosts) host.join();
  registrar.join();
  EXPECT_EQ(late.load(), 0u);
  EXPECT_EQ(chain.interval_count(), 0u);
  EXPECT_EQ(chain.invalidate_seq() % 2, 0u);
}

}  // namespace
}  // namespace sptelab::mmu_notifier
