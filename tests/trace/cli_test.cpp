// `sptelab trace` and `sptelab run --kernel` on the command line: what they
// print, and exit 2 with a clear message for bad options and bad files.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

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
  result = run_sptelab({"trace", path_, "--event", "kvm_mmu_*", "--from", "0.15", "--to", "1"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("(1 shown)"));
  EXPECT_THAT(result.out, HasSubstr("kvm_mmu_set_spte: gfn=0x9"));
}

TEST_F(TraceCli, Summary) {
  auto result = run_sptelab({"trace", path_, "--summary"});
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("events per kind:"));
  EXPECT_THAT(result.out, HasSubstr("events per gfn (2 gfns):"));
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

TEST_F(TraceCli, BadOptionsAreExit2WithAReason) {
  auto result = run_sptelab({"trace", path_, "--format", "xml"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--format 'xml' is not text or chrome"));
  result = run_sptelab({"trace", path_, "--gfn", "five"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--gfn 'five' is not a page number"));
  result = run_sptelab({"trace", path_, "--from", "-3"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("--from '-3' is not a number of microseconds"));
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
