#include "explore/json_reader.h"

#include <fmt/format.h>

#include <charconv>
#include <cstdlib>

#include "base/error.h"

namespace sptelab::explore::json {
namespace {

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  Value document() {
    Value value = parse_value(0);
    skip_space();
    if (pos_ != text_.size()) fail("text after the JSON value");
    return value;
  }

 private:
  static constexpr int kMaxDepth = 64;

  [[noreturn]] void fail(std::string_view what) const {
    throw_bad_input(fmt::format("malformed JSON at byte {}: {}", pos_, what));
  }

  void skip_space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\t' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool consume(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  Value parse_value(int depth) {
    if (depth > kMaxDepth) fail("nested too deeply");
    skip_space();
    if (pos_ >= text_.size()) fail("unexpected end");
    const char c = text_[pos_];
    if (c == '{') return parse_object(depth);
    if (c == '[') return parse_array(depth);
    if (c == '"') return Value{parse_string()};
    if (consume("true")) return Value{true};
    if (consume("false")) return Value{false};
    if (consume("null")) return Value{nullptr};
    return Value{parse_number()};
  }

  Value parse_object(int depth) {
    auto object = std::make_shared<Object>();
    ++pos_;
    skip_space();
    if (consume("}")) return Value{object};
    for (;;) {
      skip_space();
      if (pos_ >= text_.size() || text_[pos_] != '"') fail("expected a member name");
      std::string key = parse_string();
      skip_space();
      if (!consume(":")) fail("expected ':'");
      (*object)[key] = parse_value(depth + 1);
      skip_space();
      if (consume("}")) return Value{object};
      if (!consume(",")) fail("expected ',' or '}'");
    }
  }

  Value parse_array(int depth) {
    auto array = std::make_shared<Array>();
    ++pos_;
    skip_space();
    if (consume("]")) return Value{array};
    for (;;) {
      array->push_back(parse_value(depth + 1));
      skip_space();
      if (consume("]")) return Value{array};
      if (!consume(",")) fail("expected ',' or ']'");
    }
  }

  std::string parse_string() {
    ++pos_;
    std::string out;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      char c = text_[pos_++];
      if (static_cast<unsigned char>(c) < 0x20) fail("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= text_.size()) fail("unexpected end in a string");
      c = text_[pos_++];
      switch (c) {
        case '"':
        case '\\':
        case '/':
          out += c;
          break;
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'u':
          out += parse_unicode_escape();
          break;
        default:
          fail("unknown escape");
      }
    }
    if (pos_ >= text_.size()) fail("unterminated string");
    ++pos_;
    return out;
  }

  // \uXXXX as UTF-8 (surrogate pairs joined).
  std::string parse_unicode_escape() {
    uint32_t code = hex4();
    if (code >= 0xd800 && code < 0xdc00) {
      if (!consume("\\u")) fail("lone surrogate");
      const uint32_t low = hex4();
      if (low < 0xdc00 || low >= 0xe000) fail("bad surrogate pair");
      code = 0x10000 + ((code - 0xd800) << 10) + (low - 0xdc00);
    }
    std::string out;
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xc0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xe0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    }
    return out;
  }

  uint32_t hex4() {
    if (pos_ + 4 > text_.size()) fail("short \\u escape");
    uint32_t value = 0;
    auto [end, error] = std::from_chars(text_.data() + pos_, text_.data() + pos_ + 4, value, 16);
    if (error != std::errc() || end != text_.data() + pos_ + 4) fail("bad \\u escape");
    pos_ += 4;
    return value;
  }

  double parse_number() {
    const size_t start = pos_;
    while (pos_ < text_.size() &&
           std::string_view("+-0123456789.eE").find(text_[pos_]) != std::string_view::npos) {
      ++pos_;
    }
    if (start == pos_) fail("expected a value");
    const std::string number(text_.substr(start, pos_ - start));
    char* end = nullptr;
    const double value = std::strtod(number.c_str(), &end);
    if (end != number.c_str() + number.size()) fail("bad number");
    return value;
  }

  std::string_view text_;
  size_t pos_ = 0;
};

[[noreturn]] void wrong_type(std::string_view what, std::string_view wanted) {
  throw_bad_input(fmt::format("JSON: {} should be {}", what, wanted));
}

template <typename T>
const T& get(const Value& value, std::string_view what, std::string_view wanted) {
  if (const T* held = std::get_if<T>(&value.data)) return *held;
  wrong_type(what, wanted);
}

}  // namespace

bool Value::as_bool(std::string_view what) const {
  return get<bool>(*this, what, "true or false");
}
double Value::as_number(std::string_view what) const {
  return get<double>(*this, what, "a number");
}
const std::string& Value::as_string(std::string_view what) const {
  return get<std::string>(*this, what, "a string");
}
const Array& Value::as_array(std::string_view what) const {
  return *get<std::shared_ptr<Array>>(*this, what, "an array");
}
const Object& Value::as_object(std::string_view what) const {
  return *get<std::shared_ptr<Object>>(*this, what, "an object");
}
const Value& Value::at(std::string_view key) const {
  const Object& object = as_object("the value");
  auto it = object.find(std::string(key));
  if (it == object.end()) throw_bad_input(fmt::format("JSON: member \"{}\" is missing", key));
  return it->second;
}

Value parse(std::string_view text) {
  return Parser(text).document();
}

}  // namespace sptelab::explore::json
