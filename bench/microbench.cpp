// Micro-benchmarks of the emulated host MM, the notifier chain, the spte
// fault path and tracing (Google Benchmark). They time one primitive each,
// in a tight loop on one thread, with nothing else running: the building
// blocks of the whole-run benchmarks of `sptelab bench`.
//
//   ./sptelab_microbench [--benchmark_filter=REGEX] [--benchmark_min_time=0.05]
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "host/lab.h"
#include "mm/fault.h"
#include "mm/gup.h"
#include "mm/host_cpu.h"
#include "mm/mm.h"
#include "mm/ops.h"
#include "mm/phys_mem.h"
#include "mmu_notifier/chain.h"
#include "spte/mmu.h"
#include "trace/trace.h"

namespace sptelab {
namespace {

constexpr uint32_t kRw = mm::kProtRead | mm::kProtWrite;

// An address space with `pages` pages of anonymous memory.
struct HostFixture {
  explicit HostFixture(uint64_t pages) : phys(pages * 2 + 64), mm(phys) {
    base = mm.mmap_anon(pages * mm::kPageSize, kRw);
  }
  void touch(uint64_t page) {
    mm::MmapReadGuard guard(mm);
    if (mm::handle_mm_fault(mm, base + page * mm::kPageSize, true) != mm::FaultResult::kOk) {
      throw std::runtime_error("host fault failed");
    }
  }
  mm::PhysMem phys;
  mm::Mm mm;
  uint64_t base = 0;
};

// GUP-fast on a present, writable page: lockless walk, reference, re-check.
void BM_GupFast(benchmark::State& state) {
  HostFixture host(1);
  host.touch(0);
  for (auto _ : state) {
    mm::GupResult page = mm::gup_fast(host.mm, host.base, true);
    benchmark::DoNotOptimize(page);
    host.phys.put(page.pfn);
  }
}
BENCHMARK(BM_GupFast);

// GUP slow on the same page: mmap_lock, walk under the PTL.
void BM_GupSlow(benchmark::State& state) {
  HostFixture host(1);
  host.touch(0);
  for (auto _ : state) {
    mm::GupResult page = mm::gup_slow(host.mm, host.base, true);
    benchmark::DoNotOptimize(page);
    host.phys.put(page.pfn);
  }
}
BENCHMARK(BM_GupSlow);

// Host fault, anonymous first touch (do_anonymous_page: a zeroed frame, a
// PTE, rmap). Every 4096 faults the region is zapped, untimed.
void BM_HostFaultAnonFirstTouch(benchmark::State& state) {
  constexpr uint64_t kPages = 4096;
  HostFixture host(kPages);
  uint64_t page = 0;
  for (auto _ : state) {
    if (page == kPages) {
      state.PauseTiming();
      mm::madvise_dontneed(host.mm, host.base, kPages * mm::kPageSize);
      page = 0;
      state.ResumeTiming();
    }
    host.touch(page++);
  }
}
BENCHMARK(BM_HostFaultAnonFirstTouch);

// A one-page TLB shootdown with 1, 2 or 4 host CPUs in the mm's cpumask,
// each holding translations of 16 pages.
void BM_TlbShootdown(benchmark::State& state) {
  HostFixture host(16);
  std::vector<std::unique_ptr<mm::HostCpu>> cpus;
  for (int id = 0; id < state.range(0); ++id) {
    cpus.push_back(std::make_unique<mm::HostCpu>(host.mm, id));
    for (uint64_t page = 0; page < 16; ++page) cpus.back()->store64(host.base + page * 4096, page);
  }
  const uint64_t victim = host.base + 15 * mm::kPageSize;
  for (auto _ : state) host.mm.flush_tlb_range(victim, victim + mm::kPageSize);
  state.counters["cpus"] = static_cast<double>(state.range(0));
}
BENCHMARK(BM_TlbShootdown)->Arg(1)->Arg(2)->Arg(4);

// The host points one single-page change passes (before_change,
// in_ptl_cleared, after_unlock, after_release), dispatched by a chain of
// the given placement to 0, 1 or 4 subscriptions that do nothing.
void BM_NotifierDispatch(benchmark::State& state) {
  const auto placement = mmu_notifier::kAllPlacements[static_cast<size_t>(state.range(0))];
  mmu_notifier::Chain chain(placement);
  std::vector<std::unique_ptr<mmu_notifier::Subscription>> subscriptions;
  for (int i = 0; i < state.range(1); ++i) {
    subscriptions.push_back(std::make_unique<mmu_notifier::Subscription>());
    chain.register_subscription(subscriptions.back().get());
  }
  mm::InvalidateRange range{nullptr, 0x10000, 0x11000, mm::InvalidateEvent::kClear, true};
  for (auto _ : state) {
    chain.before_change(range);
    chain.in_ptl_cleared(range);
    chain.after_unlock(range);
    chain.after_release(range);
  }
  for (auto& subscription : subscriptions) chain.unregister_subscription(subscription.get());
  state.SetLabel(mmu_notifier::placement_name(placement));
}
BENCHMARK(BM_NotifierDispatch)
    ->ArgNames({"placement", "subscriptions"})
    ->ArgsProduct({{0, 1, 2, 3, 4}, {0, 1, 4}});

// An spte fault on guest RAM whose host pages are present (GUP-fast,
// mmu_lock, protocol check, install; sva: the IOMMU's walk and fill under
// mmu_lock), per protocol; no mirror. Every 4096 faults the sptes are
// zapped, untimed.
void BM_SpteFault(benchmark::State& state) {
  constexpr uint64_t kPages = 4096;
  const auto protocol = spte::all_protocols()[static_cast<size_t>(state.range(0))];
  host::Lab lab(host::LabConfig{.scheme = {mmu_notifier::Placement::kStartEnd, protocol},
                                .guest_pages = kPages,
                                .backing = host::Backing::kAnon});
  {
    mm::MmapReadGuard guard(*lab.mm);
    for (spte::Gfn gfn = 0; gfn < kPages; ++gfn) {
      mm::handle_mm_fault(*lab.mm, lab.hva_of(gfn), true);
    }
  }
  spte::Gfn gfn = 0;
  for (auto _ : state) {
    if (gfn == kPages) {
      state.PauseTiming();
      lab.mmu->zap_all();
      gfn = 0;
      state.ResumeTiming();
    }
    benchmark::DoNotOptimize(lab.mmu->fault(gfn++, true, 0));
  }
  state.SetLabel(spte::protocol_name(protocol));
}
BENCHMARK(BM_SpteFault)->DenseRange(0, static_cast<int>(spte::all_protocols().size()) - 1);

// One trace event into this thread's ring, tracing on.
void BM_TraceEmit(benchmark::State& state) {
  trace::Session session;
  uint64_t i = 0;
  for (auto _ : state) trace::emit(trace::Kind::kCheckpoint, i++, 0);
}
BENCHMARK(BM_TraceEmit);

// The same call with tracing off: the cost every emit point pays always.
void BM_TraceEmitDisabled(benchmark::State& state) {
  trace::enable(false);
  uint64_t i = 0;
  for (auto _ : state) trace::emit(trace::Kind::kCheckpoint, i++, 0);
}
BENCHMARK(BM_TraceEmitDisabled);

}  // namespace
}  // namespace sptelab

BENCHMARK_MAIN();
