// sptelab crosscheck: the explorer's verdicts against real guests.
#include <unistd.h>

#include <fmt/core.h>

#include <string>
#include <vector>

#include "base/error.h"
#include "base/interrupt.h"
#include "explore/crosscheck.h"
#include "tools/command.h"
#include "tools/guests.h"
#include "tools/options.h"
#include "tools/selection.h"
#include "tools/signals.h"

namespace sptelab::tools {
namespace {

constexpr const char* kCrosscheckHelp =
    R"(usage: sptelab crosscheck [--scheme LIST] [--op LIST] [--backend kvm|soft]
                          [--seeds N] [--attempt S] [--coherent-ops N] [--vcpus N]
                          [--era ERA] [--json | --markdown]

For every (scheme, op) cell, asks the explorer for its verdict (both of its
scenarios, bound 2, as docs/schemes.md) and checks it on real guests:

  racy cell      N runs (--seeds) of the matching race (coherence-lockfree for
                 writes, stale-spte for stale sptes and reads), each stopping
                 at its first violation or after S seconds free-running; a run
                 that found nothing is repeated guided by the explorer's
                 counterexample (race --guided). The matrix shows the median
                 time to the first violation, 'g' when some runs needed the
                 guide, MISSED when the median run found nothing.
  coherent cell  one free-running coherence-lockfree race of --coherent-ops
                 remapper operations, which must find no violation (RACY if it
                 did).

A disagreement is a bug in the explorer or in the real-guest path.

  --scheme LIST       comma list of schemes or globs, or all (default); the
                      kvm backend refuses sva schemes by name and skips them
                      in all and globs (an IOMMU device is not a KVM guest)
  --op LIST           comma list of ops, or all (default)
  --backend B         kvm (default: the race guest in native mode) or soft
  --seeds N           runs per racy cell, 1 to 100 (default 5)
  --era ERA           the emulated host's kernel era, for the explorer and the
                      races alike: 2.6.27, 6.1, 6.2, 6.6 or 6.18 (default)
  --attempt S         limit of each racy run in seconds (default 2)
  --coherent-ops N    operations of a coherent cell's run (default 100000)
  --vcpus N           guest vCPUs (default 1)
  --json              {"backend", "seeds", "attempt_seconds", "coherent_operations",
                      "cells": [{"scheme", "op", "explorer": {"racy", "property",
                      "preemptions", "scenario"}, "race_scenario", "attempts": [{"seed",
                      "guided", "found", "first_violation_ms", "operations"}],
                      "median_ms", "operations", "violations", "agrees", "seconds"}]}
  --markdown          the matrix and one line per cell (docs/crosscheck.md)

Progress (one line per cell) goes to stderr. Exit status: 0 every cell
agrees, 1 some cell disagrees, 2 bad usage or input, 3 no /dev/kvm (use
--backend soft), 130/143 stopped by SIGINT/SIGTERM (the finished cells are
printed).
)";

explore::CrosscheckOptions crosscheck_options(const Options& options) {
  explore::CrosscheckOptions result;
  const std::string backend = options.value("backend").value_or("kvm");
  auto parsed = scenarios::parse_backend(backend);
  if (!parsed) options.fail(fmt::format("unknown backend '{}'; choose kvm or soft", backend));
  result.backend = *parsed;
  result.seeds = static_cast<uint32_t>(unsigned_option(options, "seeds", 5, 1, 100));
  result.era = selected_era(options);
  result.coherent_operations = unsigned_option(options, "coherent-ops", 100000, 1, 100000000);
  result.vcpus =
      static_cast<uint32_t>(unsigned_option(options, "vcpus", 1, 1, scenarios::kMaxRaceVcpus));
  if (auto text = options.value("attempt")) {
    auto seconds = parse_seconds(*text);
    if (!seconds || *seconds <= 0 || *seconds > 3600) {
      options.fail(
          fmt::format("--attempt '{}' is not a number of seconds above 0 and at most 3600", *text));
    }
    result.attempt_seconds = *seconds;
  }
  if (result.backend == scenarios::Backend::kKvm) result.guest_path = resolve_guest("race");
  return result;
}

void show_progress(const explore::CrosscheckResult& cell, size_t index, size_t total) {
  std::string verdict;
  if (cell.explorer_racy) {
    const double median = cell.median_ms();
    verdict = median < 0 ? "racy, MISSED on the real guest"
                         : fmt::format("racy, median {:.1f} ms to the first violation{}", median,
                                       cell.guided_seeds() > 0 ? " (guided runs)" : "");
  } else {
    verdict =
        fmt::format("coherent, {} operations, {} violation(s)", cell.operations, cell.violations);
  }
  fmt::print(stderr, "crosscheck [{}/{}] {}/{}: {} ({:.1f} s)\n", index, total, cell.scheme.name(),
             host::host_op_name(cell.op), verdict, cell.seconds);
}

}  // namespace

int crosscheck_main(Args args) {
  Options options("crosscheck", args,
                  {{"scheme"},
                   {"op"},
                   {"backend"},
                   {"seeds"},
                   {"era"},
                   {"attempt"},
                   {"coherent-ops"},
                   {"vcpus"},
                   {"json", false, true},
                   {"markdown", false, true}});
  if (options.help()) {
    fmt::print("{}", kCrosscheckHelp);
    return 0;
  }
  if (!options.positionals().empty()) options.fail("crosscheck takes no positional arguments");
  if (options.flag("json") && options.flag("markdown")) options.fail("choose --json or --markdown");
  const explore::CrosscheckOptions config = crosscheck_options(options);
  const std::vector<spte::Scheme> schemes = selected_schemes(
      options, "all",
      config.backend == scenarios::Backend::kKvm ? SchemeBackend::kKvm : SchemeBackend::kEmulated);
  const std::vector<host::HostOp> ops = selected_ops(options);

  handle_stop_signals();
  std::vector<explore::CrosscheckResult> results;
  const size_t total = schemes.size() * ops.size();
  for (const spte::Scheme& scheme : schemes) {
    for (host::HostOp op : ops) {
      if (interrupt::requested() != 0) break;
      explore::CrosscheckResult cell = explore::crosscheck_cell(scheme, op, config);
      if (interrupt::requested() != 0) break;  // cut short: not a verdict
      results.push_back(std::move(cell));
      show_progress(results.back(), results.size(), total);
    }
  }
  if (options.flag("json")) {
    fmt::print("{}", explore::format_crosscheck_json(results, config));
  } else if (options.flag("markdown")) {
    fmt::print("{}", explore::format_crosscheck_markdown(results, config));
  } else {
    fmt::print("{}", explore::format_crosscheck_table(results, config));
  }
  if (int signal = interrupt::requested(); signal != 0) return interrupted_status(signal);
  for (const auto& cell : results) {
    if (!cell.agrees()) return 1;
  }
  return 0;
}

}  // namespace sptelab::tools
