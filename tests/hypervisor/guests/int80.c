/* Executes int $0x80 (a Linux system call) on every vCPU: sptelab's IDT has
 * no gate for it, and the crash must say so however many vCPUs run it. */
#include "sptelab_guest.h"

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)vcpu, (void)vcpus, (void)ram_bytes;
  __asm__ volatile("mov $1, %%eax\n\tint $0x80" : : : "rax", "memory");
}
SPTELAB_GUEST_MAIN(guest_main);
