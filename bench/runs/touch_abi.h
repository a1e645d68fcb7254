/*
 * The benchtouch guest's interface, shared by the guest (touch.c) and the
 * whole-run benchmarks that time it (fault_bench.cpp). Plain C so that both
 * the freestanding guest and the C++ host include it.
 */
#ifndef SPTELAB_BENCH_TOUCH_ABI_H
#define SPTELAB_BENCH_TOUCH_ABI_H

/* Guest arguments (VmConfig::guest_args, in this order). */
#define BENCH_TOUCH_ARG_PAGES 0u  /* pages to touch (0: as many as fit) */
#define BENCH_TOUCH_ARG_MODE 1u   /* BENCH_TOUCH_SEQUENTIAL or BENCH_TOUCH_RANDOM */
#define BENCH_TOUCH_ARG_STRIDE 2u /* distance between touched pages, in pages (0: 1) */
#define BENCH_TOUCH_ARG_PASSES 3u /* passes over the same pages in the same order (0: 3) */
#define BENCH_TOUCH_ARG_SEED 4u   /* random mode: seed of the order */
#define BENCH_TOUCH_ARG_NATIVE 5u /* 1: run the passes in native mode (CPL3) */

#define BENCH_TOUCH_SEQUENTIAL 0u
#define BENCH_TOUCH_RANDOM 1u
/* Each "page" of a pass is one `out` to BENCH_TOUCH_PORT instead of a store:
 * the bare exit round trip, no memory touched. */
#define BENCH_TOUCH_PORT_LOOP 2u
#define BENCH_TOUCH_PORT 0x1F0u

/* Report keys (value: the pass number). Every vCPU reports the start and the
 * end of each pass; a barrier separates passes, so no vCPU starts pass p+1
 * before every vCPU has reported the end of pass p. The host timestamps the
 * reports as they arrive: the port exit costs microseconds, a pass over
 * thousands of pages costs tens of milliseconds. */
#define BENCH_TOUCH_REPORT_PASS_BEGIN 0xBE00u
#define BENCH_TOUCH_REPORT_PASS_END 0xBE01u
/* Pages this vCPU touches per pass (reported once, before pass 0). */
#define BENCH_TOUCH_REPORT_PAGES 0xBE02u

#endif /* SPTELAB_BENCH_TOUCH_ABI_H */
