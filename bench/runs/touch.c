/* benchtouch: the guest of the spte fault benchmarks. It writes one word into
 * each of N pages above its image, and then does the same again, over the
 * same pages in the same order, PASSES times. The first pass takes the
 * faults; the last one is the loop alone. Everything per page is kept to a
 * handful of instructions, because this backend emulates CPL0 guest code at
 * about a microsecond per instruction: the faults must dominate.
 *
 * The pages are split into one contiguous chunk per vCPU; in random mode
 * each vCPU visits its chunk in the order of a full-period LCG over the next
 * power of two (values beyond the chunk skipped), the same order every pass.
 * Arguments and report keys: touch_abi.h. */
#include "sptelab_guest.h"
#include "touch_abi.h"

static volatile uint32_t arrived;

static void barrier(uint64_t vcpus, uint32_t round) {
  __atomic_fetch_add(&arrived, 1, __ATOMIC_SEQ_CST);
  sptelab_wait_for(&arrived, (uint32_t)(vcpus * round));
}

static void touch_sequential(uint64_t first, uint64_t count, uint64_t step) {
  uint64_t end = first + count * step;
  for (uint64_t addr = first; addr < end; addr += step) *(volatile uint64_t*)addr = addr;
}

static void touch_random(uint64_t first, uint64_t count, uint64_t step, uint32_t seed) {
  uint64_t mask = 1;
  while (mask < count) mask <<= 1;
  mask -= 1;
  uint64_t state = seed & mask;
  uint64_t increment = (seed | 1u) & mask;
  if (increment == 0) increment = 1; /* count 1: mask 0, any odd increment */
  for (uint64_t visited = 0; visited < count;) {
    state = (state * 5 + increment) & mask;
    if (state >= count) continue;
    *(volatile uint64_t*)(first + state * step) = state;
    ++visited;
  }
}

static void port_loop(uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) sptelab_outl(BENCH_TOUCH_PORT, (uint32_t)i);
}

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  uint64_t stride = sptelab_arg_or(BENCH_TOUCH_ARG_STRIDE, 1);
  uint64_t step = stride << 12;
  uint64_t first = (uint64_t)_end;
  uint64_t fit = ram_bytes > first ? (ram_bytes - first) / step : 0;
  uint64_t pages = sptelab_arg(BENCH_TOUCH_ARG_PAGES);
  if (pages == 0 || pages > fit) pages = fit;
  uint32_t mode = sptelab_arg(BENCH_TOUCH_ARG_MODE);
  int random = mode == BENCH_TOUCH_RANDOM;
  uint32_t passes = sptelab_arg_or(BENCH_TOUCH_ARG_PASSES, 3);
  uint32_t seed = sptelab_arg(BENCH_TOUCH_ARG_SEED);
  if (sptelab_arg(BENCH_TOUCH_ARG_NATIVE)) sptelab_enter_native();

  uint64_t lo = pages * vcpu / vcpus;
  uint64_t hi = pages * (vcpu + 1) / vcpus;
  uint64_t chunk = first + lo * step;
  sptelab_report(BENCH_TOUCH_REPORT_PAGES, (uint32_t)(hi - lo));
  for (uint32_t pass = 0; pass < passes; ++pass) {
    barrier(vcpus, pass + 1);
    sptelab_report(BENCH_TOUCH_REPORT_PASS_BEGIN, pass);
    if (mode == BENCH_TOUCH_PORT_LOOP) {
      port_loop(hi - lo);
    } else if (random) {
      touch_random(chunk, hi - lo, step, seed);
    } else {
      touch_sequential(chunk, hi - lo, step);
    }
    sptelab_report(BENCH_TOUCH_REPORT_PASS_END, pass);
  }
  barrier(vcpus, passes + 1);
  if (vcpu == 0) sptelab_exit(0);
  sptelab_halt();
}
SPTELAB_GUEST_MAIN(guest_main);
