#include "tools/selection.h"

namespace sptelab::tools {

std::vector<spte::Scheme> selected_schemes(const Options& options, const std::string& fallback) {
  return select<spte::Scheme>(
      options, "scheme", options.value("scheme").value_or(fallback), spte::all_schemes(),
      [](const spte::Scheme& s) { return s.name(); }, "'sptelab list schemes', globs, or all");
}

std::vector<scenarios::HostOp> selected_ops(const Options& options, const std::string& fallback) {
  return select<scenarios::HostOp>(
      options, "op", options.value("op").value_or(fallback), scenarios::all_host_ops(),
      [](scenarios::HostOp op) { return std::string(scenarios::host_op_name(op)); },
      "migrate, remap, cow, dontneed, mprotect, mkclean, ksm, or all");
}

}  // namespace sptelab::tools
