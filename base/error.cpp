#include "base/error.h"

namespace sptelab {

void throw_bad_input(const std::string& message) {
  throw Error(ExitStatus::kBadInput, message);
}
void throw_environment(const std::string& message) {
  throw Error(ExitStatus::kEnvironment, message);
}
void throw_internal(const std::string& message) {
  throw Error(ExitStatus::kInternal, message);
}

}  // namespace sptelab
