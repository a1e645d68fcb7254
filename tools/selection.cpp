#include "tools/selection.h"

namespace sptelab::tools {

std::string scheme_unavailable(const spte::Scheme& scheme, mm::KernelEra era,
                               SchemeBackend backend) {
  if (backend == SchemeBackend::kKvm && scheme.protocol == spte::Protocol::kSva) {
    return fmt::format(
        "{} models an IOMMU device sharing the host page table, but on the kvm backend the "
        "guest's memory goes through KVM's own MMU: run it with --backend soft, or explore it",
        scheme.name());
  }
  return spte::era_requirement(scheme, era);
}

std::vector<spte::Scheme> selected_schemes(const Options& options, const std::string& fallback,
                                           SchemeBackend backend) {
  const std::string list = options.value("scheme").value_or(fallback);
  const std::vector<spte::Scheme> matched = select<spte::Scheme>(
      options, "scheme", list, spte::all_schemes(), [](const spte::Scheme& s) { return s.name(); },
      "'sptelab list schemes', globs, or all");
  const mm::KernelEra era = selected_era(options);
  const std::vector<std::string> items = split(list);
  std::vector<spte::Scheme> runnable;
  std::string skipped;
  for (const spte::Scheme& scheme : matched) {
    const std::string reason = scheme_unavailable(scheme, era, backend);
    if (reason.empty()) {
      runnable.push_back(scheme);
      continue;
    }
    if (std::find(items.begin(), items.end(), scheme.name()) != items.end()) options.fail(reason);
    if (skipped.empty()) skipped = reason;
  }
  if (runnable.empty()) options.fail(fmt::format("no --scheme '{}' can run: {}", list, skipped));
  return runnable;
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
