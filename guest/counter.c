/* counter: every vCPU increments two counters in one shared page, one under
 * a spinlock and one with lock xadd, while the host side may move the page
 * or add increments of its own (struct sptelab_counter_page).
 *
 * Arguments (sptelab run counter --arg ITERATIONS --arg MODE):
 *   0 ITERATIONS  increments per vCPU and counter; 0 = 100000 (the guest runs
 *                 emulated on the lab machines: about 3 us an iteration)
 *   1 MODE        1 spinlock counter only, 2 lock-xadd counter only,
 *                 0 or 3 both (default)
 * vCPU 0 reports the page's address (SPTELAB_REPORT_COUNTER_PAGE) before it
 * starts. When every vCPU is done, vCPU 0 checks each counter equals
 * vcpus * ITERATIONS plus what the host side added (host_locked,
 * host_atomic), reports both totals, and exits with 0 if they are exact,
 * 1 if an increment was lost. */
#include "sptelab_guest.h"

static struct sptelab_counter_page page __attribute__((aligned(4096)));
static volatile uint32_t started;

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)ram_bytes;
  uint64_t iterations = sptelab_arg_or(0, 100000);
  uint32_t mode = sptelab_arg(1);
  if (mode == 0 || mode > 3) mode = 3;
  if (vcpu == 0) sptelab_report(SPTELAB_REPORT_COUNTER_PAGE, (uint32_t)(uintptr_t)&page);
  __atomic_fetch_add(&started, 1, __ATOMIC_SEQ_CST);
  sptelab_wait_for(&started, (uint32_t)vcpus);

  uint64_t seen = 0;
  for (uint64_t i = 0; i < iterations; ++i) {
    if (mode & 1) {
      sptelab_spin_lock(&page.lock);
      page.locked_count = page.locked_count + 1;
      sptelab_spin_unlock(&page.lock);
    }
    if (mode & 2) seen += __atomic_fetch_add(&page.atomic_count, 1, __ATOMIC_SEQ_CST);
  }
  /* `seen` keeps the fetch (lock xadd) from becoming a lock add. */
  __asm__ volatile("" : : "r"(seen));
  __atomic_fetch_add(&page.done, 1, __ATOMIC_SEQ_CST);
  if (vcpu != 0) sptelab_halt();

  sptelab_wait_for(&page.done, (uint32_t)vcpus);
  sptelab_spin_lock(&page.lock);
  uint64_t locked = page.locked_count, host_locked = page.host_locked;
  sptelab_spin_unlock(&page.lock);
  uint64_t atomic = __atomic_load_n(&page.atomic_count, __ATOMIC_SEQ_CST);
  uint64_t host_atomic = __atomic_load_n(&page.host_atomic, __ATOMIC_SEQ_CST);
  uint64_t want_locked = (mode & 1) ? vcpus * iterations + host_locked : host_locked;
  uint64_t want_atomic = (mode & 2) ? vcpus * iterations + host_atomic : host_atomic;
  sptelab_report(SPTELAB_REPORT_COUNTER_LOCKED, (uint32_t)locked);
  sptelab_report(SPTELAB_REPORT_COUNTER_ATOMIC, (uint32_t)atomic);

  sptelab_puts("counter: locked ");
  sptelab_put_u64(locked);
  sptelab_puts(" of ");
  sptelab_put_u64(want_locked);
  sptelab_puts(", atomic ");
  sptelab_put_u64(atomic);
  sptelab_puts(" of ");
  sptelab_put_u64(want_atomic);
  int exact = locked == want_locked && atomic == want_atomic;
  sptelab_puts(exact ? ": exact\n" : ": INCREMENTS LOST\n");
  sptelab_exit(exact ? 0 : 1);
}
SPTELAB_GUEST_MAIN(guest_main);
