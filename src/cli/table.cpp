#include "table.hpp"

#include <algorithm>

namespace canopy::cli {

std::size_t display_width(std::string_view text) {
  // Continuation bytes (10xxxxxx) do not start a code point.
  return static_cast<std::size_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

std::string printable(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) c = '?';
  }
  return out;
}

Table::Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}

void Table::add_row(std::vector<std::string> cells) {
  cells.resize(headers_.size());
  for (auto& cell : cells) cell = printable(cell);
  rows_.push_back(std::move(cells));
}

void Table::drop_empty_column(std::string_view header) {
  const auto it = std::find(headers_.begin(), headers_.end(), header);
  if (it == headers_.end()) return;
  const auto column = static_cast<std::size_t>(it - headers_.begin());
  if (std::any_of(rows_.begin(), rows_.end(), [&](const auto& row) { return !row[column].empty(); })) return;
  headers_.erase(it);
  for (auto& row : rows_) row.erase(row.begin() + static_cast<std::ptrdiff_t>(column));
}

std::string Table::render() const {
  std::vector<std::size_t> widths(headers_.size());
  for (std::size_t c = 0; c < headers_.size(); ++c) {
    widths[c] = display_width(headers_[c]);
    for (const auto& row : rows_) widths[c] = std::max(widths[c], display_width(row[c]));
  }
  std::string out;
  const auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (std::size_t c = 0; c < cells.size(); ++c) {
      if (c != 0) text += "  ";
      text += cells[c];
      if (c + 1 < cells.size()) text.append(widths[c] - display_width(cells[c]), ' ');
    }
    // A trailing empty cell would otherwise leave the separator behind.
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out += text;
    out += '\n';
  };
  line(headers_);
  for (const auto& row : rows_) line(row);
  return out;
}

std::string render_key_values(const std::vector<std::pair<std::string, std::string>>& rows) {
  std::size_t width = 0;
  for (const auto& [key, value] : rows)
    if (!value.empty()) width = std::max(width, display_width(key));
  std::string out;
  for (const auto& [key, value] : rows) {
    if (value.empty()) continue;
    std::string pad(width + 2 - display_width(key), ' ');
    std::size_t start = 0;
    bool first = true;
    for (;;) {
      const auto end = value.find('\n', start);
      const auto part = std::string_view(value).substr(start, end == std::string::npos ? end : end - start);
      out += first ? printable(key) + pad : std::string(width + 2, ' ');
      out += printable(part);
      out += '\n';
      first = false;
      if (end == std::string::npos || end + 1 == value.size()) break;
      start = end + 1;
    }
  }
  return out;
}

}  // namespace canopy::cli
