// sptelab list guests
#include <array>
#include <string>

#include <fmt/core.h>

#include "base/error.h"
#include "base/inject.h"
#include "base/mutation.h"
#include "host/host_ops.h"
#include "scenarios/race.h"
#include "scenarios/seeds.h"
#include "spte/scheme.h"
#include "tools/command.h"
#include "tools/guests.h"
#include "tools/options.h"

namespace sptelab::tools {
namespace {

int list_guests() {
  for (const BuiltinGuest& guest : builtin_guests()) {
    bool built = find_builtin_guest(guest.name).has_value();
    fmt::print("{:<10} {}{}\n", guest.name, guest.summary, built ? "" : " [not built]");
  }
  return 0;
}

int list_schemes() {
  for (const spte::Scheme& scheme : spte::all_schemes()) {
    fmt::print("{:<24} {}\n", scheme.name(), spte::describe(scheme));
  }
  return 0;
}

int list_scenarios() {
  for (auto kind : scenarios::all_scenarios()) {
    fmt::print("{:<19} {}\n", scenarios::scenario_name(kind), scenarios::describe(kind));
  }
  for (auto race : scenarios::all_seed_races()) {
    fmt::print("{:<19} {}\n", scenarios::seed_race_name(race), scenarios::describe(race));
  }
  return 0;
}

int list_ops() {
  for (host::HostOp op : host::all_host_ops()) {
    fmt::print("{:<10} {}\n", host::host_op_name(op), host::describe(op));
  }
  return 0;
}

int list_points() {
  for (size_t i = 0; i < static_cast<size_t>(inject::Point::kCount); ++i) {
    fmt::print("{}\n", inject::name(static_cast<inject::Point>(i)));
  }
  return 0;
}

int list_mutants() {
  for (mutation::Mutant mutant : mutation::all()) {
    fmt::print("{:<30} {}\n", mutation::name(mutant), mutation::description(mutant));
  }
  return 0;
}

struct ListKind {
  std::string_view name;
  int (*list)();
};

// One row per thing `sptelab list` can list.
constexpr std::array kKinds = {
    ListKind{"guests", list_guests},       ListKind{"schemes", list_schemes},
    ListKind{"scenarios", list_scenarios}, ListKind{"ops", list_ops},
    ListKind{"points", list_points},       ListKind{"mutants", list_mutants},
};

std::string kind_names() {
  std::string names;
  for (const ListKind& kind : kKinds) {
    names += names.empty() ? "" : "|";
    names += kind.name;
  }
  return names;
}

}  // namespace

int list_main(Args args) {
  Options options("list", args, {});
  if (options.help()) {
    fmt::print("usage: sptelab list {}\n", kind_names());
    return 0;
  }
  if (options.positionals().size() != 1) options.fail("say what to list: " + kind_names());
  for (const ListKind& kind : kKinds) {
    if (kind.name == options.positionals().front()) return kind.list();
  }
  options.fail(
      fmt::format("cannot list '{}'; choose {}", options.positionals().front(), kind_names()));
}

}  // namespace sptelab::tools
