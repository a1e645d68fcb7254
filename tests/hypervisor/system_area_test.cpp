#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>

#include <fmt/core.h>

#include "base/error.h"
#include "guest/sptelab_abi.h"
#include "hypervisor/dump.h"
#include "hypervisor/elf.h"
#include "hypervisor/guest_physical.h"
#include "hypervisor/system_area.h"
#include "mm/phys_mem.h"
#include "tests/hypervisor/elf_builder.h"
#include "tests/hypervisor/fake_memory.h"

namespace sptelab::hypervisor {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kRam = 64ull << 20;

kvm_sregs long_mode(const SystemLayout& layout) {
  kvm_sregs sregs{};
  sregs.cr0 = 0x80050033;
  sregs.cr3 = layout.pml4;
  sregs.cr4 = 0x20;
  sregs.efer = 0x500;
  return sregs;
}

TEST(SystemAreaTest, PlansTablesForEveryPageOfRam) {
  SystemLayout layout = plan_system_layout(kRam, 2);
  EXPECT_EQ(layout.pt_count, 32u);  // 64 MiB / 2 MiB
  EXPECT_EQ(layout.pd_count, 1u);
  EXPECT_EQ(layout.pdpt_count, 1u);
  EXPECT_EQ(layout.stacks, 0x1000u);  // page 0 stays unused
  EXPECT_EQ(layout.stack_top(1) - layout.stack_top(0), SPTELAB_STACK_BYTES);
  EXPECT_EQ(layout.stack_top(0) % 16, 0u);
  EXPECT_LT(layout.end, SPTELAB_GUEST_LOAD_ADDRESS);
  EXPECT_EQ(layout.end, layout.pts + 32 * 4096);
}

TEST(SystemAreaTest, RejectsZeroAndTooManyVcpus) {
  EXPECT_THROW(plan_system_layout(kRam, 0), Error);
  EXPECT_THROW(plan_system_layout(kRam, kMaxVcpus + 1), Error);
}

TEST(SystemAreaTest, RejectsAnImageThatLeavesNoRoomBelowIt) {
  testing::ElfSpec spec;
  ElfImage image = parse_elf("big.elf", testing::build_elf(spec), 2ull << 30);
  check_image_fits(plan_system_layout(64ull << 20, 1), image);  // fits
  try {
    check_image_fits(plan_system_layout(2ull << 30, 4), image);  // 4 MiB of page tables
    FAIL() << "the page tables for 2 GiB cannot fit below 4 MiB";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    EXPECT_THAT(error.what(), HasSubstr("link the guest higher"));
    EXPECT_THAT(error.what(), HasSubstr("use less --mem"));
  }
}

class WrittenSystemArea : public ::testing::Test {
 protected:
  WrittenSystemArea() : phys_(kRam / 4096), memory_(phys_, kRam / 4096), access_(memory_, 0) {
    write_system_area(layout_, access_);
  }

  SystemLayout layout_ = plan_system_layout(kRam, 3);
  mm::PhysMem phys_;
  testing::FakeMemory memory_;
  GuestPhysical access_;
};

TEST_F(WrittenSystemArea, IdentityMapsAllRamInSmallPages) {
  kvm_sregs sregs = long_mode(layout_);
  for (uint64_t address : {uint64_t{0}, uint64_t{0x1234}, uint64_t{0x400000}, kRam - 8}) {
    PageWalk walk = walk_guest_page_tables(access_, sregs, address);
    ASSERT_TRUE(walk.translated) << walk.problem;
    EXPECT_EQ(walk.gpa, address);
    EXPECT_TRUE(walk.writable);
    EXPECT_EQ(walk.steps.size(), 4u);  // 4 KiB pages: all four levels
  }
  PageWalk beyond = walk_guest_page_tables(access_, sregs, kRam);
  EXPECT_FALSE(beyond.translated);
  EXPECT_THAT(beyond.problem, HasSubstr("PDE is not present"));  // 64 MiB: exactly 32 PTs
}

TEST_F(WrittenSystemArea, GdtHasLongModeCodeAndOneTssPerVcpu) {
  uint64_t gdt[3 + 2 * 3];
  ASSERT_FALSE(access_.read(layout_.gdt, gdt, sizeof(gdt)));
  EXPECT_EQ(gdt[0], 0u);
  EXPECT_EQ((gdt[kCodeSelector / 8] >> 53) & 1, 1u);  // L: 64-bit code
  EXPECT_EQ((gdt[kCodeSelector / 8] >> 47) & 1, 1u);  // present
  for (uint32_t vcpu = 0; vcpu < 3; ++vcpu) {
    uint64_t low = gdt[layout_.tss_selector(vcpu) / 8];
    uint64_t high = gdt[layout_.tss_selector(vcpu) / 8 + 1];
    uint64_t base = ((low >> 16) & 0xffffff) | (((low >> 56) & 0xff) << 24) | (high << 32);
    EXPECT_EQ(base, layout_.tss_address(vcpu));
    EXPECT_EQ((low >> 40) & 0xff, 0x89u);  // present, available 64-bit TSS
  }
  EXPECT_EQ(layout_.gdt_limit(), kFirstTssSelector + 3 * 16 - 1);
}

TEST_F(WrittenSystemArea, TssPointsIst1AtTheVcpusExceptionStack) {
  for (uint32_t vcpu = 0; vcpu < 3; ++vcpu) {
    uint64_t ist1 = 0;
    ASSERT_FALSE(access_.read(layout_.tss_address(vcpu) + 36, &ist1, 8));
    EXPECT_EQ(ist1, layout_.exception_stack_top(vcpu));
  }
}

TEST_F(WrittenSystemArea, IdtGatesLeadToStubsThatReportTheVector) {
  for (uint32_t vector : {0u, 6u, 14u, 31u}) {
    uint64_t gate[2];
    ASSERT_FALSE(access_.read(layout_.idt + vector * 16, gate, sizeof(gate)));
    uint64_t target = (gate[0] & 0xffff) | (((gate[0] >> 48) & 0xffff) << 16) | (gate[1] << 32);
    EXPECT_EQ(target, layout_.stub(vector));
    EXPECT_EQ((gate[0] >> 16) & 0xffff, kCodeSelector);
    EXPECT_EQ((gate[0] >> 32) & 7, 1u);  // IST 1

    std::vector<uint8_t> code(kStubBytes);
    ASSERT_FALSE(access_.read(layout_.stub(vector), code.data(), code.size()));
    EXPECT_EQ(disassemble_one(code, layout_.stub(vector)), "push rax");
    std::vector<uint8_t> rest(code.begin() + 1, code.end());
    EXPECT_EQ(disassemble_one(rest, 0),
              fmt::format("mov eax, {}",
                          vector < 10 ? fmt::format("{}", vector) : fmt::format("{:#x}", vector)));
    std::vector<uint8_t> out(code.begin() + 6, code.end());
    EXPECT_EQ(disassemble_one(out, 0), "out 0xf0, eax");
    EXPECT_EQ(layout_.stub_vector_at(layout_.stub(vector) + kStubPortExitOffset),
              static_cast<int>(vector));
  }
  EXPECT_EQ(layout_.stub_vector_at(layout_.stub(3)), -1);
  EXPECT_EQ(layout_.idt_limit(), 32 * 16 - 1);
}

TEST_F(WrittenSystemArea, StacksAreZeroed) {
  std::vector<uint8_t> stacks(layout_.tss - layout_.stacks);
  ASSERT_FALSE(access_.read(layout_.stacks, stacks.data(), stacks.size()));
  EXPECT_EQ(stacks, std::vector<uint8_t>(stacks.size(), 0));
}

}  // namespace
}  // namespace sptelab::hypervisor
