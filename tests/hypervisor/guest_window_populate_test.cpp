// GuestWindow::set_populate: a mapped run has its host PTEs filled at once
// (so the real KVM finds them present) only when asked; the plain-memslot
// baseline keeps leaving them to the real kernel's faults.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>

#include "hypervisor/guest_window.h"
#include "mm/phys_mem.h"

namespace sptelab::hypervisor {
namespace {

// Whether this process's page table has a present PTE for the page at
// `address` (/proc/self/pagemap bit 63; readable without privileges).
bool pte_present(const uint8_t* address) {
  int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  uint64_t entry = 0;
  off_t offset = static_cast<off_t>(reinterpret_cast<uintptr_t>(address) / 4096 * sizeof(entry));
  ssize_t got = pread(fd, &entry, sizeof(entry), offset);
  close(fd);
  return got == sizeof(entry) && (entry >> 63) != 0;
}

int present_pages(const GuestWindow& window, uint64_t first, uint64_t count) {
  int present = 0;
  for (uint64_t gfn = first; gfn < first + count; ++gfn) {
    present += pte_present(window.base() + gfn * 4096) ? 1 : 0;
  }
  return present;
}

TEST(GuestWindowPopulate, MappedRunIsPresentAtOnceOnlyWhenAsked) {
  mm::PhysMem phys(64);
  for (mm::Pfn pfn = 0; pfn < 64; ++pfn) phys.fill_frame(pfn, pfn);  // memfd pages exist
  GuestWindow lazy(phys, 16);
  lazy.update({2, 10, 8, spte::Access::kWrite});
  EXPECT_EQ(present_pages(lazy, 2, 8), 0);

  GuestWindow eager(phys, 16);
  eager.set_populate(true);
  eager.update({2, 10, 8, spte::Access::kWrite});
  EXPECT_EQ(present_pages(eager, 2, 8), 8);
  EXPECT_EQ(present_pages(eager, 10, 4), 0);  // outside the run
  EXPECT_EQ(eager.base()[2 * 4096], 10);      // frame 10's first byte
  eager.update({2, 10, 8, spte::Access::kNone});
  eager.update({12, 20, 2, spte::Access::kRead});
  EXPECT_EQ(present_pages(eager, 12, 2), 2);
}

}  // namespace
}  // namespace sptelab::hypervisor
