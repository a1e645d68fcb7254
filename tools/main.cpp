// sptelab: the command-line entry point. Dispatches to the subcommand table
// (commands.cpp) and turns errors into the exit statuses of the CLI contract
// (docs/design.md): 2 bad usage or input, 3 missing environment, 4 internal.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <system_error>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"
#include "tools/command.h"
#include "tools/version.h"

namespace {

void print_usage(std::FILE* out) {
  fmt::print(out,
             "usage: sptelab COMMAND [ARGS]\n       sptelab help [COMMAND]\n"
             "       sptelab --version\n\ncommands:\n");
  for (const auto& command : sptelab::tools::commands()) {
    fmt::print(out, "  {:<10} {}\n", command.name, command.summary);
  }
  fmt::print(out,
             "\n'sptelab help COMMAND' (or 'sptelab COMMAND --help') describes a command. Exit "
             "status: 0 ran with no "
             "violation, 1 a violation was found, 2 bad usage or input, 3 the environment lacks "
             "something (e.g. /dev/kvm) or the output could not be written, 4 internal "
             "error, 130/143 stopped by SIGINT/SIGTERM (run and race report what finished).\n");
}

// The names of the commands, for messages.
std::string command_names() {
  std::string names;
  for (const auto& known : sptelab::tools::commands()) {
    names += names.empty() ? "" : ", ";
    names += known.name;
  }
  return names;
}

// `sptelab help CMD` is `sptelab CMD --help`, as git and cargo have it.
int help_command(const std::vector<std::string>& args) {
  if (args.size() > 2) {
    sptelab::throw_bad_input("help takes one COMMAND; see 'sptelab --help'");
  }
  const sptelab::tools::Command* command = sptelab::tools::find_command(args[1]);
  if (command == nullptr) {
    sptelab::throw_bad_input(
        fmt::format("help: unknown command '{}' (commands: {})", args[1], command_names()));
  }
  const std::vector<std::string> help = {"--help"};
  return command->main(help);
}

int dispatch(const std::vector<std::string>& args) {
  if (args.empty()) {
    print_usage(stderr);
    return static_cast<int>(sptelab::ExitStatus::kBadInput);
  }
  if (args[0] == "--version") {
    fmt::print("{}\n", sptelab::tools::version_line());
    return 0;
  }
  if (args[0] == "help" && args.size() > 1) return help_command(args);
  if (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    print_usage(stdout);
    return 0;
  }
  const sptelab::tools::Command* command = sptelab::tools::find_command(args[0]);
  if (command == nullptr) {
    sptelab::throw_bad_input(fmt::format(
        "unknown command '{}' (commands: {}); see 'sptelab --help'", args[0], command_names()));
  }
  return command->main(sptelab::tools::Args(args).subspan(1));
}

// Every command's stdout is checked once everything is written: a full
// disk, /dev/full or a closed descriptor is an error (exit 3), never a
// silent success.
int check_stdout(int status) {
  errno = 0;
  if (std::fflush(stdout) == 0 && !std::ferror(stdout)) return status;
  int error = errno;
  fmt::print(stderr, "sptelab: writing the output to stdout failed: {}\n",
             error != 0 ? std::strerror(error) : "I/O error");
  return static_cast<int>(sptelab::ExitStatus::kEnvironment);
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    return check_stdout(dispatch(args));
  } catch (const sptelab::Error& error) {
    fmt::print(stderr, "sptelab: {}\n", error.what());
    return check_stdout(static_cast<int>(error.status()));
  } catch (const std::system_error& error) {
    // fmt::print reports a failed write to stdout this way.
    if (std::ferror(stdout)) {
      fmt::print(stderr, "sptelab: writing the output to stdout failed: {}\n",
                 error.code().message());
      return static_cast<int>(sptelab::ExitStatus::kEnvironment);
    }
    fmt::print(stderr, "sptelab: internal error: {}\n", error.what());
    return static_cast<int>(sptelab::ExitStatus::kInternal);
  } catch (const std::exception& error) {
    fmt::print(stderr, "sptelab: internal error: {}\n", error.what());
    return static_cast<int>(sptelab::ExitStatus::kInternal);
  }
}
