// `sptelab race`, `explore` and `list` as a user runs them: exit statuses of
// the CLI contract, the JSON document, the table.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/mount.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

#include "tests/hypervisor/test_guests.h"
#include "tests/tools/cli.h"
#include "trace/file.h"

namespace sptelab::tools {
namespace {

using ::testing::HasSubstr;
using testing::run_sptelab;

TEST(RaceCli, CorrectSchemeIsExitZeroAndOneJsonDocument) {
  auto result =
      run_sptelab({"race", "coherence", "--backend", "soft", "--scheme", "start-end+seq-count",
                   "--op", "migrate", "--iterations", "50", "--json"});
  EXPECT_EQ(result.status, 0) << result.err;
  ASSERT_FALSE(result.out.empty());
  EXPECT_EQ(result.out.front(), '{');
  EXPECT_EQ(result.out[result.out.find_last_not_of('\n')], '}');
  EXPECT_THAT(result.out, HasSubstr("\"results\": [{\"scenario\": \"coherence\""));
  EXPECT_THAT(result.out, HasSubstr("\"violations\": 0"));
  EXPECT_TRUE(result.err.empty()) << result.err;  // --json: nothing else, no progress
}

// The counts of a row, without its timings (which no schedule repeats).
std::string counts_of(const std::string& json) {
  std::string counts;
  for (const char* field : {"\"violations\": ", "\"operations\": ", "\"guest_work\": ",
                            "\"spte_faults\": ", "\"fault_retries\": ", "\"sptes_zapped\": "}) {
    const size_t at = json.find(field);
    if (at == std::string::npos) return "missing " + std::string(field);
    counts += json.substr(at, json.find(',', at) - at) + ";";
  }
  return counts;
}

// A soft run is scheduled by default: the same --seed repeats its counts;
// --free runs the threads in parallel (and says nothing of repeating).
TEST(RaceCli, SoftRunsRepeatTheirCountsBySeedUnlessFree) {
  const std::vector<std::string> command = {"race",         "coherence-lockfree",
                                            "--backend",    "soft",
                                            "--scheme",     "range-before+seq",
                                            "--iterations", "150",
                                            "--seed",       "5"};
  std::vector<std::string> json = command;
  json.push_back("--json");
  const auto first = run_sptelab(json);
  const auto second = run_sptelab(json);
  EXPECT_EQ(first.status, second.status) << first.err;
  EXPECT_EQ(counts_of(first.out), counts_of(second.out));
  EXPECT_THAT(counts_of(first.out), ::testing::Not(HasSubstr("missing")));
  EXPECT_THAT(run_sptelab(command).out, HasSubstr("scheduled (repeatable), seed 5"));
  std::vector<std::string> free = command;
  free.push_back("--free");
  EXPECT_THAT(run_sptelab(free).out, ::testing::Not(HasSubstr("scheduled")));
  std::vector<std::string> both = free;
  both.push_back("--scheduled");
  EXPECT_EQ(run_sptelab(both).status, 2);
  EXPECT_EQ(run_sptelab({"race", "coherence", "--free", "--iterations", "1"}).status, 2);  // kvm
}

TEST(RaceCli, RacySchemeIsExitOneWithTheCounterexample) {
  auto result = run_sptelab(
      {"race", "stale-spte", "--backend", "soft", "--scheme", "none+seq", "--iterations", "100"});
  EXPECT_EQ(result.status, 1) << result.err;
  EXPECT_THAT(result.out, HasSubstr("none+seq"));
  EXPECT_THAT(result.out, HasSubstr("counterexample"));
  EXPECT_THAT(result.out, HasSubstr("violation: detector="));
}

TEST(RaceCli, LockfreeVariantIsNamedAndReportsThroughput) {
  auto result = run_sptelab({"race", "coherence-lockfree", "--backend", "soft", "--scheme",
                             "start-end+seq-count", "--iterations", "50"});
  EXPECT_EQ(result.status, 0) << result.out << result.err;
  EXPECT_THAT(result.out, HasSubstr("race coherence-lockfree --op remap --backend soft"));
  EXPECT_THAT(result.out, HasSubstr("guest/s"));
  EXPECT_THAT(result.out, HasSubstr("ops/s"));
  auto json = run_sptelab({"race", "coherence-lockfree", "--backend", "soft", "--scheme",
                           "start-end+seq-count", "--duration", "0.3", "--json"});
  EXPECT_EQ(json.status, 0) << json.err;
  EXPECT_THAT(json.out, HasSubstr("\"scenario\": \"coherence-lockfree\""));
  EXPECT_THAT(json.out, HasSubstr("\"guest_work_per_s\": "));
  EXPECT_THAT(json.out, HasSubstr("\"timed_out\": false"));  // free-running for the duration
}

TEST(RaceCli, BadInputIsExitTwoWithAMessage) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"race", "nonsense"},
        std::vector<std::string>{"race", "coherence", "--scheme", "middle+seq"},
        std::vector<std::string>{"race", "coherence", "--op", "shred"},
        std::vector<std::string>{"race", "coherence", "--backend", "qemu"},
        std::vector<std::string>{"race", "coherence", "--iterations", "0"},
        std::vector<std::string>{"race", "coherence", "--delay", "no_such_point=5"},
        std::vector<std::string>{"race", "coherence", "--kernel"},
        std::vector<std::string>{"race"}}) {
    auto result = run_sptelab(args);
    EXPECT_EQ(result.status, 2) << args[1];
    EXPECT_THAT(result.err, HasSubstr("sptelab"));
  }
}

// Every malformed --delay is exit 2 with the valid form. Some of these were
// exit 4 ("internal error: stoul"), others silently accepted: -1 became
// 4294967295 ns, 4294967296 became 0.
class RaceDelayTest : public ::testing::TestWithParam<std::string> {};

TEST_P(RaceDelayTest, IsExitTwoWithTheValidForm) {
  auto result = run_sptelab({"race", "coherence", "--backend", "soft", "--scheme",
                             "start-end+seq-count", "--iterations", "1", "--delay", GetParam()});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("the form is POINT=NS[@PER_MILLE]"));
  EXPECT_TRUE(result.out.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Malformed, RaceDelayTest,
    ::testing::Values("host_before_ptl=abc", "host_before_ptl=", "host_before_ptl=5@",
                      "host_before_ptl=5@abc", "host_before_ptl=99999999999999999999",
                      "host_before_ptl=-1", "host_before_ptl=4294967296", "host_before_ptl=5x",
                      "host_before_ptl= 5", "host_before_ptl=1000@1000@3", "host_before_ptl=5@1e3",
                      "host_before_ptl=5@-1", "host_before_ptl=5@1001", "host_before_ptl=1.5",
                      "host_before_ptl", "=5", "no_such_point=5"));

TEST(RaceCli, WellFormedDelaysAreAccepted) {
  auto result =
      run_sptelab({"race", "coherence", "--backend", "soft", "--scheme", "start-end+seq-count",
                   "--iterations", "5", "--delay", "host_before_ptl=1000@500", "--delay",
                   "spte_fault_after_gup=4294967295@0", "--json"});
  EXPECT_EQ(result.status, 0) << result.err;
}

TEST(RaceCli, OtherNumbersAreStrictToo) {
  for (const std::vector<std::string>& args : {
           std::vector<std::string>{"--duration", "0"},
           std::vector<std::string>{"--duration", "-1"},
           std::vector<std::string>{"--duration", "1e10"},
           std::vector<std::string>{"--duration", "5s"},
           std::vector<std::string>{"--iterations", "-1"},
           std::vector<std::string>{"--iterations", "1e3"},
           std::vector<std::string>{"--iterations", "10 "},
           std::vector<std::string>{"--seed", "-1"},
           std::vector<std::string>{"--seed", "18446744073709551616"},
           std::vector<std::string>{"--vcpus", "0x2"},
       }) {
    std::vector<std::string> command = {"race", "coherence", "--backend", "soft"};
    command.insert(command.end(), args.begin(), args.end());
    auto result = run_sptelab(command);
    EXPECT_EQ(result.status, 2) << args[0] << " " << args[1] << ": " << result.err;
    EXPECT_THAT(result.err, HasSubstr(args[0]));
  }
}

TEST(RaceCli, DelaysDoNotOverrunTheDuration) {
  // A 4 s delay at every operation with --duration 1 ran for 4 to 8 s. (With
  // --iterations the duration is a limit, and reaching it a time-out.)
  auto start = std::chrono::steady_clock::now();
  auto result = run_sptelab({"race", "coherence", "--backend", "soft", "--scheme",
                             "start-end+seq-count", "--iterations", "1000", "--duration", "1",
                             "--delay", "host_before_ptl=4000000000", "--json"});
  auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(result.status, 0) << result.err;
  EXPECT_THAT(result.out, HasSubstr("\"timed_out\": true"));
  EXPECT_LT(seconds, 3.5);
}

TEST(RaceCli, UnwritableTraceIsFoundBeforeAnySchemeRuns) {
  auto start = std::chrono::steady_clock::now();
  auto result = run_sptelab({"race", "coherence", "--backend", "soft", "--scheme", "all",
                             "--iterations", "200", "--trace", "/nonexistent/dir/race.bin"});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("cannot write the trace to /nonexistent/dir/race.bin."));
  EXPECT_TRUE(result.out.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

// A full disk when the trace was written threw the finished race away (no
// row, exit 3). Here the disk is a 64 KiB tmpfs (root only; skipped
// elsewhere): the row is printed, the failure said, exit 3, no file left.
TEST(RaceCli, AFullDiskCostsTheTraceButNotTheRow) {
  std::string dir = hypervisor::testing::make_temp_dir();
  if (mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=64k") != 0) {
    GTEST_SKIP() << "cannot mount a small tmpfs here: " << std::strerror(errno);
  }
  // A correct scheme: its trace runs to the end (a violation stops it early)
  // and holds about 250 bytes an operation: some 100 KiB.
  auto result =
      run_sptelab({"race", "coherence", "--backend", "soft", "--scheme", "start-end+seq-count",
                   "--iterations", "400", "--trace", dir + "/race.bin"});
  const bool left_a_file = std::filesystem::exists(dir + "/race.bin") ||
                           !std::filesystem::is_empty(std::filesystem::path(dir));
  umount(dir.c_str());
  EXPECT_EQ(result.status, 3) << result.err;
  EXPECT_THAT(result.out, HasSubstr("start-end+seq-count"));
  EXPECT_THAT(result.err, HasSubstr("start-end+seq-count/remap: writing the trace to " + dir +
                                    "/race.bin failed: No space left on device"));
  EXPECT_THAT(result.err, HasSubstr("its row is printed all the same"));
  EXPECT_FALSE(left_a_file);
}

// SIGINT/SIGTERM killed the process with no message and no rows. Now the
// finished rows are printed, marked, the trace written, exit 128 + signal.
TEST(RaceCli, SigintPrintsTheFinishedRowsAndWritesTheTrace) {
  std::string dir = hypervisor::testing::make_temp_dir();
  auto result = run_sptelab({"race", "coherence", "--backend", "soft", "--scheme", "all",
                             "--iterations", "100000", "--trace", dir + "/race.bin"},
                            {}, {.signal = SIGINT, .signal_after_ms = 1500});
  EXPECT_EQ(result.status, 130) << result.err;
  EXPECT_THAT(result.out, HasSubstr("none+naive"));  // the first scheme's row
  EXPECT_THAT(result.out, HasSubstr("interrupted by SIGINT: 1 of 25 rows ran"));
  EXPECT_THAT(result.err, HasSubstr("SIGINT: stopping"));
  trace::TraceFile file = trace::read_trace_file(dir + "/race.bin.none+naive");
  EXPECT_GT(file.snapshot.events.size(), 0u);
}

TEST(RaceCli, SigtermMarksTheJsonDocument) {
  auto result = run_sptelab({"race", "stale-spte", "--backend", "soft", "--scheme",
                             "start-end+seq-count", "--iterations", "100000", "--json"},
                            {}, {.signal = SIGTERM, .signal_after_ms = 1500});
  EXPECT_EQ(result.status, 143) << result.err;
  EXPECT_EQ(result.out.rfind("{\"interrupted\": \"SIGTERM\", \"schemes_planned\": 1, "
                             "\"results\": [{",
                             0),
            0u)
      << result.out;
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

size_t widest_line(const std::string& text) {
  size_t widest = 0, start = 0;
  for (size_t end; (end = text.find('\n', start)) != std::string::npos; start = end + 1) {
    widest = std::max(widest, end - start);
  }
  return widest;
}

TEST(RaceCli, SchemesAndOpsTakeCommaListsAndGlobs) {
  auto andrea = run_sptelab({"race", "coherence", "--backend", "soft", "--scheme", "ptl-page+*",
                             "--iterations", "3", "--json"});
  EXPECT_LE(andrea.status, 1) << andrea.err;  // 1 if a racy one showed its race
  EXPECT_EQ(count_of(andrea.out, "\"scheme\": \"ptl-page+"), 5u) << andrea.out;  // with sva
  EXPECT_EQ(count_of(andrea.out, "\"scheme\": "), 5u);
  auto seq_count = run_sptelab({"race", "coherence", "--backend", "soft", "--scheme", "*+seq-count",
                                "--iterations", "3", "--json"});
  EXPECT_EQ(count_of(seq_count.out, "+seq-count\""), 5u) << seq_count.err;
  auto pair = run_sptelab({"race", "coherence", "--backend", "soft", "--scheme",
                           "start-end+seq-count,ptl-page+seq", "--op", "migrate,remap",
                           "--iterations", "3", "--json"});
  EXPECT_LE(pair.status, 1) << pair.err;
  EXPECT_EQ(count_of(pair.out, "\"scheme\": "), 4u);
  EXPECT_EQ(count_of(pair.out, "\"op\": \"migrate\""), 2u);
  auto none = run_sptelab({"race", "coherence", "--scheme", "middle+*"});
  EXPECT_EQ(none.status, 2);
  EXPECT_THAT(none.err, HasSubstr("no scheme matches 'middle+*'"));
}

TEST(RaceCli, TableFitsAHundredColumnsWithALegendAndWideShowsAll) {
  auto table =
      run_sptelab({"race", "stale-spte", "--backend", "soft", "--scheme",
                   "*+seq-count,range-before+naive", "--op", "migrate,ksm", "--iterations", "20"});
  EXPECT_EQ(table.status, 1) << table.err;  // range-before+naive is racy
  const std::string rows = table.out.substr(0, table.out.find("\n\n", table.out.find("scheme")));
  EXPECT_LE(widest_line(rows), 100u) << table.out;
  for (const char* column : {"ops", "first_ms", "stale_rd", "stale_spte", "uaf"}) {
    EXPECT_THAT(table.out, HasSubstr(std::string("\n  ") + column + " ")) << column;
  }
  EXPECT_THAT(table.out, HasSubstr("more column(s) with --wide"));
  EXPECT_THAT(table.out, ::testing::Not(HasSubstr(" viol ")));  // no sum of unlike counts
  auto wide = run_sptelab({"race", "stale-spte", "--backend", "soft", "--scheme",
                           "*+seq-count,range-before+naive", "--op", "migrate,ksm", "--iterations",
                           "20", "--wide"});
  EXPECT_THAT(wide.out, HasSubstr("ptl_p99"));
  EXPECT_THAT(wide.out, HasSubstr("\n  ptl_p99 "));
  EXPECT_THAT(wide.out, ::testing::Not(HasSubstr("more column(s) with --wide")));
}

TEST(RaceCli, ExpectComparesEachRowWithTheExplorer) {
  // A racy row that shows its violation and a coherent row that shows none
  // both agree: exit 0, where the same run without --expect is exit 1.
  const std::vector<std::string> run = {
      "race",         "stale-spte", "--backend", "soft", "--scheme", "none+seq,start-end+seq-count",
      "--iterations", "200"};
  auto plain = run_sptelab(run);
  EXPECT_EQ(plain.status, 1) << plain.err;
  std::vector<std::string> expect = run;
  expect.push_back("--expect");
  auto checked = run_sptelab(expect);
  EXPECT_EQ(checked.status, 0) << checked.out << checked.err;
  EXPECT_THAT(checked.out, ::testing::ContainsRegex("none\\+seq +racy +yes "));
  EXPECT_THAT(checked.out, ::testing::ContainsRegex("start-end\\+seq-count +- +yes "));
  expect.push_back("--json");
  auto json = run_sptelab(expect);
  EXPECT_EQ(json.status, 0) << json.err;
  EXPECT_EQ(count_of(json.out, "\"agrees\": true"), 2u) << json.out;
  EXPECT_THAT(json.out, HasSubstr("\"expected_racy\": true"));
  EXPECT_TRUE(json.err.empty()) << json.err;
}

TEST(RaceCli, ProgressGoesToStderrWhenPipedButNotWithJson) {
  const std::vector<std::string> run = {
      "race", "coherence",     "--backend",  "soft", "--scheme", "start-end+seq-count",
      "--op", "remap,migrate", "--duration", "2.5"};
  auto piped = run_sptelab(run);  // stderr is a pipe here
  EXPECT_EQ(piped.status, 0) << piped.err;
  EXPECT_THAT(piped.err,
              ::testing::ContainsRegex("race \\[1/2\\] start-end\\+seq-count/remap: [0-9]+ ops, no "
                                       "violation, [0-9]+ s elapsed, ETA [0-9]+ s\n"));
  EXPECT_THAT(piped.err, HasSubstr("race [2/2] start-end+seq-count/migrate: "));
  EXPECT_THAT(piped.out, ::testing::Not(HasSubstr("race [")));
  std::vector<std::string> json = run;
  json.push_back("--json");
  auto quiet = run_sptelab(json);
  EXPECT_EQ(quiet.err, "");
}

TEST(RaceCli, TraceFilesAreNamedAndHoldTheCommand) {
  const std::string dir = hypervisor::testing::make_temp_dir();
  auto result = run_sptelab({"race", "coherence", "--backend", "soft", "--scheme",
                             "ptl-page+seq,start-end+seq", "--iterations", "5", "--trace",
                             dir + "/t.bin", "--trace-events", "5000"});
  EXPECT_LE(result.status, 1) << result.err;
  EXPECT_THAT(result.err, HasSubstr("wrote the trace " + dir + "/t.bin.ptl-page+seq\n"));
  EXPECT_THAT(result.err, HasSubstr("wrote the trace " + dir + "/t.bin.start-end+seq\n"));
  trace::TraceFile file = trace::read_trace_file(dir + "/t.bin.ptl-page+seq");
  EXPECT_EQ(file.meta("command").value_or(""),
            "sptelab race coherence --backend soft --scheme ptl-page+seq,start-end+seq "
            "--iterations 5 --trace " +
                dir + "/t.bin --trace-events 5000");
  auto bad = run_sptelab({"race", "coherence", "--backend", "soft", "--trace-events", "10"});
  EXPECT_EQ(bad.status, 2);
  EXPECT_THAT(bad.err, HasSubstr("--trace-events wants a whole number from 1024"));
}

TEST(RaceCli, MissingKvmIsExitThreeAndSuggestsSoft) {
  auto result = run_sptelab({"race", "coherence", "--scheme", "start-end+seq-count"},
                            {{"SPTELAB_KVM_DEVICE", "/nonexistent/kvm"}});
  EXPECT_EQ(result.status, 3) << result.err;
  EXPECT_THAT(result.err, HasSubstr("--backend soft"));
}

TEST(ExploreCli, CoherentSchemeIsZeroRacyIsOne) {
  auto good = run_sptelab({"explore", "--scheme", "ptl-page+seq", "--op", "remap"});
  EXPECT_EQ(good.status, 0) << good.err;
  EXPECT_THAT(good.out, HasSubstr("ok/2"));
  EXPECT_THAT(good.err, HasSubstr("[2/2]"));  // progress, one line per cell
  // The 2008 thread's remap (2.6.27): since 4.0 remap is mmap and
  // range-after+seq is coherent on it (docs/schemes.md).
  auto bad = run_sptelab({"explore", "--era", "2.6.27", "--scheme", "range-after+seq", "--op",
                          "remap", "--scenario", "coherence", "--json"});
  EXPECT_EQ(bad.status, 1) << bad.err;
  EXPECT_THAT(bad.out, HasSubstr("\"kernel\": \"2.6.27\""));
  EXPECT_THAT(bad.out, HasSubstr("\"verdict\": \"racy\""));
  EXPECT_THAT(bad.out, HasSubstr("\"property\": \"lost-write\""));
}

TEST(ExploreCli, SavedCounterexampleReplaysItsViolation) {
  const std::string path = ::testing::TempDir() + "/explore_cli_schedule.txt";
  auto found = run_sptelab({"explore", "--era", "2.6.27", "--scheme", "range-after+seq", "--op",
                            "remap", "--scenario", "coherence", "--save", path});
  ASSERT_EQ(found.status, 1) << found.err;
  EXPECT_THAT(found.err, HasSubstr(path));
  auto replayed = run_sptelab({"explore", "--replay", path});  // the file names its era
  EXPECT_EQ(replayed.status, 1) << replayed.err;
  EXPECT_THAT(replayed.out, HasSubstr("lost-write"));
  EXPECT_THAT(replayed.out, HasSubstr("remapper"));
}

TEST(ExploreCli, BadInputIsExitTwoWithTheValidChoices) {
  auto bound = run_sptelab({"explore", "--bound", "-1"});
  EXPECT_EQ(bound.status, 2);
  EXPECT_THAT(bound.err, HasSubstr("0 to 6"));
  auto op = run_sptelab({"explore", "--op", "nosuch"});
  EXPECT_EQ(op.status, 2);
  EXPECT_THAT(op.err, HasSubstr("migrate, remap"));
  auto scheme = run_sptelab({"explore", "--scheme", "nosuch+seq"});
  EXPECT_EQ(scheme.status, 2);
  auto missing = run_sptelab({"explore", "--replay", "/nonexistent/schedule"});
  EXPECT_EQ(missing.status, 2);
  const std::string path = ::testing::TempDir() + "/explore_cli_bad_schedule.txt";
  FILE* file = std::fopen(path.c_str(), "w");
  ASSERT_NE(file, nullptr);
  std::fputs("scheme start-end+seq\nop remap\nscenario coherence\nschedule 0 1 x\n", file);
  std::fclose(file);
  auto malformed = run_sptelab({"explore", "--replay", path});
  EXPECT_EQ(malformed.status, 2);
  EXPECT_THAT(malformed.err, HasSubstr("line 4"));
}

TEST(ListCli, ListsTheTwentyFiveSchemesAndTheOps) {
  auto schemes = run_sptelab({"list", "schemes"});
  EXPECT_EQ(schemes.status, 0);
  EXPECT_EQ(std::count(schemes.out.begin(), schemes.out.end(), '\n'), 25);
  EXPECT_THAT(schemes.out, HasSubstr("start-end+sva"));
  auto ops = run_sptelab({"list", "ops"});
  for (const char* op :
       {"migrate", "remap", "cow", "dontneed", "mprotect", "mkclean", "ksm", "punch-hole"}) {
    EXPECT_THAT(ops.out, HasSubstr(op));
  }
  EXPECT_EQ(run_sptelab({"list", "scenarios"}).status, 0);
  EXPECT_EQ(run_sptelab({"list", "points"}).status, 0);
}

// An sva scheme needs a 6.6 host and software vCPUs: named, it is refused
// with the requirement (exit 2); in a glob it is skipped.
TEST(SvaCli, RefusedByNameBeforeSixSixAndOnKvmSkippedInGlobs) {
  auto old_era = run_sptelab({"explore", "--era", "2.6.27", "--scheme", "start-end+sva"});
  EXPECT_EQ(old_era.status, 2);
  EXPECT_THAT(old_era.err, HasSubstr("--era 6.6 or later"));
  auto only_sva = run_sptelab({"explore", "--era", "6.1", "--scheme", "*+sva"});
  EXPECT_EQ(only_sva.status, 2);
  EXPECT_THAT(only_sva.err, HasSubstr("arch_invalidate_secondary_tlbs"));
  auto glob = run_sptelab({"explore", "--era", "2.6.27", "--scheme", "start-end+*", "--op", "remap",
                           "--scenario", "stale-spte", "--bound", "0", "--json"});
  EXPECT_EQ(glob.status, 0) << glob.err;  // no race without a preemption
  EXPECT_THAT(glob.err, HasSubstr("(4 cells)"));
  EXPECT_THAT(glob.out, ::testing::Not(HasSubstr("+sva")));
  auto kvm = run_sptelab({"race", "coherence", "--scheme", "start-end+sva"});
  EXPECT_EQ(kvm.status, 2);
  EXPECT_THAT(kvm.err, HasSubstr("--backend soft"));
  auto crosscheck = run_sptelab({"crosscheck", "--scheme", "none+sva"});
  EXPECT_EQ(crosscheck.status, 2);
  EXPECT_THAT(crosscheck.err, HasSubstr("KVM's own MMU"));
}

// The seed races: buggy exits 1 with the violating round's events, fixed
// exits 0, --json carries the variant; each is listed with its year.
TEST(SeedRaceCli, BuggyIsExitOneWithTheCounterexampleAndFixedExitZero) {
  auto buggy = run_sptelab({"race", "delayed-rmap", "--variant", "buggy"});
  EXPECT_EQ(buggy.status, 1) << buggy.err;
  EXPECT_THAT(buggy.out, HasSubstr("lost-at-writeback"));
  EXPECT_THAT(buggy.out, HasSubstr("counterexample"));
  EXPECT_THAT(buggy.out, HasSubstr("zapper"));
  auto fixed = run_sptelab({"race", "delayed-rmap", "--iterations", "2000", "--json"});
  EXPECT_EQ(fixed.status, 0) << fixed.err;
  EXPECT_THAT(fixed.out, HasSubstr("\"variant\": \"fixed\""));
  EXPECT_THAT(fixed.out, HasSubstr("\"violations\": 0"));
  auto bad = run_sptelab({"race", "delayed-rmap", "--variant", "broken"});
  EXPECT_EQ(bad.status, 2);
  auto dontneed = run_sptelab({"race", "dontneed-tlb", "--variant", "buggy", "--json"});
  EXPECT_EQ(dontneed.status, 1) << dontneed.err;
  EXPECT_THAT(dontneed.out, HasSubstr("\"variant\": \"buggy\""));
  EXPECT_THAT(dontneed.out, HasSubstr("\"property\": \"lost-write\""));
  auto gup = run_sptelab({"race", "gup-fast-revalidate", "--variant", "buggy"});
  EXPECT_EQ(gup.status, 1) << gup.err;
  EXPECT_THAT(gup.out, HasSubstr("foreign-pin"));
  auto pagewalk = run_sptelab({"race", "pagewalk-ptl", "--variant", "buggy", "--json"});
  EXPECT_EQ(pagewalk.status, 1) << pagewalk.err;
  EXPECT_THAT(pagewalk.out, HasSubstr("\"property\": \"mm-audit\""));
  EXPECT_THAT(pagewalk.out, HasSubstr("walker"));
  auto pagewalk_fixed = run_sptelab({"race", "pagewalk-ptl", "--iterations", "2000"});
  EXPECT_EQ(pagewalk_fixed.status, 0) << pagewalk_fixed.out << pagewalk_fixed.err;
  auto list = run_sptelab({"list", "scenarios"});
  EXPECT_THAT(list.out, HasSubstr("delayed-rmap"));
  EXPECT_THAT(list.out, HasSubstr("dontneed-tlb"));
  EXPECT_THAT(list.out, HasSubstr("gup-fast-revalidate"));
  EXPECT_THAT(list.out, HasSubstr("pagewalk-ptl"));
  EXPECT_THAT(list.out, HasSubstr("2022"));
  EXPECT_THAT(list.out, HasSubstr("2019"));
}

TEST(SeedExploreCli, BuggyPrintsItsTimelineAndFixedIsCoherent) {
  auto buggy = run_sptelab({"explore", "--race", "delayed-rmap", "--variant", "buggy"});
  EXPECT_EQ(buggy.status, 1) << buggy.err;
  EXPECT_THAT(buggy.out, HasSubstr("RACY lost-at-writeback"));
  EXPECT_THAT(buggy.out, HasSubstr("step   thread"));
  auto fixed = run_sptelab({"explore", "--race", "delayed-rmap", "--variant", "fixed"});
  EXPECT_EQ(fixed.status, 0) << fixed.err;
  EXPECT_THAT(fixed.out, HasSubstr("ok/2"));
}

}  // namespace
}  // namespace sptelab::tools
