#include <array>

#include "tools/command.h"

namespace sptelab::tools {
namespace {

constexpr std::array kCommands = {
    Command{
        "run",
        "run GUEST [--vcpus N] [--mem SIZE] [--scheme S] [--trace FILE] [--kernel] [--timeout S] "
        "[--arg V]...",
        "run a guest (an ELF file or a built-in guest's name) on KVM", run_main},
    Command{"race",
            "race SCENARIO [--scheme S|all] [--op OP] [--backend kvm|soft] [--iterations N] "
            "[--duration S] [--seed N] [--json]",
            "run a race scenario and compare the schemes' coherence and cost", race_main},
    Command{"explore",
            "explore [--scheme LIST] [--op LIST] [--scenario LIST] [--bound K] [--save FILE] "
            "[--replay FILE] [--json|--markdown]",
            "search the emulator's schedules systematically for each scheme and op", explore_main},
    Command{"crosscheck",
            "crosscheck [--scheme LIST] [--op LIST] [--backend kvm|soft] [--seeds N] "
            "[--json|--markdown]",
            "check the explorer's verdicts on real guests: time to the first violation",
            crosscheck_main},
    Command{"conform", "conform [--ops FILE|-] [--era ERA] [--json] [--save-kernel FILE]",
            "run mm operations on the kernel and the emulator, compare the ranges invalidated",
            conform_main},
    Command{"trace",
            "trace FILE [--gfn N] [--event NAME[,NAME]] [--thread NAME] [--from US] [--to US] "
            "[--summary] [--format text|chrome] [--output FILE]",
            "show a trace file: text like trace-cmd report, a summary, or Perfetto JSON",
            trace_main},
    Command{"bench", "bench [NAME]... [--json] [--quick]",
            "measure what each design costs against the real kernel on this machine", bench_main},
    Command{"list", "list guests|schemes|scenarios|ops|points",
            "list built-in guests, schemes, scenarios, host operations or injection points",
            list_main},
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
