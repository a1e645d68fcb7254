// sptelab conform: the emulated host MM measured against the running kernel.
#include <unistd.h>

#include <fmt/core.h>

#include <iostream>
#include <iterator>
#include <memory>
#include <string>

#include "base/error.h"
#include "base/files.h"
#include "base/interrupt.h"
#include "conform/emulator.h"
#include "conform/kernel.h"
#include "conform/recording.h"
#include "conform/report.h"
#include "tools/command.h"
#include "tools/options.h"
#include "tools/selection.h"
#include "tools/signals.h"

namespace sptelab::tools {
namespace {

constexpr const char* kConformHelp =
    R"(usage: sptelab conform [--ops FILE|-] [--era ERA] [--json]
                       [--save-kernel FILE | --kernel-from FILE]

Runs a script of user operations twice, on the real kernel and on the
emulated host MM, and prints for each op the ranges each invalidated and
whether they agree. The kernel's side: a KVM VM with no vCPU whose three
memslots are this process's slots (2 MiB aligned), the ranges read from the
kvm:kvm_unmap_hva_range tracepoint in a private tracefs instance (removed on
every exit). The emulator's side: the same slots as VMAs of an emulated
address space under a start-end notifier chain.

Slots (pages of 4 KiB): anon 1024 (private anonymous, MADV_NOHUGEPAGE),
memfd 256 (shared memfd), file 64 (a shared file in a temporary directory).
Script: one op a line, SLOT FIRST COUNT in pages of the slot, # comments:
  touch SLOT FIRST COUNT        write each page
  dontneed SLOT FIRST COUNT     madvise(MADV_DONTNEED)
  mprotect SLOT FIRST COUNT ro|rw
  munmap SLOT FIRST COUNT
  mmap SLOT FIRST COUNT         MAP_FIXED back over pages the script unmapped
  fork-cow SLOT FIRST COUNT     fork; the parent writes the pages; the child exits
  punch-hole SLOT FIRST COUNT   fallocate(FALLOC_FL_PUNCH_HOLE) (memfd, file)
  pageout SLOT FIRST COUNT      madvise(MADV_PAGEOUT)
  msync SLOT FIRST COUNT        write each page, then msync(MS_SYNC)
  remap SLOT FIRST COUNT        remap_file_pages page by page: page FIRST+i shows
                                file page FIRST + (i+1) % COUNT (memfd, file)

  --ops FILE|-         the script (- reads stdin); default: a built-in script
                       with every op (docs/conform.md)
  --era ERA            the emulated host's kernel era: 2.6.27, 6.1, 6.2, 6.6 or
                       6.18 (default)
  --json               {"kernel", "emulator", "script_ops", "agree", "differ",
                       "interrupted"?, "ops": [{"line", "op", "kernel": [{"slot",
                       "first", "end"}], "emulator": [{"slot", "first", "end",
                       "event"}], "agrees"}]}
  --save-kernel FILE   also write the kernel's ranges to FILE, to replay them
  --kernel-from FILE   replay the kernel's ranges from FILE instead of running
                       the kernel's side (no /dev/kvm or tracefs needed)

Exit status: 0 every op agrees, 1 some op differs, 2 bad usage or a bad
script line (its number and what is wrong), 3 no /dev/kvm or no tracefs
(the message says which), 4 internal error, 130/143 stopped by
SIGINT/SIGTERM (the finished ops are printed).
)";

constexpr uint64_t kMaxInputBytes = uint64_t{1} << 20;

std::string read_input(const std::string& path, std::string_view what) {
  if (path == "-") {
    std::string text{std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>()};
    if (text.size() > kMaxInputBytes) {
      throw_bad_input(fmt::format("{} on stdin is over {} bytes", what, kMaxInputBytes));
    }
    return text;
  }
  uint64_t size = 0;
  const int fd = open_input_file(path, what, kMaxInputBytes, size);
  std::string text;
  try {
    text = read_bytes(fd, 0, size, path, what);
  } catch (...) {
    close(fd);
    throw;
  }
  close(fd);
  return text;
}

std::unique_ptr<conform::Side> kernel_side(const Options& options) {
  if (auto path = options.value("kernel-from")) {
    return std::make_unique<conform::RecordedSide>(read_input(*path, "the kernel recording"),
                                                   *path);
  }
  return std::make_unique<conform::KernelSide>();
}

}  // namespace

int conform_main(Args args) {
  Options options("conform", args,
                  {{"ops"}, {"era"}, {"save-kernel"}, {"kernel-from"}, {"json", false, true}});
  if (options.help()) {
    fmt::print("{}", kConformHelp);
    return 0;
  }
  if (!options.positionals().empty()) options.fail("conform takes no positional arguments");
  const auto save = options.value("save-kernel");
  if (save && options.value("kernel-from")) {
    options.fail("--save-kernel records a live run; it cannot be combined with --kernel-from");
  }
  const mm::KernelEra era = selected_era(options);
  const auto ops_path = options.value("ops");
  if (ops_path && save && *ops_path == *save) options.fail("--save-kernel would overwrite --ops");
  const std::string text =
      ops_path ? read_input(*ops_path, "the script") : std::string(conform::default_script());
  const conform::Script script = conform::parse_script(text);
  if (save) check_output_path(*save, "the kernel recording");
  std::unique_ptr<conform::Side> kernel = kernel_side(options);

  handle_stop_signals();  // before the capture's reader thread
  conform::EmulatorSide emulator(era);
  conform::Report report = conform::compare(script, *kernel, emulator);
  report.interrupted = interrupt::requested();
  if (save && report.interrupted == 0) {
    std::vector<conform::OpRanges> ranges;
    for (const conform::OpResult& result : report.ops) ranges.push_back(result.kernel);
    write_file_atomically(*save, conform::format_recording(script, ranges, report.kernel),
                          "the kernel recording");
  }
  fmt::print("{}",
             options.flag("json") ? conform::format_json(report) : conform::format_table(report));
  if (report.interrupted != 0) return interrupted_status(report.interrupted);
  return report.differing() == 0 ? 0 : 1;
}

}  // namespace sptelab::tools
