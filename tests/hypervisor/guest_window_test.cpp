#include <gtest/gtest.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

#include "base/error.h"
#include "hypervisor/guest_window.h"
#include "mm/phys_mem.h"

namespace sptelab::hypervisor {
namespace {

constexpr uint64_t kGuestWindowPages = 64;

// Probes without faulting: process_vm_readv/writev on ourselves fail with
// EFAULT where the page is not readable/writable.
bool readable(const uint8_t* address) {
  uint64_t value;
  iovec local{&value, sizeof(value)};
  iovec remote{const_cast<uint8_t*>(address), sizeof(value)};
  return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == sizeof(value);
}

bool writable(uint8_t* address) {
  uint64_t value = 0;
  if (readable(address)) std::memcpy(&value, address, sizeof(value));
  iovec local{&value, sizeof(value)};
  iovec remote{address, sizeof(value)};
  return process_vm_writev(getpid(), &local, 1, &remote, 1, 0) == sizeof(value);
}

// VMAs of /proc/self/maps that lie inside [start, end).
int vmas_within(const uint8_t* start, const uint8_t* end) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int count = 0;
  while (std::getline(maps, line)) {
    uint64_t from = 0, to = 0;
    char dash;
    std::istringstream(line) >> std::hex >> from >> dash >> to;
    if (from >= reinterpret_cast<uint64_t>(start) && to <= reinterpret_cast<uint64_t>(end)) {
      ++count;
    }
  }
  return count;
}

class GuestWindowTest : public ::testing::Test {
 protected:
  uint8_t* page(spte::Gfn gfn) { return window_.base() + gfn * mm::kPageSize; }
  uint8_t* frame(mm::Pfn pfn) { return phys_.direct_map(pfn); }

  mm::PhysMem phys_{256};
  GuestWindow window_{phys_, kGuestWindowPages};
};

TEST_F(GuestWindowTest, StartsInaccessible) {
  for (spte::Gfn gfn = 0; gfn < kGuestWindowPages; ++gfn) {
    EXPECT_FALSE(readable(page(gfn)));
    EXPECT_EQ(window_.access(gfn), spte::Access::kNone);
  }
}

TEST_F(GuestWindowTest, MapsTheFrameTheUpdateNames) {
  mm::Pfn pfn = phys_.alloc();
  std::memcpy(frame(pfn), "frame", 6);
  window_.update({5, pfn, 1, spte::Access::kWrite});
  EXPECT_STREQ(reinterpret_cast<char*>(page(5)), "frame");
  std::memcpy(page(5), "guest", 6);  // a write through the window lands on the frame
  EXPECT_STREQ(reinterpret_cast<char*>(frame(pfn)), "guest");
  EXPECT_EQ(window_.pfn(5), pfn);
  EXPECT_FALSE(readable(page(4)));
  EXPECT_FALSE(readable(page(6)));
}

TEST_F(GuestWindowTest, ReadOnlyWhileTheSpteIsReadOnly) {
  mm::Pfn pfn = phys_.alloc();
  window_.update({3, pfn, 1, spte::Access::kRead});
  EXPECT_TRUE(readable(page(3)));
  EXPECT_FALSE(writable(page(3)));
  window_.update({3, pfn, 1, spte::Access::kWrite});
  EXPECT_TRUE(writable(page(3)));
  EXPECT_EQ(window_.stats().protects, 1u);  // same frame: an mprotect, not a new mapping
}

TEST_F(GuestWindowTest, NoneMakesPagesInaccessibleAndRemapIsAProtect) {
  mm::Pfn pfn = phys_.alloc();
  window_.update({7, pfn, 1, spte::Access::kWrite});
  window_.update({7, mm::kNoPfn, 1, spte::Access::kNone});
  EXPECT_FALSE(readable(page(7)));
  EXPECT_EQ(window_.access(7), spte::Access::kNone);
  window_.update({7, pfn, 1, spte::Access::kWrite});
  EXPECT_TRUE(writable(page(7)));
  GuestWindowStats stats = window_.stats();
  EXPECT_EQ(stats.maps, 1u);
  EXPECT_EQ(stats.unmaps, 1u);
  EXPECT_EQ(stats.protects, 1u);
}

TEST_F(GuestWindowTest, MovingToAnotherFrameRemaps) {
  mm::Pfn old_pfn = phys_.alloc();
  mm::Pfn new_pfn = phys_.alloc();
  std::memcpy(frame(old_pfn), "old", 4);
  std::memcpy(frame(new_pfn), "new", 4);
  window_.update({2, old_pfn, 1, spte::Access::kWrite});
  window_.update({2, mm::kNoPfn, 1, spte::Access::kNone});
  window_.update({2, new_pfn, 1, spte::Access::kWrite});
  EXPECT_STREQ(reinterpret_cast<char*>(page(2)), "new");
  EXPECT_EQ(window_.stats().maps, 2u);
}

TEST_F(GuestWindowTest, RepeatedUpdatesAreSkipped) {
  mm::Pfn pfn = phys_.alloc();
  window_.update({1, pfn, 1, spte::Access::kWrite});
  window_.update({1, pfn, 1, spte::Access::kWrite});
  window_.update({9, mm::kNoPfn, 1, spte::Access::kNone});  // never mapped
  EXPECT_EQ(window_.stats().skipped, 2u);
}

TEST_F(GuestWindowTest, ContiguousFramesStayFewMappings) {
  std::vector<mm::Pfn> frames = phys_.alloc_contiguous(kGuestWindowPages);
  ASSERT_EQ(frames.back(), frames.front() + kGuestWindowPages - 1);
  // Page by page, in an order that leaves gaps until the end.
  for (spte::Gfn gfn = 0; gfn < kGuestWindowPages; gfn += 2) {
    window_.update({gfn, frames[gfn], 1, spte::Access::kWrite});
  }
  for (spte::Gfn gfn = 1; gfn < kGuestWindowPages; gfn += 2) {
    window_.update({gfn, frames[gfn], 1, spte::Access::kWrite});
  }
  // Zap a page and bring it back: still one mapping of the whole run.
  window_.update({10, mm::kNoPfn, 1, spte::Access::kNone});
  window_.update({10, frames[10], 1, spte::Access::kWrite});
  EXPECT_EQ(vmas_within(window_.base(), window_.base() + window_.size_bytes()), 1);
}

TEST_F(GuestWindowTest, RunUpdateCoversEveryPage) {
  std::vector<mm::Pfn> frames = phys_.alloc_contiguous(8);
  window_.update({16, frames[0], 8, spte::Access::kRead});
  for (spte::Gfn gfn = 16; gfn < 24; ++gfn) {
    EXPECT_TRUE(readable(page(gfn)));
    EXPECT_FALSE(writable(page(gfn)));
    EXPECT_EQ(window_.pfn(gfn), frames[gfn - 16]);
  }
  window_.update({16, mm::kNoPfn, 8, spte::Access::kNone});
  for (spte::Gfn gfn = 16; gfn < 24; ++gfn) EXPECT_FALSE(readable(page(gfn)));
}

TEST_F(GuestWindowTest, RejectsUpdatesOutsideTheWindowOrPhysicalMemory) {
  EXPECT_THROW(window_.update({kGuestWindowPages, 0, 1, spte::Access::kWrite}), Error);
  EXPECT_THROW(window_.update({kGuestWindowPages - 1, 0, 2, spte::Access::kWrite}), Error);
  EXPECT_THROW(window_.update({0, 100000, 1, spte::Access::kWrite}), Error);
  EXPECT_THROW(window_.update({0, 0, 0, spte::Access::kWrite}), Error);
}

}  // namespace
}  // namespace sptelab::hypervisor
