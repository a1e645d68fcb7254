// sptelab trace FILE [--gfn N] [--pfn N] [--where F=V] [--event NAME[,NAME]] [--thread NAME]
//                    [--from T] [--to T] [--around-violation [N]] [--summary
//                    [--per-gfn]] [--format text|chrome] [--output FILE]
#include <fnmatch.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>

#include <fmt/core.h>

#include "base/error.h"
#include "base/files.h"
#include "tools/command.h"
#include "tools/gzip.h"
#include "tools/options.h"
#include "trace/export.h"
#include "trace/file.h"

namespace sptelab::tools {
namespace {

constexpr const char* kTraceHelp = R"(usage: sptelab trace FILE [options]

Shows a trace written by 'sptelab run --trace FILE' or 'sptelab race --trace
FILE': one line per event like trace-cmd report (the default), a summary,
or Chrome/Perfetto JSON to open in ui.perfetto.dev or chrome://tracing.
The header always says how many events were lost to ring overflow.

options:
  --gfn N          only events about guest page N (decimal or 0x hex): spte
                   events, faults, MMIO exits on it, and host events on its
                   host address
  --pfn N          only events about host frame N (decimal or 0x hex): a
                   pfn or table_pfn argument equal to N, or a present PTE
                   or spte argument that maps it
  --where F=V,...  only events with an argument F whose value is V: a
                   number (decimal or 0x hex) or the name the text shows,
                   e.g. --where detector=lost-write or --where cpu=1
  --event NAMES    only these events: a comma list of names or globs, e.g.
                   kvm_mmu_zap_spte,mmu_notifier_* (real-kernel events also
                   answer to 'kernel' and to 'system:name')
  --thread NAMES   only these threads: a comma list of names or globs
                   (vcpu0, remapper, 'vcpu*', kernel)
  --from T         only events at least T after the first one; T in seconds
                   like the text's timestamps (0.0042), or with a unit:
                   4.2ms, 4200us, 4200000ns, 0.0042s
  --to T           only events at most T after the first one (same units)
  --around-violation [N]
                   only the N events (default 20) before and after the
                   first violation among the events the other options keep
  --summary        counts per event kind, the 20 gfns with the most events,
                   counts per thread, and latencies like perf kvm stat:
                   count, min, p50, p99, max and a histogram of spte faults
                   (kvm_page_fault to _fixed), invalidations (range_start to
                   _end), PTL holds, TLB shootdowns (tlb_flush to its last
                   ack) and vCPU exits (kvm_exit to kvm_entry)
  --per-gfn        with --summary: every gfn, in gfn order
  --format F       text (default) or chrome (Chrome/Perfetto JSON: a track
                   per thread, notifier ranges, faults and lock holds as
                   slices named without addresses (those are in the args),
                   every event drawn once, violations as global markers
                   named by detector, flows from each invalidation to the
                   zaps and fault retries it caused)
  --output FILE    write to FILE instead of stdout; a name ending in .gz
                   (trace.json.gz) is compressed with the gzip program,
                   which Perfetto and chrome://tracing open as it is

The options combine: every condition given must hold. A filter that keeps
no event, or an --event or --thread name that matches nothing in the trace,
is said on stderr (the output is still written). docs/tracing.md describes
the file format, the fields and the flow-linking rule.

exit status: 0 shown; 2 bad usage, an unreadable, corrupt or truncated
trace file, or an --output that cannot be created or is the input; 3 the
output could not be written (e.g. a full disk). --output is written whole
or not at all.
)";

// A time after the first event: "0.0042" (seconds, the text view's unit)
// or a number with s, ms, us or ns; in nanoseconds.
std::optional<uint64_t> time_option(const Options& options, const char* name) {
  std::optional<std::string> text = options.value(name);
  if (!text) return std::nullopt;
  std::string_view number = *text;
  double scale = 1e9;
  for (const auto& [suffix, ns] : {std::pair{"ms", 1e6}, {"us", 1e3}, {"ns", 1.0}, {"s", 1e9}}) {
    const std::string_view unit = suffix;
    if (number.size() > unit.size() && number.substr(number.size() - unit.size()) == unit) {
      number.remove_suffix(unit.size());
      scale = ns;
      break;
    }
  }
  std::optional<double> value = parse_seconds(number);
  if (!value || *value * scale > 1e18) {
    options.fail(fmt::format(
        "--{} '{}' is not a time: seconds like the text's timestamps (0.0042) or a number with "
        "s, ms, us or ns (4.2ms)",
        name, *text));
  }
  return static_cast<uint64_t>(std::llround(*value * scale));
}

std::vector<std::string> list_option(const Options& options, const char* name) {
  std::vector<std::string> items;
  for (const std::string& value : options.values(name)) {
    for (std::string& item : trace::split_list(value)) items.push_back(std::move(item));
  }
  if (options.value(name) && items.empty()) {
    options.fail(fmt::format("--{} needs at least one name", name));
  }
  return items;
}

trace::Filter filter_options(const Options& options) {
  trace::Filter filter;
  if (std::optional<std::string> text = options.value("gfn")) {
    filter.gfn = trace::parse_number(*text);
    if (!filter.gfn) {
      options.fail(fmt::format("--gfn '{}' is not a page number (decimal or 0x hex)", *text));
    }
  }
  if (std::optional<std::string> text = options.value("pfn")) {
    filter.pfn = trace::parse_number(*text);
    if (!filter.pfn) {
      options.fail(fmt::format("--pfn '{}' is not a frame number (decimal or 0x hex)", *text));
    }
  }
  for (const std::string& condition : list_option(options, "where")) {
    const size_t equals = condition.find('=');
    if (equals == std::string::npos || equals == 0 || equals + 1 == condition.size()) {
      options.fail(
          fmt::format("--where '{}' is not FIELD=VALUE (e.g. detector=lost-write)", condition));
    }
    std::string name = condition.substr(0, equals);
    if (!trace::is_argument_name(name)) {
      options.fail(
          fmt::format("--where: no event has a field '{}' (docs/tracing.md lists each "
                      "event's fields)",
                      name));
    }
    filter.fields.emplace_back(std::move(name), condition.substr(equals + 1));
  }
  filter.events = list_option(options, "event");
  filter.threads = list_option(options, "thread");
  filter.from_ns = time_option(options, "from");
  filter.to_ns = time_option(options, "to");
  if (filter.from_ns && filter.to_ns && *filter.from_ns > *filter.to_ns) {
    options.fail("--from is after --to: the window is empty");
  }
  return filter;
}

// Whether a glob names some event kind of the schema (a real-kernel event
// answers to "kernel" and "system:name", which the trace alone can say).
bool names_a_kind(const std::string& glob) {
  if (glob.find(':') != std::string::npos) return true;
  for (size_t i = 0; i < static_cast<size_t>(trace::Kind::kCount); ++i) {
    const std::string name(trace::info(static_cast<trace::Kind>(i)).name);
    if (fnmatch(glob.c_str(), name.c_str(), 0) == 0) return true;
  }
  return false;
}

// Says on stderr what in the filter keeps nothing: an --event or --thread
// name that matches no event of the trace, or a filter that keeps none.
void warn_empty_filters(const trace::TraceFile& file, const trace::Filter& filter) {
  for (const std::string& glob : filter.events) {
    trace::Filter one;
    one.events = {glob};
    if (!trace::select_events(file, one).empty()) continue;
    fmt::print(stderr, "sptelab: trace: --event '{}' {}\n", glob,
               names_a_kind(glob) ? "matches no event in this trace"
                                  : "names no event kind (docs/tracing.md lists them)");
  }
  for (const std::string& glob : filter.threads) {
    trace::Filter one;
    one.threads = {glob};
    if (!trace::select_events(file, one).empty()) continue;
    std::string names;
    for (const trace::ThreadInfo& thread : file.snapshot.threads) {
      names += (names.empty() ? "" : ", ") + thread.name;
    }
    fmt::print(stderr, "sptelab: trace: --thread '{}' matches no thread of this trace ({})\n", glob,
               names);
  }
  if (trace::select_events(file, filter).empty() && !file.snapshot.events.empty()) {
    fmt::print(stderr, "sptelab: trace: the options given keep none of the {} events\n",
               file.snapshot.events.size());
  }
}

// --around-violation N: narrows the filter's time window to the N kept
// events before and after the first kept violation.
void around_first_violation(const trace::TraceFile& file, trace::Filter& filter, size_t count,
                            const std::string& path) {
  const std::vector<size_t> kept = trace::select_events(file, filter);
  const std::vector<trace::Event>& events = file.snapshot.events;
  auto violation = std::find_if(kept.begin(), kept.end(), [&](size_t index) {
    return events[index].kind == trace::Kind::kViolation;
  });
  if (violation == kept.end()) {
    throw_bad_input(fmt::format(
        "trace: --around-violation: {} records no violation{} (the run found none, or it was "
        "lost to ring overflow)",
        path, kept.size() == events.size() ? "" : " among the events the other options keep"));
  }
  const size_t at = static_cast<size_t>(violation - kept.begin());
  const size_t first = at > count ? at - count : 0;
  const size_t last = std::min(kept.size() - 1, at + count);
  filter.from_ns = events[kept[first]].ts_ns - file.start_ns();
  filter.to_ns = events[kept[last]].ts_ns - file.start_ns();
}

// "--around-violation" takes an optional count: without a number after it,
// the default is filled in, so the option parser sees "--around-violation N".
std::vector<std::string> with_around_default(Args args) {
  std::vector<std::string> out;
  for (size_t i = 0; i < args.size(); ++i) {
    out.push_back(args[i]);
    const bool number_follows = i + 1 < args.size() && parse_unsigned(args[i + 1]).has_value();
    if (args[i] == "--around-violation" && !number_follows) out.push_back("20");
  }
  return out;
}

void write_output(const std::optional<std::string>& path, const std::string& text) {
  if (!path) {
    if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size()) {
      throw Error(ExitStatus::kEnvironment,
                  fmt::format("writing the output to stdout failed: {}", std::strerror(errno)));
    }
    return;  // flushed and checked at exit (main.cpp), like every command's stdout
  }
  write_file_atomically(*path, text, "output");
}

}  // namespace

int trace_main(Args given) {
  const std::vector<std::string> args = with_around_default(given);
  Options options("trace", args,
                  {{"gfn"},
                   {"pfn"},
                   {"where", true},
                   {"event", true},
                   {"thread", true},
                   {"from"},
                   {"to"},
                   {"around-violation"},
                   {"summary", false, true},
                   {"per-gfn", false, true},
                   {"format"},
                   {"output"}});
  if (options.help()) {
    fmt::print("{}", kTraceHelp);
    return 0;
  }
  if (options.positionals().size() != 1) {
    options.fail(options.positionals().empty() ? "which trace? give FILE (written by --trace)"
                                               : "give exactly one FILE");
  }
  std::string format = options.value("format").value_or("text");
  if (format != "text" && format != "chrome") {
    options.fail(fmt::format("--format '{}' is not text or chrome", format));
  }
  bool summary = options.flag("summary");
  if (summary && format == "chrome") {
    options.fail("--summary is a text view; drop --format chrome or --summary");
  }
  if (options.flag("per-gfn") && !summary) options.fail("--per-gfn goes with --summary");
  trace::Filter filter = filter_options(options);
  std::optional<uint64_t> around;
  if (options.value("around-violation")) {
    around = unsigned_option(options, "around-violation", 20, 0, 1000000);
    if (filter.from_ns || filter.to_ns) {
      options.fail("--around-violation sets the time window itself: drop --from and --to");
    }
  }

  const std::string& input = options.positionals().front();
  if (std::optional<std::string> output = options.value("output")) {
    check_not_input(*output, input, "output");
    check_output_path(*output, "output");
  }
  trace::TraceFile file = trace::read_trace_file(input);
  warn_empty_filters(file, filter);
  if (around) around_first_violation(file, filter, *around, input);
  std::string text;
  if (summary) {
    text = trace::format_summary(file, filter, options.flag("per-gfn"));
  } else if (format == "chrome") {
    text = trace::format_chrome_json(file, filter);
  } else {
    text = trace::format_text(file, filter);
  }
  if (std::optional<std::string> output = options.value("output"); output && wants_gzip(*output)) {
    text = gzip_compress(text);
  }
  write_output(options.value("output"), text);
  // The text views say it in their header; JSON goes to a viewer, so say
  // it here too: overflow is never silent.
  if (format == "chrome" && file.snapshot.overwritten > 0) {
    fmt::print(stderr, "sptelab: {} events were lost to ring overflow before the trace was read\n",
               file.snapshot.overwritten);
  }
  return 0;
}

}  // namespace sptelab::tools
