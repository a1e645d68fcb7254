#include "tools/guests.h"

#include <unistd.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <vector>

#include <fmt/core.h>

#include "base/error.h"

namespace sptelab::tools {
namespace {

constexpr BuiltinGuest kBuiltinGuests[] = {
#include "builtin_guests.inc"
};

std::filesystem::path executable_dir() {
  std::array<char, 4096> buffer{};
  ssize_t length = readlink("/proc/self/exe", buffer.data(), buffer.size() - 1);
  if (length <= 0) return {};
  return std::filesystem::path(std::string(buffer.data(), static_cast<size_t>(length)))
      .parent_path();
}

std::vector<std::filesystem::path> guest_dirs() {
  std::vector<std::filesystem::path> dirs;
  if (const char* dir = std::getenv("SPTELAB_GUEST_DIR"); dir != nullptr && *dir != '\0') {
    dirs.emplace_back(dir);
  }
  std::filesystem::path exe = executable_dir();
  if (!exe.empty()) {
    dirs.push_back(exe / "guests");
    dirs.push_back(exe / ".." / "guests");
    dirs.push_back(exe / ".." / "share" / "sptelab" / "guests");
  }
  dirs.emplace_back(SPTELAB_GUEST_BUILD_DIR);
  return dirs;
}

bool is_builtin(std::string_view name) {
  for (const BuiltinGuest& guest : kBuiltinGuests) {
    if (guest.name == name) return true;
  }
  return false;
}

std::string builtin_names() {
  std::string names;
  for (const BuiltinGuest& guest : kBuiltinGuests) {
    names += names.empty() ? "" : ", ";
    names += guest.name;
  }
  return names;
}

}  // namespace

std::span<const BuiltinGuest> builtin_guests() {
  return kBuiltinGuests;
}

std::optional<std::string> find_builtin_guest(std::string_view name) {
  if (!is_builtin(name)) return std::nullopt;
  for (const auto& dir : guest_dirs()) {
    std::filesystem::path image = dir / (std::string(name) + ".elf");
    std::error_code error;
    if (std::filesystem::is_regular_file(image, error)) return image.lexically_normal().string();
  }
  return std::nullopt;
}

std::string resolve_guest(std::string_view guest) {
  // symlink_status: a dangling symlink or a symlink loop is still a path
  // the user gave, and reading it says what is wrong with it.
  std::error_code error;
  bool exists =
      std::filesystem::exists(std::filesystem::symlink_status(std::filesystem::path(guest), error));
  if (guest.find('/') != std::string_view::npos || exists) return std::string(guest);
  if (auto image = find_builtin_guest(guest)) return *image;
  if (is_builtin(guest)) {
    throw_environment(
        fmt::format("the built-in guest '{}' has not been built (looked next to "
                    "the sptelab binary and in {}); build the sptelab_guests "
                    "target or set SPTELAB_GUEST_DIR",
                    guest, SPTELAB_GUEST_BUILD_DIR));
  }
  throw_bad_input(
      fmt::format("'{}' is neither a file nor a built-in guest (built-in guests: "
                  "{}); give the path of a guest ELF image",
                  guest, builtin_names()));
}

}  // namespace sptelab::tools
