/*
 * The sptelab guest ABI: port numbers, entry registers, report keys and the
 * layouts of pages that guests share with sptelab's host side. Plain C with
 * fixed-size types so that both freestanding guests and the C++ host include
 * it; guest/sptelab_guest.h adds the guest-side helpers. This is a stable
 * interface (docs/design.md, "Guest ABI"): append, never renumber.
 */
#ifndef SPTELAB_ABI_H
#define SPTELAB_ABI_H

#include <stdint.h>

/* Where the built-in guests and guest/guest.ld place the image. Page tables,
 * GDT, IDT and stacks live in guest RAM below the lowest PT_LOAD segment, so
 * an image linked lower leaves less room for them (less RAM, fewer vCPUs). */
#define SPTELAB_GUEST_LOAD_ADDRESS 0x400000u

/* Entry state: 64-bit long mode, CPL0, identity map of all guest RAM in
 * 4 KiB pages, interrupts off, rsp at the top of the vCPU's stack (16-byte
 * aligned), rdi = vCPU index, rsi = number of vCPUs, rdx = RAM size in bytes.
 * Every vCPU starts at e_entry at the same time. */
#define SPTELAB_STACK_BYTES 16384u

/* Native mode (guest/README.md): the GDT also holds 64-bit user code and
 * data descriptors (DPL 3). A vCPU that iretq's to these selectors runs its
 * code at CPL3, natively on backends that emulate CPL0 (PVM); every page of
 * the identity map is user-accessible, and the TSS's I/O permission bitmap
 * opens the console, argument, report and exit ports and the scenario ports
 * 0x100..0x1FF at CPL3 (not the exception port). sptelab_enter_native() in
 * sptelab_guest.h does it. */
#define SPTELAB_USER_DATA_SELECTOR 0x1Bu
#define SPTELAB_USER_CODE_SELECTOR 0x23u

/* --- Ports handled by sptelab itself (below 0x100) --- */
/* out: one console byte per byte written (debugcon convention).
 * in: reads 0xE9, so a guest can detect the console. */
#define SPTELAB_PORT_CONSOLE 0xE9u
/* out (32-bit): ends the VM; sptelab exits with this value (values above 255
 * are reported in full and the process exits with 255). */
#define SPTELAB_PORT_EXIT 0xF4u
/* Reserved: sptelab's own exception stubs report guest exceptions here. */
#define SPTELAB_PORT_EXCEPTION 0xF0u
/* out (32-bit): selects argument N for this vCPU; in (32-bit): reads it.
 * Arguments come from `sptelab run --arg V` (in order) or the scenario that
 * launched the guest; an argument that was not given reads as 0. */
#define SPTELAB_PORT_ARG 0xF1u
/* out (32-bit) key to 0xF2, then out (32-bit) value to 0xF3: records a
 * report (vCPU, key, value) that the host side collects and may react to. */
#define SPTELAB_PORT_REPORT_KEY 0xF2u
#define SPTELAB_PORT_REPORT_VALUE 0xF3u
/* Ports from here up belong to the scenario that launched the guest; with
 * no scenario attached an access ends the run with exit status 2. */
#define SPTELAB_PORT_SCENARIO_BASE 0x100u

/* --- Report keys used by the built-in guests --- */
#define SPTELAB_REPORT_COUNTER_PAGE 1u   /* gpa of struct sptelab_counter_page */
#define SPTELAB_REPORT_COUNTER_LOCKED 2u /* final locked_count (low 32 bits) */
#define SPTELAB_REPORT_COUNTER_ATOMIC 3u /* final atomic_count (low 32 bits) */
#define SPTELAB_REPORT_MEMTOUCH_PAGES 4u /* pages this vCPU touched */
#define SPTELAB_REPORT_MEMTOUCH_ERRORS 5u
#define SPTELAB_REPORT_READER_CONTENT 6u /* gpa of the first content page */
#define SPTELAB_REPORT_READER_VERSION 7u /* a version seen (on every change) */
#define SPTELAB_REPORT_READER_READS 8u   /* consistent page reads by this vCPU */
#define SPTELAB_REPORT_READER_TORN 9u    /* reads whose words disagreed with the version */

/* --- counter guest: one page shared by every vCPU and the host side --- */
struct sptelab_counter_page {
  uint32_t lock;         /* spinlock: 0 free, 1 held (xchg to take, store 0 to drop) */
  uint32_t done;         /* vCPUs that finished their increments */
  uint64_t locked_count; /* incremented under `lock` */
  uint64_t atomic_count; /* incremented with lock xadd */
  uint64_t host_locked;  /* increments the host side added to locked_count */
  uint64_t host_atomic;  /* increments the host side added to atomic_count */
};

/* --- reader guest: versioned content pages ---
 * Word 0 of a content page is its version; word i (1..511) must equal
 * sptelab_reader_word(version, i). A writer publishes a new version by
 * replacing the whole page (or writing the words, then the version). */
#define SPTELAB_READER_WORDS 512u
static inline uint64_t sptelab_reader_word(uint64_t version, uint64_t index) {
  return (version * 0x9E3779B97F4A7C15ull) ^ (index << 32) ^ index;
}

#endif /* SPTELAB_ABI_H */
