// `sptelab run --trace` on KVM: the binary trace of a real guest holds the
// vCPU exits, the instruction behind each MMIO read (decodable), and with
// --kernel the real kernel's kvm events, or says why it could not.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/hypervisor/kvm_env.h"
#include "tests/hypervisor/test_guests.h"
#include "tests/tools/cli.h"
#include "trace/file.h"
#include "trace/insn.h"
#include "trace/kernel.h"

namespace sptelab::trace {
namespace {

using ::testing::HasSubstr;
using tools::testing::run_sptelab;

constexpr uint64_t kExitMmio = 6;

TEST(RunTrace, MmioReadsCarryTheirDecodedInstruction) {
  SPTELAB_REQUIRE_KVM();
  std::string path = hypervisor::testing::make_temp_dir() + "/reader.trace";
  // Two untouched pages at 8 MiB: every first read is an MMIO read exit.
  auto result = run_sptelab({"run", "reader", "--scheme", "start-end+seq-count", "--trace", path,
                             "--arg", "8388608", "--arg", "2", "--arg", "1"});
  ASSERT_TRUE(result.status == 0 || result.status == 1) << result.err;
  TraceFile file = read_trace_file(path);
  EXPECT_EQ(file.meta("scheme"), "start-end+seq-count");
  EXPECT_TRUE(file.meta("memslot").has_value());
  const std::vector<Event>& events = file.snapshot.events;
  size_t decoded = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const Event& exit = events[i];
    if (exit.kind != Kind::kVcpuExit || exit.args[1] != kExitMmio || exit.args[3] < 0x800000) {
      continue;
    }
    // The vCPU thread's next event is the instruction at the exit's rip.
    for (size_t j = i + 1; j < events.size(); ++j) {
      if (events[j].thread != exit.thread) continue;
      ASSERT_EQ(events[j].kind, Kind::kVcpuInsn);
      EXPECT_EQ(events[j].args[0], exit.args[2]);
      EXPECT_TRUE(decode_insn(insn_bytes(events[j]), exit.args[2]).has_value());
      ++decoded;
      break;
    }
  }
  EXPECT_EQ(decoded, 2u);
  EXPECT_EQ(file.thread_name(events.front().thread), "main");
}

TEST(RunTrace, KernelEventsOrAReason) {
  SPTELAB_REQUIRE_KVM();
  std::string path = hypervisor::testing::make_temp_dir() + "/hello.trace";
  auto result = run_sptelab({"run", "hello", "--trace", path, "--kernel"});
  ASSERT_EQ(result.status, 0) << result.err;
  TraceFile file = read_trace_file(path);
  if (auto problem = file.meta("kernel.problem")) {
    EXPECT_THAT(result.err, HasSubstr("--kernel: " + *problem));
    GTEST_SKIP() << "no kernel capture here: " << *problem;
  }
  EXPECT_TRUE(file.meta("kernel.lost").has_value());
  size_t kernel = 0;
  for (const Event& event : file.snapshot.events) {
    if (event.kind != Kind::kKernel) continue;
    ++kernel;
    std::string_view name = kernel_event_name(file, event);
    EXPECT_TRUE(name.rfind("kvm:", 0) == 0 || name.rfind("kvmmmu:", 0) == 0) << name;
  }
  // hello's console output is port I/O: every exit reaches userspace.
  EXPECT_GT(kernel, 0u);
}

}  // namespace
}  // namespace sptelab::trace
