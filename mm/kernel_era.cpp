#include "mm/kernel_era.h"

#include <atomic>

#include "base/error.h"

namespace sptelab::mm {

const char* kernel_era_name(KernelEra era) {
  switch (era) {
    case KernelEra::k2_6_27:
      return "2.6.27";
    case KernelEra::k6_1:
      return "6.1";
    case KernelEra::k6_2:
      return "6.2";
    case KernelEra::k6_6:
      return "6.6";
    case KernelEra::k6_18:
      return "6.18";
  }
  return "?";
}

std::optional<KernelEra> parse_kernel_era(std::string_view name) {
  for (KernelEra era : kAllKernelEras) {
    if (name == kernel_era_name(era)) return era;
  }
  return std::nullopt;
}

std::string kernel_era_list() {
  std::string out;
  for (KernelEra era : kAllKernelEras) {
    if (!out.empty()) out += ", ";
    out += kernel_era_name(era);
  }
  return out;
}

namespace {
std::atomic<KernelEra> process_era{kDefaultKernelEra};
}  // namespace

void set_process_kernel_era(KernelEra era) {
  process_era.store(era, std::memory_order_relaxed);
}

KernelEra process_kernel_era() {
  return process_era.load(std::memory_order_relaxed);
}

KernelEra kernel_era_from_string(std::string_view name) {
  std::optional<KernelEra> era = parse_kernel_era(name);
  if (!era) {
    throw_bad_input("unknown kernel era '" + std::string(name) + "'; choose one of " +
                    kernel_era_list() + " (default " + kernel_era_name(kDefaultKernelEra) + ")");
  }
  return *era;
}

}  // namespace sptelab::mm
