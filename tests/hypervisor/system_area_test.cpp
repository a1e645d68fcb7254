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

constexpr uint64_t kSystemAreaRam = 64ull << 20;

kvm_sregs long_mode(const SystemLayout& layout) {
  kvm_sregs sregs{};
  sregs.cr0 = 0x80050033;
  sregs.cr3 = layout.pml4;
  sregs.cr4 = 0x20;
  sregs.efer = 0x500;
  return sregs;
}

TEST(SystemAreaTest, PlansTablesForEveryPageOfRam) {
  SystemLayout layout = plan_system_layout(kSystemAreaRam, 2);
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
  EXPECT_THROW(plan_system_layout(kSystemAreaRam, 0), Error);
  EXPECT_THROW(plan_system_layout(kSystemAreaRam, kMaxVcpus + 1), Error);
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
  WrittenSystemArea()
      : phys_(kSystemAreaRam / 4096), memory_(phys_, kSystemAreaRam / 4096), access_(memory_, 0) {
    write_system_area(layout_, access_);
  }

  SystemLayout layout_ = plan_system_layout(kSystemAreaRam, 3);
  mm::PhysMem phys_;
  testing::FakeMemory memory_;
  GuestPhysical access_;
};

TEST_F(WrittenSystemArea, IdentityMapsAllRamInSmallPages) {
  kvm_sregs sregs = long_mode(layout_);
  for (uint64_t address : {uint64_t{0}, uint64_t{0x1234}, uint64_t{0x400000}, kSystemAreaRam - 8}) {
    PageWalk walk = walk_guest_page_tables(access_, sregs, address);
    ASSERT_TRUE(walk.translated) << walk.problem;
    EXPECT_EQ(walk.gpa, address);
    EXPECT_TRUE(walk.writable);
    EXPECT_EQ(walk.steps.size(), 4u);  // 4 KiB pages: all four levels
  }
  PageWalk beyond = walk_guest_page_tables(access_, sregs, kSystemAreaRam);
  EXPECT_FALSE(beyond.translated);
  EXPECT_THAT(beyond.problem, HasSubstr("PDE is not present"));  // 64 MiB: exactly 32 PTs
}

TEST_F(WrittenSystemArea, GdtHasLongModeCodeAndOneTssPerVcpu) {
  uint64_t gdt[kFirstTssSelector / 8 + 2 * 3];
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

TEST_F(WrittenSystemArea, GdtHasUserDescriptorsForNativeMode) {
  uint64_t gdt[kFirstTssSelector / 8];
  ASSERT_FALSE(access_.read(layout_.gdt, gdt, sizeof(gdt)));
  uint64_t code = gdt[kUserCodeSelector / 8];
  uint64_t data = gdt[kUserDataSelector / 8];
  EXPECT_EQ((code >> 45) & 3, 3u);  // DPL 3
  EXPECT_EQ((code >> 53) & 1, 1u);  // L: 64-bit code
  EXPECT_EQ((code >> 43) & 1, 1u);  // executable
  EXPECT_EQ((data >> 45) & 3, 3u);
  EXPECT_EQ((data >> 43) & 1, 0u);  // data
  EXPECT_EQ(kUserCodeSelector | 3, SPTELAB_USER_CODE_SELECTOR);
  EXPECT_EQ(kUserDataSelector | 3, SPTELAB_USER_DATA_SELECTOR);
}

TEST_F(WrittenSystemArea, TssIoBitmapOpensOnlyTheAbiPortsAtCpl3) {
  uint8_t tss[SystemLayout::kTssBytes];
  ASSERT_FALSE(access_.read(layout_.tss_address(1), tss, sizeof(tss)));
  uint16_t base = 0;
  std::memcpy(&base, tss + 102, 2);
  ASSERT_EQ(base, SystemLayout::kTssIoBitmap);
  uint64_t rsp0 = 0;
  std::memcpy(&rsp0, tss + 4, 8);
  EXPECT_EQ(rsp0, layout_.exception_stack_top(1));
  auto open = [&](uint32_t port) { return ((tss[base + port / 8] >> (port % 8)) & 1) == 0; };
  // A 32-bit out to port p checks p..p+3.
  for (uint32_t port : {0xE9u, 0xF1u, 0xF2u, 0xF3u, 0xF4u, 0xF7u, 0x100u, 0x1FFu, 0x202u}) {
    EXPECT_TRUE(open(port)) << port;
  }
  for (uint32_t port : {0x0u, 0x60u, 0xE8u, 0xF0u, 0xF8u, 0xFFu, 0x208u}) {
    EXPECT_FALSE(open(port)) << port;
  }
  EXPECT_EQ(tss[SystemLayout::kTssBytes - 1], 0xff);  // terminator inside the limit
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
