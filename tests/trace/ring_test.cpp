#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "trace/cost.h"
#include "trace/export.h"
#include "trace/file.h"
#include "trace/trace.h"

namespace sptelab::trace {
namespace {

TEST(Trace, DisabledEmitsNothing) {
  reset();
  enable(false);
  emit(Kind::kPteSet, 1, 2, 3);
  EXPECT_TRUE(snapshot().events.empty());
}

TEST(Trace, EventsKeepProgramOrderAndArguments) {
  Session session;
  emit(Kind::kPtlLock, 7);
  emit(Kind::kPteClear, 0x1000, 0x5063);
  emit(Kind::kPtlUnlock, 7);
  Snapshot snap = snapshot();
  ASSERT_EQ(snap.events.size(), 3u);
  EXPECT_EQ(snap.events[0].kind, Kind::kPtlLock);
  EXPECT_EQ(snap.events[1].kind, Kind::kPteClear);
  EXPECT_EQ(snap.events[1].args[0], 0x1000u);
  EXPECT_EQ(snap.events[1].args[1], 0x5063u);
  EXPECT_EQ(snap.events[2].kind, Kind::kPtlUnlock);
  EXPECT_LE(snap.events[0].ts_ns, snap.events[2].ts_ns);
  EXPECT_EQ(snap.overwritten, 0u);
}

TEST(Trace, OverflowIsCountedNotSilent) {
  set_ring_capacity_log2(4);  // 16 events, for rings created from now on
  Session session;
  std::thread writer([] {
    for (int i = 0; i < 100; ++i) emit(Kind::kCheckpoint, static_cast<uint64_t>(i));
  });
  writer.join();
  set_ring_capacity_log2(16);
  Snapshot snap = snapshot();
  EXPECT_EQ(snap.overwritten, 84u);
  ASSERT_EQ(snap.events.size(), 16u);
  EXPECT_EQ(snap.events.front().args[0], 84u);  // the newest 16 survive
  EXPECT_EQ(snap.events.back().args[0], 99u);
}

TEST(Trace, OverflowReachesTheFileAndEveryReader) {
  set_ring_capacity_log2(4);
  Session session;
  std::thread writer([] {
    name_this_thread("busy");
    for (int i = 0; i < 100; ++i) emit(Kind::kCheckpoint, static_cast<uint64_t>(i));
  });
  writer.join();
  set_ring_capacity_log2(16);
  TraceFile file = decode_trace(encode_trace(make_trace_file(snapshot())), "mem");
  EXPECT_EQ(file.snapshot.overwritten, 84u);
  std::string text = format_text(file);
  EXPECT_NE(text.find("16 events, 1 threads, 84 events lost to ring overflow"), std::string::npos)
      << text;
  EXPECT_NE(text.find("busy-"), std::string::npos);
  EXPECT_NE(format_window(file, file.start_ns(), 0, 1).find("84 events lost"), std::string::npos);
}

TEST(Trace, EmitCostLeavesNoEventsAndRestoresTheSwitch) {
  reset();
  enable(false);
  EmitCost cost = measure_emit_cost(1000);
  EXPECT_EQ(cost.events, 1000u);
  EXPECT_GT(cost.enabled_ns, 0.0);
  EXPECT_FALSE(enabled());
  EXPECT_TRUE(snapshot().events.empty());
  {
    Session session;
    measure_emit_cost(100);
    EXPECT_TRUE(enabled());
    EXPECT_TRUE(snapshot().events.empty());
  }
}

TEST(Trace, ThreadsGetTheirOwnNamedTracks) {
  Session session;
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) {
    threads.emplace_back([t] {
      name_this_thread("worker" + std::to_string(t));
      for (int i = 0; i < 1000; ++i) emit(Kind::kCheckpoint, static_cast<uint64_t>(t), i);
    });
  }
  for (auto& thread : threads) thread.join();
  Snapshot snap = snapshot();
  EXPECT_EQ(snap.events.size(), 3000u);
  int named = 0;
  for (const auto& info : snap.threads) named += info.name.rfind("worker", 0) == 0;
  EXPECT_EQ(named, 3);
  for (size_t i = 1; i < snap.events.size(); ++i) {
    EXPECT_LE(snap.events[i - 1].ts_ns, snap.events[i].ts_ns);
  }
}

TEST(Trace, KindNamesRoundTrip) {
  for (size_t i = 0; i < static_cast<size_t>(Kind::kCount); ++i) {
    auto kind = static_cast<Kind>(i);
    auto back = kind_from_name(info(kind).name);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(*back, kind);
  }
  EXPECT_EQ(info(Kind::kSpteInstall).name, "kvm_mmu_set_spte");
}

}  // namespace
}  // namespace sptelab::trace
