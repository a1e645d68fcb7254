/* race: the guest side of `sptelab race --backend kvm`. Every vCPU runs the
 * worker protocol of the scenario that the control page names, the same
 * protocol the software vCPUs run (scenarios/workers.h), until the host sets
 * control->stop; then it halts.
 *
 * Argument 0: the gfn of the control page (struct sptelab_race_control in
 * sptelab_race.h). The host fills the control page before the vCPUs start.
 *
 *  coherence   take the spinlock in the target page, check no one else is
 *              inside (control->holders), read-modify-write the counter,
 *              leave, unlock, count the increment in control->done[vcpu].
 *  stale-spte  read a random version page inside a stable epoch of its
 *              published version (a seqlock read); any other version is a
 *              stale read (control->stale_reads).
 *  coherence-lockfree
 *              lock xadd 1 to target->counts[vcpu], then count it in
 *              control->done[vcpu]: no lock, nothing the remapper waits on.
 *
 * With control->native set, every vCPU enters native mode (CPL3) before the
 * workload (guest/README.md): on PVM it then runs natively, not emulated. */
#include "sptelab_guest.h"
#include "sptelab_race.h"

static volatile struct sptelab_race_control* control;

static int stopped(void) {
  return __atomic_load_n(&control->stop, __ATOMIC_ACQUIRE) != 0;
}

static int native;

static void coherence(uint64_t id) {
  volatile struct sptelab_race_target* target =
      (volatile struct sptelab_race_target*)(uintptr_t)(control->target_gfn << 12);
  uint64_t done = 0;
  while (!stopped()) {
    uint64_t expected = 0;
    while (!__atomic_compare_exchange_n(&target->lock, &expected, id + 1, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
      if (stopped()) return;
      expected = 0;
      sptelab_pause();
    }
    if (__atomic_fetch_add(&control->holders, 1, __ATOMIC_ACQ_REL) != 0) {
      __atomic_fetch_add(&control->double_holders, 1, __ATOMIC_RELAXED);
    }
    target->counter = target->counter + 1;
    __atomic_fetch_sub(&control->holders, 1, __ATOMIC_ACQ_REL);
    __atomic_store_n(&target->lock, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&control->done[id], ++done, __ATOMIC_RELEASE);
    /* Natively this loop would retake the lock within nanoseconds, before
     * the host thread or the remapper ever saw it free. */
    if (native) {
      for (int i = 0; i < 32; ++i) sptelab_pause();
    }
  }
}

static void lockfree(uint64_t id) {
  volatile struct sptelab_race_target* target =
      (volatile struct sptelab_race_target*)(uintptr_t)(control->target_gfn << 12);
  uint64_t done = 0;
  while (!stopped()) {
    __atomic_fetch_add(&target->counts[id], 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&control->done[id], ++done, __ATOMIC_RELEASE);
  }
}

static void stale_reader(uint64_t id) {
  uint64_t done = 0;
  uint64_t state = 0x9e3779b97f4a7c15ull * (id + 1);
  /* Read once, as target_gfn above: the control page is guest RAM, which a
   * host operation may reach (fork write-protects all of it), and under a
   * racy scheme a stale spte can show this vCPU a freed copy of it. Its
   * counters then go wrong, which the detectors see; a pointer built from
   * it would crash the guest instead. */
  const uint64_t version_gfn = control->version_gfn;
  while (!stopped()) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    uint64_t page = (state >> 33) % SPTELAB_RACE_VERSION_PAGES;
    volatile uint64_t* version = (volatile uint64_t*)(uintptr_t)((version_gfn + page) << 12);
    uint64_t before = __atomic_load_n(&control->published[page], __ATOMIC_ACQUIRE);
    uint64_t seen = *version;
    uint64_t after = __atomic_load_n(&control->published[page], __ATOMIC_ACQUIRE);
    if (after == before && !(before & SPTELAB_RACE_TRANSIENT) && seen != before) {
      __atomic_fetch_add(&control->stale_reads, 1, __ATOMIC_RELAXED);
    }
    __atomic_store_n(&control->done[id], ++done, __ATOMIC_RELEASE);
  }
}

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)vcpus;
  uint64_t control_gfn = sptelab_arg(0);
  if (control_gfn == 0 || (control_gfn << 12) >= ram_bytes) {
    sptelab_puts("race: argument 0 must be the control page's gfn inside RAM\n");
    sptelab_exit(2);
  }
  control = (volatile struct sptelab_race_control*)(uintptr_t)(control_gfn << 12);
  native = control->native != 0;
  if (native) sptelab_enter_native();
  if (control->scenario == SPTELAB_RACE_COHERENCE) {
    coherence(vcpu);
  } else if (control->scenario == SPTELAB_RACE_LOCKFREE) {
    lockfree(vcpu);
  } else {
    stale_reader(vcpu);
  }
  sptelab_halt();
}
SPTELAB_GUEST_MAIN(guest_main);
