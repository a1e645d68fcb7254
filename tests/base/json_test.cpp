// json_string: every string sptelab puts in JSON comes out as valid RFC 8259
// text, whatever bytes it held.
#include <gtest/gtest.h>

#include "base/json.h"

namespace sptelab {
namespace {

TEST(JsonString, EscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(json_string("a\"b\\c\nd\te\x01\x7f"), "\"a\\\"b\\\\c\\nd\\te\\u0001\\u007f\"");
}

TEST(JsonString, KeepsWellFormedUtf8) {
  EXPECT_EQ(json_string("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"");
}

TEST(JsonString, ReplacesBytesThatAreNotUtf8) {
  EXPECT_EQ(json_string("caf\xe9.bin"), "\"caf\\ufffd.bin\"");                     // Latin-1
  EXPECT_EQ(json_string("\xff\xfe"), "\"\\ufffd\\ufffd\"");                        // never UTF-8
  EXPECT_EQ(json_string("\xc3"), "\"\\ufffd\"");                                   // cut short
  EXPECT_EQ(json_string("\xc0\xaf"), "\"\\ufffd\\ufffd\"");                        // overlong '/'
  EXPECT_EQ(json_string("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");             // a surrogate
  EXPECT_EQ(json_string("\xf4\x90\x80\x80"), "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");  // > U+10FFFF
  EXPECT_EQ(json_string("\x80x"), "\"\\ufffdx\"");  // a lone continuation
}

}  // namespace
}  // namespace sptelab
