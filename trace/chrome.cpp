// Chrome/Perfetto JSON export (the Trace Event Format that ui.perfetto.dev
// and chrome://tracing load).
//
// - pid 1 is sptelab: one track (tid) per traced thread, vCPUs, host
//   threads and the remapper alike. pid 2 is the real kernel (--kernel):
//   a track per kernel task, events as instants.
// - Every event is drawn once. Begin/end pairs on one thread are one slice
//   each: notifier range start..end, PTL and mmap_lock holds, mm
//   operations, host faults and secondary-MMU faults. A pair that would
//   overlap another without nesting becomes an async slice ("b"/"e")
//   instead, which viewers draw on a track of its own. Any other event is
//   a complete ("X") slice at its time lasting at most 1 us, never reaching
//   its thread's next event, so slices nest and flows can bind to it. A
//   violation is a global instant ("i", "s":"g") named "violation:
//   DETECTOR", visible across every track at any zoom.
// - Slice names carry no addresses, pfns or gfns (Perfetto groups slices by
//   name); those are in each slice's args.
// - Flows ("s" then "f" with "bp":"e", one id each) go from an invalidation
//   to each spte zap and each fault retry it caused (link_invalidations).
#include <algorithm>
#include <unordered_map>

#include <fmt/core.h>

#include "base/json.h"
#include "trace/export.h"
#include "trace/insn.h"
#include "trace/kernel.h"
#include "trace/symbols.h"

namespace sptelab::trace {
namespace {

constexpr uint64_t kPointMaxNs = 1000;
constexpr int kSptelabPid = 1;
constexpr int kKernelPid = 2;

const char* category(Kind kind) {
  switch (kind) {
    case Kind::kPtlLock:
    case Kind::kPtlUnlock:
      return "ptl";
    case Kind::kNotifyInvalidatePage:
    case Kind::kNotifyInvalidateRange:
    case Kind::kNotifyRangeStart:
    case Kind::kNotifyRangeEnd:
    case Kind::kNotifyClearFlushYoung:
    case Kind::kNotifyClearYoung:
    case Kind::kNotifyTestYoung:
    case Kind::kNotifyChangePte:
    case Kind::kNotifySecondaryTlbs:
    case Kind::kNotifyRelease:
    case Kind::kIntervalInvalidate:
    case Kind::kSleepInAtomic:
      return "mmu_notifier";
    case Kind::kSpteInstall:
    case Kind::kSpteZap:
    case Kind::kSpteProtect:
    case Kind::kSpteAge:
    case Kind::kFaultBegin:
    case Kind::kFaultRetry:
    case Kind::kFaultFixed:
      return "spte";
    case Kind::kVcpuExit:
    case Kind::kVcpuInsn:
    case Kind::kVcpuEntry:
      return "kvm";
    case Kind::kCheckpoint:
    case Kind::kViolation:
    case Kind::kDelayInjected:
      return "scenario";
    case Kind::kKernel:
      return "kernel";
    default:
      return "mm";
  }
}

// A slice to draw: from a begin/end pair, or one event's point.
struct Slice {
  uint32_t thread = 0;
  uint64_t begin_ns = 0;
  uint64_t end_ns = 0;
  std::string name;
  const char* cat = "";
  std::string args;  // a JSON object
  bool async = false;
  size_t begin_index = 0, end_index = 0;  // the events the slice stands for
};

class ChromeWriter {
 public:
  ChromeWriter(const TraceFile& file, const Filter& filter)
      : file_(file),
        events_(file.snapshot.events),
        selected_(events_.size(), false),
        in_pair_(events_.size(), false),
        pair_begin_(events_.size(), 0),
        point_end_(events_.size(), 0) {
    for (size_t index : select_events(file, filter)) selected_[index] = true;
    compute_point_ends();
  }

  std::string write() {
    out_ = "{\"traceEvents\":[\n";
    write_metadata();
    write_pairs();
    for (size_t i = 0; i < events_.size(); ++i) {
      if (selected_[i] && !in_pair_[i]) write_event(i);
    }
    write_flows();
    out_ += "],\n\"displayTimeUnit\":\"ns\",\n\"otherData\":{";
    out_ += fmt::format("\"events\":\"{}\",\"lost_to_ring_overflow\":\"{}\"", events_.size(),
                        file_.snapshot.overwritten);
    for (const auto& [key, value] : file_.metadata) {
      out_ += fmt::format(",{}:{}", json_string(key), json_string(value));
    }
    out_ += "}}\n";
    return std::move(out_);
  }

 private:
  std::string ts(uint64_t ns) const {
    uint64_t relative = ns >= file_.start_ns() ? ns - file_.start_ns() : 0;
    return fmt::format("{}.{:03}", relative / 1000, relative % 1000);
  }
  static int tid(uint32_t thread) { return static_cast<int>(thread) + 1; }

  void append(const std::string& record) {
    if (!first_) out_ += ",\n";
    first_ = false;
    out_ += record;
  }

  // A point slice lasts until its thread's next event, at most kPointMaxNs.
  void compute_point_ends() {
    std::unordered_map<uint32_t, size_t> previous;
    for (size_t i = 0; i < events_.size(); ++i) {
      point_end_[i] = events_[i].ts_ns + kPointMaxNs;
      auto found = previous.find(events_[i].thread);
      if (found != previous.end()) {
        point_end_[found->second] = std::min(point_end_[found->second], events_[i].ts_ns);
      }
      previous[events_[i].thread] = i;
    }
  }

  void write_metadata() {
    std::string process = "sptelab";
    if (auto scheme = file_.meta("scheme")) process += " " + *scheme;
    append(fmt::format(
        "{{\"ph\":\"M\",\"pid\":{},\"name\":\"process_name\",\"args\":{{\"name\":{}}}}}",
        kSptelabPid, json_string(process)));
    for (const ThreadInfo& thread : file_.snapshot.threads) {
      append(
          fmt::format("{{\"ph\":\"M\",\"pid\":{},\"tid\":{},\"name\":\"thread_name\",\"args\":{{"
                      "\"name\":{}}}}}",
                      kSptelabPid, tid(thread.id), json_string(thread.name)));
      append(fmt::format(
          "{{\"ph\":\"M\",\"pid\":{},\"tid\":{},\"name\":\"thread_sort_index\",\"args\":{{"
          "\"sort_index\":{}}}}}",
          kSptelabPid, tid(thread.id), thread.id));
    }
    bool kernel = false;
    std::unordered_map<uint64_t, bool> named;
    for (size_t i = 0; i < events_.size(); ++i) {
      const Event& event = events_[i];
      if (event.kind != Kind::kKernel || !selected_[i] || named[event.args[2]]) continue;
      named[event.args[2]] = true;
      kernel = true;
      append(
          fmt::format("{{\"ph\":\"M\",\"pid\":{},\"tid\":{},\"name\":\"thread_name\",\"args\":{{"
                      "\"name\":{}}}}}",
                      kKernelPid, event.args[2], json_string(kernel_task_name(file_, event))));
    }
    if (kernel) {
      append(fmt::format(
          "{{\"ph\":\"M\",\"pid\":{},\"name\":\"process_name\",\"args\":{{\"name\":\"real kernel "
          "(tracefs)\"}}}}",
          kKernelPid));
    }
  }

  std::string event_args(const Event& event) const {
    const KindInfo& kind = info(event.kind);
    std::string args = "{";
    auto add = [&args](std::string_view name, const std::string& value) {
      if (args.size() > 1) args += ',';
      args += fmt::format("{}:{}", json_string(name), json_string(value));
    };
    if (event.kind == Kind::kKernel) {
      add("fields", std::string(kernel_event_fields(file_, event)));
      add("cpu", std::to_string(event.args[1]));
    } else if (event.kind == Kind::kVcpuInsn) {
      add("rip", fmt::format("{:#x}", event.args[0]));
      add("insn", describe_insn(event));
    } else {
      for (size_t a = 0; a < kind.args.size(); ++a) {
        if (!kind.args[a].empty()) add(kind.args[a], format_arg(event.kind, a, event.args[a]));
      }
    }
    return args + "}";
  }

  void write_event(size_t index) {
    const Event& event = events_[index];
    if (event.kind == Kind::kViolation) {
      // A global marker across every track, visible at any zoom, named by
      // its detector.
      append(fmt::format(
          "{{\"ph\":\"i\",\"s\":\"g\",\"pid\":{},\"tid\":{},\"ts\":{},\"name\":{},\"cat\":"
          "\"scenario\",\"args\":{}}}",
          kSptelabPid, tid(event.thread), ts(event.ts_ns),
          json_string("violation: " + format_arg(event.kind, 0, event.args[0])),
          event_args(event)));
      return;
    }
    if (event.kind == Kind::kKernel) {
      append(fmt::format(
          "{{\"ph\":\"i\",\"s\":\"t\",\"pid\":{},\"tid\":{},\"ts\":{},\"name\":{},\"cat\":"
          "\"kernel\",\"args\":{}}}",
          kKernelPid, event.args[2], ts(event.ts_ns), json_string(kernel_event_name(file_, event)),
          event_args(event)));
      return;
    }
    append(fmt::format(
        "{{\"ph\":\"X\",\"pid\":{},\"tid\":{},\"ts\":{},\"dur\":{},\"name\":{},\"cat\":\"{}\","
        "\"args\":{}}}",
        kSptelabPid, tid(event.thread), ts(event.ts_ns), ts_span(event.ts_ns, point_end_[index]),
        json_string(info(event.kind).name), category(event.kind), event_args(event)));
  }

  static std::string ts_span(uint64_t begin, uint64_t end) {
    uint64_t span = end - begin;
    return fmt::format("{}.{:03}", span / 1000, span % 1000);
  }

  // ---- begin/end pairs ----

  struct Open {
    size_t begin;
    Kind end_kind;
  };

  static std::optional<Kind> end_of(Kind begin) {
    switch (begin) {
      case Kind::kPtlLock:
        return Kind::kPtlUnlock;
      case Kind::kMmapLock:
        return Kind::kMmapUnlock;
      case Kind::kMmOpBegin:
        return Kind::kMmOpEnd;
      case Kind::kNotifyRangeStart:
        return Kind::kNotifyRangeEnd;
      case Kind::kHostFault:
        return Kind::kHostFaultDone;
      case Kind::kFaultBegin:
        return Kind::kFaultFixed;  // or kFaultRetry, see closes()
      default:
        return std::nullopt;
    }
  }

  // Whether `end` closes the pair opened by `begin` (same thread).
  static bool closes(const Event& begin, const Event& end) {
    switch (begin.kind) {
      case Kind::kPtlLock:
        return end.kind == Kind::kPtlUnlock && end.args[0] == begin.args[0];
      case Kind::kMmapLock:
        return end.kind == Kind::kMmapUnlock && end.args[0] == begin.args[0];
      case Kind::kMmOpBegin:
        return end.kind == Kind::kMmOpEnd && end.args == begin.args;
      case Kind::kNotifyRangeStart:
        return end.kind == Kind::kNotifyRangeEnd && end.args[0] == begin.args[0] &&
               end.args[1] == begin.args[1];
      case Kind::kHostFault:
        return end.kind == Kind::kHostFaultDone && end.args[0] == begin.args[0];
      case Kind::kFaultBegin:
        return (end.kind == Kind::kFaultFixed || end.kind == Kind::kFaultRetry) &&
               end.args[0] == begin.args[0];
      default:
        return false;
    }
  }

  // Names without addresses or frame numbers: Perfetto groups slices by
  // name, so "ptl" is one row of its statistics, not one per page table.
  // The addresses are in the slice's args.
  static std::string pair_name(const Event& begin, const Event& end) {
    switch (begin.kind) {
      case Kind::kPtlLock:
        return "ptl";
      case Kind::kMmapLock:
        return begin.args[0] ? "mmap_lock write" : "mmap_lock read";
      case Kind::kMmOpBegin:
        return format_arg(begin.kind, 0, begin.args[0]);
      case Kind::kNotifyRangeStart:
        return fmt::format("invalidate {}", format_arg(begin.kind, 2, begin.args[2]));
      case Kind::kHostFault:
        return "host fault";
      case Kind::kFaultBegin:
        return end.kind == Kind::kFaultRetry ? "spte fault (retry)" : "spte fault (fixed)";
      default:
        return "?";
    }
  }

  // The args of both ends; a field the end repeats is given once.
  std::string pair_args(const Event& begin, const Event& end) const {
    std::string args = event_args(begin);
    std::string end_args = event_args(end);
    const KindInfo& begin_kind = info(begin.kind);
    const KindInfo& end_kind = info(end.kind);
    args.pop_back();  // the closing brace
    for (size_t a = 0; a < end_kind.args.size(); ++a) {
      const std::string_view name = end_kind.args[a];
      if (name.empty() || std::find(begin_kind.args.begin(), begin_kind.args.end(), name) !=
                              begin_kind.args.end()) {
        continue;
      }
      args += fmt::format("{}{}:{}", args.size() > 1 ? "," : "", json_string(name),
                          json_string(format_arg(end.kind, a, end.args[a])));
    }
    return args + "}";
  }

  std::vector<Slice> collect_pairs() const {
    std::vector<Slice> slices;
    std::unordered_map<uint32_t, std::vector<size_t>> open;  // per thread, begin indexes
    for (size_t i = 0; i < events_.size(); ++i) {
      const Event& event = events_[i];
      if (end_of(event.kind)) {
        open[event.thread].push_back(i);
        // A kvm_page_fault begins a pair; fall through for nothing else.
        continue;
      }
      auto& stack = open[event.thread];
      for (size_t k = stack.size(); k-- > 0;) {
        const Event& begin = events_[stack[k]];
        if (!closes(begin, event)) continue;
        if (selected_[stack[k]] || selected_[i]) {
          Slice slice;
          slice.thread = event.thread;
          slice.begin_ns = begin.ts_ns;
          slice.end_ns = event.ts_ns;
          slice.name = pair_name(begin, event);
          slice.cat = category(begin.kind);
          slice.args = pair_args(begin, event);
          slice.begin_index = stack[k];
          slice.end_index = i;
          slices.push_back(std::move(slice));
        }
        stack.erase(stack.begin() + static_cast<std::ptrdiff_t>(k));
        break;
      }
    }
    return slices;
  }

  // Marks pairs that overlap another pair on their thread without nesting.
  static void demote_overlaps(std::vector<Slice>& slices) {
    std::vector<size_t> order(slices.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
      const Slice& x = slices[a];
      const Slice& y = slices[b];
      if (x.thread != y.thread) return x.thread < y.thread;
      if (x.begin_ns != y.begin_ns) return x.begin_ns < y.begin_ns;
      return x.end_ns > y.end_ns;
    });
    std::vector<size_t> stack;
    for (size_t index : order) {
      Slice& slice = slices[index];
      while (!stack.empty() && (slices[stack.back()].thread != slice.thread ||
                                slices[stack.back()].end_ns <= slice.begin_ns)) {
        stack.pop_back();
      }
      if (!stack.empty() && slices[stack.back()].end_ns < slice.end_ns) {
        slice.async = true;  // crosses its parent's end
        continue;
      }
      stack.push_back(index);
    }
  }

  void write_pairs() {
    std::vector<Slice> slices = collect_pairs();
    demote_overlaps(slices);
    for (const Slice& slice : slices) {
      for (size_t index : {slice.begin_index, slice.end_index}) {
        in_pair_[index] = true;
        pair_begin_[index] = slice.begin_ns;
      }
      if (!slice.async) {
        append(fmt::format(
            "{{\"ph\":\"X\",\"pid\":{},\"tid\":{},\"ts\":{},\"dur\":{},\"name\":{},\"cat\":\"{}\","
            "\"args\":{}}}",
            kSptelabPid, tid(slice.thread), ts(slice.begin_ns),
            ts_span(slice.begin_ns, slice.end_ns), json_string(slice.name), slice.cat, slice.args));
        continue;
      }
      uint64_t id = ++async_ids_;
      append(fmt::format(
          "{{\"ph\":\"b\",\"pid\":{},\"tid\":{},\"ts\":{},\"id\":{},\"name\":{},\"cat\":\"{}\","
          "\"args\":{}}}",
          kSptelabPid, tid(slice.thread), ts(slice.begin_ns), id, json_string(slice.name),
          slice.cat, slice.args));
      append(fmt::format(
          "{{\"ph\":\"e\",\"pid\":{},\"tid\":{},\"ts\":{},\"id\":{},\"name\":{},\"cat\":\"{}\"}}",
          kSptelabPid, tid(slice.thread), ts(slice.end_ns), id, json_string(slice.name),
          slice.cat));
    }
  }

  // ---- flows ----

  // Flow ends sit in the middle of their point slices, so that each binds
  // to that slice and not to a neighbour with the same timestamp; an event
  // drawn as part of a begin/end slice binds 1 ns into that slice.
  std::string flow_ts(size_t index) const {
    if (in_pair_[index]) return ts(pair_begin_[index] + 1);
    uint64_t begin = events_[index].ts_ns;
    return ts(begin + (point_end_[index] - begin) / 2);
  }

  void write_flows() {
    uint64_t id = 0;
    for (const Link& link : link_invalidations(file_)) {
      if (!selected_[link.from] || !selected_[link.to]) continue;
      ++id;
      const char* name = link.kind == LinkKind::kZap ? "invalidation->zap" : "invalidation->retry";
      append(fmt::format(
          "{{\"ph\":\"s\",\"pid\":{},\"tid\":{},\"ts\":{},\"id\":{},\"name\":\"{}\",\"cat\":"
          "\"flow\"}}",
          kSptelabPid, tid(events_[link.from].thread), flow_ts(link.from), id, name));
      append(fmt::format(
          "{{\"ph\":\"f\",\"bp\":\"e\",\"pid\":{},\"tid\":{},\"ts\":{},\"id\":{},\"name\":\"{}\","
          "\"cat\":\"flow\"}}",
          kSptelabPid, tid(events_[link.to].thread), flow_ts(link.to), id, name));
    }
  }

  const TraceFile& file_;
  const std::vector<Event>& events_;
  std::vector<bool> selected_;
  // Events a begin/end slice stands for (drawn once, as that slice), and
  // where that slice begins.
  std::vector<bool> in_pair_;
  std::vector<uint64_t> pair_begin_;
  std::vector<uint64_t> point_end_;
  std::string out_;
  bool first_ = true;
  uint64_t async_ids_ = 0;
};

}  // namespace

std::string format_chrome_json(const TraceFile& file, const Filter& filter) {
  return ChromeWriter(file, filter).write();
}

}  // namespace sptelab::trace
