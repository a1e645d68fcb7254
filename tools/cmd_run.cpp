// sptelab run GUEST [--vcpus N] [--mem SIZE] [--scheme S] [--trace FILE]
//                   [--timeout S] [--arg V]...
#include <unistd.h>

#include <cstdio>
#include <optional>

#include <fmt/core.h>

#include "base/error.h"
#include "hypervisor/elf.h"
#include "hypervisor/system_area.h"
#include "hypervisor/vm.h"
#include "tools/command.h"
#include "tools/guests.h"
#include "tools/options.h"
#include "tools/stack.h"
#include "tools/trace_file.h"
#include "trace/trace.h"

namespace sptelab::tools {
namespace {

constexpr uint64_t kDefaultMem = 64ull << 20;
constexpr uint64_t kMaxMem = 4ull << 30;
constexpr uint32_t kMaxVcpus = 64;
constexpr double kDefaultTimeout = 60;

constexpr const char* kHelp = R"(usage: sptelab run GUEST [options]

Runs a guest on KVM. GUEST is the path of a static x86-64 ELF image or the
name of a built-in guest ('sptelab list guests'). The guest's console (port
0xE9) goes to stdout; messages and crash dumps go to stderr.

options:
  --vcpus N      vCPUs, 1 to 64 (default 1)
  --mem SIZE     guest RAM, e.g. 64M or 1G; a multiple of 4K, at most 4G
                 (default 64M)
  --scheme S     secondary MMU: PLACEMENT+PROTOCOL (e.g. start-end+seq-count)
                 or 'direct', the plain memslot baseline (default direct)
  --trace FILE   record every event and write them to FILE as text
  --timeout S    give up after S seconds, 0 for never (default 60)
  --arg V        an argument for the guest (repeat for more; the guest reads
                 them in order on port 0xF1, see guest/README.md)

exit status: the value the guest wrote to port 0xF4 (capped at 255), or 0
when every vCPU halted; 2 bad usage, a bad image or a guest crash (dump on
stderr); 3 no usable /dev/kvm or not enough memory; 4 timeout or internal
error.
)";

uint64_t physical_memory_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGESIZE);
  return pages > 0 && page_size > 0 ? static_cast<uint64_t>(pages) * page_size : UINT64_MAX;
}

uint64_t ram_option(const Options& options) {
  std::optional<std::string> text = options.value("mem");
  if (!text) return kDefaultMem;
  std::optional<uint64_t> bytes = parse_size(*text);
  if (!bytes) options.fail(fmt::format("--mem '{}' is not a size like 64M or 1G", *text));
  if (*bytes == 0) options.fail("--mem 0: the guest needs some RAM");
  if (*bytes % 4096 != 0) {
    options.fail(fmt::format("--mem {} is not a multiple of 4K (4096 bytes)", *text));
  }
  if (*bytes > kMaxMem) options.fail(fmt::format("--mem {} is more than the maximum, 4G", *text));
  uint64_t physical = physical_memory_bytes();
  if (*bytes > physical) {
    options.fail(fmt::format("--mem {} is more than this machine's {} MiB of memory", *text,
                             physical >> 20));
  }
  return *bytes;
}

uint32_t vcpus_option(const Options& options) {
  std::optional<std::string> text = options.value("vcpus");
  if (!text) return 1;
  std::optional<uint64_t> count = parse_unsigned(*text);
  if (!count || *count == 0 || *count > kMaxVcpus) {
    options.fail(fmt::format("--vcpus '{}' is not a number from 1 to {}", *text, kMaxVcpus));
  }
  return static_cast<uint32_t>(*count);
}

double timeout_option(const Options& options) {
  std::optional<std::string> text = options.value("timeout");
  if (!text) return kDefaultTimeout;
  std::optional<double> seconds = parse_seconds(*text);
  if (!seconds) options.fail(fmt::format("--timeout '{}' is not a number of seconds", *text));
  return *seconds;
}

std::vector<uint32_t> guest_args(const Options& options) {
  std::vector<uint32_t> args;
  for (const std::string& text : options.values("arg")) {
    std::optional<uint64_t> value = parse_unsigned(text);
    if (!value || *value > UINT32_MAX) {
      options.fail(fmt::format("--arg '{}' is not a number from 0 to 4294967295", text));
    }
    args.push_back(static_cast<uint32_t>(*value));
  }
  return args;
}

void report(const hypervisor::RunResult& result) {
  bool quiet = result.exit_status == 0 && (result.end == hypervisor::RunEnd::kAllHalted ||
                                           result.end == hypervisor::RunEnd::kGuestExit);
  if (!quiet) fmt::print(stderr, "sptelab: {}\n", result.message);
  if (!result.dump.empty()) fmt::print(stderr, "{}", result.dump);
}

}  // namespace

int run_main(Args args) {
  Options options("run", args,
                  {{"vcpus"}, {"mem"}, {"scheme"}, {"trace"}, {"timeout"}, {"arg", true}});
  if (options.help()) {
    fmt::print("{}", kHelp);
    return 0;
  }
  if (options.positionals().size() != 1) {
    options.fail(options.positionals().empty() ? "which guest? give GUEST (a file or a built-in "
                                                 "name)"
                                               : "give exactly one GUEST");
  }
  StackConfig config;
  config.ram_bytes = ram_option(options);
  config.scheme = options.value("scheme").value_or(std::string(kDefaultRunScheme));
  check_run_scheme(config.scheme);
  config.vm.vcpus = vcpus_option(options);
  config.vm.timeout_seconds = timeout_option(options);
  config.vm.guest_args = guest_args(options);
  std::optional<std::string> trace_path = options.value("trace");

  // Everything about the input is checked before KVM is opened: a bad
  // image is exit 2 even on a machine without /dev/kvm.
  std::string path = resolve_guest(options.positionals().front());
  hypervisor::ElfImage image = hypervisor::read_elf_file(path, config.ram_bytes);
  hypervisor::check_image_fits(hypervisor::plan_system_layout(config.ram_bytes, config.vm.vcpus),
                               image);

  std::optional<trace::Session> session;
  if (trace_path) session.emplace();
  std::unique_ptr<RunStack> stack = build_run_stack(config);
  stack->vm().load(image);
  hypervisor::RunResult result = stack->vm().run();
  report(result);
  if (trace_path) write_trace_text(*trace_path, trace::snapshot());
  return result.exit_status;
}

}  // namespace sptelab::tools
