// A strict little JSON parser for the tests (RFC 8259: no trailing commas,
// no comments, no control characters in strings), so the Chrome export is
// checked to be valid JSON without depending on a tool being installed.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sptelab::trace::testing {

struct Json;
using JsonArray = std::vector<Json>;
using JsonObject = std::map<std::string, Json>;

struct Json {
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<JsonArray>,
               std::shared_ptr<JsonObject>>
      value;

  bool is_object() const { return std::holds_alternative<std::shared_ptr<JsonObject>>(value); }
  bool is_array() const { return std::holds_alternative<std::shared_ptr<JsonArray>>(value); }
  bool is_string() const { return std::holds_alternative<std::string>(value); }
  bool is_number() const { return std::holds_alternative<double>(value); }
  const JsonObject& object() const { return *std::get<std::shared_ptr<JsonObject>>(value); }
  const JsonArray& array() const { return *std::get<std::shared_ptr<JsonArray>>(value); }
  const std::string& string() const { return std::get<std::string>(value); }
  double number() const { return std::get<double>(value); }
  bool has(const std::string& key) const { return is_object() && object().count(key) > 0; }
  const Json& operator[](const std::string& key) const { return object().at(key); }
};

// Throws std::runtime_error("... at byte N") on invalid JSON.
Json parse_json(std::string_view text);

}  // namespace sptelab::trace::testing
