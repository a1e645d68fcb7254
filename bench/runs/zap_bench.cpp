// range_zap: one MADV_DONTNEED over N pages a guest has just touched.
//
//  measured  the emulated host's madvise_dontneed over guest RAM mapped by
//            the scheme's spte::Mmu (the notifier zaps the N sptes, the
//            guest window makes them inaccessible: one mprotect per run of
//            consecutive gfns, which makes the real kernel zap its shadow
//            PTEs too), then the emulated host zaps and frees the pages.
//  baseline  madvise(MADV_DONTNEED) on the real anonymous memory backing a
//            real KVM guest's memslot: the real kernel zaps and frees the
//            pages and its MMU notifier zaps KVM's shadow PTEs.
// Both zap while the VM still exists, right after the guest has touched the
// pages twice (so every layer has them mapped).
#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "base/error.h"
#include "bench/runs/catalog.h"
#include "bench/runs/cpu_clock.h"
#include "bench/runs/stacks.h"
#include "host/lab.h"
#include "hypervisor/vm.h"
#include "mm/fault.h"
#include "mm/ops.h"
#include "mm/phys_mem.h"
#include "spte/mmu.h"

namespace sptelab::bench {
namespace {

const spte::Scheme kZapScheme{mmu_notifier::Placement::kStartEnd, spte::Protocol::kSeqCount};
constexpr uint32_t kZapFaultAround = 16;

// CPU seconds of this thread since `start` (cpu_clock.h): the zap runs on
// the calling thread in both cases, in the real kernel for the baseline.
double seconds_since(double start) {
  return thread_cpu_seconds() - start;
}

struct Zap {
  double us_per_page = 0;
  double sptes_zapped = 0;  // emulated only: sptes the notifier zapped
};

// Touches `pages` pages (twice), then times `zap` on the live stack.
Zap zap_after_touch(const BenchEnv& env, uint64_t ram_bytes, uint64_t pages,
                    const StackBuilder& build,
                    const std::function<double(host::RunStack&, uint64_t first_gfn)>& zap) {
  TouchConfig config;
  config.guest_path = env.touch_guest;
  config.ram_bytes = ram_bytes;
  config.pages = pages;
  config.passes = 2;
  const uint64_t first_gfn = touch_first_gfn(env.touch_guest, ram_bytes);
  double seconds = 0;
  uint64_t zapped_before = 0;
  uint64_t zapped_after = 0;
  run_touch(config, build, {}, [&](host::RunStack& stack) {
    if (host::Lab* lab = stack.lab()) zapped_before = lab->mmu->stats().zaps;
    seconds = zap(stack, first_gfn);
    if (host::Lab* lab = stack.lab()) zapped_after = lab->mmu->stats().zaps;
  });
  return {seconds / static_cast<double>(pages) * 1e6,
          static_cast<double>(zapped_after - zapped_before)};
}

double emulated_dontneed(host::RunStack& stack, uint64_t first_gfn, uint64_t pages) {
  host::Lab& lab = *stack.lab();
  const double start = thread_cpu_seconds();
  bool covered = mm::madvise_dontneed(*lab.mm, lab.hva_of(first_gfn), pages * mm::kPageSize);
  const double seconds = seconds_since(start);
  if (!covered) throw_internal("range_zap: the emulated madvise found no VMA over guest RAM");
  return seconds;
}

double real_dontneed(host::RunStack& stack, uint64_t first_gfn, uint64_t pages) {
  uint8_t* start_address = anonymous_ram(stack) + first_gfn * mm::kPageSize;
  const double start = thread_cpu_seconds();
  int status = madvise(start_address, pages * mm::kPageSize, MADV_DONTNEED);
  const double seconds = seconds_since(start);
  if (status != 0) {
    throw_environment(
        fmt::format("range_zap: madvise(MADV_DONTNEED) failed: {}", std::strerror(errno)));
  }
  return seconds;
}

// Where the emulated zap's time goes, without a VM: the same madvise over
// sptes with no mirror attached (the emulated host, its notifier and the
// spte zap, but no window and no real KVM), and what poisoning the freed
// frames would add (mm::FreedFrames::kPoisoned, which the run stack does not
// use: it runs no mm::audit, and generations catch a stale spte; the real
// kernel frees without touching the page either).
struct ZapBreakdown {
  double host_only_us = 0;
  double poison_us = 0;
};

ZapBreakdown zap_breakdown(uint64_t pages) {
  host::Lab lab(host::LabConfig{.scheme = kZapScheme,
                                .guest_pages = pages,
                                .backing = host::Backing::kAnon,
                                .fault_around = kZapFaultAround,
                                .freed_frames = mm::FreedFrames::kAsIs});  // as the run stack
  {
    mm::MmapReadGuard guard(*lab.mm);
    for (uint64_t gfn = 0; gfn < pages; ++gfn) {
      if (mm::handle_mm_fault(*lab.mm, lab.hva_of(gfn), true) != mm::FaultResult::kOk) {
        throw_environment("range_zap: the emulated host ran out of frames");
      }
    }
  }
  for (uint64_t gfn = 0; gfn < pages; ++gfn) {
    if (!lab.mmu->spte(gfn).present()) lab.mmu->fault(gfn, true, 0);
  }
  ZapBreakdown breakdown;
  double start = thread_cpu_seconds();
  mm::madvise_dontneed(*lab.mm, lab.hva_of(0), pages * mm::kPageSize);
  breakdown.host_only_us = seconds_since(start) / static_cast<double>(pages) * 1e6;
  mm::PhysMem scratch(pages);
  for (mm::Pfn pfn = 0; pfn < pages; ++pfn) scratch.fill_frame(pfn, 0);  // real pages exist
  start = thread_cpu_seconds();
  for (mm::Pfn pfn = 0; pfn < pages; ++pfn) scratch.fill_frame(pfn, mm::PhysMem::kPoison);
  breakdown.poison_us = seconds_since(start) / static_cast<double>(pages) * 1e6;
  return breakdown;
}

Result range_zap(const BenchEnv& env) {
  const uint64_t ram = env.quick ? 16ull << 20 : 64ull << 20;
  const uint64_t small_pages = env.quick ? 512 : 2048;
  const uint64_t large_pages = env.quick ? 2048 : 8192;
  struct Medians {
    double value, baseline, zapped;
  };
  auto measure = [&](uint64_t pages) {
    std::vector<double> emulated, real, zapped;
    for (uint32_t rep = 0; rep < env.repetitions(); ++rep) {
      env.say(fmt::format("range_zap: {} pages", pages));
      Zap e = zap_after_touch(
          env, ram, pages,
          emulated_stack(ram, kZapScheme, kZapFaultAround, HostMemory::kPreallocated),
          [&](host::RunStack& stack, uint64_t first) {
            return emulated_dontneed(stack, first, pages);
          });
      Zap r = zap_after_touch(env, ram, pages, anonymous_stack(ram),
                              [&](host::RunStack& stack, uint64_t first) {
                                return real_dontneed(stack, first, pages);
                              });
      emulated.push_back(e.us_per_page);
      zapped.push_back(e.sptes_zapped);
      real.push_back(r.us_per_page);
    }
    return Medians{median(emulated), median(real), median(zapped)};
  };
  Medians large = measure(large_pages);
  Medians small = measure(small_pages);
  if (large.zapped != static_cast<double>(large_pages)) {
    throw_internal(
        fmt::format("range_zap: the notifier zapped {} sptes, not the {} the guest "
                    "mapped",
                    large.zapped, large_pages));
  }
  Result result;
  result.name = "range_zap";
  result.unit = "us/page";
  result.value = large.value;
  result.baseline = large.baseline;
  result.ratio = ratio_of(result.value, result.baseline);
  result.notes = fmt::format(
      "emulated madvise_dontneed of {} present sptes ({}); baseline: "
      "madvise(MADV_DONTNEED) on a real KVM guest's anonymous memory",
      large_pages, kZapScheme.name());
  result.add("pages", static_cast<double>(large_pages));
  result.add("sptes_zapped", large.zapped);
  result.add("small_pages", static_cast<double>(small_pages));
  result.add("small_value", small.value);
  result.add("small_baseline", small.baseline);
  result.add("small_ratio", ratio_of(small.value, small.baseline));
  result.add("growth", ratio_of(large.value, small.value));
  std::vector<double> host_only, poison;
  for (uint32_t rep = 0; rep < env.repetitions(); ++rep) {
    ZapBreakdown breakdown = zap_breakdown(large_pages);
    host_only.push_back(breakdown.host_only_us);
    poison.push_back(breakdown.poison_us);
  }
  result.add("host_only_us", median(host_only));
  result.add("poison_us", median(poison));
  return result;
}

}  // namespace

std::vector<Benchmark> zap_benchmarks() {
  return {{"range_zap",
           "MADV_DONTNEED over N pages a guest mapped: us/page through the notifier and the "
           "emulated sptes vs the real kernel's madvise on a real KVM guest's memory",
           true, [](const BenchEnv& env) { return std::vector<Result>{range_zap(env)}; }}};
}

}  // namespace sptelab::bench
