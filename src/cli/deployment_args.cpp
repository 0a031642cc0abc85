#include "deployment_args.hpp"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "canopy/recipe/semver.hpp"

namespace canopy::cli {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kConfigShape = R"({"com.example.A": {"MERGE": {"key": "value"}, "RESET": ["/path"]}})";

Error invalid(std::string message) { return make_error(errc::invalid, std::move(message)); }

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())) != 0) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())) != 0) text.remove_suffix(1);
  return text;
}

bool has_space_or_control(std::string_view text) {
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u == 0x7F) return true;
  }
  return false;
}

result<void> check_component_name(std::string_view name, std::string_view option, std::string_view text) {
  if (name.empty()) return invalid(fmt::format("{} \"{}\" has no component name", option, text));
  if (has_space_or_control(name))
    return invalid(fmt::format("{} \"{}\": a component name cannot contain spaces or control characters", option, text));
  return ok();
}

fs::path expand_path(std::string_view text, const fs::path& cwd) {
  fs::path path;
  if (text == "~" || text.starts_with("~/")) {
    const char* home = std::getenv("HOME");
    path = fs::path(home != nullptr ? home : "/") / std::string(text.substr(text.size() > 1 ? 2 : 1));
  } else {
    path = std::string(text);
  }
  if (path.is_relative()) path = cwd / path;
  return path.lexically_normal();
}

result<std::string> read_text_file(const fs::path& path, std::string_view option) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return invalid(fmt::format("{}: cannot read {}: {}", option, path.string(), std::strerror(errno)));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// The JSON text behind an option that takes JSON inline, as @file, or as a file path.
result<std::string> json_source(std::string_view text, const fs::path& cwd, std::string_view option) {
  const auto trimmed = trim(text);
  if (trimmed.starts_with('@')) return read_text_file(expand_path(trimmed.substr(1), cwd), option);
  if (trimmed.starts_with('{') || trimmed.starts_with('[')) return std::string(trimmed);
  std::error_code ec;
  const auto path = expand_path(trimmed, cwd);
  if (fs::is_regular_file(path, ec)) return read_text_file(path, option);
  return invalid(fmt::format("{} \"{}\" is neither a JSON object nor an existing file", option, text));
}

result<nlohmann::json> parse_json_object(const std::string& text, std::string_view option) {
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann's message starts with "[json.exception.parse_error.101] parse error at ..."
    std::string detail = e.what();
    if (const auto pos = detail.find("] "); pos != std::string::npos) detail = detail.substr(pos + 2);
    return invalid(fmt::format("{} is not valid JSON: {}", option, detail));
  }
  if (!value.is_object()) return invalid(fmt::format("{} must be a JSON object, not {}", option, value.type_name()));
  return value;
}

result<std::uint64_t> parse_memory(std::string_view value, std::string_view option, std::string_view name) {
  std::uint64_t kb = 0;
  const auto* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, kb);
  if (value.empty() || ec != std::errc() || ptr != end)
    return invalid(fmt::format("{}: memory for {} must be a whole number of kilobytes, not \"{}\"", option, name, value));
  return kb;
}

result<double> parse_cpus(std::string_view value, std::string_view option, std::string_view name) {
  double cpus = 0;
  const auto* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, cpus);
  if (value.empty() || ec != std::errc() || ptr != end || !(cpus > 0) || cpus > 1e6)
    return invalid(fmt::format("{}: cpus for {} must be a positive number, not \"{}\"", option, name, value));
  return cpus;
}

result<void> check_limits_object(const nlohmann::json& limits, std::string_view name) {
  constexpr std::string_view option = "--systemLimits";
  if (!limits.is_object())
    return invalid(fmt::format("{}: the limits for {} must be an object like {{\"memory\": 102400, \"cpus\": 0.5}}",
                               option, name));
  for (const auto& [key, value] : limits.items()) {
    if (key == "memory") {
      if (!value.is_number_unsigned())
        return invalid(fmt::format("{}: memory for {} must be a whole number of kilobytes", option, name));
    } else if (key == "cpus") {
      if (!value.is_number() || !(value.get<double>() > 0))
        return invalid(fmt::format("{}: cpus for {} must be a positive number", option, name));
    } else {
      return invalid(fmt::format("{}: unknown limit \"{}\" for {} (use memory and cpus)", option, key, name));
    }
  }
  return ok();
}

}  // namespace

result<std::pair<std::string, std::string>> parse_merge(std::string_view text) {
  const auto eq = text.find('=');
  if (eq == std::string_view::npos)
    return invalid(fmt::format("--merge \"{}\" is not of the form name=version (for example com.example.Hello=1.0.0)",
                               text));
  const auto name = text.substr(0, eq);
  const auto version = text.substr(eq + 1);
  if (auto r = check_component_name(name, "--merge", text); !r) return std::move(r).error();
  if (version.empty())
    return invalid(fmt::format("--merge \"{}\" has no version (for example {}=1.0.0)", text, name));
  if (auto v = recipe::parse_version(version); !v)
    return invalid(fmt::format("--merge \"{}\": {} is not a semantic version like 1.0.0", text, version));
  return std::pair{std::string(name), std::string(version)};
}

result<nlohmann::json> parse_update_config(std::string_view text, const fs::path& cwd) {
  constexpr std::string_view option = "--update-config";
  auto source = json_source(text, cwd, option);
  if (!source) return std::move(source).error();
  auto object = parse_json_object(*source, option);
  if (!object) return std::move(object).error();
  if (object->empty()) return invalid(fmt::format("{} names no component; expected {}", option, kConfigShape));
  for (const auto& [name, update] : object->items()) {
    if (name.empty() || has_space_or_control(name))
      return invalid(fmt::format("{}: \"{}\" is not a component name", option, name));
    if (!update.is_object() || update.empty())
      return invalid(fmt::format("{}: the update for {} must be an object with MERGE and/or RESET, as in {}", option,
                                 name, kConfigShape));
    for (const auto& [key, value] : update.items()) {
      if (key == "MERGE") {
        if (!value.is_object())
          return invalid(fmt::format("{}: MERGE for {} must be a JSON object, not {}", option, name,
                                     value.type_name()));
      } else if (key == "RESET") {
        if (!value.is_array())
          return invalid(fmt::format("{}: RESET for {} must be a list of JSON pointers such as [\"/path\"]", option,
                                     name));
        for (const auto& pointer : value) {
          if (!pointer.is_string())
            return invalid(fmt::format("{}: RESET for {} must hold only strings (JSON pointers such as \"/path\")",
                                       option, name));
          const auto& p = pointer.get_ref<const std::string&>();
          if (!p.empty() && p.front() != '/')
            return invalid(fmt::format("{}: RESET path \"{}\" for {} must be a JSON pointer starting with /", option,
                                       p, name));
        }
      } else {
        return invalid(fmt::format("{}: unknown key \"{}\" for {} (only MERGE and RESET are allowed)", option, key,
                                   name));
      }
    }
  }
  return object;
}

result<void> add_run_with(std::string_view text, nlohmann::json& run_with) {
  constexpr std::string_view option = "--runWith";
  const auto eq = text.find('=');
  const auto colon = text.substr(0, eq).rfind(':');
  if (eq == std::string_view::npos || colon == std::string_view::npos)
    return invalid(fmt::format("{} \"{}\" is not of the form name:posixUser=user[:group]", option, text));
  const auto name = text.substr(0, colon);
  const auto key = text.substr(colon + 1, eq - colon - 1);
  const auto user = text.substr(eq + 1);
  if (auto r = check_component_name(name, option, text); !r) return r;
  if (key != "posixUser" && key != "windowsUser")
    return invalid(fmt::format("{} \"{}\": unknown setting \"{}\" (use posixUser or windowsUser)", option, text, key));
  if (user.empty() || user.front() == ':' || user.back() == ':' || user.find(':') != user.rfind(':') ||
      has_space_or_control(user))
    return invalid(fmt::format("{} \"{}\": expected a user, optionally followed by :group", option, text));
  run_with[std::string(name)][std::string(key)] = std::string(user);
  return ok();
}

result<void> add_system_limits(std::string_view text, const fs::path& cwd, nlohmann::json& run_with) {
  constexpr std::string_view option = "--systemLimits";
  const auto trimmed = trim(text);
  const auto colon = trimmed.find(':');
  // name:memory=..,cpus=.. always has ':' before the first '='; JSON and @file never do.
  const bool inline_form = !trimmed.starts_with('{') && !trimmed.starts_with('@') && colon != std::string_view::npos &&
                           colon < trimmed.find('=');
  if (!inline_form) {
    auto source = json_source(trimmed, cwd, option);
    if (!source) return std::move(source).error();
    auto object = parse_json_object(*source, option);
    if (!object) return std::move(object).error();
    for (const auto& [name, limits] : object->items()) {
      if (auto r = check_component_name(name, option, name); !r) return r;
      if (auto r = check_limits_object(limits, name); !r) return r;
      run_with[name]["systemResourceLimits"] = limits;
    }
    return ok();
  }
  const auto name = trimmed.substr(0, colon);
  if (auto r = check_component_name(name, option, text); !r) return r;
  nlohmann::json limits = nlohmann::json::object();
  auto rest = trimmed.substr(colon + 1);
  if (rest.empty())
    return invalid(fmt::format("{} \"{}\" sets no limit; expected name:memory=KB,cpus=N", option, text));
  while (!rest.empty()) {
    const auto comma = rest.find(',');
    const auto item = rest.substr(0, comma);
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    const auto eq = item.find('=');
    if (eq == std::string_view::npos)
      return invalid(fmt::format("{} \"{}\": \"{}\" is not of the form key=value (memory=KB or cpus=N)", option, text,
                                 item));
    const auto key = item.substr(0, eq);
    const auto value = item.substr(eq + 1);
    if (key == "memory") {
      auto kb = parse_memory(value, option, name);
      if (!kb) return std::move(kb).error();
      limits["memory"] = *kb;
    } else if (key == "cpus") {
      auto cpus = parse_cpus(value, option, name);
      if (!cpus) return std::move(cpus).error();
      limits["cpus"] = *cpus;
    } else {
      return invalid(fmt::format("{} \"{}\": unknown limit \"{}\" (use memory and cpus)", option, text, key));
    }
  }
  run_with[std::string(name)]["systemResourceLimits"] = std::move(limits);
  return ok();
}

result<std::string> absolute_directory(std::string_view text, const fs::path& cwd, std::string_view option) {
  if (text.empty()) return invalid(fmt::format("{} needs a folder", option));
  const auto path = expand_path(text, cwd);
  std::error_code ec;
  if (!fs::exists(path, ec)) return invalid(fmt::format("{}: folder {} does not exist", option, path.string()));
  if (!fs::is_directory(path, ec)) return invalid(fmt::format("{}: {} is not a folder", option, path.string()));
  return path.string();
}

result<nlohmann::json> build_create_request(const CreateArgs& args, const fs::path& cwd) {
  nlohmann::json request = nlohmann::json::object();
  if (args.group_id) {
    if (args.group_id->empty() || has_space_or_control(*args.group_id))
      return invalid(fmt::format("--groupId \"{}\" is not a valid group name", *args.group_id));
    request["groupName"] = *args.group_id;
  }

  nlohmann::json add = nlohmann::json::object();
  for (const auto& text : args.merge) {
    auto merge = parse_merge(text);
    if (!merge) return std::move(merge).error();
    const auto& [name, version] = *merge;
    if (add.contains(name) && add[name] != version)
      return invalid(fmt::format("--merge names {} twice, with versions {} and {}", name, add[name].get<std::string>(),
                                 version));
    add[name] = version;
  }
  if (!add.empty()) request["rootComponentVersionsToAdd"] = add;

  std::set<std::string> removed;
  for (const auto& name : args.remove) {
    if (auto r = check_component_name(name, "--remove", name); !r) return std::move(r).error();
    if (add.contains(name))
      return invalid(fmt::format("{} is given both to --merge and to --remove; choose one", name));
    removed.insert(name);
  }
  if (!removed.empty()) request["rootComponentsToRemove"] = removed;

  if (args.update_config) {
    auto config = parse_update_config(*args.update_config, cwd);
    if (!config) return std::move(config).error();
    request["componentToConfiguration"] = std::move(*config);
  }

  nlohmann::json run_with = nlohmann::json::object();
  for (const auto& text : args.run_with)
    if (auto r = add_run_with(text, run_with); !r) return std::move(r).error();
  for (const auto& text : args.system_limits)
    if (auto r = add_system_limits(text, cwd, run_with); !r) return std::move(r).error();
  if (!run_with.empty()) request["componentToRunWithInfo"] = std::move(run_with);

  if (args.recipe_dir) {
    auto dir = absolute_directory(*args.recipe_dir, cwd, "--recipeDir");
    if (!dir) return std::move(dir).error();
    request["recipeDirectoryPath"] = *dir;
  }
  if (args.artifact_dir) {
    auto dir = absolute_directory(*args.artifact_dir, cwd, "--artifactDir");
    if (!dir) return std::move(dir).error();
    request["artifactsDirectoryPath"] = *dir;
  }
  if (args.failure_policy) {
    std::string policy = *args.failure_policy;
    for (char& c : policy) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (policy != "ROLLBACK" && policy != "DO_NOTHING")
      return invalid(fmt::format("--failure-handling-policy \"{}\" must be ROLLBACK or DO_NOTHING",
                                 *args.failure_policy));
    request["failureHandlingPolicy"] = policy;
  }
  if (args.allow_downgrade) request["allowDowngrade"] = true;
  if (args.notify_components) {
    if (args.notify_timeout_seconds <= 0) return invalid("--notify-timeout must be a positive number of seconds");
    request["componentUpdatePolicy"] = {{"action", "NOTIFY_COMPONENTS"}, {"timeoutInSeconds", args.notify_timeout_seconds}};
  }
  return request;
}

}  // namespace canopy::cli
