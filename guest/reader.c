/* reader: reads versioned content pages over and over and reports what it
 * saw. Word 0 of a content page is its version, word i must equal
 * sptelab_reader_word(version, i) (sptelab_abi.h). The host side publishes
 * new versions (by replacing the page under the guest, or by writing the
 * words and then the version); a read whose words disagree with the version
 * it read before and after them is torn: the guest saw content no writer
 * ever published (a stale spte mixing frames does that).
 *
 * Arguments (sptelab run reader --arg GPA --arg PAGES --arg ROUNDS):
 *   0 GPA     first content page; 0 (default) = the guest's own page(s),
 *             which vCPU 0 fills with version 1 before anyone reads
 *   1 PAGES   content pages; 0 = 1 (own pages: at most 16)
 *   2 ROUNDS  passes over the pages per vCPU; 0 = 100
 * Reports: SPTELAB_REPORT_READER_CONTENT (vCPU 0, the first page's gpa),
 * SPTELAB_REPORT_READER_VERSION on every version change a vCPU sees,
 * _READS and _TORN at the end. vCPU 0 exits with 0 if no read was torn,
 * 1 otherwise. */
#include "sptelab_guest.h"

#define OWN_PAGES 16u

static uint64_t own[OWN_PAGES][SPTELAB_READER_WORDS] __attribute__((aligned(4096)));
static volatile uint32_t ready, finished;
static volatile uint64_t total_reads, total_torn;

static void publish(volatile uint64_t* content, uint64_t version) {
  for (uint32_t i = 1; i < SPTELAB_READER_WORDS; ++i) content[i] = sptelab_reader_word(version, i);
  __atomic_store_n(&content[0], version, __ATOMIC_RELEASE);
}

/* 1 consistent, 0 changed while reading (retry), -1 torn. */
static int read_page(volatile uint64_t* content, uint64_t* version_out) {
  uint64_t version = __atomic_load_n(&content[0], __ATOMIC_ACQUIRE);
  int mismatch = 0;
  for (uint32_t i = 1; i < SPTELAB_READER_WORDS; ++i) {
    if (content[i] != sptelab_reader_word(version, i)) mismatch = 1;
  }
  __atomic_thread_fence(__ATOMIC_ACQUIRE);
  if (__atomic_load_n(&content[0], __ATOMIC_RELAXED) != version) return 0;
  *version_out = version;
  return mismatch ? -1 : 1;
}

static void guest_main(uint64_t vcpu, uint64_t vcpus, uint64_t ram_bytes) {
  (void)ram_bytes;
  uint64_t base = sptelab_arg(0);
  uint32_t pages = sptelab_arg_or(1, 1);
  uint32_t rounds = sptelab_arg_or(2, 100);
  if (base == 0) {
    base = (uint64_t)(uintptr_t)own;
    if (pages > OWN_PAGES) pages = OWN_PAGES;
    if (vcpu == 0) {
      for (uint32_t p = 0; p < pages; ++p) publish(own[p], 1);
    }
  }
  if (vcpu == 0) {
    sptelab_report(SPTELAB_REPORT_READER_CONTENT, (uint32_t)base);
    __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
  }
  sptelab_wait_for(&ready, 1);

  uint64_t reads = 0, torn = 0, last_version = ~0ull;
  for (uint32_t round = 0; round < rounds; ++round) {
    for (uint32_t p = 0; p < pages; ++p) {
      volatile uint64_t* content = (volatile uint64_t*)(base + ((uint64_t)p << 12));
      uint64_t version;
      int result = read_page(content, &version);
      if (result == 0) continue;
      if (result < 0) ++torn;
      ++reads;
      if (p == 0 && version != last_version) {
        sptelab_report(SPTELAB_REPORT_READER_VERSION, (uint32_t)version);
        last_version = version;
      }
    }
  }
  sptelab_report(SPTELAB_REPORT_READER_READS, (uint32_t)reads);
  sptelab_report(SPTELAB_REPORT_READER_TORN, (uint32_t)torn);
  __atomic_fetch_add(&total_reads, reads, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&total_torn, torn, __ATOMIC_SEQ_CST);
  __atomic_fetch_add(&finished, 1, __ATOMIC_SEQ_CST);
  if (vcpu != 0) sptelab_halt();

  sptelab_wait_for(&finished, (uint32_t)vcpus);
  sptelab_puts("reader: ");
  sptelab_put_u64(total_reads);
  sptelab_puts(" reads of ");
  sptelab_put_u64(pages);
  sptelab_puts(" page(s) at ");
  sptelab_put_hex(base);
  sptelab_puts(", last version ");
  sptelab_put_u64(last_version);
  sptelab_puts(", ");
  sptelab_put_u64(total_torn);
  sptelab_puts(" torn\n");
  sptelab_exit(total_torn == 0 ? 0 : 1);
}
SPTELAB_GUEST_MAIN(guest_main);
