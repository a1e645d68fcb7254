// The whole-run benchmarks' report: the JSON document is valid JSON of the
// contract's shape whatever the strings hold, and the table has a row per
// result.
#include "bench/runs/report.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "tests/trace/json.h"

namespace sptelab::bench {
namespace {

using trace::testing::Json;
using trace::testing::parse_json;

Result sample_result() {
  Result result;
  result.name = "range_zap";
  result.unit = "us/page";
  result.value = 0.5;
  result.baseline = 0.25;
  result.ratio = ratio_of(result.value, result.baseline);
  result.notes = "quotes \" backslash \\ newline \n tab \t bell \a";
  result.add("pages", 8192);
  result.add("backend", std::string("kvm"));
  result.add("nan", std::numeric_limits<double>::quiet_NaN());
  return result;
}

TEST(Report, RatioIsValueOverBaselineAndZeroWithoutABaseline) {
  EXPECT_DOUBLE_EQ(ratio_of(3, 2), 1.5);
  EXPECT_EQ(ratio_of(3, 0), 0);
  EXPECT_EQ(ratio_of(3, -1), 0);
}

TEST(Report, JsonIsTheContractDocument) {
  Machine machine{2, 1 << 30, "6.18 \"test\"", "pvm", "gcc 12", "Release"};
  Json document = parse_json(format_json(machine, {sample_result(), sample_result()}));
  ASSERT_TRUE(document.is_object());
  EXPECT_EQ(document["machine"]["cpus"].number(), 2);
  EXPECT_EQ(document["machine"]["kernel"].string(), "6.18 \"test\"");
  const auto& rows = document["benchmarks"].array();
  ASSERT_EQ(rows.size(), 2u);
  const Json& row = rows[0];
  EXPECT_EQ(row["name"].string(), "range_zap");
  EXPECT_EQ(row["unit"].string(), "us/page");
  EXPECT_DOUBLE_EQ(row["value"].number(), 0.5);
  EXPECT_DOUBLE_EQ(row["baseline"].number(), 0.25);
  EXPECT_DOUBLE_EQ(row["ratio"].number(), 2);
  EXPECT_EQ(row["notes"].string(), sample_result().notes);
  EXPECT_EQ(row["pages"].number(), 8192);
  EXPECT_EQ(row["backend"].string(), "kvm");
  EXPECT_FALSE(row["nan"].is_number());  // JSON has no NaN: null
}

TEST(Report, EmptyRunIsStillADocument) {
  Json document = parse_json(format_json(describe_machine(), {}));
  EXPECT_TRUE(document["benchmarks"].array().empty());
  EXPECT_GT(document["machine"]["cpus"].number(), 0);
}

TEST(Report, TableHasAHeaderAndOneLinePerResult) {
  std::string table = format_table({sample_result()});
  // The notes' control characters do not break the line.
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 2);
  EXPECT_NE(table.find("range_zap"), std::string::npos);
  EXPECT_NE(table.find("2.00"), std::string::npos);
}

}  // namespace
}  // namespace sptelab::bench
