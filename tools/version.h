// `sptelab --version`: what a bug report needs to name the binary.
#pragma once

#include <string>

namespace sptelab::tools {

// "sptelab 0.1 (git 6b986be1a2c3, RelWithDebInfo build)": the project
// version, the git revision it was built from ("-dirty" when the tree had
// changes, "unknown" outside a git checkout) and the CMake build type.
std::string version_line();

}  // namespace sptelab::tools
