#include "tools/options.h"

#include <cctype>
#include <charconv>
#include <cmath>

#include <fmt/core.h>

#include "base/error.h"

namespace sptelab::tools {

Options::Options(std::string_view command, Args args, std::vector<OptionSpec> specs)
    : command_(command), specs_(std::move(specs)) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string_view arg = args[i];
    if (arg == "--") {
      for (++i; i < args.size(); ++i) positionals_.push_back(args[i]);
      break;
    }
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      continue;
    }
    if (arg.size() < 2 || arg.substr(0, 2) != "--") {
      if (arg.size() > 1 && arg[0] == '-') fail(fmt::format("unknown option '{}'", arg));
      positionals_.push_back(std::string(arg));
      continue;
    }
    std::string_view name = arg.substr(2);
    std::optional<std::string> value;
    if (size_t equals = name.find('='); equals != std::string_view::npos) {
      value = std::string(name.substr(equals + 1));
      name = name.substr(0, equals);
    }
    const OptionSpec* known = spec(name);
    if (known == nullptr) fail(fmt::format("unknown option '--{}'", name));
    if (known->flag) {
      if (value) fail(fmt::format("option --{} takes no value", name));
      value = "";
    } else if (!value) {
      if (i + 1 >= args.size()) fail(fmt::format("option --{} needs a value", name));
      value = args[++i];
    }
    if (!known->repeatable && this->value(name)) {
      fail(fmt::format("option --{} given twice", name));
    }
    given_.emplace_back(std::string(name), *value);
  }
}

const OptionSpec* Options::spec(std::string_view name) const {
  for (const OptionSpec& candidate : specs_) {
    if (candidate.name == name) return &candidate;
  }
  return nullptr;
}

std::optional<std::string> Options::value(std::string_view name) const {
  for (const auto& [key, value] : given_) {
    if (key == name) return value;
  }
  return std::nullopt;
}

std::vector<std::string> Options::values(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [key, value] : given_) {
    if (key == name) out.push_back(value);
  }
  return out;
}

void Options::fail(const std::string& message) const {
  throw_bad_input(fmt::format("{}: {}; see 'sptelab {} --help'", command_, message, command_));
}

std::optional<uint64_t> parse_unsigned(std::string_view text) {
  uint64_t value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) {
    return std::nullopt;
  }
  return value;
}

std::optional<uint64_t> parse_size(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  std::optional<uint64_t> number = parse_unsigned(text.substr(0, digits));
  if (!number) return std::nullopt;
  std::string unit;
  for (char c : text.substr(digits)) unit += static_cast<char>(std::toupper(c));
  unsigned shift = 0;
  if (unit == "" || unit == "B") {
    shift = 0;
  } else if (unit == "K" || unit == "KB" || unit == "KIB") {
    shift = 10;
  } else if (unit == "M" || unit == "MB" || unit == "MIB") {
    shift = 20;
  } else if (unit == "G" || unit == "GB" || unit == "GIB") {
    shift = 30;
  } else if (unit == "T" || unit == "TB" || unit == "TIB") {
    shift = 40;
  } else {
    return std::nullopt;
  }
  if (shift > 0 && *number > (UINT64_MAX >> shift)) return std::nullopt;
  return *number << shift;
}

std::optional<double> parse_seconds(std::string_view text) {
  // from_chars takes "-0" and exponents; a time is plain digits and a dot.
  if (text.find_first_not_of("0123456789.") != std::string_view::npos) return std::nullopt;
  double value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty() ||
      !std::isfinite(value) || value < 0) {
    return std::nullopt;
  }
  return value;
}

uint64_t unsigned_option(const Options& options, std::string_view name, uint64_t fallback,
                         uint64_t min, uint64_t max) {
  std::optional<std::string> text = options.value(name);
  if (!text) return fallback;
  std::optional<uint64_t> value = parse_unsigned(*text);
  if (!value || *value < min || *value > max) {
    options.fail(
        fmt::format("--{} wants a whole number from {} to {}, got '{}'", name, min, max, *text));
  }
  return *value;
}

}  // namespace sptelab::tools
