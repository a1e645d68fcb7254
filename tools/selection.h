// Choosing from a list on the command line: "a,b", globs ("ptl-page+*"),
// or "all" (explore, crosscheck).
#pragma once

#include <fmt/core.h>
#include <fnmatch.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "host/host_ops.h"
#include "mm/kernel_era.h"
#include "spte/scheme.h"
#include "tools/options.h"

namespace sptelab::tools {

inline std::vector<std::string> split(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream stream(list);
  for (std::string item; std::getline(stream, item, ',');) {
    if (!item.empty()) items.push_back(item);
  }
  return items;
}

template <typename T, typename NameFn>
std::vector<T> select(const Options& options, const std::string& what, const std::string& list,
                      const std::vector<T>& all, NameFn name, const std::string& valid) {
  if (list == "all") return all;
  std::vector<T> chosen;
  for (const std::string& pattern : split(list)) {
    bool matched = false;
    for (const T& item : all) {
      if (fnmatch(pattern.c_str(), name(item).c_str(), 0) != 0) continue;
      matched = true;
      if (std::find(chosen.begin(), chosen.end(), item) == chosen.end()) chosen.push_back(item);
    }
    if (!matched) {
      options.fail(fmt::format("no {} matches '{}'; valid: {}", what, pattern, valid));
    }
  }
  return chosen;
}

// Where the chosen schemes will run, for the schemes that cannot run there.
enum class SchemeBackend : uint8_t {
  kEmulated,  // software vCPUs or the explorer: every protocol
  kKvm,       // a real KVM guest: its MMU is KVM's, so no sva (an IOMMU's IOTLB)
};

// The schemes and ops of --scheme LIST and --op LIST (default: all, or
// `fallback` when the option is not given). Schemes that cannot run under
// the --era or on `backend` (sva: before 6.6, or on KVM) are skipped when a
// glob or `all` names them and fail with the reason when named one by one.
std::vector<spte::Scheme> selected_schemes(const Options& options,
                                           const std::string& fallback = "all",
                                           SchemeBackend backend = SchemeBackend::kEmulated);
// Why `scheme` cannot run under `era` on `backend`; empty if it can.
std::string scheme_unavailable(const spte::Scheme& scheme, mm::KernelEra era,
                               SchemeBackend backend);
std::vector<host::HostOp> selected_ops(const Options& options, const std::string& fallback = "all");
// The kernel era of --era (default mm::kDefaultKernelEra); a bad name fails
// with the valid ones.
mm::KernelEra selected_era(const Options& options);

}  // namespace sptelab::tools
