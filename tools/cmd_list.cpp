// sptelab list guests
#include <array>
#include <string>

#include <fmt/core.h>

#include "base/error.h"
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

struct ListKind {
  std::string_view name;
  int (*list)();
};

// One row per thing `sptelab list` can list.
constexpr std::array kKinds = {
    ListKind{"guests", list_guests},
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
