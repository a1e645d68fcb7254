#include "base/inject.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

namespace sptelab::inject {
namespace {

TEST(Inject, DisarmedPointCallsNothing) {
  clear_all();
  int calls = 0;
  {
    ScopedHook hook(Point::kHostAfterPteClear, [&](Point, const Context&) { ++calls; });
    at(Point::kHostBeforePtl);
    EXPECT_EQ(calls, 0);
    at(Point::kHostAfterPteClear, {.addr = 0x1000});
    EXPECT_EQ(calls, 1);
  }
  at(Point::kHostAfterPteClear);
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(detail::armed_count.load(), 0u);
}

TEST(Inject, HookSeesContext) {
  uint64_t seen_gfn = 0;
  ScopedHook hook(Point::kSpteFaultAfterGup, [&](Point point, const Context& context) {
    EXPECT_EQ(point, Point::kSpteFaultAfterGup);
    seen_gfn = context.gfn;
  });
  at(Point::kSpteFaultAfterGup, {.gfn = 42});
  EXPECT_EQ(seen_gfn, 42u);
}

TEST(Inject, NamesRoundTrip) {
  for (size_t i = 0; i < static_cast<size_t>(Point::kCount); ++i) {
    auto point = static_cast<Point>(i);
    auto back = from_name(name(point));
    ASSERT_TRUE(back.has_value()) << name(point);
    EXPECT_EQ(*back, point);
  }
  EXPECT_FALSE(from_name("no_such_point").has_value());
}

TEST(Inject, HookCanPauseAnotherThread) {
  std::atomic<bool> paused{false};
  std::atomic<bool> release{false};
  ScopedHook hook(Point::kHostBeforeRelease, [&](Point, const Context&) {
    paused = true;
    while (!release) std::this_thread::yield();
  });
  std::atomic<bool> done{false};
  std::thread worker([&] {
    at(Point::kHostBeforeRelease);
    done = true;
  });
  while (!paused) std::this_thread::yield();
  EXPECT_FALSE(done.load());
  release = true;
  worker.join();
  EXPECT_TRUE(done.load());
}

}  // namespace
}  // namespace sptelab::inject
