// sptelab explore [--scheme S|all] [--json]
#include <fmt/core.h>

#include "scenarios/explore.h"
#include "tools/command.h"
#include "tools/options.h"

namespace sptelab::tools {
namespace {

constexpr const char* kHelp = R"(usage: sptelab explore [--scheme S|all] [--json]

Drives, deterministically and on software vCPUs, each interleaving that
decides whether a scheme keeps the guest coherent, by parking threads at the
injection points, and prints what each scheme lets happen:
  gup-before-change  a fault has GUP'd the old page when the host operation
                     starts, and installs its spte after the operation
  fault-in-window    a whole fault runs after the operation's "before"
                     notifier point and before its PTE change
  third-thread       after the new PTE is live and before the operation's
                     last notifier point, the host writes through the new PTE
                     and a vCPU through its spte (the 2008 third-thread case)
Columns: stale (an spte still disagrees with the host PTE at the end), lost
(a write made through one mapping was not seen through the other), uaf (an
spte or an access reached a freed frame).

exit status: 0 every explored scheme stayed coherent, 1 some did not, 2 bad
usage.
)";

}  // namespace

int explore_main(Args args) {
  Options options("explore", args, {{"scheme"}, {"json", false, true}});
  if (options.help()) {
    fmt::print("{}", kHelp);
    return 0;
  }
  if (!options.positionals().empty()) options.fail("explore takes no positional arguments");
  std::vector<spte::Scheme> schemes = spte::all_schemes();
  if (auto text = options.value("scheme"); text && *text != "all") {
    auto scheme = spte::parse_scheme(*text);
    if (!scheme)
      options.fail(fmt::format("unknown scheme '{}'; see 'sptelab list schemes'", *text));
    schemes = {*scheme};
  }
  std::vector<scenarios::ExploreRow> rows;
  bool broken = false;
  for (const spte::Scheme& scheme : schemes) {
    rows.push_back(scenarios::explore_scheme(scheme));
    broken |= !rows.back().coherent();
  }
  fmt::print("{}", options.flag("json") ? scenarios::explore_json(rows)
                                        : scenarios::format_explore_table(rows));
  return broken ? 1 : 0;
}

}  // namespace sptelab::tools
