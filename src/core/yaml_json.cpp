#include "canopy/core/yaml_json.hpp"

#include <charconv>
#include <cmath>
#include <string>

#include <fmt/format.h>

namespace canopy {
namespace {

bool is_null(const std::string& s) { return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL"; }

std::optional<bool> as_bool(const std::string& s) {
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  return std::nullopt;
}

std::optional<std::int64_t> as_int(const std::string& s) {
  std::string_view v = s;
  bool negative = false;
  if (!v.empty() && (v.front() == '-' || v.front() == '+')) {
    negative = v.front() == '-';
    v.remove_prefix(1);
  }
  int base = 10;
  if (v.size() > 2 && v[0] == '0' && (v[1] == 'x' || v[1] == 'o')) {
    base = v[1] == 'x' ? 16 : 8;
    v.remove_prefix(2);
  }
  if (v.empty()) return std::nullopt;
  std::uint64_t u = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), u, base);
  if (ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
  if (u > static_cast<std::uint64_t>(INT64_MAX)) return std::nullopt;
  const auto i = static_cast<std::int64_t>(u);
  return negative ? -i : i;
}

std::optional<double> as_float(const std::string& s) {
  if (s == ".inf" || s == "+.inf") return HUGE_VAL;
  if (s == "-.inf") return -HUGE_VAL;
  // Only the YAML float shape: digits, one dot and/or exponent.
  if (s.find_first_not_of("+-0123456789.eE") != std::string::npos) return std::nullopt;
  if (s.find_first_of("0123456789") == std::string::npos) return std::nullopt;
  double d = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
  if (ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return d;
}

constexpr int kMaxDepth = 128;

nlohmann::json convert(const YAML::Node& node, int depth) {
  // yaml-cpp resolves an alias to the anchored node itself, so `&a {b: *a}` is a cycle:
  // the depth bound turns it (and absurd nesting) into an error instead of a stack overflow.
  if (depth > kMaxDepth)
    throw YAML::ParserException(node.Mark(), fmt::format("nested more than {} levels deep (or a recursive alias)", kMaxDepth));
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nullptr;
    case YAML::NodeType::Sequence: {
      nlohmann::json a = nlohmann::json::array();
      for (const auto& item : node) a.push_back(convert(item, depth + 1));
      return a;
    }
    case YAML::NodeType::Map: {
      nlohmann::json o = nlohmann::json::object();
      for (const auto& kv : node) o[kv.first.as<std::string>()] = convert(kv.second, depth + 1);
      return o;
    }
    case YAML::NodeType::Scalar: {
      const std::string& s = node.Scalar();
      if (node.Tag() == "!") return s;  // quoted: always a string
      if (is_null(s)) return nullptr;
      if (auto b = as_bool(s)) return *b;
      if (auto i = as_int(s)) return *i;
      if (auto d = as_float(s)) return *d;
      return s;
    }
  }
  return nullptr;
}

}  // namespace

nlohmann::json yaml_to_json(const YAML::Node& node) { return convert(node, 0); }

result<nlohmann::json> parse_yaml_or_json(std::string_view text, std::string_view file_name) {
  try {
    return yaml_to_json(YAML::Load(std::string(text)));
  } catch (const YAML::Exception& e) {
    return make_error(errc::parse, fmt::format("{}:{}:{}: not valid YAML: {}", file_name, e.mark.line + 1,
                                               e.mark.column + 1, e.msg));
  }
}

}  // namespace canopy
