// Filters of export.h: which events `sptelab trace --gfn/--event/--thread/
// --from/--to` keeps.
#include <fnmatch.h>

#include <optional>

#include "trace/export.h"
#include "trace/kernel.h"

namespace sptelab::trace {
namespace {

constexpr uint64_t kExitMmio = 6;  // KVM_EXIT_MMIO
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
  if (event.kind == Kind::kVcpuExit)
    return event.args[1] == kExitMmio && event.args[3] >> 12 == gfn;
  if (event.kind == Kind::kKernel) return event.args[3] == gfn;
  return hva && host_event_covers(event, *hva);
}

}  // namespace

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
    selected.push_back(i);
  }
  return selected;
}

}  // namespace sptelab::trace
