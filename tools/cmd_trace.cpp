// sptelab trace FILE [--gfn N] [--event NAME[,NAME]] [--thread NAME]
//                    [--from US] [--to US] [--summary] [--format text|chrome]
//                    [--output FILE]
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
#include "tools/options.h"
#include "trace/export.h"
#include "trace/file.h"

namespace sptelab::tools {
namespace {

constexpr const char* kHelp = R"(usage: sptelab trace FILE [options]

Shows a trace written by 'sptelab run --trace FILE' or 'sptelab race --trace
FILE': one line per event like trace-cmd report (the default), a summary,
or Chrome/Perfetto JSON to open in ui.perfetto.dev or chrome://tracing.
The header always says how many events were lost to ring overflow.

options:
  --gfn N          only events about guest page N (decimal or 0x hex): spte
                   events, faults, MMIO exits on it, and host events on its
                   host address
  --event NAMES    only these events: a comma list of names or globs, e.g.
                   kvm_mmu_zap_spte,mmu_notifier_* (real-kernel events also
                   answer to 'kernel' and to 'system:name')
  --thread NAMES   only these threads: a comma list of names or globs
                   (vcpu0, remapper, 'vcpu*', kernel)
  --from US        only events at least US microseconds after the first one
  --to US          only events at most US microseconds after the first one
  --summary        counts per event kind, per gfn and per thread instead of
                   the events
  --format F       text (default) or chrome (Chrome/Perfetto JSON: a track
                   per thread, notifier ranges and lock holds as slices,
                   flows from each invalidation to the zaps and fault retries
                   it caused)
  --output FILE    write to FILE instead of stdout

The options combine: every condition given must hold. docs/tracing.md
describes the file format, the fields and the flow-linking rule.

exit status: 0 shown; 2 bad usage, an unreadable, corrupt or truncated
trace file, or an --output that cannot be created or is the input; 3 the
output could not be written (e.g. a full disk). --output is written whole
or not at all.
)";

std::optional<uint64_t> parse_gfn(const std::string& text) {
  std::string_view digits = text;
  int base = 10;
  if (digits.substr(0, 2) == "0x" || digits.substr(0, 2) == "0X") {
    digits.remove_prefix(2);
    base = 16;
  }
  if (digits.empty()) return std::nullopt;
  uint64_t value = 0;
  for (char c : digits) {
    int digit = -1;
    if (c >= '0' && c <= '9') digit = c - '0';
    if (base == 16 && c >= 'a' && c <= 'f') digit = c - 'a' + 10;
    if (base == 16 && c >= 'A' && c <= 'F') digit = c - 'A' + 10;
    if (digit < 0 || digit >= base || value > (UINT64_MAX - digit) / base) return std::nullopt;
    value = value * base + digit;
  }
  return value;
}

std::optional<uint64_t> microseconds_option(const Options& options, const char* name) {
  std::optional<std::string> text = options.value(name);
  if (!text) return std::nullopt;
  // Same grammar as seconds (a non-negative decimal), in microseconds.
  std::optional<double> us = parse_seconds(*text);
  if (!us || *us > 1e12) {
    options.fail(fmt::format("--{} '{}' is not a number of microseconds", name, *text));
  }
  return static_cast<uint64_t>(std::llround(*us * 1000.0));
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
    filter.gfn = parse_gfn(*text);
    if (!filter.gfn) {
      options.fail(fmt::format("--gfn '{}' is not a page number (decimal or 0x hex)", *text));
    }
  }
  filter.events = list_option(options, "event");
  filter.threads = list_option(options, "thread");
  filter.from_ns = microseconds_option(options, "from");
  filter.to_ns = microseconds_option(options, "to");
  if (filter.from_ns && filter.to_ns && *filter.from_ns > *filter.to_ns) {
    options.fail("--from is after --to: the window is empty");
  }
  return filter;
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

int trace_main(Args args) {
  Options options("trace", args,
                  {{"gfn"},
                   {"event", true},
                   {"thread", true},
                   {"from"},
                   {"to"},
                   {"summary", false, true},
                   {"format"},
                   {"output"}});
  if (options.help()) {
    fmt::print("{}", kHelp);
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
  trace::Filter filter = filter_options(options);

  const std::string& input = options.positionals().front();
  if (std::optional<std::string> output = options.value("output")) {
    check_not_input(*output, input, "output");
    check_output_path(*output, "output");
  }
  trace::TraceFile file = trace::read_trace_file(input);
  std::string text;
  if (summary) {
    text = trace::format_summary(file, filter);
  } else if (format == "chrome") {
    text = trace::format_chrome_json(file, filter);
  } else {
    text = trace::format_text(file, filter);
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
