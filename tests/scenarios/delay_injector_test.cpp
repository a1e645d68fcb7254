// Delay injection: a kPassed delay ends exactly when a thread of the named
// role passes the named point (what a guided race waits for), and never
// because some other thread passed it; a kGuestFault delay ends when a
// guest fault finishes and is skipped where none can come.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "scenarios/delays.h"
#include "scenarios/race.h"

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

// native_delays' fault-in-window: held until the watch reports a finished
// fault, and not at all where no fault can come.
DelayPoint held_until_a_fault_finishes(uint32_t bound_ns) {
  return {Point::kHostBeforePtl, Role::kRemapper, bound_ns, 1000, DelayUntil::kGuestFault};
}

TEST(DelayInjector, GuestFaultDelayEndsWhenAFaultFinishes) {
  constexpr uint32_t kBoundNs = 4'000'000'000u;
  std::atomic<uint64_t> finished{0};
  ProgressSources sources;
  sources.guest_fault_watch = [&finished] {
    return [&finished, start = finished.load()] { return finished.load() != start; };
  };
  sources.fault_can_come = [](const inject::Context&) { return true; };
  DelayInjector injector({held_until_a_fault_finishes(kBoundNs)}, 1, sources);
  std::atomic<bool> resumed{false};
  Clock::time_point start = Clock::now();
  std::thread remapper([&] {
    ThreadRole role(Role::kRemapper);
    inject::at(Point::kHostBeforePtl);
    resumed = true;
  });
  while (injector.delays_injected() == 0) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(resumed.load()) << "the delay ended before any fault finished";
  finished.fetch_add(1);
  remapper.join();
  EXPECT_LT(Clock::now() - start, std::chrono::nanoseconds(kBoundNs));
}

TEST(DelayInjector, GuestFaultDelayIsSkippedWhereNoFaultCanCome) {
  ProgressSources sources;
  sources.guest_fault_watch = [] { return [] { return false; }; };
  uint64_t asked_about = 0;
  sources.fault_can_come = [&asked_about](const inject::Context& context) {
    asked_about = context.addr;
    return false;
  };
  DelayInjector injector({held_until_a_fault_finishes(4'000'000'000u)}, 1, sources);
  ThreadRole role(Role::kRemapper);
  inject::at(Point::kHostBeforePtl, inject::Context{.addr = 0x7000});  // returns at once
  EXPECT_EQ(injector.delays_injected(), 0u);
  EXPECT_EQ(asked_about, 0x7000u);
}

// A fault in flight when the window opened read the invalidation state
// before it: its retry does not end the wait; a fix, or the retry of a fault
// begun since, does.
TEST(GuestFaultFinished, CountsFixesAndOnlyTheRetriesOfFaultsBegunSince) {
  spte::MmuStats start;
  start.faults = 10;
  start.fixed = 8;
  start.retries = 1;  // one fault in flight
  spte::MmuStats now = start;
  EXPECT_FALSE(guest_fault_finished(start, now));
  now.retries = 2;  // the in-flight fault retried
  EXPECT_FALSE(guest_fault_finished(start, now));
  now.faults = 11;
  now.retries = 3;  // and the fault begun after it retried too
  EXPECT_TRUE(guest_fault_finished(start, now));
  spte::MmuStats fixed = start;
  fixed.fixed = 9;
  EXPECT_TRUE(guest_fault_finished(start, fixed));
  spte::MmuStats idle;  // nothing in flight: the first retry counts
  spte::MmuStats retried = idle;
  retried.faults = 1;
  retried.retries = 1;
  EXPECT_TRUE(guest_fault_finished(idle, retried));
}

}  // namespace
}  // namespace sptelab::scenarios
