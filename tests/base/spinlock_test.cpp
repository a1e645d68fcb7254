#include "base/spinlock.h"

#include <gtest/gtest.h>

#include <mutex>
#include <thread>
#include <vector>

namespace sptelab {
namespace {

TEST(SpinLock, TracksAtomicContextDepth) {
  SpinLock outer;
  SpinLock inner;
  EXPECT_FALSE(AtomicContext::active());
  outer.lock();
  EXPECT_EQ(AtomicContext::depth(), 1);
  inner.lock();
  EXPECT_EQ(AtomicContext::depth(), 2);
  EXPECT_FALSE(inner.try_lock());
  EXPECT_EQ(AtomicContext::depth(), 2);
  inner.unlock();
  outer.unlock();
  EXPECT_FALSE(AtomicContext::active());
}

TEST(SpinLock, MutualExclusionUnderContention) {
  SpinLock lock;
  uint64_t counter = 0;  // plain: the lock is what protects it (TSan checks)
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20000; ++i) {
        std::lock_guard guard(lock);
        ++counter;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter, 80000u);
}

}  // namespace
}  // namespace sptelab
