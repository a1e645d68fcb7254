#include "conform/script.h"

#include <fmt/format.h>

#include <charconv>
#include <optional>

#include "base/error.h"

namespace sptelab::conform {
namespace {

constexpr std::array<OpKind, 10> kAllOps = {
    OpKind::kTouch,   OpKind::kDontneed,  OpKind::kMprotect, OpKind::kMunmap, OpKind::kMmap,
    OpKind::kForkCow, OpKind::kPunchHole, OpKind::kPageout,  OpKind::kMsync,  OpKind::kRemap};

std::string op_list() {
  std::string names;
  for (OpKind kind : kAllOps)
    names += fmt::format("{}{}", names.empty() ? "" : ", ", op_name(kind));
  return names;
}

std::string slot_list() {
  std::string names;
  for (Slot slot : kAllSlots) {
    names += fmt::format("{}{} ({} pages)", names.empty() ? "" : ", ", slot_name(slot),
                         slot_pages(slot));
  }
  return names;
}

std::vector<std::string_view> words_of(std::string_view line) {
  std::vector<std::string_view> words;
  size_t at = 0;
  while (at < line.size()) {
    while (at < line.size() && (line[at] == ' ' || line[at] == '\t' || line[at] == '\r')) ++at;
    size_t end = at;
    while (end < line.size() && line[end] != ' ' && line[end] != '\t' && line[end] != '\r') ++end;
    if (end > at) words.push_back(line.substr(at, end - at));
    at = end;
  }
  return words;
}

// A page number: decimal, or hexadecimal with 0x.
std::optional<uint64_t> parse_count(std::string_view word) {
  int base = 10;
  if (word.size() > 2 && word[0] == '0' && (word[1] == 'x' || word[1] == 'X')) {
    word.remove_prefix(2);
    base = 16;
  }
  uint64_t value = 0;
  auto [end, error] = std::from_chars(word.data(), word.data() + word.size(), value, base);
  if (error != std::errc() || end != word.data() + word.size() || word.empty()) return std::nullopt;
  return value;
}

// What the script has done to each page so far.
struct PageState {
  bool mapped = true;
  bool writable = true;
};

class Parser {
 public:
  Parser() {
    for (Slot slot : kAllSlots) pages_[static_cast<size_t>(slot)].resize(slot_pages(slot));
  }

  void parse_line(std::string_view line, size_t number) {
    line_ = number;
    if (size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    const std::vector<std::string_view> words = words_of(line);
    if (words.empty()) return;
    ScriptOp op;
    op.line = number;
    op.kind = kind_of(words[0]);
    const size_t expected = op.kind == OpKind::kMprotect ? 5 : 4;
    if (words.size() != expected) {
      fail(fmt::format("'{}' takes {}, not {} argument(s)", words[0],
                       op.kind == OpKind::kMprotect ? "SLOT FIRST COUNT ro|rw" : "SLOT FIRST COUNT",
                       words.size() - 1));
    }
    op.slot = slot_of(words[1]);
    op.first = number_of(words[2], "FIRST");
    op.count = number_of(words[3], "COUNT");
    if (op.kind == OpKind::kMprotect) {
      if (words[4] != "ro" && words[4] != "rw") {
        fail(fmt::format("mprotect's protection is ro or rw, not '{}'", words[4]));
      }
      op.read_only = words[4] == "ro";
    }
    check_range(op);
    check_kind(op);
    check_state(op);
    apply(op);
    op.text = fmt::format("{} {} {} {}{}", op_name(op.kind), slot_name(op.slot), op.first, op.count,
                          op.kind == OpKind::kMprotect ? (op.read_only ? " ro" : " rw") : "");
    script_.ops.push_back(std::move(op));
  }

  Script finish() {
    if (script_.ops.empty()) {
      throw_bad_input("the script has no operation (only blank lines and # comments)");
    }
    return std::move(script_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw_bad_input(fmt::format("script line {}: {}", line_, what));
  }

  OpKind kind_of(std::string_view word) const {
    for (OpKind kind : kAllOps) {
      if (word == op_name(kind)) return kind;
    }
    fail(fmt::format("unknown operation '{}'; operations: {}", word, op_list()));
  }

  Slot slot_of(std::string_view word) const {
    for (Slot slot : kAllSlots) {
      if (word == slot_name(slot)) return slot;
    }
    fail(fmt::format("unknown slot '{}'; slots: {}", word, slot_list()));
  }

  uint64_t number_of(std::string_view word, const char* what) const {
    std::optional<uint64_t> value = parse_count(word);
    if (!value)
      fail(fmt::format("{} '{}' is not a page number (decimal, or hex with 0x)", what, word));
    return *value;
  }

  void check_range(const ScriptOp& op) const {
    const uint64_t pages = slot_pages(op.slot);
    if (op.count == 0) fail("COUNT must be at least 1");
    if (op.first >= pages || op.count > pages - op.first) {
      fail(fmt::format("pages {}..{} are outside slot {} of {} pages (0..{})", op.first,
                       op.first + op.count - 1, slot_name(op.slot), pages, pages - 1));
    }
  }

  void check_kind(const ScriptOp& op) const {
    if ((op.kind == OpKind::kPunchHole || op.kind == OpKind::kRemap) && op.slot == Slot::kAnon) {
      fail(fmt::format("{} needs a file: use slot memfd or file, not anon", op_name(op.kind)));
    }
    if (op.kind == OpKind::kRemap && op.count < 2) {
      fail("remap rotates the pages it names: COUNT must be at least 2");
    }
  }

  // Every page of the op must be mapped (unmapped for mmap), and writable
  // for an op that writes; punch-hole works on the file, mapped or not.
  void check_state(const ScriptOp& op) const {
    if (op.kind == OpKind::kPunchHole) return;
    const bool writes =
        op.kind == OpKind::kTouch || op.kind == OpKind::kMsync || op.kind == OpKind::kForkCow;
    for (uint64_t page = op.first; page < op.first + op.count; ++page) {
      const PageState& state = pages_[static_cast<size_t>(op.slot)][page];
      if (op.kind == OpKind::kMmap && state.mapped) {
        fail(fmt::format("mmap over page {} of {}, which is still mapped (munmap it first)", page,
                         slot_name(op.slot)));
      }
      if (op.kind != OpKind::kMmap && !state.mapped) {
        fail(fmt::format("page {} of {} is not mapped (an earlier munmap; mmap it back first)",
                         page, slot_name(op.slot)));
      }
      if (writes && !state.writable) {
        fail(fmt::format("{} writes page {} of {}, which is read-only (mprotect ... rw first)",
                         op_name(op.kind), page, slot_name(op.slot)));
      }
    }
  }

  void apply(const ScriptOp& op) {
    for (uint64_t page = op.first; page < op.first + op.count; ++page) {
      PageState& state = pages_[static_cast<size_t>(op.slot)][page];
      if (op.kind == OpKind::kMunmap) state.mapped = false;
      if (op.kind == OpKind::kMmap) state = PageState{};
      if (op.kind == OpKind::kMprotect) state.writable = !op.read_only;
      if (op.kind == OpKind::kRemap) state.writable = true;  // remap_file_pages keeps the VMA's
    }
  }

  Script script_;
  std::array<std::vector<PageState>, kAllSlots.size()> pages_;
  size_t line_ = 0;
};

}  // namespace

const char* slot_name(Slot slot) {
  switch (slot) {
    case Slot::kAnon:
      return "anon";
    case Slot::kMemfd:
      return "memfd";
    case Slot::kFile:
      return "file";
  }
  return "?";
}

uint64_t slot_pages(Slot slot) {
  switch (slot) {
    case Slot::kAnon:
      return 1024;
    case Slot::kMemfd:
      return 256;
    case Slot::kFile:
      return 64;
  }
  return 0;
}

const char* op_name(OpKind kind) {
  switch (kind) {
    case OpKind::kTouch:
      return "touch";
    case OpKind::kDontneed:
      return "dontneed";
    case OpKind::kMprotect:
      return "mprotect";
    case OpKind::kMunmap:
      return "munmap";
    case OpKind::kMmap:
      return "mmap";
    case OpKind::kForkCow:
      return "fork-cow";
    case OpKind::kPunchHole:
      return "punch-hole";
    case OpKind::kPageout:
      return "pageout";
    case OpKind::kMsync:
      return "msync";
    case OpKind::kRemap:
      return "remap";
  }
  return "?";
}

Script parse_script(std::string_view text) {
  Parser parser;
  size_t number = 0;
  while (!text.empty()) {
    ++number;
    const size_t newline = text.find('\n');
    parser.parse_line(text.substr(0, newline), number);
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
  }
  return parser.finish();
}

std::string_view default_script() {
  return R"(# sptelab conform's default script: every slot filled, then each op once.
# SLOT FIRST COUNT are pages relative to the slot (anon 1024, memfd 256,
# file 64 pages; anon spans two 2 MiB blocks: pages 0-511 and 512-1023).
mprotect anon 520 8 ro     # nothing touched yet: the split still brackets the block
mprotect anon 520 8 rw
touch anon 0 1024
touch memfd 0 256
touch file 0 64
dontneed anon 0 16
touch anon 0 16
mprotect anon 100 16 ro    # part of a 2 MiB block: the VMA split brackets the block
mprotect anon 100 16 rw    # merges back: one VMA again
munmap anon 600 8          # part of the second block
mmap anon 600 8
touch anon 600 8
fork-cow anon 0 4
pageout anon 200 4         # no swap here: anonymous pages stay
dontneed memfd 64 8
mprotect memfd 0 16 ro
mprotect memfd 0 16 rw
punch-hole memfd 8 8
punch-hole file 8 8
pageout memfd 16 4
pageout file 16 4
msync file 24 4
msync memfd 24 4
remap memfd 32 4
remap file 32 4
punch-hole file 30 8       # over the VMAs remap made: one bracket each, by file offset
mprotect file 28 12 ro     # one bracket per VMA
mprotect file 28 12 rw
munmap file 40 8
mmap file 40 8
touch file 40 8
)";
}

}  // namespace sptelab::conform
