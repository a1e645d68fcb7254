/* Reads a linear address no page table maps and that is no physical
 * address either (the top of the address space). */
#include "sptelab_guest.h"

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)vcpu, (void)vcpus, (void)ram_bytes;
  (void)*(volatile uint64_t*)0xffffffffffffff20ull;
  sptelab_exit(0);
}
SPTELAB_GUEST_MAIN(guest_main);
