// Delay injection: a kPassed delay ends exactly when a thread of the named
// role passes the named point (what a guided race waits for), and never
// because some other thread passed it.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "scenarios/delays.h"

namespace sptelab::scenarios {
namespace {

using Clock = std::chrono::steady_clock;
using inject::Point;

DelayPoint held_until_vcpu_passes(uint32_t bound_ns) {
  return {Point::kHostBeforePtl, Role::kRemapper,           bound_ns,   1000,
          DelayUntil::kPassed,   Point::kSpteFaultAfterGup, Role::kVcpu};
}

// The vCPU keeps passing its point until the remapper goes on: the wait
// must end on a pass (not before one), and long before its 4 s bound.
TEST(DelayInjector, PassedDelayEndsWhenTheOtherRolePassesItsPoint) {
  constexpr uint32_t kBoundNs = 4'000'000'000u;
  DelayInjector injector({held_until_vcpu_passes(kBoundNs)}, 1);
  std::atomic<uint64_t> passes{0};
  std::atomic<bool> resumed{false};
  uint64_t passes_seen = 0;
  Clock::time_point start = Clock::now();
  std::thread remapper([&] {
    ThreadRole role(Role::kRemapper);
    inject::at(Point::kHostBeforePtl);
    passes_seen = passes.load();
    resumed = true;
  });
  while (injector.delays_injected() == 0) std::this_thread::yield();
  {
    ThreadRole role(Role::kVcpu);
    while (!resumed) {
      passes.fetch_add(1);
      inject::at(Point::kSpteFaultAfterGup);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  remapper.join();
  EXPECT_GE(passes_seen, 1u);
  EXPECT_LT(Clock::now() - start, std::chrono::nanoseconds(kBoundNs));
}

TEST(DelayInjector, PassedDelayIgnoresOtherRolesAndRunsToItsBound) {
  constexpr uint32_t kBoundNs = 50'000'000;
  DelayInjector injector({held_until_vcpu_passes(kBoundNs)}, 1);
  std::atomic<bool> stop{false};
  std::thread host([&] {
    ThreadRole role(Role::kHostThread);  // the wrong role at the right point
    while (!stop) inject::at(Point::kSpteFaultAfterGup);
  });
  Clock::time_point start = Clock::now();
  {
    ThreadRole role(Role::kRemapper);
    inject::at(Point::kHostBeforePtl);
  }
  Clock::duration held = Clock::now() - start;
  stop = true;
  host.join();
  EXPECT_GE(held, std::chrono::nanoseconds(kBoundNs));
}

TEST(DelayInjector, OnlyTheDelayedRoleWaits) {
  DelayInjector injector({held_until_vcpu_passes(4'000'000'000u)}, 1);
  ThreadRole role(Role::kVcpu);
  inject::at(Point::kHostBeforePtl);  // returns at once: not the remapper
  EXPECT_EQ(injector.delays_injected(), 0u);
}

}  // namespace
}  // namespace sptelab::scenarios
