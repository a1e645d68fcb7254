// Error types and the process exit statuses of the CLI contract (docs/design.md).
#pragma once

#include <stdexcept>
#include <string>

namespace sptelab {

// Exit statuses are part of the CLI contract: scripts depend on them.
enum class ExitStatus : int {
  kOk = 0,           // ran with no violation
  kViolation = 1,    // a violation was found
  kBadInput = 2,     // bad usage or bad input
  kEnvironment = 3,  // the environment lacks something needed (e.g. /dev/kvm)
  kInternal = 4,     // internal error
};

// An error that knows which exit status it maps to. The message says what was
// wrong and, where possible, what to do about it.
class Error : public std::runtime_error {
 public:
  Error(ExitStatus status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  ExitStatus status() const { return status_; }

 private:
  ExitStatus status_;
};

[[noreturn]] void throw_bad_input(const std::string& message);
[[noreturn]] void throw_environment(const std::string& message);
[[noreturn]] void throw_internal(const std::string& message);

}  // namespace sptelab
