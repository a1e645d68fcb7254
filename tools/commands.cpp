#include <array>

#include "tools/command.h"

namespace sptelab::tools {
namespace {

constexpr std::array kCommands = {
    Command{"run",
            "run GUEST [--vcpus N] [--mem SIZE] [--scheme S] [--trace FILE] [--timeout S] "
            "[--arg V]...",
            "run a guest (an ELF file or a built-in guest's name) on KVM", run_main},
    Command{"list", "list guests", "list the built-in guests", list_main},
};

}  // namespace

std::span<const Command> commands() {
  return kCommands;
}

const Command* find_command(std::string_view name) {
  for (const Command& command : kCommands) {
    if (command.name == name) return &command;
  }
  return nullptr;
}

}  // namespace sptelab::tools
