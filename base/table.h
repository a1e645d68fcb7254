// Plain-text tables for the terminal: every column as wide as its widest
// cell (so large values never push a row out of line), a default width
// limit that keeps the optional columns out when they would not fit, and
// a legend under the table with each shown column's full meaning.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace sptelab {

struct TableColumn {
  std::string header;     // short: it sets the column's least width
  std::string legend;     // the full meaning, under the table; empty: none
  bool optional = false;  // left out when the table would be wider than the limit
  bool left = false;      // left-aligned (names); numbers are right-aligned
};

class Table {
 public:
  explicit Table(std::vector<TableColumn> columns);

  // One cell per column, already formatted.
  void add_row(std::vector<std::string> cells);

  // The table, then "  header  legend" lines for the shown columns. The
  // optional columns go in while the table stays within max_width (0: no
  // limit); a last legend line names those left out and how to see them.
  std::string format(size_t max_width, const std::string& wide_hint = "--wide") const;

  // The width of one line of the table with these columns shown.
  size_t width(const std::vector<bool>& shown) const;

 private:
  std::vector<bool> columns_within(size_t max_width) const;
  size_t column_width(size_t column) const;

  std::vector<TableColumn> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// A grid of left-aligned text cells, its first row the header (the
// explorer's and crosscheck's scheme-by-op matrices): every column as wide
// as its widest cell, one space between columns, no trailing spaces. A
// fixed column width would put a matrix of eight ops past 100 columns.
std::string format_grid(const std::vector<std::vector<std::string>>& rows);

// The default limit: a terminal of 100 columns.
inline constexpr size_t kTableWidth = 100;

}  // namespace sptelab
