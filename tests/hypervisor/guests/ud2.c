/* Executes an undefined instruction with sptelab's IDT in place. */
#include "sptelab_guest.h"

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)vcpu, (void)vcpus, (void)ram_bytes;
  __asm__ volatile("mov $0x1234, %%rbx\n\tud2" : : : "rbx");
}
SPTELAB_GUEST_MAIN(guest_main);
