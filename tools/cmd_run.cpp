// sptelab run GUEST [--vcpus N] [--mem SIZE] [--scheme S] [--trace FILE]
//                   [--kernel] [--timeout S] [--arg V]...
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <utility>

#include <fmt/core.h>

#include "base/error.h"
#include "base/files.h"
#include "base/interrupt.h"
#include "guest/sptelab_abi.h"
#include "host/host_ops.h"
#include "host/lab.h"
#include "host/run_stack.h"
#include "hypervisor/elf.h"
#include "hypervisor/system_area.h"
#include "hypervisor/vm.h"
#include "scenarios/gate.h"
#include "tools/command.h"
#include "tools/guests.h"
#include "tools/options.h"
#include "tools/progress.h"
#include "tools/signals.h"
#include "tools/trace_events.h"
#include "trace/export.h"
#include "trace/file.h"
#include "trace/kernel.h"
#include "trace/trace.h"

namespace sptelab::tools {

using host::build_run_stack;
using host::check_run_scheme;
using host::kDefaultRunScheme;
using host::RunStack;
using host::StackConfig;

namespace {

constexpr uint64_t kDefaultMem = 64ull << 20;
constexpr uint64_t kMaxMem = 4ull << 30;
constexpr uint32_t kMaxVcpus = 64;
constexpr double kDefaultTimeout = 60;

constexpr const char* kRunHelp = R"(usage: sptelab run GUEST [options]

Runs a guest on KVM. GUEST is the path of a static x86-64 ELF image or the
name of a built-in guest ('sptelab list guests'). The guest's console (port
0xE9) goes to stdout; messages and crash dumps go to stderr.

options:
  --vcpus N      vCPUs, 1 to 64 (default 1)
  --mem SIZE     guest RAM, e.g. 64M or 1G; a multiple of 4K, at most 4G
                 (default 64M). The page tables for it go below the image:
                 a guest loaded at 4 MiB, like the built-in ones, takes at
                 most {} with one vCPU
  --scheme S     secondary MMU: PLACEMENT+PROTOCOL (e.g. start-end+seq-count)
                 or 'direct', the plain memslot baseline (default direct);
                 not sva, an IOMMU device rather than a KVM guest
  --trace FILE   record every event and write them to FILE (a binary trace;
                 'sptelab trace FILE' shows it as text, a summary or
                 Perfetto JSON)
  --trace-events N
                 with --trace: each thread keeps its newest N events (rounded
                 up to a power of two, 1024 to 67108864, 48 bytes each;
                 default 262144); the trace's header says how many older
                 ones were lost
  --op OP        with an emulated --scheme: a remapper thread applies the
                 host operation OP (migrate, remap, cow, dontneed, mprotect,
                 mkclean, ksm, punch-hole; 'sptelab list ops') to the guest's
                 pages above its image, one after another, while the guest
                 runs, so the trace shows invalidations and the faults they
                 cause (punch-hole discards those pages' content)
  --kernel       with --trace: also capture the real kernel's kvm and kvmmmu
                 tracepoints (tracefs, needs root) into the same timeline;
                 where tracefs is unavailable the run goes on without them
  --timeout S    give up after S seconds, 0 for never (default 60; at most
                 31536000, a year)
  --arg V        an argument for the guest (repeat for more; the guest reads
                 them in order on port 0xF1, see guest/README.md)
  --exit-status W  whose exit status: guest (default; the guest ABI's
                 promise) or sptelab (0 the guest ended, whatever value it
                 wrote, which stderr names; 1 to 4 only sptelab's own, below)

At exit, one line on stderr gives the scheme's statistics: VM exits, spte
faults (with retries), sptes installed and zapped, notifier invalidations,
and with --op the remapper's operations. A run that lasts more than about
2 s shows its progress on stderr meanwhile (elapsed time, spte faults so
far), on a terminal or piped.

exit status: with --exit-status guest (the default), the value the guest
wrote to port 0xF4 (capped at 255; it can overlap the statuses below), or 0
when every vCPU halted; in either mode 2 bad usage, a bad image or a guest
crash (dump on stderr); 3 no usable /dev/kvm, not enough memory, or the
output (the console on stdout, the trace) could not be written; 4 timeout
or internal error; 130 or 143 stopped by SIGINT or SIGTERM (the trace is
still written).
)";

// The most RAM (a multiple of 4K) whose system area (stacks, descriptor
// tables, page tables) still ends below `image_start` with `vcpus` vCPUs.
uint64_t max_ram_below(uint64_t image_start, uint32_t vcpus) {
  uint64_t low = 0, high = kMaxMem >> 12;  // in pages; low fits (or is 0)
  while (low < high) {
    uint64_t mid = (low + high + 1) / 2;
    if (hypervisor::plan_system_layout(mid << 12, vcpus).end <= image_start) {
      low = mid;
    } else {
      high = mid - 1;
    }
  }
  return low << 12;
}

std::string human_size(uint64_t bytes) {
  if (bytes % (1ull << 30) == 0) return fmt::format("{}G", bytes >> 30);
  if (bytes % (1ull << 20) == 0) return fmt::format("{}M", bytes >> 20);
  return fmt::format("{}K", bytes >> 10);
}

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
  if (!seconds || *seconds > kMaxSeconds) {
    options.fail(
        fmt::format("--timeout '{}' is not a number of seconds from 0 to {}", *text, kMaxSeconds));
  }
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

trace::Metadata run_metadata(Args args, const std::string& guest, const StackConfig& config,
                             RunStack& stack) {
  std::string command = "sptelab run";
  for (const std::string& arg : args) command += " " + arg;
  trace::Metadata metadata = {{"command", command},
                              {"guest", guest},
                              {"scheme", config.scheme},
                              {"vcpus", std::to_string(config.vm.vcpus)},
                              {"mem", std::to_string(config.ram_bytes)}};
  if (host::Lab* lab = stack.lab()) {
    metadata.emplace_back("memslot",
                          trace::memslot_metadata(0, config.ram_bytes >> 12, lab->guest_hva()));
  }
  return metadata;
}

// Starts the real-kernel capture; says why on stderr if it cannot.
std::unique_ptr<trace::KernelCapture> start_kernel_capture() {
  auto capture = std::make_unique<trace::KernelCapture>();
  if (!capture->active()) {
    fmt::print(stderr, "sptelab: --kernel: {}; the run goes on without the kernel's events\n",
               capture->problem());
  }
  return capture;
}

// The guest's console on stdout, as Vm's default does, but a failed write
// is remembered: the run must not report success when its output was lost.
struct Console {
  std::atomic<int> error{0};
  void write(std::string_view text) {
    while (!text.empty()) {
      ssize_t written = ::write(STDOUT_FILENO, text.data(), text.size());
      if (written < 0 && errno == EINTR) continue;  // a vCPU kick
      if (written <= 0) {
        int none = 0;
        error.compare_exchange_strong(none, written < 0 ? errno : EIO);
        return;
      }
      text.remove_prefix(static_cast<size_t>(written));
    }
  }
};

void write_trace(const std::string& path, trace::Metadata metadata,
                 std::unique_ptr<trace::KernelCapture> capture) {
  trace::TraceFile file = trace::make_trace_file(trace::snapshot(), std::move(metadata));
  if (file.snapshot.overwritten > 0) {
    fmt::print(stderr, "sptelab: the trace lost its {} oldest events to ring overflow\n",
               file.snapshot.overwritten);
  }
  if (capture) {
    trace::KernelTrace kernel = capture->stop();
    if (kernel.lost > 0) {
      fmt::print(stderr, "sptelab: --kernel: the kernel dropped {} of its events\n", kernel.lost);
    }
    trace::merge_kernel_trace(file, std::move(kernel));
  }
  trace::write_trace_file(path, file);
}

// --exit-status guest|sptelab: whether the guest's exit value becomes
// sptelab's exit status (the guest ABI's default) or is only reported.
bool guest_exit_status_option(const Options& options) {
  const std::string whose = options.value("exit-status").value_or("guest");
  if (whose != "guest" && whose != "sptelab") {
    options.fail(fmt::format("--exit-status '{}': choose guest or sptelab", whose));
  }
  return whose == "guest";
}

// run --op: a host thread applying one op to the guest's pages above its
// image (never the system area below it, whose pages the guest's page
// walks need), page after page, until the guest ends.
class Remapper {
 public:
  Remapper(host::Lab& lab, host::HostOp op, uint64_t first_gfn, uint64_t end_gfn)
      : thread_([this, &lab, op, first_gfn, end_gfn] { run(lab, op, first_gfn, end_gfn); }) {}
  ~Remapper() { join(); }

  // Ends the thread; rethrows what failed in it (exit 4, not a crash).
  void stop() {
    join();
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }
  uint64_t operations() const { return operations_; }
  uint64_t applied() const { return applied_; }

 private:
  void run(host::Lab& lab, host::HostOp op, uint64_t first_gfn, uint64_t end_gfn) {
    scenarios::ThreadRole role(scenarios::Role::kRemapper);
    trace::name_this_thread("remapper");
    try {
      for (uint64_t i = 0; !stopping_.load(); ++i) {
        const uint64_t gfn = first_gfn + i % (end_gfn - first_gfn);
        applied_ += host::apply_host_op(lab, op, gfn, i) ? 1 : 0;
        ++operations_;
      }
    } catch (...) {
      error_ = std::current_exception();  // rethrown by stop(): exit 4, not a crash
    }
  }

  void join() {
    stopping_.store(true);
    if (thread_.joinable()) thread_.join();
  }

  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> operations_{0}, applied_{0};
  std::exception_ptr error_;
  std::thread thread_;  // last: starts once the rest is ready
};

std::optional<host::HostOp> op_option(const Options& options, const StackConfig& config) {
  std::optional<std::string> text = options.value("op");
  if (!text) return std::nullopt;
  auto op = host::parse_host_op(*text);
  if (!op) options.fail(fmt::format("unknown op '{}'; 'sptelab list ops' shows them", *text));
  if (config.scheme == host::kDirectScheme) {
    options.fail(
        "--op needs an emulated --scheme (e.g. start-end+seq-count): the plain memslot has no "
        "host MM to change");
  }
  return op;
}

// What the scheme did during the run, like the counters `perf kvm stat`
// ends with: one line on stderr, so stdout stays the guest's console.
// A guest run shows its progress on stderr like the other long commands
// (quiet for its first ~2 s): elapsed time and, on the emulated stack, the
// spte faults so far, from a thread that wakes four times a second.
class RunTicker {
 public:
  RunTicker(const std::string& guest, RunStack& stack)
      : progress_("run", 1, "spte faults"), stack_(stack) {
    progress_.start(guest);
    thread_ = std::thread([this] {
      std::unique_lock lock(mutex_);
      while (!done_cv_.wait_for(lock, std::chrono::milliseconds(250), [this] { return done_; })) {
        progress_.update(faults(), 0);
      }
    });
  }
  ~RunTicker() { stop(); }
  RunTicker(const RunTicker&) = delete;
  RunTicker& operator=(const RunTicker&) = delete;

  void finish(const std::string& outcome) {
    stop();
    progress_.finish(outcome);
  }

 private:
  uint64_t faults() const {
    host::Lab* lab = stack_.lab();
    return lab ? lab->mmu->stats().faults : 0;
  }
  void stop() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    done_cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  Progress progress_;
  RunStack& stack_;
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::thread thread_;
};

void print_statistics(const std::string& scheme, const hypervisor::RunResult& result,
                      RunStack& stack, const Remapper* remapper, const StackConfig& config) {
  std::string line =
      fmt::format("sptelab: {}: {} VM exits ({} I/O, {} MMIO)", scheme, result.stats.exits,
                  result.stats.io_exits, result.stats.mmio_exits);
  if (host::Lab* lab = stack.lab()) {
    const spte::MmuStats mmu = lab->mmu->stats();
    line += fmt::format("; {} spte faults ({} retries), {} installed, {} zapped, {} invalidations",
                        mmu.faults, mmu.retries, mmu.installs, mmu.zaps, mmu.invalidations);
  } else {
    line += fmt::format("; {} RAM faults (plain memslot, no sptes)", result.stats.ram_faults);
  }
  if (remapper != nullptr) {
    line += fmt::format("; remapper: {} {} ops ({} changed a mapping)", remapper->operations(),
                        host::host_op_name(*config.op), remapper->applied());
  }
  fmt::print(stderr, "{}\n", line);
}

void report(const hypervisor::RunResult& result) {
  bool quiet = result.exit_status == 0 && (result.end == hypervisor::RunEnd::kAllHalted ||
                                           result.end == hypervisor::RunEnd::kGuestExit);
  // A crash dump's first line is the message already: print it once.
  std::string_view dump = result.dump;
  if (dump.substr(0, dump.find('\n')) == result.message) {
    dump.remove_prefix(std::min(dump.size(), result.message.size() + 1));
  }
  if (!quiet) fmt::print(stderr, "sptelab: {}\n", result.message);
  if (!dump.empty()) fmt::print(stderr, "{}", dump);
}

}  // namespace

int run_main(Args args) {
  Options options("run", args,
                  {{"vcpus"},
                   {"mem"},
                   {"scheme"},
                   {"trace"},
                   {"kernel", false, true},
                   {"timeout"},
                   {"arg", true},
                   {"exit-status"},
                   {"trace-events"},
                   {"op"}});
  if (options.help()) {
    fmt::print(fmt::runtime(kRunHelp), human_size(max_ram_below(SPTELAB_GUEST_LOAD_ADDRESS, 1)));
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
  const bool guest_exit_status = guest_exit_status_option(options);
  config.op = op_option(options, config);
  std::optional<std::string> trace_path = options.value("trace");
  if (options.flag("kernel") && !trace_path) {
    options.fail("--kernel needs --trace FILE: it adds the real kernel's events to that trace");
  }
  if (options.value("trace-events") && !trace_path) {
    options.fail("--trace-events sizes the trace of --trace FILE: give --trace too");
  }

  // Everything about the input is checked before KVM is opened: a bad
  // image is exit 2 even on a machine without /dev/kvm.
  std::string path = resolve_guest(options.positionals().front());
  hypervisor::ElfImage image = hypervisor::read_elf_file(path, config.ram_bytes);
  const uint64_t max_ram = max_ram_below(image.lowest_address(), config.vm.vcpus);
  if (options.value("mem") && config.ram_bytes > max_ram && max_ram > 0) {
    options.fail(fmt::format(
        "--mem {}: {} loads at {:#x}, and the page tables, stacks and descriptor tables for that "
        "much RAM and {} vCPU(s) would reach into it; it runs with at most --mem {} (or link the "
        "guest higher)",
        *options.value("mem"), path, image.lowest_address(), config.vm.vcpus, human_size(max_ram)));
  }
  hypervisor::check_image_fits(hypervisor::plan_system_layout(config.ram_bytes, config.vm.vcpus),
                               image);
  if (trace_path) {
    check_output_path(*trace_path, "trace");
    check_not_input(*trace_path, path, "trace");
  }
  handle_stop_signals();  // before the first thread: SIGINT/SIGTERM stop the guest
  auto console = std::make_shared<Console>();
  config.vm.console = [console](uint32_t, std::string_view text) { console->write(text); };

  std::optional<trace::Session> session;
  if (trace_path) {
    // 2^18 events (12 MiB) per thread by default: a whole short run fits,
    // and a long one keeps its newest events (the header says how many
    // were lost).
    apply_trace_events_option(options, 18);
    trace::name_this_thread("main");
    session.emplace();
  }
  // Before the VM exists, so the capture follows the vCPU threads it forks.
  std::unique_ptr<trace::KernelCapture> capture;
  if (options.flag("kernel")) capture = start_kernel_capture();
  std::unique_ptr<RunStack> stack = build_run_stack(config);
  stack->vm().load(image);
  std::optional<Remapper> remapper;
  if (config.op) {
    const uint64_t first = (image.end_address() + 4095) >> 12, end = config.ram_bytes >> 12;
    if (first >= end) {
      options.fail(
          fmt::format("--op: {} leaves no RAM above its image for the remapper; give "
                      "more --mem",
                      path));
    }
    remapper.emplace(*stack->lab(), *config.op, first, end);
  }
  hypervisor::RunResult result;
  {
    hypervisor::Vm& vm = stack->vm();
    OnStopSignal stop([&vm](int signal) {
      vm.request_stop(interrupted_status(signal),
                      fmt::format("interrupted by {}: the guest was stopped", signal_name(signal)));
    });
    RunTicker ticker(options.positionals().front(), *stack);
    result = vm.run();
    ticker.finish(hypervisor::run_end_name(result.end));
  }
  if (remapper) remapper->stop();
  report(result);
  print_statistics(config.scheme, result, *stack, remapper ? &*remapper : nullptr, config);
  if (trace_path) {
    write_trace(*trace_path, run_metadata(args, path, config, *stack), std::move(capture));
  }
  if (int error = console->error.load(); error != 0) {
    throw Error(ExitStatus::kEnvironment,
                fmt::format("the guest's console output could not be written to stdout: {}",
                            std::strerror(error)));
  }
  // A signal after the guest ended (while the trace was written) still
  // says the run was interrupted.
  if (int signal = interrupt::requested(); signal != 0) return interrupted_status(signal);
  // report() has named a non-zero exit value on stderr already.
  if (!guest_exit_status && result.end == hypervisor::RunEnd::kGuestExit) return 0;
  return result.exit_status;
}

}  // namespace sptelab::tools
