// The text exports of export.h: trace-cmd-report-like lines, the summary
// and the counterexample window.
#include <algorithm>
#include <map>
#include <unordered_map>

#include <fmt/core.h>

#include "trace/export.h"
#include "trace/insn.h"
#include "trace/kernel.h"
#include "trace/latency.h"
#include "trace/symbols.h"

namespace sptelab::trace {
namespace {

constexpr size_t kTaskWidth = 20;

std::string relative_time(const TraceFile& file, uint64_t ts_ns) {
  uint64_t relative = ts_ns >= file.start_ns() ? ts_ns - file.start_ns() : 0;
  return fmt::format("{}.{:09}", relative / 1000000000ull, relative % 1000000000ull);
}

std::string task_name(const TraceFile& file, const Event& event) {
  if (event.kind == Kind::kKernel) return kernel_task_name(file, event);
  return fmt::format("{}-{}", file.thread_name(event.thread), event.thread);
}

std::string event_body(const TraceFile& file, const Event& event) {
  if (event.kind == Kind::kKernel) {
    return fmt::format("{}: {} cpu={}", kernel_event_name(file, event),
                       kernel_event_fields(file, event), event.args[1]);
  }
  const KindInfo& kind = info(event.kind);
  if (event.kind == Kind::kVcpuInsn) {
    return fmt::format("{}: rip={:#x} {}", kind.name, event.args[0], describe_insn(event));
  }
  std::string body = fmt::format("{}:", kind.name);
  for (size_t i = 0; i < kind.args.size(); ++i) {
    if (kind.args[i].empty()) continue;
    body += fmt::format(" {}={}", kind.args[i], format_arg(event.kind, i, event.args[i]));
  }
  return body;
}

std::string line(const TraceFile& file, const Event& event, std::string_view annotation = {}) {
  return fmt::format("{:>{}} [{}] {}{}", task_name(file, event), kTaskWidth,
                     relative_time(file, event.ts_ns), event_body(file, event), annotation);
}

// What a line can say beyond its own event, from the events around it: the
// instruction behind a fault and the invalidation behind a retry.
class Annotator {
 public:
  explicit Annotator(const TraceFile& file) : file_(file) {
    for (const Link& link : link_invalidations(file)) {
      if (link.kind == LinkKind::kRetry) retry_cause_[link.to] = link;
    }
  }

  // Call for every event in order (selected or not): it tracks each
  // thread's last instruction.
  std::string annotate(size_t index) {
    const Event& event = file_.snapshot.events[index];
    switch (event.kind) {
      case Kind::kVcpuExit:
        last_insn_.erase(event.thread);
        return {};
      case Kind::kVcpuInsn:
        last_insn_[event.thread] = index;
        return {};
      case Kind::kFaultBegin: {
        auto found = last_insn_.find(event.thread);
        if (found == last_insn_.end()) return {};
        const Event& insn = file_.snapshot.events[found->second];
        return fmt::format(" rip={:#x} {}", insn.args[0], describe_insn(insn));
      }
      case Kind::kFaultRetry: {
        auto found = retry_cause_.find(index);
        if (found == retry_cause_.end()) return {};
        const Event& cause = file_.snapshot.events[found->second.from];
        return fmt::format(" <- {} {} [{}]{}", info(cause.kind).name, task_name(file_, cause),
                           relative_time(file_, cause.ts_ns),
                           found->second.covers ? "" : " (range misses the page: seq moved)");
      }
      default:
        return {};
    }
  }

 private:
  const TraceFile& file_;
  std::unordered_map<size_t, Link> retry_cause_;
  std::unordered_map<uint32_t, size_t> last_insn_;
};

std::string header(const TraceFile& file, size_t shown) {
  size_t total = file.snapshot.events.size();
  std::string out = fmt::format("# sptelab trace: {} events", total);
  if (shown != total) out += fmt::format(" ({} shown)", shown);
  out += fmt::format(", {} threads, {} events lost to ring overflow\n",
                     file.snapshot.threads.size(), file.snapshot.overwritten);
  for (const ThreadInfo& thread : file.snapshot.threads) {
    if (thread.overwritten == 0) continue;
    out += fmt::format("#   {}-{} lost its {} oldest events\n", thread.name, thread.id,
                       thread.overwritten);
  }
  if (file.unknown_events > 0) {
    std::string kinds;
    for (const std::string& kind : file.unknown_kinds) kinds += (kinds.empty() ? "" : ", ") + kind;
    out += fmt::format("# {} events of kinds this sptelab does not know were skipped ({})\n",
                       file.unknown_events, kinds);
  }
  for (const auto& [key, value] : file.metadata) {
    if (key.rfind("kernel.task.", 0) == 0) continue;
    out += fmt::format("# {}: {}\n", key, value);
  }
  return out;
}

}  // namespace

std::string format_event_line(const TraceFile& file, const Event& event) {
  return line(file, event);
}

std::string format_text(const TraceFile& file, const Filter& filter) {
  std::vector<size_t> selected = select_events(file, filter);
  std::string out = header(file, selected.size());
  Annotator annotator(file);
  size_t next = 0;
  for (size_t i = 0; i < file.snapshot.events.size() && next < selected.size(); ++i) {
    std::string annotation = annotator.annotate(i);
    if (selected[next] != i) continue;
    ++next;
    out += line(file, file.snapshot.events[i], annotation);
    out += '\n';
  }
  return out;
}

namespace {

using GfnCounts = std::map<uint64_t, std::map<std::string, uint64_t>>;

uint64_t total_of(const std::map<std::string, uint64_t>& counts) {
  uint64_t total = 0;
  for (const auto& [name, count] : counts) total += count;
  return total;
}

// The hottest gfns first (the top kSummaryTopGfns), or every gfn in order.
std::string gfn_section(const GfnCounts& per_gfn, bool all) {
  std::vector<GfnCounts::const_iterator> order;
  for (auto it = per_gfn.begin(); it != per_gfn.end(); ++it) order.push_back(it);
  std::string out;
  if (all) {
    out = fmt::format("\nevents per gfn ({} gfns):\n", per_gfn.size());
  } else {
    std::stable_sort(order.begin(), order.end(),
                     [](auto a, auto b) { return total_of(a->second) > total_of(b->second); });
    if (order.size() > kSummaryTopGfns) order.resize(kSummaryTopGfns);
    out = fmt::format("\nthe {} gfns with the most events (of {} gfns; --per-gfn lists all):\n",
                      order.size(), per_gfn.size());
  }
  for (auto it : order) {
    std::string detail;
    for (const auto& [name, count] : it->second) {
      detail += fmt::format("{}{} {}", detail.empty() ? "" : ", ", name, count);
    }
    out += fmt::format("  gfn {:#8x}  {:>8}  ({})\n", it->first, total_of(it->second), detail);
  }
  return out;
}

}  // namespace

std::string format_summary(const TraceFile& file, const Filter& filter, bool per_gfn_list) {
  std::vector<size_t> selected = select_events(file, filter);
  std::map<std::string, uint64_t> per_kind;
  GfnCounts per_gfn;
  std::map<std::string, uint64_t> per_thread;
  for (size_t index : selected) {
    const Event& event = file.snapshot.events[index];
    std::string name = event.kind == Kind::kKernel ? std::string(kernel_event_name(file, event))
                                                   : std::string(info(event.kind).name);
    ++per_kind[name];
    per_thread[task_name(file, event)]++;
    const KindInfo& kind = info(event.kind);
    for (size_t a = 0; a < kind.args.size(); ++a) {
      if (kind.args[a] == "gfn") ++per_gfn[event.args[a]][name];
    }
  }
  std::string out = header(file, selected.size());
  std::vector<std::pair<std::string, uint64_t>> kinds(per_kind.begin(), per_kind.end());
  std::stable_sort(kinds.begin(), kinds.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  out += "\nevents per kind:\n";
  for (const auto& [name, count] : kinds) out += fmt::format("  {:>10}  {}\n", count, name);
  out += gfn_section(per_gfn, per_gfn_list);
  out += "\nevents per thread:\n";
  for (const auto& [name, count] : per_thread) out += fmt::format("  {:>10}  {}\n", count, name);
  out += format_latencies(measure_latencies(file, selected));
  return out;
}

std::string format_window(const TraceFile& file, uint64_t ts_ns, size_t before, size_t after) {
  const std::vector<Event>& events = file.snapshot.events;
  auto moment = std::lower_bound(events.begin(), events.end(), ts_ns,
                                 [](const Event& e, uint64_t ns) { return e.ts_ns < ns; });
  size_t at = static_cast<size_t>(moment - events.begin());
  size_t first = at > before ? at - before : 0;
  size_t last = std::min(events.size(), at + after);
  std::string out;
  if (file.snapshot.overwritten > 0) {
    out += fmt::format("   ({} events lost to ring overflow: the window may miss some)\n",
                       file.snapshot.overwritten);
  }
  Annotator annotator(file);
  for (size_t i = 0; i < last; ++i) {
    std::string annotation = annotator.annotate(i);
    if (i < first) continue;
    out += fmt::format("{} {}\n", i == at ? "=>" : "  ", line(file, events[i], annotation));
  }
  return out;
}

std::string format_window(const Snapshot& snapshot, uint64_t ts_ns, size_t before, size_t after) {
  return format_window(make_trace_file(snapshot), ts_ns, before, after);
}

}  // namespace sptelab::trace
