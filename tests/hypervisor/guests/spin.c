/* Never finishes: every vCPU spins (the timeout and stop tests). */
#include "sptelab_guest.h"

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)vcpu, (void)vcpus, (void)ram_bytes;
  for (;;) sptelab_pause();
}
SPTELAB_GUEST_MAIN(guest_main);
