/* hello: vCPU 0 prints a greeting and ends the VM with status 0; the other
 * vCPUs halt. The smallest complete example of the guest ABI. */
#include "sptelab_guest.h"

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  if (vcpu != 0) sptelab_halt();
  sptelab_puts("Hello from the sptelab toy guest: vCPU 0 of ");
  sptelab_put_u64(vcpus);
  sptelab_puts(", ");
  sptelab_put_u64(ram_bytes >> 20);
  sptelab_puts(" MiB of RAM.\n");
  sptelab_exit(0);
}
SPTELAB_GUEST_MAIN(guest_main);
