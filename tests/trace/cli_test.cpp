// `sptelab trace` and `sptelab run --kernel` on the command line: what they
// print, and exit 2 with a clear message for bad options and bad files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>

#include "tests/tools/cli.h"
#include "tests/trace/builder.h"
#include "tests/trace/json.h"
#include "trace/file.h"

namespace sptelab::trace {
namespace {

using ::testing::HasSubstr;
using tools::testing::run_sptelab;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class TraceCli : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::TraceBuilder b;
    b.thread(1, "vcpu0", 7).thread(3, "remapper");
    b.at(0, 1, Kind::kFaultBegin, {5, 0, 1, 0})
        .at(100, 3, Kind::kNotifyRangeStart, {0x5000, 0x6000, 1, 1})
        .at(110, 3, Kind::kSpteZap, {5, 0x42067, 0, 0})
        .at(200, 1, Kind::kFaultRetry, {5, 2, 1, 0})
        .at(300, 3, Kind::kNotifyRangeEnd, {0x5000, 0x6000, 1, 0})
        .at(400, 1, Kind::kSpteInstall, {9, 0, 0x43067, 0});
    b.meta("memslot", "0x0 0x10 0x0");
    // One file per test: ctest runs the tests of this fixture in parallel.
    path_ = ::testing::TempDir() + "/" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".trace";
    write_trace_file(path_, b.file());
  }
  void TearDown() override { std::remove(path_.c_str()); }

  std::string path_;
};

TEST_F(TraceCli, PrintsTextWithTheOverflowHeader) {
  auto result = run_sptelab({"trace", path_});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("# sptelab trace: 6 events, 2 threads, 7 events lost to ring "
                                    "overflow\n"));
  EXPECT_THAT(result.out, HasSubstr("remapper-3 [0.000000110] kvm_mmu_zap_spte: gfn=0x5"));
  EXPECT_THAT(result.out, HasSubstr("<- mmu_notifier_invalidate_range_start remapper-3"));
}

TEST_F(TraceCli, FiltersCombine) {
  auto result = run_sptelab({"trace", path_, "--gfn", "0x5", "--thread", "vcpu*"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("(2 shown)"));
  result = run_sptelab({"trace", path_, "--where", "gfn=9", "--event", "kvm_mmu_*"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("kvm_mmu_set_spte: gfn=0x9"));
  result = run_sptelab({"trace", path_, "--event", "kvm_mmu_*", "--from", "0.15us", "--to", "1us"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("(1 shown)"));
  EXPECT_THAT(result.out, HasSubstr("kvm_mmu_set_spte: gfn=0x9"));
}

TEST_F(TraceCli, TimesTakeTheTextsSecondsOrAUnit) {
  // The events are at 0, 100, 110, 200, 300 and 400 ns.
  for (const std::vector<std::string>& window :
       {std::vector<std::string>{"--from", "0.00000011", "--to", "0.0000003"},
        std::vector<std::string>{"--from", "110ns", "--to", "300ns"},
        std::vector<std::string>{"--from", "0.11us", "--to", "0.3us"},
        std::vector<std::string>{"--from", "0.00011ms", "--to", "0.0003ms"},
        std::vector<std::string>{"--from", "0.00000011s", "--to", "0.0000003s"}}) {
    std::vector<std::string> args = {"trace", path_};
    args.insert(args.end(), window.begin(), window.end());
    auto result = run_sptelab(args);
    EXPECT_EQ(result.status, 0) << result.err;
    EXPECT_THAT(result.out, HasSubstr("6 events (3 shown)")) << window[1];
  }
}

TEST_F(TraceCli, FiltersThatKeepNothingAreSaid) {
  auto result = run_sptelab({"trace", path_, "--event", "nosuch"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.err, HasSubstr("--event 'nosuch' names no event kind"));
  EXPECT_THAT(result.err, HasSubstr("the options given keep none of the 6 events"));
  result = run_sptelab({"trace", path_, "--event", "kvm_exit"});
  EXPECT_THAT(result.err, HasSubstr("--event 'kvm_exit' matches no event in this trace"));
  result = run_sptelab({"trace", path_, "--thread", "remap"});
  EXPECT_THAT(result.err,
              HasSubstr("--thread 'remap' matches no thread of this trace (vcpu0, remapper)"));
  result = run_sptelab({"trace", path_, "--thread", "remap*"});
  EXPECT_EQ(result.err, "");
}

TEST_F(TraceCli, AroundViolationShowsItsNeighbours) {
  auto none = run_sptelab({"trace", path_, "--around-violation"});
  EXPECT_EQ(none.status, 2);
  EXPECT_THAT(none.err, HasSubstr("records no violation"));
  testing::TraceBuilder b;
  b.thread(1, "vcpu0");
  for (uint64_t i = 0; i < 100; ++i) b.at(i * 10, 1, Kind::kFaultBegin, {i, 0, 1, 0});
  b.at(505, 1, Kind::kViolation, {0, 0x33, 0x44, 0});
  const std::string path = path_ + ".violation";
  // (kept sorted by time: the violation goes between 500 and 510)
  std::stable_sort(b.file().snapshot.events.begin(), b.file().snapshot.events.end(),
                   [](const Event& x, const Event& y) { return x.ts_ns < y.ts_ns; });
  write_trace_file(path, b.file());
  auto result = run_sptelab({"trace", path, "--around-violation", "3"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("101 events (7 shown)"));
  EXPECT_THAT(result.out, HasSubstr("violation: detector="));
  EXPECT_THAT(result.out, HasSubstr("gfn=0x30"));
  EXPECT_THAT(result.out, ::testing::Not(HasSubstr("gfn=0x2f ")));
  auto fallback = run_sptelab({"trace", path, "--around-violation"});  // default 20
  EXPECT_THAT(fallback.out, HasSubstr("101 events (41 shown)"));
  std::remove(path.c_str());
}

TEST_F(TraceCli, Summary) {
  auto result = run_sptelab({"trace", path_, "--summary"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("events per kind:"));
  EXPECT_THAT(result.out, HasSubstr("the 2 gfns with the most events (of 2 gfns;"));
  EXPECT_THAT(result.out, HasSubstr("latencies:"));
  auto all = run_sptelab({"trace", path_, "--summary", "--per-gfn"});
  EXPECT_THAT(all.out, HasSubstr("events per gfn (2 gfns):"));
}

TEST_F(TraceCli, ChromeToAFileParsesAndOverflowIsSaid) {
  std::string json = path_ + ".json";
  auto result = run_sptelab({"trace", path_, "--format", "chrome", "--output", json});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_TRUE(result.out.empty());
  EXPECT_THAT(result.err, HasSubstr("7 events were lost to ring overflow"));
  std::ifstream in(json);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  testing::Json root = testing::parse_json(text);
  EXPECT_GT(root["traceEvents"].array().size(), 6u);
  std::remove(json.c_str());
}

// The Trace Event Format's rules (the format Perfetto and chrome://tracing
// read): what each phase must carry, begin/end and flow ids that pair up,
// and, ours, slice names without addresses.
std::vector<std::string> trace_event_format_problems(const testing::Json& root) {
  std::vector<std::string> problems;
  auto problem = [&](const std::string& what) { problems.push_back(what); };
  if (!root.has("traceEvents") || !root["traceEvents"].is_array()) problem("no traceEvents array");
  if (root.has("displayTimeUnit") && root["displayTimeUnit"].string() != "ns" &&
      root["displayTimeUnit"].string() != "ms") {
    problem("displayTimeUnit is neither ms nor ns");
  }
  std::map<std::string, int> open_async, open_flows;
  for (const testing::Json& e : root["traceEvents"].array()) {
    const std::string ph = e.has("ph") && e["ph"].is_string() ? e["ph"].string() : "";
    if (std::string("XBEiIbensftMC").find(ph) == std::string::npos || ph.size() != 1) {
      problem("unknown ph '" + ph + "'");
      continue;
    }
    if (!e.has("pid") || !e["pid"].is_number()) problem(ph + " without a numeric pid");
    if (!e.has("name") || !e["name"].is_string()) problem(ph + " without a name");
    if (ph == "M") {
      if (!e.has("args")) problem("metadata without args");
      continue;
    }
    if (!e.has("ts") || !e["ts"].is_number() || e["ts"].number() < 0) problem(ph + " without ts");
    if (!e.has("tid") || !e["tid"].is_number()) problem(ph + " without a numeric tid");
    const std::string name = e["name"].string();
    if (ph == "X" && (!e.has("dur") || !e["dur"].is_number() || e["dur"].number() < 0)) {
      problem("X slice '" + name + "' without a duration");
    }
    if ((ph == "X" || ph == "b") && name.find("0x") != std::string::npos) {
      problem("slice name with an address: " + name);
    }
    if (ph == "i" || ph == "I") {
      const std::string scope = e.has("s") ? e["s"].string() : "t";
      if (scope != "g" && scope != "p" && scope != "t") problem("instant scope '" + scope + "'");
    }
    if (ph == "b" || ph == "e" || ph == "s" || ph == "f") {
      if (!e.has("id")) {
        problem(ph + " without an id");
        continue;
      }
      const std::string key = name + "#" + std::to_string(e["id"].number());
      auto& open = ph == "b" || ph == "e" ? open_async : open_flows;
      open[key] += ph == "b" || ph == "s" ? 1 : -1;
    }
  }
  for (const auto& [key, count] : open_async) {
    if (count != 0) problem("async slice " + key + " without its pair");
  }
  for (const auto& [key, count] : open_flows) {
    if (count != 0) problem("flow " + key + " without its pair");
  }
  return problems;
}

TEST_F(TraceCli, ChromeGzipOutputIsValidTraceEventFormat) {
  testing::TraceBuilder b;
  b.thread(1, "vcpu0").thread(3, "remapper");
  b.at(0, 1, Kind::kFaultBegin, {5, 0, 1, 0})
      .at(100, 3, Kind::kNotifyRangeStart, {0x5000, 0x6000, 1, 1})
      .at(105, 3, Kind::kPtlLock, {0x10, 0, 0, 0})
      .at(110, 3, Kind::kSpteZap, {5, 0x42067, 0, 0})
      .at(120, 3, Kind::kPtlUnlock, {0x10, 15, 0, 0})
      .at(200, 1, Kind::kFaultRetry, {5, 2, 1, 0})
      .at(250, 1, Kind::kViolation, {0, 5, 0x42, 0})
      .at(300, 3, Kind::kNotifyRangeEnd, {0x5000, 0x6000, 1, 0});
  b.meta("memslot", "0x0 0x10 0x0");
  write_trace_file(path_, b.file());
  const std::string gz = path_ + ".json.gz";
  auto result = run_sptelab({"trace", path_, "--format", "chrome", "--output", gz});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_EQ(read_all(gz).substr(0, 2), "\x1f\x8b");  // the gzip magic
  std::string json;
  if (FILE* pipe = popen(("gzip -dc '" + gz + "'").c_str(), "r")) {
    char buffer[4096];
    for (size_t got; (got = fread(buffer, 1, sizeof buffer, pipe)) > 0;) json.append(buffer, got);
    EXPECT_EQ(pclose(pipe), 0);
  }
  const testing::Json root = testing::parse_json(json);
  EXPECT_EQ(trace_event_format_problems(root), std::vector<std::string>{});
  bool marker = false;
  for (const testing::Json& e : root["traceEvents"].array()) {
    marker |= e["ph"].string() == "i" && e.has("s") && e["s"].string() == "g" &&
              e["name"].string().rfind("violation: ", 0) == 0;
  }
  EXPECT_TRUE(marker) << "the violation as a global instant named by its detector";
  // The same document as without compression.
  auto plain = run_sptelab({"trace", path_, "--format", "chrome"});
  EXPECT_EQ(plain.out, json);
  std::remove(gz.c_str());
}

TEST_F(TraceCli, ProblemsOfTheFormatAreFound) {
  // The checker itself: each broken document is caught.
  for (const char* bad :
       {R"({"traceEvents":[{"ph":"X","pid":1,"tid":1,"ts":0,"name":"a"}]})",
        R"({"traceEvents":[{"ph":"Q","pid":1,"tid":1,"ts":0,"name":"a"}]})",
        R"({"traceEvents":[{"ph":"X","pid":1,"tid":1,"ts":0,"dur":1,"name":"ptl 0x10"}]})",
        R"({"traceEvents":[{"ph":"b","pid":1,"tid":1,"ts":0,"id":1,"name":"a"}]})",
        R"({"traceEvents":[{"ph":"i","s":"x","pid":1,"tid":1,"ts":0,"name":"a"}]})"}) {
    EXPECT_FALSE(trace_event_format_problems(testing::parse_json(bad)).empty()) << bad;
  }
}

TEST_F(TraceCli, BadOptionsAreExit2WithAReason) {
  auto result = run_sptelab({"trace", path_, "--format", "xml"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--format 'xml' is not text or chrome"));
  result = run_sptelab({"trace", path_, "--gfn", "five"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--gfn 'five' is not a page number"));
  result = run_sptelab({"trace", path_, "--pfn", "0xzz"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--pfn '0xzz' is not a frame number"));
  result = run_sptelab({"trace", path_, "--where", "nosuch=1"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("no event has a field 'nosuch'"));
  result = run_sptelab({"trace", path_, "--where", "gfn"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--where 'gfn' is not FIELD=VALUE"));
  result = run_sptelab({"trace", path_, "--from", "-3"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--from '-3' is not a time: seconds like the text's"));
  result = run_sptelab({"trace", path_, "--to", "5min"});
  EXPECT_EQ(result.status, 2);
  result = run_sptelab({"trace", path_, "--per-gfn"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--per-gfn goes with --summary"));
  result = run_sptelab({"trace", path_, "--from", "9", "--to", "2"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--from is after --to"));
  result = run_sptelab({"trace", path_, "--summary", "--format", "chrome"});
  EXPECT_EQ(result.status, 2);
  result = run_sptelab({"trace"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("which trace?"));
}

TEST_F(TraceCli, BadFilesAreExit2WithAReason) {
  std::string bad = path_ + ".bad";
  std::ofstream(bad) << "not a trace at all";
  auto result = run_sptelab({"trace", bad});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("not an sptelab trace (bad magic"));
  std::ifstream in(path_, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::ofstream(bad, std::ios::binary) << bytes.substr(0, bytes.size() - 5);
  result = run_sptelab({"trace", bad});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("truncated at byte"));
  result = run_sptelab({"trace", "/nonexistent.trace"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("cannot read the trace /nonexistent.trace"));
  std::remove(bad.c_str());
}

TEST_F(TraceCli, HelpDescribesTheOptions) {
  auto result = run_sptelab({"trace", "--help"});
  EXPECT_EQ(result.status, 0);
  for (const char* option :
       {"--gfn", "--event", "--thread", "--from", "--to", "--summary", "--format", "--output"}) {
    EXPECT_THAT(result.out, HasSubstr(option));
  }
}

TEST_F(TraceCli, WhatIsNotARegularFileIsExit2) {
  // A directory was exit 4, "basic_filebuf::underflow".
  std::string dir = ::testing::TempDir();
  auto result = run_sptelab({"trace", dir});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("is a directory, not a regular file"));
  std::string fifo = path_ + ".fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  result = run_sptelab({"trace", fifo});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("is a FIFO"));
  std::remove(fifo.c_str());
}

TEST_F(TraceCli, OutputOverTheInputIsRefused) {
  std::string before = read_all(path_);
  auto result = run_sptelab({"trace", path_, "--output", path_});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("is the input file"));
  EXPECT_EQ(read_all(path_), before);
}

TEST_F(TraceCli, StdoutOnAFullDeviceIsAnError) {
  // Both exited 0 with the output lost.
  for (const char* format : {"text", "chrome"}) {
    auto result =
        run_sptelab({"trace", path_, "--format", format}, {}, {.stdout_path = "/dev/full"});
    EXPECT_EQ(result.status, 3) << format << ": " << result.err;
    EXPECT_THAT(result.err, HasSubstr("writing the output to stdout failed: No space left"));
  }
}

TEST_F(TraceCli, OutputIsReplacedWholeNotRewrittenInPlace) {
  // A second name for the old output keeps the old bytes: the new file was
  // written beside it and renamed over it, never truncated in place.
  std::string out = path_ + ".txt", other_name = path_ + ".old.txt";
  std::ofstream(out) << "old output";
  ASSERT_EQ(link(out.c_str(), other_name.c_str()), 0);
  auto result = run_sptelab({"trace", path_, "--output", out});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(read_all(out), HasSubstr("kvm_mmu_zap_spte"));
  EXPECT_EQ(read_all(other_name), "old output");
  std::remove(out.c_str());
  std::remove(other_name.c_str());
}

TEST(TraceCliUtf8, ChromeJsonIsValidUtf8WhateverTheTraceHolds) {
  // Thread names, metadata, kernel strings and the path came through as raw
  // bytes: the export exited 0 with invalid JSON.
  testing::TraceBuilder b;
  b.thread(1, "vcpu\xe9\xff");
  b.at(0, 1, Kind::kFaultBegin, {5, 0, 1, 0});
  b.meta("command", "sptelab run caf\xe9.elf \xc3\xa9t\xc3\xa9");
  b.kernel(10, "kvm:kvm_exit: reason \x80\xfe", 0, 42);
  std::string path = ::testing::TempDir() + "/caf\xe9.trace";
  write_trace_file(path, b.file());
  auto result = run_sptelab({"trace", path, "--format", "chrome"});
  EXPECT_EQ(result.status, 0) << result.err;
  testing::Json root = testing::parse_json(result.out);  // throws on invalid UTF-8
  EXPECT_THAT(result.out, HasSubstr("vcpu\\ufffd\\ufffd"));
  EXPECT_THAT(result.out, HasSubstr("\xc3\xa9t\xc3\xa9"));  // valid UTF-8 is kept
  std::remove(path.c_str());
}

TEST(RunCli, KernelNeedsTrace) {
  auto result = run_sptelab({"run", "hello", "--kernel"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--kernel needs --trace FILE"));
}

}  // namespace
}  // namespace sptelab::trace
