// ELF64 loader for guest images (docs/design.md, "Guest ABI"): a static x86-64
// executable whose PT_LOAD segments are loaded at their physical addresses
// inside guest RAM. Everything read from the file is validated; every
// rejection is Error(kBadInput) naming the image and the problem.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sptelab::hypervisor {

class GuestPhysical;

struct ElfSegment {
  uint64_t paddr = 0;        // where it goes in guest RAM (== p_vaddr: identity map)
  uint64_t memsz = 0;        // bytes in guest RAM; the part past filesz is zeroed
  uint64_t file_offset = 0;  // where its bytes are in the image
  uint64_t filesz = 0;
  uint32_t flags = 0;  // PF_X | PF_W | PF_R
  bool executable() const { return flags & 1u; }
  uint64_t end() const { return paddr + memsz; }
};

struct ElfImage {
  std::string name;  // for messages: the path or the built-in guest's name
  std::vector<uint8_t> bytes;
  uint64_t entry = 0;
  std::vector<ElfSegment> segments;  // PT_LOAD with memsz > 0, sorted by paddr

  uint64_t lowest_address() const { return segments.front().paddr; }
  uint64_t end_address() const { return segments.back().end(); }
};

// Validates `bytes` as a guest image for a VM with ram_bytes of RAM.
ElfImage parse_elf(std::string name, std::vector<uint8_t> bytes, uint64_t ram_bytes);
// Reads and validates a file; an unreadable file is Error(kBadInput) too.
ElfImage read_elf_file(const std::string& path, uint64_t ram_bytes);

// Writes every segment into guest RAM through the secondary MMU (fault +
// access), zeroing the bss part. Throws Error(kInternal) if the memory
// refuses a page that parse_elf() already checked is RAM.
void load_elf(const ElfImage& image, GuestPhysical& memory);

}  // namespace sptelab::hypervisor
