//! Aligned text tables and key/value blocks for the canopy CLI's human-readable output.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace canopy::cli {

/// Width of `text` on a terminal, counted in UTF-8 code points (wide characters count as one).
std::size_t display_width(std::string_view text);

/// `text` with control characters (newlines, tabs, escapes) replaced by '?', so a hostile or
/// broken value (a component name from a recipe) cannot break the layout or drive the terminal.
std::string printable(std::string_view text);

/// A table with a header row. Columns are separated by two spaces and padded to their widest
/// cell; the last column is not padded, so no line ends in spaces.
class Table {
 public:
  explicit Table(std::vector<std::string> headers);

  /// Adds a row; missing cells are empty and cells beyond the header count are dropped.
  void add_row(std::vector<std::string> cells);

  /// Drops every column whose cells are all empty (its header is still shown otherwise).
  /// Used for optional columns such as REASON.
  void drop_empty_column(std::string_view header);

  std::size_t rows() const { return rows_.size(); }

  /// The header line and one line per row, each ending in '\n'. Cells go through printable().
  std::string render() const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

/// "Key   value" lines with the values aligned two spaces after the longest key. A value with
/// several lines continues on the following lines at the same column. Rows with an empty
/// value are left out.
std::string render_key_values(const std::vector<std::pair<std::string, std::string>>& rows);

}  // namespace canopy::cli
