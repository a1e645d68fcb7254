// Option parsing for the subcommands: "--name value", "--name=value",
// repeatable options, positionals, --help. Every mistake is Error(kBadInput)
// saying what was wrong and pointing at the command's --help.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tools/command.h"

namespace sptelab::tools {

struct OptionSpec {
  std::string_view name;  // without the dashes
  bool repeatable = false;
  bool flag = false;  // takes no value (--json); flag(name) says whether it was given
};

class Options {
 public:
  // Every option but a flag takes a value. "--" ends the options.
  Options(std::string_view command, Args args, std::vector<OptionSpec> specs);

  bool help() const { return help_; }
  bool flag(std::string_view name) const { return value(name).has_value(); }
  std::optional<std::string> value(std::string_view name) const;
  std::vector<std::string> values(std::string_view name) const;
  const std::vector<std::string>& positionals() const { return positionals_; }

  [[noreturn]] void fail(const std::string& message) const;

 private:
  const OptionSpec* spec(std::string_view name) const;

  std::string command_;
  std::vector<OptionSpec> specs_;
  std::vector<std::pair<std::string, std::string>> given_;
  std::vector<std::string> positionals_;
  bool help_ = false;
};

// --NAME as a whole number from min to max (fallback when not given); any
// other value fails with the valid range.
uint64_t unsigned_option(const Options& options, std::string_view name, uint64_t fallback,
                         uint64_t min, uint64_t max);

// "4096", "64K", "64M", "1G" (binary units; a trailing "B"/"iB" is allowed).
std::optional<uint64_t> parse_size(std::string_view text);
std::optional<uint64_t> parse_unsigned(std::string_view text);
// A non-negative finite decimal ("0.5", "30"; no sign, spaces or trailing
// text). Callers bound it: a time limit is at most kMaxSeconds.
std::optional<double> parse_seconds(std::string_view text);

// The longest --timeout or --duration: a year. Larger values would overflow
// the clocks' nanosecond counts.
inline constexpr double kMaxSeconds = 365.0 * 24 * 3600;

}  // namespace sptelab::tools
