#include "base/table.h"

#include <fmt/core.h>

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace sptelab {
namespace {

// "  header  legend text", the text wrapped at kTableWidth under itself.
std::string legend_entry(const std::string& header, size_t header_width, const std::string& text) {
  const size_t indent = 2 + header_width + 2;
  std::string out = fmt::format("  {:<{}}  ", header, header_width);
  size_t line_width = indent;
  std::istringstream words(text);
  bool first = true;
  for (std::string word; words >> word; first = false) {
    if (!first && line_width + 1 + word.size() > kTableWidth) {
      out += "\n" + std::string(indent, ' ');
      line_width = indent;
    } else if (!first) {
      out += ' ';
      ++line_width;
    }
    out += word;
    line_width += word.size();
  }
  return out + "\n";
}

}  // namespace

Table::Table(std::vector<TableColumn> columns) : columns_(std::move(columns)) {}

void Table::add_row(std::vector<std::string> cells) {
  if (cells.size() != columns_.size()) {
    throw std::logic_error(
        fmt::format("a table row has {} cells for {} columns", cells.size(), columns_.size()));
  }
  rows_.push_back(std::move(cells));
}

size_t Table::column_width(size_t column) const {
  size_t width = columns_[column].header.size();
  for (const auto& row : rows_) width = std::max(width, row[column].size());
  return width;
}

size_t Table::width(const std::vector<bool>& shown) const {
  size_t total = 0;
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (shown[i]) total += (total == 0 ? 0 : 2) + column_width(i);
  }
  return total;
}

// Optional columns are tried left to right: the first ones are the more
// useful, and a later narrow one may still fit after a wide one did not.
std::vector<bool> Table::columns_within(size_t max_width) const {
  std::vector<bool> shown(columns_.size());
  for (size_t i = 0; i < columns_.size(); ++i) shown[i] = !columns_[i].optional;
  if (max_width == 0) return std::vector<bool>(columns_.size(), true);
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (!columns_[i].optional) continue;
    shown[i] = true;
    if (width(shown) > max_width) shown[i] = false;
  }
  return shown;
}

std::string Table::format(size_t max_width, const std::string& wide_hint) const {
  const std::vector<bool> shown = columns_within(max_width);
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out;
    for (size_t i = 0; i < columns_.size(); ++i) {
      if (!shown[i]) continue;
      if (!out.empty()) out += "  ";
      const size_t width = column_width(i);
      out += columns_[i].left ? fmt::format("{:<{}}", cells[i], width)
                              : fmt::format("{:>{}}", cells[i], width);
    }
    out.erase(out.find_last_not_of(' ') + 1);
    return out + "\n";
  };
  std::vector<std::string> headers;
  for (const auto& column : columns_) headers.push_back(column.header);
  std::string out = line(headers);
  for (const auto& row : rows_) out += line(row);

  size_t header_width = 0;
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (shown[i] && !columns_[i].legend.empty()) {
      header_width = std::max(header_width, columns_[i].header.size());
    }
  }
  std::string legend, hidden;
  for (size_t i = 0; i < columns_.size(); ++i) {
    if (!shown[i]) {
      hidden += (hidden.empty() ? "" : ", ") + columns_[i].header;
    } else if (!columns_[i].legend.empty()) {
      legend += legend_entry(columns_[i].header, header_width, columns_[i].legend);
    }
  }
  if (!legend.empty()) out += "\n" + legend;
  if (!hidden.empty()) {
    out += fmt::format("  ({} more column(s) with {}: {})\n",
                       std::count(shown.begin(), shown.end(), false), wide_hint, hidden);
  }
  return out;
}

std::string format_grid(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line += ' ';
      line += fmt::format("{:<{}}", row[i], widths[i]);
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

}  // namespace sptelab
