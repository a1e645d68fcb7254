#include <gtest/gtest.h>

#include <cstring>

#include "base/error.h"
#include "hypervisor/direct_memory.h"
#include "hypervisor/guest_window.h"
#include "mm/phys_mem.h"

namespace sptelab::hypervisor {
namespace {

TEST(DirectMemoryTest, MapsAllOfRamWhenTheMirrorIsAttached) {
  mm::PhysMem phys(64);
  DirectMemory memory(phys, 32);
  GuestWindow window(phys, 32);
  memory.set_mirror(&window);
  EXPECT_EQ(window.stats().maps, 1u);  // contiguous frames: one mapping
  for (spte::Gfn gfn = 0; gfn < 32; ++gfn) {
    EXPECT_EQ(window.access(gfn), spte::Access::kWrite);
    EXPECT_EQ(window.pfn(gfn), memory.pfn(gfn));
  }
  std::memcpy(window.base() + 5 * 4096, "seen", 5);
  bool ran = memory.access(
      5, false, [](uint8_t* frame) { EXPECT_STREQ(reinterpret_cast<char*>(frame), "seen"); });
  EXPECT_TRUE(ran);
}

TEST(DirectMemoryTest, FaultsAreFixedInsideRamOnly) {
  mm::PhysMem phys(16);
  DirectMemory memory(phys, 16);
  EXPECT_EQ(memory.fault(15, true, 0), spte::FaultOutcome::kFixed);
  EXPECT_EQ(memory.fault(16, false, 0), spte::FaultOutcome::kNoMemslot);
  EXPECT_FALSE(memory.access(16, false, [](uint8_t*) {}));
  EXPECT_EQ(memory.fault_count(), 2u);
}

TEST(DirectMemoryTest, NotEnoughFramesIsAnEnvironmentError) {
  mm::PhysMem phys(8);
  try {
    DirectMemory memory(phys, 9);
    FAIL() << "allocated 9 frames out of 8";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kEnvironment);
  }
  EXPECT_EQ(phys.stats().free, 8u);  // nothing leaked
}

TEST(DirectMemoryTest, ReleasesItsFrames) {
  mm::PhysMem phys(8);
  { DirectMemory memory(phys, 8); }
  EXPECT_EQ(phys.stats().free, 8u);
}

}  // namespace
}  // namespace sptelab::hypervisor
