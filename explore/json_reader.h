// A small JSON reader for what `sptelab explore --json` writes, so that
// `--merge` can read shard outputs back. RFC 8259 values; numbers as double.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sptelab::explore::json {

struct Value;
using Object = std::map<std::string, Value>;
using Array = std::vector<Value>;

struct Value {
  std::variant<std::nullptr_t, bool, double, std::string, std::shared_ptr<Array>,
               std::shared_ptr<Object>>
      data;

  bool is_null() const { return std::holds_alternative<std::nullptr_t>(data); }
  // Each throws Error(kBadInput) naming `what` when the type differs.
  bool as_bool(std::string_view what) const;
  double as_number(std::string_view what) const;
  const std::string& as_string(std::string_view what) const;
  const Array& as_array(std::string_view what) const;
  const Object& as_object(std::string_view what) const;
  // The member `key` of an object; Error(kBadInput) if missing.
  const Value& at(std::string_view key) const;
};

// Error(kBadInput) with the byte offset for malformed text.
Value parse(std::string_view text);

}  // namespace sptelab::explore::json
