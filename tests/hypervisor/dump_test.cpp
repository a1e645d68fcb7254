#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "hypervisor/dump.h"
#include "hypervisor/guest_physical.h"
#include "mm/phys_mem.h"
#include "tests/hypervisor/fake_memory.h"

namespace sptelab::hypervisor {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kDumpPages = 1024;  // 4 MiB

class DumpTest : public ::testing::Test {
 protected:
  DumpTest() {
    // Tables at 0x1000 (PML4), 0x2000 (PDPT), 0x3000 (PD): PD[0] is a 2 MiB
    // page at 0, PD[1] points at a PT at 0x4000 whose entry 3 maps 0x3ff000.
    put(0x1000, 0x2000 | 3);
    put(0x2000, 0x3000 | 3);
    put(0x3000, 0x0 | 0x83);  // present, writable, large
    put(0x3008, 0x4000 | 3);
    put(0x4000 + 3 * 8, 0x3ff000 | 1);  // read-only
    sregs_.cr0 = 0x80000011;
    sregs_.cr3 = 0x1000;
    sregs_.cr4 = 0x20;
    sregs_.efer = 0x500;
  }
  void put(uint64_t gpa, uint64_t value) { ASSERT_FALSE(access_.write(gpa, &value, 8)); }

  mm::PhysMem phys_{kDumpPages};
  testing::FakeMemory memory_{phys_, kDumpPages};
  GuestPhysical access_{memory_, 0};
  kvm_sregs sregs_{};
};

TEST_F(DumpTest, WalksLargeAndSmallPages) {
  PageWalk large = walk_guest_page_tables(access_, sregs_, 0x12345);
  ASSERT_TRUE(large.translated);
  EXPECT_EQ(large.gpa, 0x12345u);
  EXPECT_EQ(large.steps.size(), 3u);

  PageWalk small = walk_guest_page_tables(access_, sregs_, 0x203010);
  ASSERT_TRUE(small.translated);
  EXPECT_EQ(small.gpa, 0x3ff010u);
  EXPECT_FALSE(small.writable);
  std::string text = format_page_walk(small, 0x203010);
  EXPECT_THAT(text, HasSubstr("PTE   at gpa 0x4018"));
  EXPECT_THAT(text, HasSubstr("-> gpa 0x3ff010 (read-only)"));

  PageWalk missing = walk_guest_page_tables(access_, sregs_, 0x204000);
  EXPECT_FALSE(missing.translated);
  EXPECT_THAT(format_page_walk(missing, 0x204000), HasSubstr("PTE is not present"));
  PageWalk noncanonical = walk_guest_page_tables(access_, sregs_, 0x0000800000000000);
  EXPECT_THAT(noncanonical.problem, HasSubstr("not a canonical address"));
}

TEST_F(DumpTest, PagingOffMeansPhysical) {
  kvm_sregs real{};
  PageWalk walk = walk_guest_page_tables(access_, real, 0x1234);
  EXPECT_TRUE(walk.translated);
  EXPECT_EQ(walk.gpa, 0x1234u);
}

TEST_F(DumpTest, DisassemblesAroundRipWithContextBefore) {
  // nop; nop; mov eax, 1; ud2; hlt at 0x10000 (inside the 2 MiB page).
  std::vector<uint8_t> code = {0x90, 0x90, 0xb8, 0x01, 0x00, 0x00, 0x00, 0x0f, 0x0b, 0xf4};
  ASSERT_FALSE(access_.write(0x10000, code.data(), code.size()));
  std::string text = disassemble_around(access_, sregs_, 0x10007);
  EXPECT_THAT(text, HasSubstr("mov eax, 1"));
  EXPECT_THAT(text, HasSubstr("=> 0x0000000000010007:  0f 0b"));
  EXPECT_THAT(text, HasSubstr("ud2"));
  EXPECT_THAT(text, HasSubstr("hlt"));
}

TEST_F(DumpTest, UnreadableCodeIsSaidSo) {
  EXPECT_THAT(disassemble_around(access_, sregs_, 0x204000), HasSubstr("not readable"));
}

TEST_F(DumpTest, CrashDumpHasEverything) {
  kvm_regs regs{};
  regs.rip = 0x10000;
  regs.rbx = 0xabcdef;
  std::string dump = format_crash_dump(2, {"it broke", {"detail one"}}, regs, sregs_, access_);
  EXPECT_THAT(dump, HasSubstr("vcpu2: it broke"));
  EXPECT_THAT(dump, HasSubstr("  detail one"));
  EXPECT_THAT(dump, HasSubstr("rbx=0x0000000000abcdef"));
  EXPECT_THAT(dump, HasSubstr("cr3=0x1000"));
  EXPECT_THAT(dump, HasSubstr("code around rip"));
  EXPECT_THAT(dump, HasSubstr("page walk for 0x10000"));
}

}  // namespace
}  // namespace sptelab::hypervisor
