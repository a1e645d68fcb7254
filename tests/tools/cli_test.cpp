// The sptelab command line without running a guest: usage, listing, and
// every rejection that happens before KVM is opened (so these run anywhere).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>

#include "tests/hypervisor/elf_builder.h"
#include "tests/hypervisor/test_guests.h"
#include "tests/tools/cli.h"

namespace sptelab::tools {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::run_sptelab;

TEST(CliTest, HelpListsTheCommands) {
  auto result = run_sptelab({"--help"});
  EXPECT_EQ(result.status, 0);
  EXPECT_THAT(result.out, HasSubstr("usage: sptelab COMMAND"));
  EXPECT_THAT(result.out, HasSubstr("  run "));
  EXPECT_THAT(result.out, HasSubstr("  list "));
}

TEST(CliTest, VersionNamesTheRevisionAndBuildType) {
  auto result = run_sptelab({"--version"});
  EXPECT_EQ(result.status, 0) << result.err;
  // "sptelab 0.1 (git 6b986be1a2c3[-dirty], RelWithDebInfo build)"; "git
  // unknown" only where the sources are not a git checkout (a tarball).
  const bool checkout = access(SPTELAB_SOURCE_GIT, F_OK) == 0;
  EXPECT_THAT(result.out, ::testing::MatchesRegex(
                              std::string("sptelab [0-9]+\\.[0-9]+ \\(git ") +
                              (checkout ? "[0-9a-f]{7,}(-dirty)?" : "unknown") +
                              ", (Debug|Release|RelWithDebInfo|MinSizeRel) build[^)]*\\)\n"));
  EXPECT_EQ(result.err, "");
}

TEST(CliTest, HelpCommandIsTheCommandsHelp) {
  for (const char* command : {"run", "race", "trace"}) {
    auto help = run_sptelab({"help", command});
    EXPECT_EQ(help.status, 0) << help.err;
    EXPECT_EQ(help.out, run_sptelab({command, "--help"}).out);
    EXPECT_THAT(help.out, HasSubstr(std::string("usage: sptelab ") + command));
  }
  auto unknown = run_sptelab({"help", "frobnicate"});
  EXPECT_EQ(unknown.status, 2);
  EXPECT_THAT(unknown.err, HasSubstr("help: unknown command 'frobnicate' (commands: run, "));
}

std::string output_of(const std::string& command) {
  std::string out;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[4096];
    for (size_t got; (got = fread(buffer, 1, sizeof buffer, pipe)) > 0;) out.append(buffer, got);
    pclose(pipe);
  }
  return out;
}

TEST(CliTest, ManPageHasEveryCommandsHelp) {
  std::ifstream file(SPTELAB_MAN_PAGE);
  const std::string page((std::istreambuf_iterator<char>(file)), {});
  ASSERT_FALSE(page.empty()) << SPTELAB_MAN_PAGE;
  EXPECT_EQ(page.rfind(".TH SPTELAB 1 ", 0), 0u);
  EXPECT_THAT(page, HasSubstr(run_sptelab({"--version"}).out.substr(0, 11)));
  for (const char* command :
       {"run", "race", "explore", "crosscheck", "conform", "trace", "bench", "list"}) {
    EXPECT_THAT(page, HasSubstr(std::string("\n.SS ") + command + "\n")) << command;
  }
  EXPECT_THAT(page, HasSubstr("--around-violation"));  // from trace's help
  // No line starts a roff request by accident (help text lines are escaped).
  EXPECT_THAT(page, Not(::testing::ContainsRegex("\n\\.[a-z]+ [a-z]+ [a-z]+ [a-z]+ ")));
}

// Asks the completion what it offers for a command line ending at `words`.
std::string complete(const std::string& words) {
  const std::string bin = hypervisor::testing::sptelab_binary();
  const std::string path = ::testing::TempDir() + "/complete-" + std::to_string(getpid()) + ".sh";
  std::ofstream(path) << "PATH='" << bin.substr(0, bin.rfind('/')) << "':$PATH\n"
                      << "source '" << SPTELAB_COMPLETION << "'\n"
                      << "COMP_WORDS=(" << words << ")\n"
                      << "COMP_CWORD=$((${#COMP_WORDS[@]} - 1))\n"
                      << "_sptelab\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n";
  std::string out = output_of("bash '" + path + "'");
  std::remove(path.c_str());
  return out;
}

TEST(CliTest, BashCompletionOffersCommandsOptionsAndValues) {
  EXPECT_THAT(complete("sptelab ra"), HasSubstr("race\n"));
  EXPECT_THAT(complete("sptelab race --sch"), HasSubstr("--scheme\n"));
  EXPECT_THAT(complete("sptelab trace f --around"), HasSubstr("--around-violation\n"));
  const std::string schemes = complete("sptelab race coherence --scheme ptl-page+");
  EXPECT_THAT(schemes, HasSubstr("ptl-page+seq-count\n"));
  EXPECT_THAT(schemes, Not(HasSubstr("start-end")));
  EXPECT_THAT(complete("sptelab race coherence --op mi"), HasSubstr("migrate\n"));
}

TEST(CliTest, NoCommandIsBadUsage) {
  auto result = run_sptelab({});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("usage: sptelab COMMAND"));
}

TEST(CliTest, UnknownCommandSaysWhichExist) {
  auto result = run_sptelab({"frobnicate"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("unknown command 'frobnicate' (commands: run, "));
  for (const char* command : {"race", "explore", "trace", "list"}) {
    EXPECT_THAT(result.err, HasSubstr(command));
  }
}

TEST(CliTest, RunHelpDescribesTheOptions) {
  auto result = run_sptelab({"run", "--help"});
  EXPECT_EQ(result.status, 0);
  for (const char* option : {"--vcpus", "--mem", "--scheme", "--trace", "--timeout", "--arg"}) {
    EXPECT_THAT(result.out, HasSubstr(option));
  }
}

TEST(CliTest, ListGuestsShowsTheBuiltInGuests) {
  auto result = run_sptelab({"list", "guests"});
  EXPECT_EQ(result.status, 0);
  for (const char* name : {"hello ", "memtouch ", "counter ", "reader "}) {
    EXPECT_THAT(result.out, HasSubstr(name));
  }
  EXPECT_THAT(result.out, ::testing::Not(HasSubstr("[not built]")));
}

TEST(CliTest, ListNeedsAKind) {
  EXPECT_EQ(run_sptelab({"list"}).status, 2);
  auto result = run_sptelab({"list", "planets"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("cannot list 'planets'; choose guests"));
}

struct UsageCase {
  std::vector<std::string> args;
  std::string message;
};

class RunUsageTest : public ::testing::TestWithParam<UsageCase> {};

TEST_P(RunUsageTest, IsExitTwoWithAMessage) {
  auto result = run_sptelab(GetParam().args);
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr(GetParam().message));
  EXPECT_TRUE(result.out.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Cli, RunUsageTest,
    ::testing::Values(
        UsageCase{{"run"}, "which guest?"},
        UsageCase{{"run", "hello", "hello"}, "give exactly one GUEST"},
        UsageCase{{"run", "hello", "--bogus", "1"}, "unknown option '--bogus'"},
        UsageCase{{"run", "hello", "--vcpus"}, "option --vcpus needs a value"},
        UsageCase{{"run", "hello", "--vcpus", "0"}, "--vcpus '0' is not a number from 1 to 64"},
        UsageCase{{"run", "hello", "--vcpus", "65"}, "is not a number from 1 to 64"},
        UsageCase{{"run", "hello", "--vcpus", "2", "--vcpus", "3"}, "given twice"},
        UsageCase{{"run", "hello", "--mem", "0"}, "--mem 0: the guest needs some RAM"},
        UsageCase{{"run", "hello", "--mem", "lots"}, "is not a size like 64M or 1G"},
        UsageCase{{"run", "hello", "--mem", "5000"}, "is not a multiple of 4K"},
        UsageCase{{"run", "hello", "--mem", "1T"}, "more than the maximum, 4G"},
        UsageCase{{"run", "hello", "--mem", "99999999999999999999"}, "is not a size"},
        UsageCase{{"run", "hello", "--mem", "3G"}, "link the guest higher"},
        UsageCase{{"run", "hello", "--timeout", "-1"}, "is not a number of seconds"},
        // From ~9.3e9 s the nanosecond count overflowed: a run ended at once.
        UsageCase{{"run", "hello", "--timeout", "1e10"}, "from 0 to 31536000"},
        UsageCase{{"run", "hello", "--timeout", "31536001"}, "from 0 to 31536000"},
        UsageCase{{"run", "hello", "--timeout", "-0"}, "is not a number of seconds"},
        UsageCase{{"run", "hello", "--timeout", " 5"}, "is not a number of seconds"},
        UsageCase{{"run", "hello", "--timeout", "5s"}, "is not a number of seconds"},
        UsageCase{{"run", "hello", "--timeout", "nan"}, "is not a number of seconds"},
        UsageCase{{"run", "hello", "--vcpus", "-1"}, "is not a number from 1 to 64"},
        UsageCase{{"run", "hello", "--vcpus", "1.5"}, "is not a number from 1 to 64"},
        UsageCase{{"run", "hello", "--vcpus", "2 "}, "is not a number from 1 to 64"},
        UsageCase{{"run", "hello", "--arg", "-1"}, "is not a number from 0 to 4294967295"},
        UsageCase{{"run", "hello", "--arg", "4294967296"}, "is not a number from 0 to 4294967295"},
        UsageCase{{"run", "hello", "--mem", "-64M"}, "is not a size"},
        UsageCase{{"run", "hello", "--mem", "64 M"}, "is not a size"},
        UsageCase{{"run", "hello", "--mem", "1.5G"}, "is not a size"},
        UsageCase{{"run", "hello", "--arg", "x"}, "--arg 'x' is not a number"},
        UsageCase{{"run", "hello", "--scheme", "bogus"}, "unknown scheme 'bogus'"},
        UsageCase{{"run", "hello", "--scheme", "start-end+bogus"}, "PLACEMENT+PROTOCOL"},
        UsageCase{{"run", "no-such-guest"}, "neither a file nor a built-in guest"},
        UsageCase{{"run", "./missing.elf"}, "cannot read guest image ./missing.elf"}));

class BadImageTest : public ::testing::Test {
 protected:
  std::string write(const std::vector<uint8_t>& bytes) {
    std::string path = hypervisor::testing::make_temp_dir() + "/bad.elf";
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<long>(bytes.size()));
    return path;
  }
  void expect_rejected(const std::vector<uint8_t>& bytes, const std::string& message) {
    auto result = run_sptelab({"run", write(bytes), "--mem", "16M"});
    EXPECT_EQ(result.status, 2) << result.err;
    EXPECT_THAT(result.err, HasSubstr(message));
  }
  hypervisor::testing::ElfSpec spec_;
};

TEST_F(BadImageTest, Truncated) {
  auto bytes = hypervisor::testing::build_elf(spec_);
  bytes.resize(100);
  expect_rejected(bytes, "program header table");
}

TEST_F(BadImageTest, WrongClass) {
  spec_.elf_class = ELFCLASS32;
  expect_rejected(hypervisor::testing::build_elf(spec_), "is not 64-bit");
}

TEST_F(BadImageTest, WrongMachine) {
  spec_.machine = EM_RISCV;
  expect_rejected(hypervisor::testing::build_elf(spec_), "is not x86-64");
}

TEST_F(BadImageTest, SegmentOutsideRam) {
  spec_.segments = {{0x400000, 16, 16, PF_R | PF_X}, {0x1000000, 16, 16, PF_R | PF_W}};
  expect_rejected(hypervisor::testing::build_elf(spec_), "does not fit in guest RAM");
}

TEST_F(BadImageTest, OverlappingSegments) {
  spec_.segments = {{0x400000, 16, 0x3000, PF_R | PF_X}, {0x402000, 16, 16, PF_R | PF_W}};
  expect_rejected(hypervisor::testing::build_elf(spec_), "segments overlap");
}

TEST_F(BadImageTest, EntryOutsideSegments) {
  spec_.entry = 0x800000;
  expect_rejected(hypervisor::testing::build_elf(spec_), "entry point 0x800000");
}

TEST_F(BadImageTest, NotAnElfAtAll) {
  std::vector<uint8_t> text(200, 'x');
  expect_rejected(text, "bad magic");
}

TEST_F(BadImageTest, OverflowingSegmentSaysSoInsteadOfAWrappedRange) {
  // Once printed as "0xfffffffffffff000..0x1000".
  spec_.segments = {{0x400000, 16, 16, PF_R | PF_X}, {0xfffffffffffff000, 16, 0x2000, PF_R}};
  auto result = run_sptelab({"run", write(hypervisor::testing::build_elf(spec_)), "--mem", "16M"});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("overflows 64 bits"));
  EXPECT_THAT(result.err, ::testing::Not(HasSubstr("..0x1000")));
}

// What a GUEST path names is checked before it is read: a FIFO once
// blocked open() forever, /dev/zero was "0 bytes ... truncated", a symlink
// loop "neither a file nor a built-in guest".
class GuestFileTest : public ::testing::Test {
 protected:
  std::string dir_ = hypervisor::testing::make_temp_dir();
};

TEST_F(GuestFileTest, FifoIsRefusedWithoutBlocking) {
  std::string fifo = dir_ + "/guest.fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto result = run_sptelab({"run", fifo});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("is a FIFO, not a regular file"));
}

TEST_F(GuestFileTest, DevZeroIsACharacterDevice) {
  auto result = run_sptelab({"run", "/dev/zero"});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("/dev/zero is a character device, not a regular file"));
}

TEST_F(GuestFileTest, DirectoryIsADirectory) {
  auto result = run_sptelab({"run", dir_});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("is a directory, not a regular file"));
}

TEST_F(GuestFileTest, SymlinkLoopIsNamed) {
  std::string a = dir_ + "/a.elf", b = dir_ + "/b.elf";
  ASSERT_EQ(symlink(b.c_str(), a.c_str()), 0);
  ASSERT_EQ(symlink(a.c_str(), b.c_str()), 0);
  auto result = run_sptelab({"run", a});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("symlink loop"));
}

TEST_F(GuestFileTest, HugeSparseFileIsRejectedFromItsHeader) {
  // 2 GiB of holes: reading it all before "bad magic" took seconds and 2 GiB.
  std::string sparse = dir_ + "/sparse.elf";
  { std::ofstream(sparse) << "not an ELF image, and then a lot of nothing"; }
  ASSERT_EQ(truncate(sparse.c_str(), int64_t{2} << 30), 0);
  auto start = std::chrono::steady_clock::now();
  auto result = run_sptelab({"run", sparse});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("bad magic"));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  unlink(sparse.c_str());
}

TEST(CliOutputPaths, TraceOverTheGuestImageIsRefused) {
  std::string dir = hypervisor::testing::make_temp_dir();
  std::string image = dir + "/guest.elf";
  std::vector<uint8_t> bytes = hypervisor::testing::build_elf({});
  std::ofstream(image, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<long>(bytes.size()));
  auto result = run_sptelab({"run", image, "--mem", "16M", "--trace", image});
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("is the input file"));
  EXPECT_EQ(hypervisor::testing::read_file(image), bytes);  // untouched
}

TEST(CliOutputPaths, UnwritableTraceIsFoundBeforeTheRun) {
  auto result = run_sptelab({"run", "hello", "--trace", "/nonexistent/dir/t.bin"},
                            {{"SPTELAB_KVM_DEVICE", "/nonexistent/kvm"}});
  // Exit 2 for the path, before KVM is even opened (which would be exit 3).
  EXPECT_EQ(result.status, 2) << result.err;
  EXPECT_THAT(result.err, HasSubstr("cannot write the trace to /nonexistent/dir/t.bin"));
}

// stdout on /dev/full: these exited 0 with their output lost.
TEST(CliStdoutTest, FullDeviceIsAnErrorForEveryCommand) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"list", "guests"}, std::vector<std::string>{"--help"},
        std::vector<std::string>{"run", "--help"},
        std::vector<std::string>{"race", "coherence", "--backend", "soft", "--scheme",
                                 "start-end+seq-count", "--iterations", "20", "--json"},
        std::vector<std::string>{"race", "coherence", "--backend", "soft", "--scheme",
                                 "start-end+seq-count", "--iterations", "20"}}) {
    auto result = run_sptelab(args, {}, {.stdout_path = "/dev/full"});
    EXPECT_EQ(result.status, 3) << args[0] << " " << args[1] << ": " << result.err;
    EXPECT_THAT(result.err, HasSubstr("writing the output to stdout failed: No space left"));
  }
}

TEST(CliTest, RunHelpMemLimitIsTheOneBuiltInGuestsGet) {
  // The help said "at most 4G" while the built-in guests were refused from 2G.
  auto help = run_sptelab({"run", "--help"});
  // No std::regex: GCC 12 warns inside it under ASan (-Wmaybe-uninitialized).
  std::string flat;
  for (char c : help.out) {
    if (c == '\n' || c == ' ') {
      if (!flat.empty() && flat.back() != ' ') flat += ' ';
    } else {
      flat += c;
    }
  }
  const std::string before = "takes at most ";
  size_t found = flat.find(before);
  ASSERT_NE(found, std::string::npos) << help.out;
  size_t digits = found + before.size();
  size_t end = flat.find_first_not_of("0123456789", digits);
  ASSERT_GT(end, digits) << help.out;
  ASSERT_EQ(flat.substr(end, 16), "M with one vCPU ") << help.out;
  uint64_t limit_mb = std::stoull(flat.substr(digits, end - digits));
  auto over = run_sptelab({"run", "hello", "--mem", std::to_string(limit_mb + 1) + "M"});
  EXPECT_EQ(over.status, 2);
  EXPECT_THAT(over.err, HasSubstr("it runs with at most --mem " + std::to_string(limit_mb) + "M"));
  // At the limit the image fits: what follows is KVM (exit 3 without it).
  auto at = run_sptelab({"run", "hello", "--mem", std::to_string(limit_mb) + "M"},
                        {{"SPTELAB_KVM_DEVICE", "/nonexistent/kvm"}});
  if (at.err.find("this machine's") == std::string::npos) {
    EXPECT_EQ(at.status, 3) << at.err;
  }
}

TEST(CliEnvironmentTest, MissingKvmDeviceIsExitThree) {
  auto result = run_sptelab({"run", "hello"}, {{"SPTELAB_KVM_DEVICE", "/nonexistent/kvm"}});
  EXPECT_EQ(result.status, 3);
  EXPECT_THAT(result.err, HasSubstr("cannot open /nonexistent/kvm"));
  EXPECT_THAT(result.err, HasSubstr("load the kvm module"));
}

TEST(CliEnvironmentTest, UnusableKvmDeviceIsExitThree) {
  auto result = run_sptelab({"run", "hello"}, {{"SPTELAB_KVM_DEVICE", "/dev/null"}});
  EXPECT_EQ(result.status, 3);
  EXPECT_THAT(result.err, HasSubstr("/dev/null is not a usable KVM device"));
}

TEST(CliEnvironmentTest, SptelabGuestDirIsSearchedFirst) {
  // A broken hello.elf there must be what `run hello` picks up.
  std::string dir = hypervisor::testing::make_temp_dir();
  std::ofstream(dir + "/hello.elf") << "not an image";
  auto result = run_sptelab({"run", "hello"}, {{"SPTELAB_GUEST_DIR", dir}});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("guest image " + dir + "/hello.elf"));
  EXPECT_THAT(result.err, HasSubstr("too short for an ELF64 header"));
}

TEST(CliEnvironmentTest, APathIsNeverTakenForABuiltInName) {
  auto result = run_sptelab({"run", "./hello"});
  EXPECT_EQ(result.status, 2);
  EXPECT_THAT(result.err, HasSubstr("cannot read guest image ./hello"));
}

}  // namespace
}  // namespace sptelab::tools
