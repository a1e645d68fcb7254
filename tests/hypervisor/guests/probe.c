/* Drives the exit-loop corner cases with the test's help on scenario ports.
 *   arg 0 = 1: write a page, ask the host (port 0x100, value = its gpa) to
 *              make the page-table page mapping it and the page itself
 *              inaccessible, read it back; exit 0 if the value survived.
 *   arg 0 = 2: report (key 2) the gpa of a page, then lock xadd on it
 *              arg 1 times while the host zaps it; report (key 1) and check
 *              the count; exit 0 if it is exact.
 *   arg 0 = 3: ask the host (port 0x101, value = gpa) to zap the page the
 *              following code is on, then keep running; exit 42.
 *   arg 0 = 4: ask the host (port 0x102) to zap the vCPU's stack page, then
 *              call a function (pushes); exit 43 if the stack is intact.
 *   arg 0 = 5: every vCPU halts.
 *   arg 0 = 6: in native mode: lock xadd arg 1 times on a page whose gpa it
 *              reports (key 2) while the host zaps it; also reads and
 *              writes through a straddling unaligned word and a rep movsb;
 *              exit 0 if everything is exact.
 *   arg 0 | 16: the same mode, entered at CPL3 (sptelab_enter_native). */
#include "sptelab_guest.h"

static volatile uint64_t data_page[512] __attribute__((aligned(4096)));
static volatile uint64_t locked_page[512] __attribute__((aligned(4096)));

__attribute__((noinline, aligned(4096))) static uint32_t after_code_zap(void) {
  sptelab_outl(0x101, (uint32_t)(uintptr_t)&after_code_zap);
  uint32_t sum = 0;
  for (uint32_t i = 0; i < 6; ++i) sum += i; /* 15, fetched from the zapped page */
  return sum + 27;
}

__attribute__((noinline)) static uint64_t deep(uint64_t n) {
  volatile uint64_t pad[64];
  for (uint32_t i = 0; i < 64; ++i) pad[i] = n + i;
  return n == 0 ? pad[63] : deep(n - 1) + pad[1];
}

static volatile uint8_t copy_pages[3 * 4096] __attribute__((aligned(4096)));

static uint32_t native_checks(uint32_t n) {
  sptelab_report(2, (uint32_t)(uintptr_t)locked_page);
  for (uint32_t i = 0; i < n; ++i) __atomic_fetch_add(&locked_page[0], 1, __ATOMIC_SEQ_CST);
  sptelab_report(1, (uint32_t)locked_page[0]);
  uint32_t bad = locked_page[0] == n ? 0 : 1;
  /* An unaligned word across the first two copy pages (the host zaps the
   * second one when it sees key 3), then a string copy into the third. */
  volatile uint64_t* straddle = (volatile uint64_t*)(uintptr_t)(copy_pages + 4096 - 4);
  sptelab_report(3, (uint32_t)(uintptr_t)(copy_pages + 4096));
  *straddle = 0x1122334455667788ull;
  sptelab_report(3, (uint32_t)(uintptr_t)(copy_pages + 4096));
  if (*straddle != 0x1122334455667788ull) bad |= 2;
  sptelab_report(3, (uint32_t)(uintptr_t)(copy_pages + 8192));
  __asm__ volatile("rep movsb"
                   :
                   : "S"(copy_pages + 4096 - 4), "D"(copy_pages + 8192 + 100), "c"(8)
                   : "memory");
  if (*(volatile uint64_t*)(uintptr_t)(copy_pages + 8192 + 100) != 0x1122334455667788ull) {
    bad |= 4;
  }
  return bad;
}

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)vcpu, (void)vcpus, (void)ram_bytes;
  uint32_t mode = sptelab_arg(0);
  if (mode & 16) {
    sptelab_enter_native();
    mode &= 15;
  }
  switch (mode) {
    case 1:
      data_page[7] = 0xfeedface;
      sptelab_outl(0x100, (uint32_t)(uintptr_t)data_page);
      sptelab_exit(data_page[7] == 0xfeedface ? 0 : 1);
    case 2: {
      uint32_t n = sptelab_arg(1);
      sptelab_report(2, (uint32_t)(uintptr_t)locked_page);
      for (uint32_t i = 0; i < n; ++i) __atomic_fetch_add(&locked_page[0], 1, __ATOMIC_SEQ_CST);
      sptelab_report(1, (uint32_t)locked_page[0]);
      sptelab_exit(locked_page[0] == n ? 0 : 1);
    }
    case 3:
      sptelab_exit(after_code_zap());
    case 4: {
      uint64_t before = deep(3);
      uint64_t rsp;
      __asm__ volatile("mov %%rsp, %0" : "=r"(rsp));
      sptelab_outl(0x102, (uint32_t)rsp);
      sptelab_exit(deep(3) == before ? 43 : 1);
    }
    case 5:
      sptelab_halt();
    case 6:
      sptelab_exit(native_checks(sptelab_arg(1)));
    default:
      sptelab_exit(99);
  }
}
SPTELAB_GUEST_MAIN(guest_main);
