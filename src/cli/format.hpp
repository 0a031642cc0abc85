//! Small text helpers for the canopy CLI: readable timestamps, indentation, JSON fields as text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace canopy::cli {

/// Makes a deployment's `createdOn` readable. Digits only are epoch time (seconds up to 11
/// digits, milliseconds above) and become local "YYYY-MM-DD HH:MM:SS"; anything else (ISO 8601
/// text) comes back unchanged, and so does an empty string.
std::string format_timestamp(std::string_view text);

/// `text` with every line prefixed by `spaces` spaces (empty lines stay empty).
std::string indent(std::string_view text, std::size_t spaces);

/// The elements joined with `separator`.
std::string join(const std::vector<std::string>& parts, std::string_view separator);

/// `object[key]` as text for a table cell: a string as is, null or missing as "", any other
/// value as compact JSON. `object` need not be an object (then the result is "").
std::string field(const nlohmann::json& object, std::string_view key);

/// greengrass-cli accepts `-fp` for --failure-handling-policy; CLI11 short options are one
/// letter. Returns `args` (argv without argv[0]) with `-fp X` and `-fp=X` after the words
/// `deployment create` rewritten to the long option; everything else is unchanged.
std::vector<std::string> rewrite_greengrass_short_options(std::vector<std::string> args);

}  // namespace canopy::cli
