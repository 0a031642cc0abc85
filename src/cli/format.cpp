#include "format.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>

#include <fmt/format.h>

namespace canopy::cli {

std::string format_timestamp(std::string_view text) {
  const bool digits = !text.empty() && text.size() <= 16 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits) return std::string(text);
  long long value = 0;
  for (char c : text) value = value * 10 + (c - '0');
  // Eleven digits of seconds reach the year 5138; anything longer is milliseconds.
  const std::time_t seconds = static_cast<std::time_t>(text.size() > 11 ? value / 1000 : value);
  std::tm tm{};
  if (::localtime_r(&seconds, &tm) == nullptr) return std::string(text);
  char buffer[32];
  if (std::strftime(buffer, sizeof buffer, "%Y-%m-%d %H:%M:%S", &tm) == 0) return std::string(text);
  return buffer;
}

std::string indent(std::string_view text, std::size_t spaces) {
  const std::string pad(spaces, ' ');
  std::string out;
  bool line_start = true;
  for (char c : text) {
    if (line_start && c != '\n') out += pad;
    out += c;
    line_start = c == '\n';
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < parts.size(); ++i) {
    if (i != 0) out += separator;
    out += parts[i];
  }
  return out;
}

std::string field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return {};
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return {};
  if (it->is_string()) return it->get<std::string>();
  return it->dump();
}

std::vector<std::string> rewrite_greengrass_short_options(std::vector<std::string> args) {
  // Only after "deployment create": elsewhere "-fp" could be a value (canopy config set ... -fp).
  std::size_t start = args.size();
  for (std::size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "deployment" && args[i + 1] == "create") {
      start = i + 2;
      break;
    }
  }
  for (std::size_t i = start; i < args.size(); ++i) {
    if (args[i] == "--") break;
    if (args[i] == "-fp")
      args[i] = "--failure-handling-policy";
    else if (args[i].starts_with("-fp="))
      args[i] = "--failure-handling-policy=" + args[i].substr(4);
  }
  return args;
}

}  // namespace canopy::cli
