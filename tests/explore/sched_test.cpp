// The cooperative scheduler: one thread at a time, the chooser's order,
// locks that disable a thread, failed waits, and deadlock detection.
#include <gtest/gtest.h>
#include <sched.h>

#include <vector>

#include "base/sched.h"
#include "base/spinlock.h"

namespace sptelab::sched {
namespace {

// Follows a fixed list of choices, then the lowest runnable thread.
class ListChooser final : public Chooser {
 public:
  explicit ListChooser(std::vector<size_t> order) : order_(std::move(order)) {}
  size_t choose(const std::vector<ThreadState>& threads, size_t) override {
    if (next_ < order_.size() && threads[order_[next_]].enabled) return order_[next_++];
    ++next_;
    for (size_t t = 0; t < threads.size(); ++t) {
      if (threads[t].enabled) return t;
    }
    return 0;
  }

 private:
  std::vector<size_t> order_;
  size_t next_ = 0;
};

void mark(const char* label) {
  point(Step{.kind = Kind::kPoint, .label = label});
}

TEST(Sched, TheChooserDecidesTheOrderOfSteps) {
  // Each thread appends in its second step (after its point).
  const std::vector<std::pair<std::vector<size_t>, std::vector<int>>> cases = {
      {{0, 0, 1, 1}, {0, 1}},
      {{1, 0, 1, 0}, {1, 0}},
  };
  for (const auto& [order, expected] : cases) {
    std::vector<int> log;
    ListChooser chooser(order);
    Execution execution(chooser, 100);
    execution.add_thread("a", [&] {
      mark("a");
      log.push_back(0);
    });
    execution.add_thread("b", [&] {
      mark("b");
      log.push_back(1);
    });
    EXPECT_EQ(execution.run(), EndReason::kCompleted);
    EXPECT_EQ(log, expected);
  }
}

TEST(Sched, AHeldLockDisablesTheWaiter) {
  SpinLock lock("test_lock");
  std::vector<int> log;
  // a takes the lock and stops at a point; b is chosen next but cannot take
  // the lock, so a must be chosen until it releases.
  ListChooser chooser({0, 0, 1, 1, 1});
  Execution execution(chooser, 100);
  execution.add_thread("a", [&] {
    lock.lock();
    mark("holding");
    log.push_back(0);
    lock.unlock();
  });
  execution.add_thread("b", [&] {
    lock.lock();
    log.push_back(1);
    lock.unlock();
  });
  EXPECT_EQ(execution.run(), EndReason::kCompleted);
  EXPECT_EQ(log, (std::vector<int>{0, 1}));
}

TEST(Sched, OppositeLockOrdersDeadlockUnderSomeSchedule) {
  SpinLock first("first");
  SpinLock second("second");
  ListChooser chooser({0, 0, 1, 1});
  Execution execution(chooser, 1000);
  execution.add_thread("a", [&] {
    first.lock();
    mark("a holds first");
    second.lock();
    second.unlock();
    first.unlock();
  });
  execution.add_thread("b", [&] {
    second.lock();
    mark("b holds second");
    first.lock();
    first.unlock();
    second.unlock();
  });
  EXPECT_EQ(execution.run(), EndReason::kDeadlock);
}

TEST(Sched, AFailedWaitLetsTheOtherThreadRun) {
  std::atomic<bool> flag{false};
  ListChooser chooser({0});
  Execution execution(chooser, 1000);
  execution.add_thread("waiter", [&] {
    while (!flag.load()) relax(&flag, "flag");
  });
  execution.add_thread("setter", [&] {
    mark("about to set");
    flag = true;
  });
  EXPECT_EQ(execution.run(), EndReason::kCompleted);
  EXPECT_TRUE(flag.load());
}

TEST(Sched, AWaitThatNeverEndsHitsTheStepLimit) {
  ListChooser chooser({});
  Execution execution(chooser, 50);
  std::atomic<int> spins{0};
  execution.add_thread("spinner", [&] {
    while (spins.fetch_add(1) < 1000) relax(nullptr, "forever");
  });
  EXPECT_EQ(execution.run(), EndReason::kStepLimit);
}

TEST(Sched, DependenceOfSteps) {
  int x = 0, y = 0;
  const Step read_x{.kind = Kind::kRead, .object = &x};
  const Step write_x{.kind = Kind::kWrite, .object = &x};
  const Step write_y{.kind = Kind::kWrite, .object = &y};
  const Step anything{.kind = Kind::kPoint};
  EXPECT_FALSE(dependent(read_x, read_x));
  EXPECT_TRUE(dependent(read_x, write_x));
  EXPECT_FALSE(dependent(write_x, write_y));
  EXPECT_TRUE(dependent(anything, write_y));
}

cpu_set_t affinity_now() {
  cpu_set_t set;
  CPU_ZERO(&set);
  EXPECT_EQ(sched_getaffinity(0, sizeof(set), &set), 0);
  return set;
}

TEST(Sched, AnExecutionsThreadsRunOnTheCPUItsCallerStaysOn) {
  const cpu_set_t before = affinity_now();
  std::vector<int> cpus;
  {
    StayOnOneCpu one_cpu;
    const cpu_set_t pinned = affinity_now();
    if (CPU_COUNT(&pinned) != 1) GTEST_SKIP() << "this process may not change its CPU affinity";
    const int caller_cpu = sched_getcpu();
    EXPECT_TRUE(CPU_ISSET(caller_cpu, &pinned));
    // Two executions: the workers of the second are the first's, reused.
    for (int run = 0; run < 2; ++run) {
      ListChooser chooser({0, 1, 0, 1});
      Execution execution(chooser, 100);
      for (const char* name : {"a", "b"}) {
        execution.add_thread(name, [&cpus] {
          mark("before");
          cpus.push_back(sched_getcpu());
        });
      }
      EXPECT_EQ(execution.run(), EndReason::kCompleted);
    }
    EXPECT_EQ(cpus, std::vector<int>(4, caller_cpu));
  }
  const cpu_set_t after = affinity_now();
  EXPECT_TRUE(CPU_EQUAL(&before, &after)) << "the caller's affinity was not given back";
}

TEST(Sched, HooksDoNothingOutsideAnExecution) {
  EXPECT_FALSE(active());
  SpinLock lock;
  lock.lock();  // no scheduler: a plain spinlock
  lock.unlock();
  mark("ignored");
}

}  // namespace
}  // namespace sptelab::sched
