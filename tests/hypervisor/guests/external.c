/* An out-of-tree guest: built by the test at run time with only the public
 * header and the command line of guest/README.md. Every vCPU says hello;
 * vCPU 0 waits for all of them and exits with 40 + the number of vCPUs. */
#include "sptelab_guest.h"

static volatile uint32_t arrived;

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)ram_bytes;
  sptelab_puts("external guest: vCPU ");
  sptelab_put_u64(vcpu);
  sptelab_puts(" of ");
  sptelab_put_u64(vcpus);
  sptelab_putc('\n');
  __atomic_fetch_add(&arrived, 1, __ATOMIC_SEQ_CST);
  if (vcpu != 0) sptelab_halt();
  sptelab_wait_for(&arrived, (uint32_t)vcpus);
  sptelab_exit(40 + (uint32_t)vcpus);
}
SPTELAB_GUEST_MAIN(guest_main);
