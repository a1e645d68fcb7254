#include "mmu_notifier/srcu.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "tests/mmu_notifier/recorder.h"

namespace sptelab::mmu_notifier {
namespace {

using testing::wait_for;

TEST(Srcu, SynchronizeWaitsForAReaderAlreadyInside) {
  Srcu srcu;
  std::atomic<bool> entered{false}, leaving{false};
  std::thread reader([&] {
    SrcuReadGuard guard(srcu);
    entered = true;
    // Give a broken synchronize() every chance to return early.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    leaving = true;
  });
  wait_for(entered);
  srcu.synchronize();
  EXPECT_TRUE(leaving.load()) << "synchronize returned while a reader was still inside";
  reader.join();
  EXPECT_EQ(srcu.grace_periods(), 1u);
}

TEST(Srcu, OverlappingReadersDoNotStarveAWriter) {
  Srcu srcu;
  std::atomic<bool> stop{false};
  std::atomic<int> started{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      started.fetch_add(1);
      // Each reader re-enters at once, so some reader is (almost) always
      // inside; the epoch flip still lets the writer through.
      while (!stop.load(std::memory_order_relaxed)) {
        SrcuReadGuard guard(srcu);
        std::this_thread::yield();
      }
    });
  }
  while (started.load() < 2) std::this_thread::yield();
  for (int i = 0; i < 200; ++i) srcu.synchronize();
  stop = true;
  for (auto& reader : readers) reader.join();
  EXPECT_EQ(srcu.grace_periods(), 200u);
}

// The pattern the chain relies on: publish a new object, wait a grace
// period, free the old one. A reader that could still see the old one would
// be a use-after-free (ASan) or a data race (TSan), and would read poison.
TEST(Srcu, PublishWaitFreeNeverLetsAReaderSeeFreedMemory) {
  struct Box {
    std::atomic<uint64_t> value;
  };
  constexpr uint64_t kPoison = 0xdeadull;
  Srcu srcu;
  std::atomic<Box*> current{new Box{{1}}};
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> poisoned_reads{0};
  std::atomic<int> started{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      started.fetch_add(1);
      while (!stop.load(std::memory_order_relaxed)) {
        SrcuReadGuard guard(srcu);
        Box* box = current.load();
        if (box->value.load(std::memory_order_relaxed) == kPoison) poisoned_reads++;
      }
    });
  }
  while (started.load() < 2) std::this_thread::yield();
  for (uint64_t i = 2; i < 2000; ++i) {
    Box* old = current.exchange(new Box{{i}});
    srcu.synchronize();
    old->value.store(kPoison, std::memory_order_relaxed);
    delete old;
  }
  stop = true;
  for (auto& reader : readers) reader.join();
  delete current.load();
  EXPECT_EQ(poisoned_reads.load(), 0u);
}

}  // namespace
}  // namespace sptelab::mmu_notifier
