#include "tools/version.h"

#include <fmt/core.h>

#include "revision.h"  // generated at every build by tools/revision.cmake

namespace sptelab::tools {

std::string version_line() {
  return fmt::format("sptelab {} (git {}, {} build{})", SPTELAB_VERSION, SPTELAB_REVISION,
                     SPTELAB_BUILD_TYPE,
                     SPTELAB_SANITIZER[0] != '\0' ? fmt::format(", {} sanitizer", SPTELAB_SANITIZER)
                                                  : std::string());
}

}  // namespace sptelab::tools
