// The `sptelab` subcommands. Each lives in its own cmd_<name>.cpp and is one
// row of the table in commands.cpp; adding a subcommand is a new file plus a
// row there.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace sptelab::tools {

using Args = std::span<const std::string>;

struct Command {
  std::string_view name;
  std::string_view synopsis;  // usage line after "sptelab "
  std::string_view summary;   // one line for `sptelab --help`
  // Gets the arguments after the subcommand's name; returns the exit
  // status. Throws sptelab::Error for bad usage, input or environment.
  int (*main)(Args args);
};

std::span<const Command> commands();
const Command* find_command(std::string_view name);

// The subcommands.
int run_main(Args args);
int list_main(Args args);
int race_main(Args args);
int explore_main(Args args);
int crosscheck_main(Args args);
int conform_main(Args args);
int trace_main(Args args);
int bench_main(Args args);

}  // namespace sptelab::tools
