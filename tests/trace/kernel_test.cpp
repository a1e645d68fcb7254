// --kernel: parsing trace_pipe lines, merging a capture into a trace, and a
// real capture through tracefs where this machine allows one (root with
// tracefs; otherwise the capture says why and the test is skipped).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/core.h>

#include <cstring>
#include <fstream>
#include <thread>

#include "tests/trace/builder.h"
#include "trace/export.h"
#include "trace/kernel.h"

namespace sptelab::trace {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using testing::kBaseNs;
using testing::TraceBuilder;

TEST(KernelLine, ParsesTheDefaultFormat) {
  auto line = parse_kernel_line(
      "           vcpu0-4711    [003] d..2.  1234.567890: kvm_exit: vcpu 0 reason IO rip 0x1000");
  ASSERT_TRUE(line);
  EXPECT_EQ(line->comm, "vcpu0");
  EXPECT_EQ(line->pid, 4711u);
  EXPECT_EQ(line->cpu, 3u);
  EXPECT_EQ(line->ts_ns, 1234567890000u);
  EXPECT_EQ(line->name, "kvm_exit");
  EXPECT_EQ(line->fields, "vcpu 0 reason IO rip 0x1000");
}

TEST(KernelLine, CommMayHoldSpacesDashesAndBrackets) {
  auto line = parse_kernel_line(" my-odd [x] comm-12 [000]  5.000001: kvm_age_hva: start end");
  ASSERT_TRUE(line);
  EXPECT_EQ(line->comm, "my-odd [x] comm");
  EXPECT_EQ(line->pid, 12u);
  EXPECT_EQ(line->cpu, 0u);
  EXPECT_EQ(line->ts_ns, 5000001000u);
  EXPECT_EQ(line->name, "kvm_age_hva");
}

TEST(KernelLine, RejectsWhatIsNotAnEvent) {
  EXPECT_FALSE(parse_kernel_line(""));
  EXPECT_FALSE(parse_kernel_line("# tracer: nop"));
  EXPECT_FALSE(parse_kernel_line("CPU:3 [LOST 12 EVENTS]"));
  EXPECT_FALSE(parse_kernel_line("sptelab-1 [001] d..1. notatime: kvm_exit: x"));
}

TEST(KernelMerge, InterleavesByTimeAndRecordsMetadata) {
  TraceBuilder b;
  b.thread(1, "vcpu0")
      .at(0, 1, Kind::kSpteInstall, {5, 0, 0x42067, 0})
      .at(3000, 1, Kind::kSpteZap, {5, 0x42067, 0, 0});
  b.file().strings.push_back("an earlier string");
  TraceFile file = b.file();

  KernelTrace kernel;
  kernel.strings = {"kvmmmu:kvm_mmu_set_spte: gfn 5 spte 42067", "kvm:kvm_unmap_hva_range: x"};
  Event set;
  set.ts_ns = kBaseNs + 1000;
  set.thread = kKernelThread;
  set.kind = Kind::kKernel;
  set.args = {0, 1, 4711, 5};
  Event unmap = set;
  unmap.ts_ns = kBaseNs + 2000;
  unmap.args = {1, 0, 4712, ~uint64_t{0}};
  kernel.events = {set, unmap};
  kernel.tasks = {{4711, "vcpu0"}, {4712, "remapper"}};
  kernel.enabled = {"kvmmmu:kvm_mmu_set_spte", "kvm:kvm_unmap_hva_range"};
  kernel.missing = {"kvm:kvm_nonexistent"};
  kernel.lost = 3;
  merge_kernel_trace(file, kernel);

  ASSERT_EQ(file.snapshot.events.size(), 4u);
  EXPECT_EQ(file.snapshot.events[1].kind, Kind::kKernel);
  EXPECT_EQ(file.snapshot.events[1].args[0], 1u);  // after the file's own string
  EXPECT_EQ(kernel_event_name(file, file.snapshot.events[1]), "kvmmmu:kvm_mmu_set_spte");
  EXPECT_EQ(kernel_event_fields(file, file.snapshot.events[1]), "gfn 5 spte 42067");
  EXPECT_EQ(kernel_task_name(file, file.snapshot.events[2]), "remapper-4712");
  EXPECT_EQ(file.meta("kernel.events"), "kvmmmu:kvm_mmu_set_spte,kvm:kvm_unmap_hva_range");
  EXPECT_EQ(file.meta("kernel.missing"), "kvm:kvm_nonexistent");
  EXPECT_EQ(file.meta("kernel.lost"), "3");
  std::string text = format_text(decode_trace(encode_trace(file), "mem"));
  EXPECT_THAT(text, HasSubstr("# kernel.lost: 3\n"));
  EXPECT_THAT(text,
              HasSubstr("       remapper-4712 [0.000002000] kvm:kvm_unmap_hva_range: x cpu=0"));
}

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

bool exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// A real capture: thread creation in this process is an event every kernel
// with tracefs has (sched:sched_process_fork), so the test does not need KVM.
TEST(KernelCapture, CollectsThisProcessesEventsAndCleansUp) {
  KernelCaptureOptions options;
  options.events = {"sched:sched_process_fork", "nosuchsystem:nosuchevent"};
  options.buffer_kb = 256;
  KernelCapture capture(options);
  if (!capture.active()) GTEST_SKIP() << "no kernel capture here: " << capture.problem();
  std::string instance = capture.instance_dir();
  EXPECT_EQ(read_first_line(instance + "/trace_clock").find("[mono]") != std::string::npos, true);
  EXPECT_EQ(read_first_line(instance + "/events/sched/sched_process_fork/enable"), "1");
  for (int i = 0; i < 3; ++i) std::thread([] {}).join();
  KernelTrace kernel = capture.stop();

  EXPECT_TRUE(kernel.problem.empty());
  EXPECT_EQ(kernel.enabled, std::vector<std::string>{"sched:sched_process_fork"});
  EXPECT_EQ(kernel.missing, std::vector<std::string>{"nosuchsystem:nosuchevent"});
  ASSERT_GE(kernel.events.size(), 3u);
  for (const Event& event : kernel.events) {
    EXPECT_EQ(event.kind, Kind::kKernel);
    EXPECT_EQ(event.thread, kKernelThread);
    ASSERT_LT(event.args[0], kernel.strings.size());
    EXPECT_THAT(kernel.strings[event.args[0]], HasSubstr("sched:sched_process_fork: "));
  }
  // Only this process's tasks were traced (set_event_pid).
  EXPECT_THAT(kernel.tasks, Contains(::testing::Key(static_cast<uint32_t>(gettid()))));
  // The instance is gone: nothing left behind in tracefs.
  EXPECT_FALSE(exists(instance));
}

// A process killed before it removed its instance (SIGKILL, a crash) left
// it tracing forever: the next capture removes it, and only it.
TEST(KernelCapture, RemovesStaleInstancesOfDeadProcessesOnly) {
  KernelCaptureOptions options;
  options.events = {"sched:sched_process_fork"};
  options.buffer_kb = 64;
  KernelCapture capture(options);
  if (!capture.active()) GTEST_SKIP() << "no kernel capture here: " << capture.problem();
  std::string instances = capture.instance_dir().substr(0, capture.instance_dir().rfind('/'));
  std::string tracefs = instances.substr(0, instances.rfind('/'));
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  std::string stale = fmt::format("{}/sptelab-{}-0", instances, dead);
  std::string other = instances + "/someone-elses";
  ASSERT_EQ(mkdir(stale.c_str(), 0755), 0) << stale;
  ASSERT_EQ(mkdir(other.c_str(), 0755), 0) << other;

  // Another test process starting a capture at the same moment (ctest -j)
  // may remove the stale instance first: what matters is that it is gone,
  // and that nothing else went with it.
  const std::vector<std::string> removed = remove_stale_kernel_instances(tracefs);
  EXPECT_THAT(removed, ::testing::Each(stale));
  EXPECT_FALSE(exists(stale));
  EXPECT_TRUE(exists(capture.instance_dir()));  // ours: this process is alive
  EXPECT_TRUE(exists(other));                   // not sptelab's
  rmdir(other.c_str());
  capture.stop();
}

// A run killed while it had tracefs mounted under /tmp left the mount:
// the next capture unmounts those of dead processes, and only those.
TEST(KernelCapture, RemovesStaleTracefsMountsOfDeadProcessesOnly) {
  pid_t dead = fork();
  if (dead == 0) _exit(0);
  waitpid(dead, nullptr, 0);
  std::string stale = fmt::format("/tmp/sptelab-tracefs-{}-test00", dead);
  std::string live = fmt::format("/tmp/sptelab-tracefs-{}-test01", getpid());
  std::string old_held = "/tmp/sptelab-tracefs-Held00";  // an older build's name: no PID
  for (const std::string& dir : {stale, live, old_held}) {
    ASSERT_EQ(mkdir(dir.c_str(), 0700), 0) << dir << ": " << std::strerror(errno);
    if (mount("nodev", dir.c_str(), "tracefs", 0, nullptr) != 0) {
      int error = errno;
      rmdir(dir.c_str());
      for (const std::string& made : {stale, live}) {
        umount(made.c_str());
        rmdir(made.c_str());
      }
      GTEST_SKIP() << "cannot mount tracefs here: " << std::strerror(error);
    }
  }
  int held = open((old_held + "/trace_clock").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held, 0);

  // As above, a capture starting in another test process (ctest -j) may
  // unmount the stale ones first: the test checks what is left.
  std::vector<std::string> removed = remove_stale_tracefs_mounts();
  EXPECT_THAT(removed, ::testing::Not(Contains(live)));      // this process is alive
  EXPECT_THAT(removed, ::testing::Not(Contains(old_held)));  // a file is open in it
  EXPECT_FALSE(exists(stale));
  EXPECT_TRUE(exists(live));
  EXPECT_TRUE(exists(old_held + "/trace_clock"));
  close(held);
  remove_stale_tracefs_mounts();  // now nothing is open in old_held
  EXPECT_FALSE(exists(old_held));
  umount(live.c_str());
  rmdir(live.c_str());
}

TEST(KernelCapture, StampsShareTheTraceClock) {
  KernelCaptureOptions options;
  options.events = {"sched:sched_process_fork"};
  options.buffer_kb = 256;
  KernelCapture capture(options);
  if (!capture.active()) GTEST_SKIP() << "no kernel capture here: " << capture.problem();
  uint64_t before = detail::now_ns();
  std::thread([] {}).join();
  uint64_t after = detail::now_ns();
  KernelTrace kernel = capture.stop();
  // The last fork is this test's thread (the first may be the capture's
  // own reader). trace_pipe prints microseconds: the stamp is within
  // [before, after] give or take that resolution.
  ASSERT_FALSE(kernel.events.empty());
  EXPECT_GE(kernel.events.back().ts_ns + 1000, before);
  EXPECT_LE(kernel.events.back().ts_ns, after);
}

TEST(KernelCapture, DefaultEventsAreKvmOnes) {
  for (const std::string& event : default_kernel_events()) {
    EXPECT_TRUE(event.rfind("kvm:", 0) == 0 || event.rfind("kvmmmu:", 0) == 0) << event;
  }
  EXPECT_THAT(default_kernel_events(), Contains("kvmmmu:kvm_mmu_set_spte"));
  EXPECT_THAT(default_kernel_events(), Contains("kvm:kvm_unmap_hva_range"));
}

}  // namespace
}  // namespace sptelab::trace
