/*
 * Pages the race scenarios share between sptelab's host side and the
 * workers (software vCPUs, the host thread, or the built-in `race` guest on
 * KVM). Plain C, fixed-size types: both sides include it.
 *
 * The control page never takes part in a race (no host operation touches
 * it), so every worker sees the same copy. The target page (coherence) and
 * the version pages (stale-spte) are the ones the remapper keeps changing.
 */
#ifndef SPTELAB_RACE_H
#define SPTELAB_RACE_H

#include <stdint.h>

#define SPTELAB_RACE_MAX_WORKERS 32u
#define SPTELAB_RACE_VERSION_PAGES 8u

/* stale-spte: published[p] carries this bit while page p is being changed;
 * a reader only judges a read made entirely inside one stable epoch (the
 * published value the same and without the bit before and after). */
#define SPTELAB_RACE_TRANSIENT (1ull << 63)

#define SPTELAB_RACE_COHERENCE 0u
#define SPTELAB_RACE_STALE_SPTE 1u
/* coherence-lockfree: no lock at all; worker w increments counts[w] with
 * lock xadd, and the remapper never waits for the workers. */
#define SPTELAB_RACE_LOCKFREE 2u

/* coherence: the page under test. */
struct sptelab_race_target {
  uint64_t lock;                             /* 0 free, worker id + 1 while held */
  uint64_t counter;                          /* incremented under lock, read-modify-write */
  uint64_t counts[SPTELAB_RACE_MAX_WORKERS]; /* coherence-lockfree: per worker */
};

struct sptelab_race_control {
  uint64_t stop;           /* set by the host: workers finish and halt */
  uint64_t holders;        /* workers inside the critical section */
  uint64_t double_holders; /* a worker entered and found another holder */
  uint64_t stale_reads;    /* stale-spte: a stable-epoch read that saw another version */
  uint64_t scenario;       /* SPTELAB_RACE_COHERENCE or SPTELAB_RACE_STALE_SPTE */
  uint64_t target_gfn;     /* coherence target page */
  uint64_t version_gfn;    /* first of SPTELAB_RACE_VERSION_PAGES version pages */
  uint64_t workers;        /* vCPUs taking part (the host thread is id `workers`) */
  uint64_t published[SPTELAB_RACE_VERSION_PAGES]; /* version published per page */
  uint64_t done[SPTELAB_RACE_MAX_WORKERS];        /* work finished, per worker */
  uint64_t native; /* kvm: the vCPUs run the workload at CPL3 (native mode) */
};

#endif /* SPTELAB_RACE_H */
