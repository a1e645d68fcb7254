// Filters of export.h: which events `sptelab trace --gfn/--pfn/--where/
// --event/--thread/--from/--to` keeps.
#include <fnmatch.h>

#include <charconv>
#include <optional>

#include "base/x86_pte.h"
#include "trace/export.h"
#include "trace/kernel.h"
#include "trace/symbols.h"

namespace sptelab::trace {
namespace {

constexpr uint64_t kExitMmio = 6;  // KVM_EXIT_MMIO
// Native mode's spte fault: KVM_RUN failed with EFAULT, kvm_run's
// exit_reason stays 0 (KVM_EXIT_UNKNOWN), and the exit loop records the gpa
// it decoded from the instruction (0 when it found none).
constexpr uint64_t kExitNativeFault = 0;
constexpr uint64_t kPageMask = ~uint64_t{4095};

std::optional<size_t> arg_index(Kind kind, std::string_view name) {
  const KindInfo& kind_info = info(kind);
  for (size_t i = 0; i < kind_info.args.size(); ++i) {
    if (kind_info.args[i] == name) return i;
  }
  return std::nullopt;
}

bool glob_matches(const std::vector<std::string>& globs, std::string_view name) {
  std::string text(name);
  for (const std::string& glob : globs) {
    if (fnmatch(glob.c_str(), text.c_str(), 0) == 0) return true;
  }
  return false;
}

bool event_name_matches(const TraceFile& file, const Event& event,
                        const std::vector<std::string>& globs) {
  if (glob_matches(globs, info(event.kind).name)) return true;
  return event.kind == Kind::kKernel && glob_matches(globs, kernel_event_name(file, event));
}

bool thread_matches(const TraceFile& file, const Event& event,
                    const std::vector<std::string>& globs) {
  if (glob_matches(globs, file.thread_name(event.thread))) return true;
  return event.kind == Kind::kKernel && glob_matches(globs, kernel_task_name(file, event));
}

// Host events name host virtual addresses: they are about the gfn when they
// touch the page the gfn lives at.
bool host_event_covers(const Event& event, uint64_t hva) {
  if (auto addr = arg_index(event.kind, "addr")) return (event.args[*addr] & kPageMask) == hva;
  auto start = arg_index(event.kind, "start");
  auto end = arg_index(event.kind, "end");
  if (start && end) return event.args[*start] <= hva && hva < event.args[*end];
  return false;
}

bool gfn_matches(const Event& event, uint64_t gfn, std::optional<uint64_t> hva) {
  if (auto index = arg_index(event.kind, "gfn")) return event.args[*index] == gfn;
  if (event.kind == Kind::kVcpuExit) {
    const bool names_a_page =
        event.args[1] == kExitMmio || (event.args[1] == kExitNativeFault && event.args[3] != 0);
    return names_a_page && event.args[3] >> 12 == gfn;
  }
  if (event.kind == Kind::kKernel) return event.args[3] == gfn;
  return hva && host_event_covers(event, *hva);
}

bool pfn_matches(const Event& event, uint64_t pfn) {
  const KindInfo& kind_info = info(event.kind);
  for (size_t i = 0; i < kind_info.args.size(); ++i) {
    const uint64_t value = event.args[i];
    switch (arg_style(event.kind, i)) {
      case ArgStyle::kFrame:
        if (value == pfn) return true;
        break;
      case ArgStyle::kPte:
        if ((value & x86::kPtePresent) && (value & x86::kPteAddressMask) >> 12 == pfn) return true;
        break;
      default:
        break;
    }
  }
  return false;
}

// `name=text`: an argument called name whose value is the number text reads
// as, or whose printed form (up to its first space: "pfn=0x12 P+W" prints
// "0x12") is text.
bool field_matches(const Event& event, const std::string& name, const std::string& text) {
  std::optional<size_t> index = arg_index(event.kind, name);
  if (!index) return false;
  const uint64_t value = event.args[*index];
  if (std::optional<uint64_t> number = parse_number(text); number && *number == value) return true;
  const std::string shown = format_arg(event.kind, *index, value);
  return shown == text || shown.substr(0, shown.find(' ')) == text;
}

bool fields_match(const Event& event, const Filter& filter) {
  for (const auto& [name, text] : filter.fields) {
    if (!field_matches(event, name, text)) return false;
  }
  return true;
}

}  // namespace

// Decimal or 0x hex, the whole text, no overflow.
std::optional<uint64_t> parse_number(std::string_view text) {
  int base = 10;
  if (text.substr(0, 2) == "0x" || text.substr(0, 2) == "0X") {
    text.remove_prefix(2);
    base = 16;
  }
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value, base);
  if (error != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

bool is_argument_name(std::string_view name) {
  for (size_t i = 0; i < static_cast<size_t>(Kind::kCount); ++i) {
    if (arg_index(static_cast<Kind>(i), name)) return true;
  }
  return false;
}

std::vector<std::string> split_list(std::string_view list) {
  std::vector<std::string> items;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    if (!item.empty()) items.emplace_back(item);
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return items;
}

std::vector<size_t> select_events(const TraceFile& file, const Filter& filter) {
  std::optional<uint64_t> hva;
  if (filter.gfn) hva = AddressMap(file).hva(*filter.gfn);
  const uint64_t start = file.start_ns();
  std::vector<size_t> selected;
  const std::vector<Event>& events = file.snapshot.events;
  for (size_t i = 0; i < events.size(); ++i) {
    const Event& event = events[i];
    uint64_t relative = event.ts_ns - start;
    if (filter.from_ns && relative < *filter.from_ns) continue;
    if (filter.to_ns && relative > *filter.to_ns) continue;
    if (!filter.events.empty() && !event_name_matches(file, event, filter.events)) continue;
    if (!filter.threads.empty() && !thread_matches(file, event, filter.threads)) continue;
    if (filter.gfn && !gfn_matches(event, *filter.gfn, hva)) continue;
    if (filter.pfn && !pfn_matches(event, *filter.pfn)) continue;
    if (!fields_match(event, filter)) continue;
    selected.push_back(i);
  }
  return selected;
}

}  // namespace sptelab::trace
