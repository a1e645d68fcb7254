// The operations `sptelab conform` runs on the real kernel and on the
// emulator: a script of user operations on three slots of memory, one op a
// line. The parser checks every line against what the slots hold at that
// point (an op on pages the script unmapped, a write to pages it made
// read-only, a hole punched in anonymous memory), so that a script that
// parses runs on both sides without a fault or an error.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sptelab::conform {

// The three memslots of the VM, each mapped at a 2 MiB-aligned address.
enum class Slot : uint8_t {
  kAnon,   // private anonymous memory, MADV_NOHUGEPAGE
  kMemfd,  // a shared memfd mapping (tmpfs)
  kFile,   // a shared mapping of a regular file on disk
};
inline constexpr std::array<Slot, 3> kAllSlots = {Slot::kAnon, Slot::kMemfd, Slot::kFile};
const char* slot_name(Slot slot);
uint64_t slot_pages(Slot slot);  // 1024, 256, 64

enum class OpKind : uint8_t {
  kTouch,      // write one word of each page
  kDontneed,   // madvise(MADV_DONTNEED)
  kMprotect,   // mprotect(PROT_READ) or mprotect(PROT_READ | PROT_WRITE)
  kMunmap,     // munmap
  kMmap,       // mmap(MAP_FIXED) back over pages the script unmapped
  kForkCow,    // fork; the parent writes the pages while the child lives; the child exits
  kPunchHole,  // fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) on the slot's file
  kPageout,    // madvise(MADV_PAGEOUT)
  kMsync,      // write each page, then msync(MS_SYNC)
  kRemap,      // remap_file_pages, page by page: page i shows file page FIRST + (i + 1) % COUNT
};
const char* op_name(OpKind kind);  // as written in a script: "fork-cow"

struct ScriptOp {
  OpKind kind = OpKind::kTouch;
  Slot slot = Slot::kAnon;
  uint64_t first = 0;  // first page, relative to the slot
  uint64_t count = 0;
  bool read_only = false;  // mprotect: ro (else rw)
  size_t line = 0;         // 1-based line of the script
  std::string text;        // normalised: "mprotect anon 100 16 ro"
};

struct Script {
  std::vector<ScriptOp> ops;
};

// Parses a script; `#` starts a comment, blank lines are skipped. Throws
// Error(kBadInput) "script line N: ..." saying what is wrong with the first
// bad line: an unknown op or slot, a missing or extra argument, a number
// that is not one, a range outside the slot, a punch-hole or remap on the
// anonymous slot, a remap of fewer than 2 pages, an op on pages the script
// unmapped, an mmap over pages still mapped, a write (touch, msync,
// fork-cow) to read-only pages, an empty script.
Script parse_script(std::string_view text);

// The script `sptelab conform` runs without --ops: every op, including an
// mprotect and a munmap of part of a 2 MiB block.
std::string_view default_script();

}  // namespace sptelab::conform
