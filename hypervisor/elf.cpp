#include "hypervisor/elf.h"

#include <elf.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/core.h>

#include "base/error.h"
#include "base/files.h"
#include "hypervisor/guest_physical.h"

namespace sptelab::hypervisor {
namespace {

constexpr uint64_t kMaxImageBytes = uint64_t{1} << 31;

class Rejecter {
 public:
  explicit Rejecter(const std::string& name) : name_(name) {}
  template <typename... Args>
  [[noreturn]] void operator()(fmt::format_string<Args...> format, Args&&... args) const {
    throw_bad_input(
        fmt::format("guest image {}: {}", name_, fmt::format(format, std::forward<Args>(args)...)));
  }

 private:
  const std::string& name_;
};

bool add_overflows(uint64_t a, uint64_t b, uint64_t* sum) {
  return __builtin_add_overflow(a, b, sum);
}

void check_identification(const Elf64_Ehdr& header, const Rejecter& reject) {
  if (std::memcmp(header.e_ident, ELFMAG, SELFMAG) != 0) {
    reject("not an ELF file (bad magic); give a static x86-64 ELF executable");
  }
  if (header.e_ident[EI_CLASS] != ELFCLASS64) {
    reject("ELF class {} is not 64-bit; build the guest with -m64",
           header.e_ident[EI_CLASS] == ELFCLASS32 ? "32-bit" : "unknown");
  }
  if (header.e_ident[EI_DATA] != ELFDATA2LSB) {
    reject("not little-endian; x86-64 guests are little-endian");
  }
  if (header.e_ident[EI_VERSION] != EV_CURRENT) {
    reject("unknown ELF version {}", header.e_ident[EI_VERSION]);
  }
  if (header.e_machine != EM_X86_64) {
    reject("machine {} is not x86-64 (62); build the guest for x86-64", header.e_machine);
  }
  if (header.e_type != ET_EXEC) {
    reject("ELF type {} is not an executable (ET_EXEC){}", header.e_type,
           header.e_type == ET_DYN ? "; link with -static -no-pie" : "");
  }
}

void check_program_headers(const Elf64_Ehdr& header, uint64_t file_size, const Rejecter& reject) {
  if (header.e_phentsize != sizeof(Elf64_Phdr)) {
    reject("program header entry size {} is not {}", header.e_phentsize, sizeof(Elf64_Phdr));
  }
  if (header.e_phnum == 0) reject("no program headers, so nothing to load");
  if (header.e_phnum == PN_XNUM) reject("extended program header numbering is not supported");
  uint64_t table_end = 0;
  if (add_overflows(header.e_phoff, uint64_t{header.e_phnum} * sizeof(Elf64_Phdr), &table_end) ||
      table_end > file_size) {
    reject(
        "program header table ({} entries at offset {:#x}) runs past the end of the file "
        "({} bytes): the file is truncated",
        header.e_phnum, header.e_phoff, file_size);
  }
}

ElfSegment check_load_segment(const Elf64_Phdr& phdr, size_t index, uint64_t file_size,
                              uint64_t ram_bytes, const Rejecter& reject) {
  if (phdr.p_filesz > phdr.p_memsz) {
    reject("segment {}: file size {:#x} exceeds memory size {:#x}", index, phdr.p_filesz,
           phdr.p_memsz);
  }
  uint64_t file_end = 0;
  if (add_overflows(phdr.p_offset, phdr.p_filesz, &file_end)) {
    reject("segment {}: offset {:#x} + file size {:#x} overflows 64 bits: the header is corrupt",
           index, phdr.p_offset, phdr.p_filesz);
  }
  if (file_end > file_size) {
    reject(
        "segment {}: bytes {:#x}..{:#x} lie outside the file ({} bytes): the file is "
        "truncated",
        index, phdr.p_offset, file_end, file_size);
  }
  uint64_t end = 0;
  if (add_overflows(phdr.p_paddr, phdr.p_memsz, &end)) {
    reject(
        "segment {} at {:#x} with memory size {:#x} does not fit in guest RAM: its end "
        "overflows 64 bits (the header is corrupt)",
        index, phdr.p_paddr, phdr.p_memsz);
  }
  if (end > ram_bytes) {
    reject(
        "segment {} at {:#x}..{:#x} does not fit in guest RAM ({:#x} bytes); give the VM "
        "more --mem or link the guest lower",
        index, phdr.p_paddr, end, ram_bytes);
  }
  if (phdr.p_vaddr != phdr.p_paddr) {
    reject(
        "segment {}: virtual address {:#x} differs from physical address {:#x}; guest RAM "
        "is identity-mapped, so link with VMA == LMA",
        index, phdr.p_vaddr, phdr.p_paddr);
  }
  return {phdr.p_paddr, phdr.p_memsz, phdr.p_offset, phdr.p_filesz, phdr.p_flags};
}

void check_layout(const std::vector<ElfSegment>& segments, uint64_t entry, const Rejecter& reject) {
  if (segments.empty()) reject("no loadable (PT_LOAD) segment with content");
  for (size_t i = 1; i < segments.size(); ++i) {
    if (segments[i].paddr < segments[i - 1].end()) {
      reject("segments overlap: {:#x}..{:#x} and {:#x}..{:#x}", segments[i - 1].paddr,
             segments[i - 1].end(), segments[i].paddr, segments[i].end());
    }
  }
  bool entry_ok = std::any_of(segments.begin(), segments.end(), [&](const ElfSegment& s) {
    return s.executable() && entry >= s.paddr && entry < s.end();
  });
  if (!entry_ok) {
    reject("entry point {:#x} is not inside a loaded executable segment", entry);
  }
}

}  // namespace

ElfImage parse_elf(std::string name, std::vector<uint8_t> bytes, uint64_t ram_bytes) {
  Rejecter reject(name);
  if (bytes.size() < sizeof(Elf64_Ehdr)) {
    reject(
        "{} bytes is too short for an ELF64 header ({} bytes): the file is truncated or not "
        "an ELF executable",
        bytes.size(), sizeof(Elf64_Ehdr));
  }
  Elf64_Ehdr header;
  std::memcpy(&header, bytes.data(), sizeof(header));
  check_identification(header, reject);
  check_program_headers(header, bytes.size(), reject);

  std::vector<ElfSegment> segments;
  for (size_t i = 0; i < header.e_phnum; ++i) {
    Elf64_Phdr phdr;
    std::memcpy(&phdr, bytes.data() + header.e_phoff + i * sizeof(Elf64_Phdr), sizeof(phdr));
    switch (phdr.p_type) {
      case PT_LOAD: {
        ElfSegment segment = check_load_segment(phdr, i, bytes.size(), ram_bytes, reject);
        if (segment.memsz > 0) segments.push_back(segment);
        break;
      }
      case PT_INTERP:
      case PT_DYNAMIC:
        reject("segment {} asks for dynamic linking; link the guest with -static -nostdlib", i);
      case PT_TLS:
        reject("segment {} is thread-local storage, which the guest ABI does not set up", i);
      default:
        break;  // notes, GNU_STACK, GNU_PROPERTY: nothing to load
    }
  }
  std::sort(segments.begin(), segments.end(),
            [](const ElfSegment& a, const ElfSegment& b) { return a.paddr < b.paddr; });
  check_layout(segments, header.e_entry, reject);

  ElfImage image;
  image.name = std::move(name);
  image.bytes = std::move(bytes);
  image.entry = header.e_entry;
  image.segments = std::move(segments);
  return image;
}

ElfImage read_elf_file(const std::string& path, uint64_t ram_bytes) {
  // A FIFO, a device, a directory or an oversized file is refused before
  // anything is read; the header is checked before the rest is read.
  uint64_t size = 0;
  int fd = open_input_file(path, "guest image", kMaxImageBytes, size);
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  std::string header =
      read_bytes(fd, 0, std::min<uint64_t>(size, sizeof(Elf64_Ehdr)), path, "guest image");
  if (header.size() < SELFMAG || std::memcmp(header.data(), ELFMAG, SELFMAG) != 0) {
    parse_elf(path, std::vector<uint8_t>(header.begin(), header.end()), ram_bytes);  // rejects
  }
  std::string bytes = read_bytes(fd, 0, size, path, "guest image");
  return parse_elf(path, std::vector<uint8_t>(bytes.begin(), bytes.end()), ram_bytes);
}

void load_elf(const ElfImage& image, GuestPhysical& memory) {
  for (const ElfSegment& segment : image.segments) {
    auto failure =
        memory.write(segment.paddr, image.bytes.data() + segment.file_offset, segment.filesz);
    if (!failure && segment.memsz > segment.filesz) {
      failure = memory.zero(segment.paddr + segment.filesz, segment.memsz - segment.filesz);
    }
    if (failure) throw_setup_failure(fmt::format("loading {}", image.name), *failure);
  }
}

}  // namespace sptelab::hypervisor
