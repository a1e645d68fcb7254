#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "base/error.h"
#include "hypervisor/elf.h"
#include "hypervisor/guest_physical.h"
#include "mm/phys_mem.h"
#include "tests/hypervisor/elf_builder.h"
#include "tests/hypervisor/fake_memory.h"
#include "tests/hypervisor/test_guests.h"

namespace sptelab::hypervisor {
namespace {

using testing::build_elf;
using testing::ElfSegmentSpec;
using testing::ElfSpec;
using ::testing::HasSubstr;

constexpr uint64_t kElfRam = 16ull << 20;

// The message of the Error(kBadInput) parse_elf throws, or "" if it accepts.
std::string rejection(const std::vector<uint8_t>& bytes, uint64_t ram = kElfRam) {
  try {
    parse_elf("test.elf", bytes, ram);
    return "";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    return error.what();
  }
}

TEST(ElfTest, AcceptsAValidImage) {
  ElfSpec spec;
  spec.segments = {{0x400000, 32, 32, PF_R | PF_X}, {0x402000, 16, 0x3000, PF_R | PF_W}};
  spec.entry = 0x400010;
  ElfImage image = parse_elf("ok.elf", build_elf(spec), kElfRam);
  EXPECT_EQ(image.entry, 0x400010u);
  ASSERT_EQ(image.segments.size(), 2u);
  EXPECT_EQ(image.lowest_address(), 0x400000u);
  EXPECT_EQ(image.end_address(), 0x405000u);
  EXPECT_TRUE(image.segments[0].executable());
  EXPECT_FALSE(image.segments[1].executable());
}

TEST(ElfTest, AcceptsTheBuiltInGuests) {
  for (const char* name : {"hello", "memtouch", "counter", "reader"}) {
    std::string path = testing::builtin_guest(name);
    ElfImage image = read_elf_file(path, kElfRam);
    EXPECT_EQ(image.lowest_address(), 0x400000u) << name;
  }
}

TEST(ElfTest, RejectsTruncatedHeader) {
  auto bytes = build_elf({});
  bytes.resize(40);
  EXPECT_THAT(rejection(bytes), HasSubstr("too short for an ELF64 header"));
}

TEST(ElfTest, RejectsBadMagic) {
  auto bytes = build_elf({});
  bytes[1] = 'X';
  EXPECT_THAT(rejection(bytes), HasSubstr("bad magic"));
}

TEST(ElfTest, RejectsWrongClass) {
  ElfSpec spec;
  spec.elf_class = ELFCLASS32;
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("32-bit"));
}

TEST(ElfTest, RejectsBigEndian) {
  ElfSpec spec;
  spec.data = ELFDATA2MSB;
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("little-endian"));
}

TEST(ElfTest, RejectsWrongMachine) {
  ElfSpec spec;
  spec.machine = EM_AARCH64;
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("is not x86-64"));
}

TEST(ElfTest, RejectsPositionIndependentImages) {
  ElfSpec spec;
  spec.type = ET_DYN;
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("-static -no-pie"));
}

TEST(ElfTest, RejectsProgramHeadersPastTheEnd) {
  auto bytes = build_elf({});
  bytes.resize(sizeof(Elf64_Ehdr) + 10);
  EXPECT_THAT(rejection(bytes), HasSubstr("program header table"));
}

TEST(ElfTest, RejectsSegmentBytesPastTheEnd) {
  auto bytes = build_elf({});
  bytes.resize(0x1000 + 8);  // the segment has 16 bytes at 0x1000
  EXPECT_THAT(rejection(bytes), HasSubstr("outside the file"));
}

TEST(ElfTest, RejectsFileSizeAboveMemorySize) {
  ElfSpec spec;
  spec.segments = {{0x400000, 32, 16, PF_R | PF_X}};
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("exceeds memory size"));
}

TEST(ElfTest, RejectsSegmentOutsideRam) {
  ElfSpec spec;
  spec.segments = {{0x400000, 16, 16, PF_R | PF_X}, {kElfRam - 0x1000, 16, 0x2000, PF_R | PF_W}};
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("does not fit in guest RAM"));
}

TEST(ElfTest, RejectsSegmentAddressThatOverflows) {
  ElfSpec spec;
  spec.segments = {{0x400000, 16, 16, PF_R | PF_X}, {~0ull - 0x10, 0, 0x1000, PF_R}};
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("does not fit in guest RAM"));
}

TEST(ElfTest, RejectsOverlappingSegments) {
  ElfSpec spec;
  spec.segments = {{0x400000, 16, 0x2000, PF_R | PF_X}, {0x401000, 16, 16, PF_R | PF_W}};
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("segments overlap"));
}

TEST(ElfTest, RejectsEntryOutsideSegments) {
  ElfSpec spec;
  spec.entry = 0x500000;
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("entry point 0x500000"));
}

TEST(ElfTest, RejectsEntryInDataSegment) {
  ElfSpec spec;
  spec.segments = {{0x400000, 16, 16, PF_R | PF_X}, {0x402000, 16, 16, PF_R | PF_W}};
  spec.entry = 0x402000;
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("executable segment"));
}

TEST(ElfTest, RejectsDynamicImages) {
  ElfSpec spec;
  spec.segments = {{0x400000, 16, 16, PF_R | PF_X}, {0x402000, 16, 16, PF_R, PT_INTERP}};
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("dynamic linking"));
}

TEST(ElfTest, RejectsImagesWithoutLoadableContent) {
  ElfSpec spec;
  spec.segments = {{0x400000, 0, 0, PF_R | PF_X}};
  EXPECT_THAT(rejection(build_elf(spec)), HasSubstr("no loadable"));
}

TEST(ElfTest, UnreadableFileIsBadInput) {
  try {
    read_elf_file("/nonexistent/guest.elf", kElfRam);
    FAIL() << "read a file that does not exist";
  } catch (const Error& error) {
    EXPECT_EQ(error.status(), ExitStatus::kBadInput);
    EXPECT_THAT(error.what(), HasSubstr("/nonexistent/guest.elf"));
  }
}

TEST(ElfTest, LoadWritesSegmentsAndZeroesBss) {
  ElfSpec spec;
  spec.segments = {{0x400000, 32, 32, PF_R | PF_X}, {0x402000, 8, 0x1800, PF_R | PF_W}};
  ElfImage image = parse_elf("load.elf", build_elf(spec), kElfRam);
  mm::PhysMem phys(kElfRam / 4096);
  testing::FakeMemory memory(phys, kElfRam / 4096);
  // Dirty the bss so that the loader must zero it.
  GuestPhysical access(memory, 0);
  std::vector<uint8_t> junk(0x1800, 0xee);
  ASSERT_FALSE(access.write(0x402000, junk.data(), junk.size()));

  load_elf(image, access);
  std::vector<uint8_t> text(32), data(0x1800);
  ASSERT_FALSE(access.read(0x400000, text.data(), text.size()));
  ASSERT_FALSE(access.read(0x402000, data.data(), data.size()));
  EXPECT_EQ(text, std::vector<uint8_t>(32, 0x90));
  EXPECT_EQ(std::vector<uint8_t>(data.begin(), data.begin() + 8), std::vector<uint8_t>(8, 0x90));
  EXPECT_EQ(std::vector<uint8_t>(data.begin() + 8, data.end()), std::vector<uint8_t>(0x17f8, 0));
}

}  // namespace
}  // namespace sptelab::hypervisor
