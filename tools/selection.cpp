#include "tools/selection.h"

namespace sptelab::tools {

std::vector<spte::Scheme> selected_schemes(const Options& options, const std::string& fallback) {
  return select<spte::Scheme>(
      options, "scheme", options.value("scheme").value_or(fallback), spte::all_schemes(),
      [](const spte::Scheme& s) { return s.name(); }, "'sptelab list schemes', globs, or all");
}

std::vector<host::HostOp> selected_ops(const Options& options, const std::string& fallback) {
  return select<host::HostOp>(
      options, "op", options.value("op").value_or(fallback), host::all_host_ops(),
      [](host::HostOp op) { return std::string(host::host_op_name(op)); },
      "migrate, remap, cow, dontneed, mprotect, mkclean, ksm, punch-hole, or all");
}

mm::KernelEra selected_era(const Options& options) {
  const std::optional<std::string> name = options.value("era");
  if (!name) return mm::kDefaultKernelEra;
  const std::optional<mm::KernelEra> era = mm::parse_kernel_era(*name);
  if (!era) {
    options.fail(fmt::format("--era '{}': choose one of {} (default {})", *name,
                             mm::kernel_era_list(), mm::kernel_era_name(mm::kDefaultKernelEra)));
  }
  return *era;
}

}  // namespace sptelab::tools
