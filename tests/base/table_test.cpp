#include "base/table.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sstream>

namespace sptelab {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

size_t widest_line(const std::string& text) {
  std::istringstream lines(text);
  size_t widest = 0;
  for (std::string line; std::getline(lines, line);) widest = std::max(widest, line.size());
  return widest;
}

Table two_rows() {
  Table table({{"scheme", "the scheme", false, true},
               {"ops", "operations done"},
               {"wide", "a column that only fits without a limit", true}});
  table.add_row({"none+naive", "7", std::string(90, 'x')});
  table.add_row({"start-end+seq-count", "1234567", "y"});
  return table;
}

TEST(TableTest, ColumnsAreAsWideAsTheirWidestCell) {
  const std::string out = two_rows().format(0);
  EXPECT_THAT(out, HasSubstr("scheme                   ops"));
  EXPECT_THAT(out, HasSubstr("none+naive                 7"));
  EXPECT_THAT(out, HasSubstr("start-end+seq-count  1234567"));
}

TEST(TableTest, OptionalColumnsBeyondTheLimitAreLeftOutAndNamed) {
  const std::string out = two_rows().format(kTableWidth);
  EXPECT_LE(widest_line(out), kTableWidth) << out;
  EXPECT_THAT(out, Not(HasSubstr("xxxx")));
  EXPECT_THAT(out, HasSubstr("(1 more column(s) with --wide: wide)"));
  EXPECT_THAT(out, Not(HasSubstr("a column that only fits")));
}

TEST(TableTest, LegendGivesEachShownColumnsFullName) {
  const std::string out = two_rows().format(0);
  EXPECT_THAT(out, HasSubstr("\n  scheme  the scheme\n"));
  EXPECT_THAT(out, HasSubstr("\n  ops     operations done\n"));
  EXPECT_THAT(out, HasSubstr("\n  wide    a column that only fits without a limit\n"));
  EXPECT_GT(widest_line(out), kTableWidth);
}

TEST(TableTest, LongLegendsWrapUnderThemselves) {
  Table table({{"expected", std::string(30, 'a') + " " + std::string(60, 'b') + " c"}});
  table.add_row({"racy"});
  const std::string out = table.format(kTableWidth);
  EXPECT_LE(widest_line(out), kTableWidth) << out;
  EXPECT_THAT(out, HasSubstr("  expected  " + std::string(30, 'a') + "\n            " +
                             std::string(60, 'b') + " c\n"));
}

TEST(FormatGrid, EachColumnIsAsWideAsItsWidestCellOneSpaceApart) {
  const std::string out = format_grid({{"scheme", "migrate", "punch-hole"},
                                       {"start-end+seq", "UAF p1", "ok/2"},
                                       {"none+naive", "STALE p1", "-"}});
  EXPECT_EQ(out,
            "scheme        migrate  punch-hole\n"
            "start-end+seq UAF p1   ok/2\n"
            "none+naive    STALE p1 -\n");
}

}  // namespace
}  // namespace sptelab
