// Builds small ELF64 images in memory, valid by default, so that each test
// breaks exactly one thing.
#pragma once

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace sptelab::hypervisor::testing {

struct ElfSegmentSpec {
  uint64_t address = 0x400000;
  uint64_t filesz = 16;
  uint64_t memsz = 16;
  uint32_t flags = PF_R | PF_X;
  uint32_t type = PT_LOAD;
};

struct ElfSpec {
  unsigned char elf_class = ELFCLASS64;
  unsigned char data = ELFDATA2LSB;
  uint16_t machine = EM_X86_64;
  uint16_t type = ET_EXEC;
  uint64_t entry = 0x400000;
  std::vector<ElfSegmentSpec> segments = {ElfSegmentSpec{}};
};

// Header, program headers, then each segment's bytes (0x90, nop) at a
// 4 KiB-aligned offset.
inline std::vector<uint8_t> build_elf(const ElfSpec& spec) {
  size_t phoff = sizeof(Elf64_Ehdr);
  size_t data_start = 0x1000;
  size_t size = data_start;
  for (const auto& segment : spec.segments) size += (segment.filesz + 0xfff) & ~size_t{0xfff};
  std::vector<uint8_t> bytes(size, 0);
  Elf64_Ehdr header{};
  std::memcpy(header.e_ident, ELFMAG, SELFMAG);
  header.e_ident[EI_CLASS] = spec.elf_class;
  header.e_ident[EI_DATA] = spec.data;
  header.e_ident[EI_VERSION] = EV_CURRENT;
  header.e_type = spec.type;
  header.e_machine = spec.machine;
  header.e_version = EV_CURRENT;
  header.e_entry = spec.entry;
  header.e_phoff = phoff;
  header.e_ehsize = sizeof(Elf64_Ehdr);
  header.e_phentsize = sizeof(Elf64_Phdr);
  header.e_phnum = static_cast<uint16_t>(spec.segments.size());
  std::memcpy(bytes.data(), &header, sizeof(header));
  size_t offset = data_start;
  for (size_t i = 0; i < spec.segments.size(); ++i) {
    const auto& segment = spec.segments[i];
    Elf64_Phdr phdr{};
    phdr.p_type = segment.type;
    phdr.p_flags = segment.flags;
    phdr.p_offset = offset;
    phdr.p_vaddr = segment.address;
    phdr.p_paddr = segment.address;
    phdr.p_filesz = segment.filesz;
    phdr.p_memsz = segment.memsz;
    phdr.p_align = 0x1000;
    std::memcpy(bytes.data() + phoff + i * sizeof(Elf64_Phdr), &phdr, sizeof(phdr));
    std::memset(bytes.data() + offset, 0x90, segment.filesz);
    offset += (segment.filesz + 0xfff) & ~size_t{0xfff};
  }
  return bytes;
}

}  // namespace sptelab::hypervisor::testing
