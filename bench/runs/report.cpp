#include "bench/runs/report.h"

#include <sys/utsname.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "base/json.h"
#include "hypervisor/kvm_device.h"

#ifndef SPTELAB_BUILD_TYPE
#define SPTELAB_BUILD_TYPE "unknown"
#endif

namespace sptelab::bench {
namespace {

bool file_contains(const char* path, const std::string& needle) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) != std::string::npos) return true;
  }
  return false;
}

// Which KVM this is: the hardware extension it uses, or PVM, the
// paravirtualized backend that runs without VMX/SVM (docs/design.md's machine).
std::string kvm_backend() {
  if (access(hypervisor::default_kvm_device_path().c_str(), R_OK | W_OK) != 0) return "none";
  if (access("/sys/module/kvm_pvm", F_OK) == 0 || file_contains("/proc/modules", "kvm_pvm")) {
    return "pvm";
  }
  if (file_contains("/proc/cpuinfo", " vmx")) return "vmx";
  if (file_contains("/proc/cpuinfo", " svm")) return "svm";
  return "unknown";
}

std::string compiler() {
#if defined(__clang__)
  return fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#elif defined(__GNUC__)
  return fmt::format("gcc {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#else
  return "unknown";
#endif
}

std::string format_value(double value) {
  if (value == 0) return "0";
  double magnitude = std::fabs(value);
  if (magnitude >= 1000) return fmt::format("{:.0f}", value);
  if (magnitude >= 10) return fmt::format("{:.1f}", value);
  if (magnitude >= 0.1) return fmt::format("{:.2f}", value);
  return fmt::format("{:.3g}", value);
}

// One table cell: control characters (a newline in a note) become spaces.
std::string one_line(std::string text) {
  for (char& c : text) {
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  }
  return text;
}

}  // namespace

double ratio_of(double value, double baseline) {
  return baseline > 0 ? value / baseline : 0;
}

Machine describe_machine() {
  Machine machine;
  machine.cpus = std::thread::hardware_concurrency();
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page_size > 0) {
    machine.memory_bytes = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
  }
  utsname name{};
  machine.kernel = uname(&name) == 0 ? name.release : "unknown";
  machine.kvm_backend = kvm_backend();
  machine.compiler = compiler();
  machine.build_type = SPTELAB_BUILD_TYPE;
  return machine;
}

std::string json_number(double number) {
  if (!std::isfinite(number)) return "null";
  return fmt::format("{}", number);
}

std::string format_table(const std::vector<Result>& results) {
  size_t name_width = 4;
  size_t unit_width = 4;
  for (const Result& r : results) {
    name_width = std::max(name_width, r.name.size());
    unit_width = std::max(unit_width, r.unit.size());
  }
  std::string out = fmt::format("{:<{}}  {:<{}}  {:>10}  {:>10}  {:>6}  {}\n", "name", name_width,
                                "unit", unit_width, "value", "baseline", "ratio", "notes");
  for (const Result& r : results) {
    out += fmt::format("{:<{}}  {:<{}}  {:>10}  {:>10}  {:>6.2f}  {}\n", r.name, name_width, r.unit,
                       unit_width, format_value(r.value), format_value(r.baseline), r.ratio,
                       one_line(r.notes));
  }
  return out;
}

std::string format_json(const Machine& machine, const std::vector<Result>& results) {
  std::string out = fmt::format(
      "{{\"machine\": {{\"cpus\": {}, \"memory_bytes\": {}, \"kernel\": {}, \"kvm_backend\": {}, "
      "\"compiler\": {}, \"build_type\": {}}}, \"benchmarks\": [",
      machine.cpus, machine.memory_bytes, json_string(machine.kernel),
      json_string(machine.kvm_backend), json_string(machine.compiler),
      json_string(machine.build_type));
  for (size_t i = 0; i < results.size(); ++i) {
    const Result& r = results[i];
    out += fmt::format(
        "{}\n  {{\"name\": {}, \"unit\": {}, \"value\": {}, \"baseline\": {}, \"ratio\": {}, "
        "\"notes\": {}",
        i ? "," : "", json_string(r.name), json_string(r.unit), json_number(r.value),
        json_number(r.baseline), json_number(r.ratio), json_string(r.notes));
    for (const Field& field : r.extra) {
      out += fmt::format(", {}: ", json_string(field.key));
      if (const double* number = std::get_if<double>(&field.value)) {
        out += json_number(*number);
      } else {
        out += json_string(std::get<std::string>(field.value));
      }
    }
    out += "}";
  }
  return out + "\n]}\n";
}

}  // namespace sptelab::bench
