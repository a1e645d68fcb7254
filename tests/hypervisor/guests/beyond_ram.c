/* Touches the first page past the end of guest RAM (arg 0: 1 = write). */
#include "sptelab_guest.h"

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)vcpu, (void)vcpus;
  volatile uint64_t* beyond = (volatile uint64_t*)(ram_bytes + 0x1008);
  if (sptelab_arg(0) == 1) {
    *beyond = 1;
  } else {
    (void)*beyond;
  }
  sptelab_exit(0);
}
SPTELAB_GUEST_MAIN(guest_main);
