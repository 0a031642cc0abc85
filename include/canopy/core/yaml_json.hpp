//! YAML to JSON conversion with typed scalars (YAML 1.2 core schema).
#pragma once

#include <string_view>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "canopy/core/error.hpp"

namespace canopy {

/// Converts a YAML node. Plain scalars become null (`~`, `null`, empty), booleans
/// (`true`/`false` in any of the three casings), integers (decimal, 0x, 0o), floats or
/// strings; quoted scalars always stay strings, so `"42"` is the string 42.
/// Throws YAML::ParserException for nesting deeper than 128 levels, which is also how a
/// recursive alias (`&a {b: *a}`) ends.
nlohmann::json yaml_to_json(const YAML::Node& node);

/// Parses YAML text (JSON is YAML, so both work) into JSON.
/// Errors: errc::parse with `<file_name>:<line>:<column>: <what>`.
result<nlohmann::json> parse_yaml_or_json(std::string_view text, std::string_view file_name);

}  // namespace canopy
