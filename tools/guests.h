// Built-in toy guests (guest/): their catalog and where their images are.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace sptelab::tools {

struct BuiltinGuest {
  std::string_view name;
  std::string_view summary;
};

std::span<const BuiltinGuest> builtin_guests();

// The image of a built-in guest, looked for in $SPTELAB_GUEST_DIR, next to
// the sptelab binary (guests/, ../guests/, ../share/sptelab/guests/) and in
// the build tree it was built in. nullopt if it is not a built-in name or
// its image is nowhere.
std::optional<std::string> find_builtin_guest(std::string_view name);

// GUEST as given to `sptelab run`: a path if it contains '/' or names an
// existing file, otherwise a built-in guest's name. Error(kBadInput) saying
// which names exist if it is neither.
std::string resolve_guest(std::string_view guest);

}  // namespace sptelab::tools
