/* Loads an empty IDT and executes ud2: the #UD cannot be delivered, nor the
 * #DF after it, so the CPU shuts down (KVM_EXIT_SHUTDOWN). */
#include "sptelab_guest.h"

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)vcpu, (void)vcpus, (void)ram_bytes;
  struct __attribute__((packed)) {
    uint16_t limit;
    uint64_t base;
  } empty = {0, 0};
  sptelab_puts("triple_fault: loading an empty IDT\n");
  __asm__ volatile("lidt %0\n\tud2" : : "m"(empty));
}
SPTELAB_GUEST_MAIN(guest_main);
