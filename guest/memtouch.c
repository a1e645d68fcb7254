/* memtouch: touches the guest RAM above the image page by page, then checks
 * every page kept what was written to it.
 *
 * Arguments (sptelab run memtouch --arg PAGES --arg MODE --arg PASSES --arg SEED):
 *   0 PAGES   pages to touch; 0 (default) = every page from the end of the
 *             image to the end of RAM
 *   1 MODE    0 sequential (default), 1 random order (a full-period LCG walk)
 *   2 PASSES  write+verify passes; 0 = 1
 *   3 SEED    seed for the random order
 * The pages are split between the vCPUs (page i goes to vCPU i % vcpus).
 * Reports: SPTELAB_REPORT_MEMTOUCH_PAGES and _ERRORS per vCPU. vCPU 0 waits
 * for the others, prints a summary and exits with 0 if every page verified,
 * 1 otherwise. */
#include "sptelab_guest.h"

static volatile uint32_t finished;
static volatile uint64_t total_errors;

static uint64_t page_stamp(uint64_t gpa, uint32_t pass) {
  return (gpa * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)pass << 48) ^ 0x5eed;
}

/* The i-th page this vCPU visits: a permutation of 0..count-1 for the
 * random mode (LCG with modulus a power of two >= count, values >= count
 * skipped; a=5, odd c gives a full period). */
struct walker {
  uint64_t count, modulus, state, c;
  int random;
};

static void walker_init(struct walker* w, uint64_t count, int random, uint32_t seed) {
  w->count = count;
  w->random = random;
  w->modulus = 1;
  while (w->modulus < count) w->modulus <<= 1;
  w->state = seed & (w->modulus - 1);
  w->c = (seed | 1u) & (w->modulus - 1);
  if (w->c == 0) w->c = 1;
}

static uint64_t walker_next(struct walker* w, uint64_t i) {
  if (!w->random) return i;
  do {
    w->state = (w->state * 5 + w->c) & (w->modulus - 1);
  } while (w->state >= w->count);
  return w->state;
}

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  uint64_t first = (uint64_t)_end;
  uint64_t available = ram_bytes > first ? (ram_bytes - first) >> 12 : 0;
  uint64_t pages = sptelab_arg(0);
  if (pages == 0 || pages > available) pages = available;
  int random = sptelab_arg(1) == 1;
  uint32_t passes = sptelab_arg_or(2, 1);
  uint32_t seed = sptelab_arg(3);

  uint64_t touched = 0, errors = 0;
  for (uint32_t pass = 0; pass < passes; ++pass) {
    struct walker w;
    walker_init(&w, pages, random, seed + pass);
    for (uint64_t i = 0; i < pages; ++i) {
      uint64_t page = walker_next(&w, i);
      if (page % vcpus != vcpu) continue;
      volatile uint64_t* p = (volatile uint64_t*)(first + (page << 12));
      p[0] = page_stamp((uint64_t)p, pass);
      p[511] = ~page_stamp((uint64_t)p, pass);
      ++touched;
    }
    for (uint64_t page = vcpu; page < pages; page += vcpus) {
      volatile uint64_t* p = (volatile uint64_t*)(first + (page << 12));
      if (p[0] != page_stamp((uint64_t)p, pass) || p[511] != ~page_stamp((uint64_t)p, pass)) {
        ++errors;
      }
    }
  }
  sptelab_report(SPTELAB_REPORT_MEMTOUCH_PAGES, (uint32_t)touched);
  sptelab_report(SPTELAB_REPORT_MEMTOUCH_ERRORS, (uint32_t)errors);
  __atomic_fetch_add(&total_errors, errors, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&finished, 1, __ATOMIC_SEQ_CST);
  if (vcpu != 0) sptelab_halt();

  sptelab_wait_for(&finished, (uint32_t)vcpus);
  sptelab_puts("memtouch: ");
  sptelab_put_u64(pages);
  sptelab_puts(random ? " pages in random order" : " pages in order");
  sptelab_puts(", ");
  sptelab_put_u64(passes);
  sptelab_puts(" pass(es), ");
  sptelab_put_u64(vcpus);
  sptelab_puts(" vCPU(s): ");
  sptelab_put_u64(total_errors);
  sptelab_puts(" error(s)\n");
  sptelab_exit(total_errors == 0 ? 0 : 1);
}
SPTELAB_GUEST_MAIN(guest_main);
