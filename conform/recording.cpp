#include "conform/recording.h"

#include <fmt/format.h>

#include <charconv>
#include <sstream>

#include "base/error.h"

namespace sptelab::conform {
namespace {

constexpr std::string_view kArrow = "=>";

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t' || text.back() == '\r')) {
    text.remove_suffix(1);
  }
  return text;
}

[[noreturn]] void fail(size_t line, const std::string& what) {
  throw_bad_input(fmt::format("recording line {}: {}", line, what));
}

int64_t page_of(std::string_view word, size_t line) {
  int64_t value = 0;
  auto [end, error] = std::from_chars(word.data(), word.data() + word.size(), value);
  if (error != std::errc() || end != word.data() + word.size() || word.empty()) {
    fail(line, fmt::format("'{}' is not a page number", word));
  }
  return value;
}

Slot slot_of(std::string_view word, size_t line) {
  for (Slot slot : kAllSlots) {
    if (word == slot_name(slot)) return slot;
  }
  fail(line, fmt::format("'{}' is not a slot (anon, memfd, file)", word));
}

OpRanges parse_ranges(std::string_view text, size_t line) {
  std::istringstream stream{std::string(text)};
  std::vector<std::string> storage;
  for (std::string word; stream >> word;) storage.push_back(word);
  if (storage.size() % 3 != 0) fail(line, "ranges are SLOT FIRST END triples");
  OpRanges ranges;
  for (size_t i = 0; i < storage.size(); i += 3) {
    SlotRange range;
    range.slot = slot_of(storage[i], line);
    range.first = page_of(storage[i + 1], line);
    range.end = page_of(storage[i + 2], line);
    if (range.end <= range.first) fail(line, "a range must end after it starts");
    ranges.push_back(range);
  }
  return ranges;
}

}  // namespace

std::string format_recording(const Script& script, const std::vector<OpRanges>& ranges,
                             std::string_view about) {
  std::string out = fmt::format(
      "# sptelab conform: the ranges kvm:kvm_unmap_hva_range reported per op, as SLOT FIRST END\n"
      "# (pages relative to the slot, in the kernel's order). {}\n",
      about);
  for (size_t i = 0; i < ranges.size() && i < script.ops.size(); ++i) {
    out += fmt::format("{} {}", script.ops[i].text, kArrow);
    for (const SlotRange& range : ranges[i]) {
      out += fmt::format(" {} {} {}", slot_name(range.slot), range.first, range.end);
    }
    out += '\n';
  }
  return out;
}

std::vector<OpRanges> parse_recording(std::string_view text, const Script& script) {
  std::vector<OpRanges> out;
  size_t line = 0;
  while (!text.empty()) {
    ++line;
    const size_t newline = text.find('\n');
    std::string_view content = trim(text.substr(0, newline));
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
    if (content.empty() || content.front() == '#') continue;
    const size_t arrow = content.find(kArrow);
    if (arrow == std::string_view::npos) fail(line, "expected 'OP SLOT FIRST COUNT => RANGES'");
    const std::string_view op = trim(content.substr(0, arrow));
    if (out.size() >= script.ops.size()) {
      fail(line, fmt::format("'{}' is beyond the script's {} ops", op, script.ops.size()));
    }
    const ScriptOp& expected = script.ops[out.size()];
    if (op != expected.text) {
      fail(line, fmt::format("op '{}' is not the script's op {} '{}' (script line {})", op,
                             out.size() + 1, expected.text, expected.line));
    }
    out.push_back(parse_ranges(content.substr(arrow + kArrow.size()), line));
  }
  if (out.size() != script.ops.size()) {
    throw_bad_input(
        fmt::format("the recording has {} ops, the script {}: record it again with "
                    "this script (--save-kernel)",
                    out.size(), script.ops.size()));
  }
  return out;
}

RecordedSide::RecordedSide(std::string text, std::string source)
    : text_(std::move(text)), source_(std::move(source)) {}

std::string RecordedSide::name() const {
  return fmt::format("kernel ranges recorded in {}", source_);
}

std::vector<OpRanges> RecordedSide::run(const Script& script, size_t max_ops) {
  std::vector<OpRanges> all = parse_recording(text_, script);
  if (all.size() > max_ops) all.resize(max_ops);
  return all;
}

}  // namespace sptelab::conform
