// Native-mode EFAULT resolution without /dev/kvm: the registers come in a
// kvm_run structure as KVM_CAP_SYNC_REGS leaves them, guest memory and the
// window's permissions from a fake view with real 4-level page tables.
#include "hypervisor/native_fault.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <map>
#include <vector>

namespace sptelab::hypervisor {

void PrintTo(const PageNeed& need, std::ostream* os) {
  *os << "{gfn " << need.gfn << (need.write ? ", write}" : ", read}");
}

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kPml4 = 0x1000, kPdpt = 0x2000, kPd = 0x3000, kPt = 0x4000;
constexpr uint64_t kCode = 0x10000;  // where the instruction under test sits
constexpr uint64_t kData = 0x20000;
constexpr uint64_t kNativeFaultRam = 2ull << 20;

// Guest-physical memory (identity-mapped first 2 MiB) and what the window
// allows on each gfn (default: everything).
class FakeView final : public NativeFaultView {
 public:
  FakeView() {
    put64(kPml4, kPdpt | 7);
    put64(kPdpt, kPd | 7);
    put64(kPd, kPt | 7);
    for (uint64_t i = 0; i < 512; ++i) put64(kPt + i * 8, (i * kPage) | 7);
  }

  bool read_mapped(uint64_t gpa, void* out, size_t len) const override {
    auto* dest = static_cast<uint8_t*>(out);
    for (size_t i = 0; i < len; ++i) {
      uint64_t at = gpa + i;
      if (access(at / kPage) == spte::Access::kNone) return false;
      auto page = pages_.find(at / kPage);
      dest[i] = page == pages_.end() ? 0 : page->second[at % kPage];
    }
    return true;
  }
  spte::Access access(spte::Gfn gfn) const override {
    auto it = access_.find(gfn);
    return it == access_.end() ? spte::Access::kWrite : it->second;
  }
  uint64_t ram_bytes() const override { return kNativeFaultRam; }

  void put(uint64_t gpa, const std::vector<uint8_t>& bytes) {
    for (size_t i = 0; i < bytes.size(); ++i)
      pages_[(gpa + i) / kPage][(gpa + i) % kPage] = bytes[i];
  }
  void put64(uint64_t gpa, uint64_t value) {
    std::vector<uint8_t> bytes(8);
    std::memcpy(bytes.data(), &value, 8);
    put(gpa, bytes);
  }
  void deny(uint64_t gpa, spte::Access allowed = spte::Access::kNone) {
    access_[gpa / kPage] = allowed;
  }

 private:
  std::map<uint64_t, std::array<uint8_t, kPage>> pages_;
  std::map<uint64_t, spte::Access> access_;
};

class NativeFaultTest : public ::testing::Test {
 protected:
  NativeFaultTest() {
    run_.s.regs.sregs.cr0 = (1ull << 31) | 1;
    run_.s.regs.sregs.cr3 = kPml4;
    run_.s.regs.sregs.cr4 = 1ull << 5;
    run_.s.regs.sregs.efer = (1ull << 8) | (1ull << 10);
    regs().rip = kCode;
    regs().rsp = 0x30000;
  }
  kvm_regs& regs() { return run_.s.regs.regs; }
  NativeFault resolve(const std::vector<uint8_t>& code) {
    view_.put(regs().rip, code);
    return resolve_native_fault(run_, view_);
  }

  kvm_run run_{};
  FakeView view_;
};

using Needs = std::vector<PageNeed>;
using ::testing::UnorderedElementsAre;

TEST_F(NativeFaultTest, LoadFromAnInaccessiblePageIsAReadFault) {
  regs().rbx = kData + 0x18;
  view_.deny(kData);
  NativeFault fault = resolve({0x48, 0x8b, 0x03});  // mov rax, [rbx]
  EXPECT_EQ(fault.needs, (Needs{{kData / kPage, false}})) << fault.why;
  EXPECT_EQ(fault.instruction, "mov rax, qword ptr [rbx]");
}

TEST_F(NativeFaultTest, StoreToAReadOnlyPageIsAWriteFault) {
  regs().rbx = kData;
  view_.deny(kData, spte::Access::kRead);
  EXPECT_EQ(resolve({0x48, 0x89, 0x03}).needs, (Needs{{kData / kPage, true}}));  // mov [rbx], rax
}

TEST_F(NativeFaultTest, LoadFromAReadOnlyPageMatchesNothing) {
  regs().rbx = kData;
  view_.deny(kData, spte::Access::kRead);
  NativeFault fault = resolve({0x48, 0x8b, 0x03});
  EXPECT_TRUE(fault.needs.empty());
  EXPECT_NE(fault.why.find("no access"), std::string::npos) << fault.why;
}

TEST_F(NativeFaultTest, LockedReadModifyWriteIsAWriteFault) {
  regs().rbx = kData + 8;
  view_.deny(kData);
  // lock xadd [rbx], rcx
  EXPECT_EQ(resolve({0xf0, 0x48, 0x0f, 0xc1, 0x0b}).needs, (Needs{{kData / kPage, true}}));
  // lock cmpxchg [rbx], rcx
  EXPECT_EQ(resolve({0xf0, 0x48, 0x0f, 0xb1, 0x0b}).needs, (Needs{{kData / kPage, true}}));
}

TEST_F(NativeFaultTest, IndexedRipRelativeAndFsRelativeOperands) {
  regs().rbx = kData;
  regs().rcx = 3;
  view_.deny(kData + kPage);
  // mov rax, [rbx + rcx*8 + 0x1000]
  EXPECT_EQ(resolve({0x48, 0x8b, 0x84, 0xcb, 0x00, 0x10, 0x00, 0x00}).needs,
            (Needs{{kData / kPage + 1, false}}));
  // mov rax, [rip + 0x11000]: the next instruction is at kCode + 7
  view_.deny(kCode + 7 + 0x11000);
  EXPECT_EQ(resolve({0x48, 0x8b, 0x05, 0x00, 0x10, 0x01, 0x00}).needs,
            (Needs{{(kCode + 7 + 0x11000) / kPage, false}}));
  // mov rax, fs:[0x10]
  run_.s.regs.sregs.fs.base = 0x40000;
  view_.deny(0x40000);
  EXPECT_EQ(resolve({0x64, 0x48, 0x8b, 0x04, 0x25, 0x10, 0x00, 0x00, 0x00}).needs,
            (Needs{{0x40, false}}));
}

TEST_F(NativeFaultTest, PushCallPopRetAndLeaveUseTheStack) {
  regs().rsp = kData + kPage;  // pushes go to the page below
  view_.deny(kData);
  EXPECT_EQ(resolve({0x50}).needs, (Needs{{kData / kPage, true}}));              // push rax
  EXPECT_EQ(resolve({0xe8, 0, 0, 0, 0}).needs, (Needs{{kData / kPage, true}}));  // call
  EXPECT_EQ(resolve({0x9c}).needs, (Needs{{kData / kPage, true}}));              // pushfq
  regs().rsp = kData + 0x100;
  EXPECT_EQ(resolve({0x58}).needs, (Needs{{kData / kPage, false}}));  // pop rax
  EXPECT_EQ(resolve({0xc3}).needs, (Needs{{kData / kPage, false}}));  // ret
  regs().rsp = 0x30000;
  regs().rbp = kData + 0x200;
  EXPECT_EQ(resolve({0xc9}).needs, (Needs{{kData / kPage, false}}));  // leave
}

TEST_F(NativeFaultTest, PushOfAMemoryOperandReadsItAndWritesTheStack) {
  regs().rsp = kData + kPage;
  regs().rbx = 0x50000;
  view_.deny(kData);
  view_.deny(0x50000);
  // push qword ptr [rbx]
  EXPECT_THAT(resolve({0xff, 0x33}).needs,
              UnorderedElementsAre(PageNeed{0x50, false}, PageNeed{kData / kPage, true}));
}

TEST_F(NativeFaultTest, StringInstructionsTouchTheirCurrentElement) {
  regs().rsi = 0x50000;
  regs().rdi = kData + 0x10;
  regs().rcx = 100;
  view_.deny(kData);
  view_.deny(0x50000);
  // rep movsb: reads [rsi], writes [rdi]
  EXPECT_THAT(resolve({0xf3, 0xa4}).needs,
              UnorderedElementsAre(PageNeed{0x50, false}, PageNeed{kData / kPage, true}));
  // stosq: writes 8 bytes at [rdi]
  EXPECT_EQ(resolve({0x48, 0xab}).needs, (Needs{{kData / kPage, true}}));
  // lodsq: reads [rsi]
  EXPECT_EQ(resolve({0x48, 0xad}).needs, (Needs{{0x50, false}}));
}

TEST_F(NativeFaultTest, AccessStraddlingIntoAnInaccessiblePage) {
  // 8 bytes at 0x...ffc: the address is in the accessible page, the last
  // four bytes in the next one.
  regs().rbx = kData + kPage - 4;
  view_.deny(kData + kPage);
  NativeFault fault = resolve({0x48, 0x8b, 0x03});
  EXPECT_EQ(fault.needs, (Needs{{kData / kPage + 1, false}})) << fault.why;
}

TEST_F(NativeFaultTest, FetchFromAnInaccessibleCodePage) {
  view_.put(kCode, {0x90});
  view_.deny(kCode);
  NativeFault fault = resolve_native_fault(run_, view_);
  EXPECT_EQ(fault.needs, (Needs{{kCode / kPage, false}}));
  ASSERT_EQ(fault.accesses.size(), 1u);
  EXPECT_TRUE(fault.accesses[0].fetch);
}

TEST_F(NativeFaultTest, InstructionStraddlingIntoAnInaccessibleCodePage) {
  regs().rip = kCode + kPage - 2;  // mov rax, [rbx]: two bytes here, one in the next page
  regs().rbx = kData;
  view_.put(regs().rip, {0x48, 0x8b});
  view_.put(kCode + kPage, {0x03});
  view_.deny(kCode + kPage);
  NativeFault fault = resolve_native_fault(run_, view_);
  EXPECT_EQ(fault.needs, (Needs{{kCode / kPage + 1, false}})) << fault.why;
}

TEST_F(NativeFaultTest, AddressNotMappedByTheGuestIsNotOurs) {
  regs().rbx = 0x7000'0000'0000;  // beyond the guest's page tables
  NativeFault fault = resolve({0x48, 0x8b, 0x03});
  EXPECT_TRUE(fault.needs.empty());
}

TEST_F(NativeFaultTest, LeaAndNopTouchNothing) {
  regs().rbx = kData;
  view_.deny(kData);
  EXPECT_TRUE(resolve({0x48, 0x8d, 0x03}).needs.empty());  // lea rax, [rbx]
  EXPECT_TRUE(resolve({0x0f, 0x1f, 0x03}).needs.empty());  // nop dword ptr [rbx]
}

TEST_F(NativeFaultTest, UndecodableBytesSayWhy) {
  NativeFault fault = resolve({0x0f, 0xff});
  EXPECT_TRUE(fault.needs.empty());
  EXPECT_FALSE(fault.why.empty());
}

}  // namespace
}  // namespace sptelab::hypervisor
