#include "canopy/recipe/interpolate.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace canopy::recipe {
namespace {

using nlohmann::json;

std::optional<std::string> configuration_value(const json& config, std::string_view pointer) {
  try {
    const json::json_pointer ptr{std::string(pointer)};
    if (!config.contains(ptr)) return std::nullopt;
    const json& node = config.at(ptr);
    if (node.is_string()) return node.get<std::string>();
    return node.dump();  // numbers, booleans, null ("null") and containers (serialized JSON)
  } catch (const json::exception&) {
    return std::nullopt;  // not a valid JSON pointer, or it walks through a scalar
  }
}

// The value of one placeholder body (`namespace:key` or `Dep:namespace:key`), or nullopt to keep it.
std::optional<std::string> resolve(std::string_view body, const Variables& v) {
  const auto first = body.find(':');
  if (first == std::string_view::npos) return std::nullopt;
  const std::string_view ns = body.substr(0, first), key = body.substr(first + 1);
  if (ns == "iot" && key == "thingName") return v.thing_name;
  if (ns == "kernel" && key == "rootPath") return v.root_path;
  if (ns == "work" && key == "path") return v.work_path;
  if (ns == "artifacts" && key == "path") return v.artifacts_path;
  if (ns == "artifacts" && key == "decompressedPath") return v.artifacts_decompressed_path;
  if (ns == "configuration") return configuration_value(v.configuration, key);
  // `{Dep:namespace:key}`: only for direct dependencies.
  const auto dep = v.dependencies.find(std::string(ns));
  if (dep == v.dependencies.end()) return std::nullopt;
  const auto second = key.find(':');
  if (second == std::string_view::npos) return std::nullopt;
  const std::string_view dns = key.substr(0, second), dkey = key.substr(second + 1);
  if (dns == "artifacts" && dkey == "path") return dep->second.artifacts_path;
  if (dns == "artifacts" && dkey == "decompressedPath") return dep->second.artifacts_decompressed_path;
  if (dns == "configuration") return configuration_value(dep->second.configuration, dkey);
  return std::nullopt;
}

bool plain_seconds(std::string_view s) {
  return !s.empty() && s.size() <= 10 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         std::stoull(std::string(s)) <= 2147483647u;
}

}  // namespace

std::string interpolate(std::string_view text, const Variables& vars) {
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto open = text.find('{', pos);
    if (open == std::string_view::npos) break;
    const auto close = text.find('}', open + 1);
    if (close == std::string_view::npos) break;
    // The placeholder starts at the last '{' before the '}': `{{iot:thingName}` keeps one '{'.
    const auto start = text.rfind('{', close);
    out.append(text.substr(pos, start - pos));
    const std::string_view body = text.substr(start + 1, close - start - 1);
    if (auto value = resolve(body, vars)) out += *value;
    else out.append(text.substr(start, close - start + 1));
    pos = close + 1;
  }
  out.append(text.substr(std::min(pos, text.size())));
  return out;
}

result<Lifecycle> interpolate(const Lifecycle& lifecycle, const Variables& vars, std::string_view where) {
  Lifecycle out = lifecycle;
  for (auto& [key, value] : out.setenv) value = interpolate(value, vars);
  const std::pair<std::optional<Step>*, std::string_view> steps[] = {
      {&out.bootstrap, "Bootstrap"}, {&out.install, "Install"}, {&out.startup, "Startup"},
      {&out.run, "Run"},             {&out.shutdown, "Shutdown"}, {&out.recover, "Recover"}};
  for (const auto& [step, name] : steps) {
    if (!*step) continue;
    Step& s = **step;
    s.script = interpolate(s.script, vars);
    for (auto& [key, value] : s.setenv) value = interpolate(value, vars);
    if (s.skip_if) s.skip_if->target = interpolate(s.skip_if->target, vars);
    if (s.timeout) {
      const std::string written = *s.timeout;
      s.timeout = interpolate(written, vars);
      if (!plain_seconds(*s.timeout))
        return make_error(errc::invalid,
                          fmt::format("{}: Lifecycle.{}.Timeout: expected a number of seconds, got \"{}\"{}", where, name,
                                      *s.timeout,
                                      written == *s.timeout ? "" : fmt::format(" (from \"{}\")", written)));
    }
  }
  return out;
}

std::optional<std::chrono::seconds> timeout_seconds(const Step& step) {
  if (!step.timeout || !plain_seconds(*step.timeout)) return std::nullopt;
  return std::chrono::seconds(std::stoll(*step.timeout));
}

}  // namespace canopy::recipe
