#include "canopy/recipe/recipe.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <regex>

#include <fmt/format.h>

#include "canopy/core/base64.hpp"
#include "canopy/core/yaml_json.hpp"

namespace canopy::recipe {
namespace {

using nlohmann::json;

// Validation stops at the first error: the parser throws Invalid and parse_recipe turns it
// into an Error. Nothing outside this file sees the exception.
struct Invalid {
  std::string path;
  std::string what;
};

[[noreturn]] void fail(const std::string& path, std::string what) { throw Invalid{path, std::move(what)}; }

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : fmt::format("{}.{}", path, key);
}
std::string index(const std::string& path, std::size_t i) { return fmt::format("{}[{}]", path, i); }

std::string quote(std::string_view s) {
  constexpr std::size_t kMax = 80;
  std::string out = "\"";
  for (char c : s.substr(0, kMax)) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') out += fmt::format("\\{}", c);
    else if (u < 0x20 || u == 0x7f) out += fmt::format("\\x{:02x}", u);
    else out += c;
  }
  if (s.size() > kMax) out += "...";
  return out + "\"";
}

// How a value is named in "got ..." messages.
std::string describe(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "nothing";
    case json::value_t::object: return "a mapping";
    case json::value_t::array: return "a list";
    case json::value_t::string: return quote(j.get_ref<const std::string&>());
    case json::value_t::boolean: return j.get<bool>() ? "true" : "false";
    default: return j.dump();
  }
}

[[noreturn]] void expected(const std::string& path, std::string_view what, const json& got) {
  fail(path, fmt::format("expected {}, got {}", what, describe(got)));
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

const json& require_object(const json& j, const std::string& path, std::string_view what) {
  if (!j.is_object()) expected(path, what, j);
  return j;
}

std::string require_string(const json& j, const std::string& path, std::string_view what) {
  if (!j.is_string()) expected(path, what, j);
  return j.get<std::string>();
}

// Rejects keys outside `allowed` (exact spelling).
template <std::size_t N>
void check_keys(const json& obj, const std::string& path, const std::array<std::string_view, N>& allowed) {
  for (const auto& [key, value] : obj.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
    std::string names;
    for (auto a : allowed) names += names.empty() ? std::string(a) : fmt::format(", {}", a);
    fail(path, fmt::format("expected only the keys {}, got {}", names, quote(key)));
  }
}

bool valid_component_name(std::string_view s) {
  if (s.empty() || s.size() > kMaxComponentNameLength || s == "." || s == "..") return false;
  return std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

std::string component_name(const json& j, const std::string& path) {
  const std::string s = require_string(j, path, "a component name");
  if (s.size() > kMaxComponentNameLength)
    fail(path, fmt::format("expected a component name of at most {} characters, got {} characters",
                           kMaxComponentNameLength, s.size()));
  if (!valid_component_name(s))
    expected(path, "a component name of letters, digits, '.', '-' and '_'", j);
  return s;
}

// Strips the `<kind> "<text>" is not valid: ` prefix of a semver error to keep only the reason.
std::string reason_of(const Error& e, std::string_view kind, std::string_view text) {
  const std::string prefix = fmt::format("{} \"{}\" is not valid: ", kind, text);
  return e.message.rfind(prefix, 0) == 0 ? e.message.substr(prefix.size()) : e.message;
}

std::map<std::string, std::string> parse_setenv(const json& j, const std::string& path) {
  require_object(j, path, "a mapping of environment variable names to values");
  std::map<std::string, std::string> env;
  for (const auto& [key, value] : j.items()) {
    const std::string p = join(path, key);
    if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos)
      fail(path, fmt::format("expected environment variable names without '=', got {}", quote(key)));
    if (value.is_string()) env[key] = value.get<std::string>();
    else if (value.is_number() || value.is_boolean()) env[key] = value.dump();
    else expected(p, "a text, number or boolean value", value);
    if (env[key].find('\0') != std::string::npos) fail(p, "expected a value without NUL bytes, got one with");
  }
  return env;
}

constexpr std::array<std::string_view, 7> kStepNames = {"Setenv", "Bootstrap", "Install", "Startup",
                                                        "Run",    "Shutdown",  "Recover"};
constexpr std::array<std::string_view, 5> kStepKeys = {"Script", "RequiresPrivilege", "Setenv", "Timeout", "SkipIf"};

// The canonical spelling of a case-insensitive key, or empty.
template <std::size_t N>
std::string_view canonical(std::string_view key, const std::array<std::string_view, N>& names) {
  const std::string k = lower(key);
  for (auto n : names)
    if (lower(n) == k) return n;
  return {};
}

template <std::size_t N>
std::string names_list(const std::array<std::string_view, N>& names) {
  std::string out;
  for (auto n : names) out += out.empty() ? std::string(n) : fmt::format(", {}", n);
  return out;
}

std::string parse_timeout(const json& j, const std::string& path) {
  constexpr std::string_view what = "a number of seconds";
  if (j.is_number_unsigned()) {
    if (j.get<std::uint64_t>() > 2147483647u) expected(path, "a number of seconds up to 2147483647", j);
    return j.dump();
  }
  if (j.is_number_integer()) {
    if (j.get<std::int64_t>() < 0) expected(path, "a non-negative number of seconds", j);
    if (j.get<std::int64_t>() > 2147483647) expected(path, "a number of seconds up to 2147483647", j);
    return j.dump();
  }
  if (!j.is_string()) expected(path, what, j);
  const std::string s = j.get<std::string>();
  if (s.find('{') != std::string::npos) return s;  // a variable: checked after interpolation
  if (s.empty() || s.size() > 10 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoull(s) > 2147483647u)
    expected(path, what, j);
  return s;
}

SkipIf parse_skip_if(const json& j, const std::string& path) {
  constexpr std::string_view what = "\"onpath <executable>\" or \"exists <file>\"";
  if (!j.is_string()) expected(path, what, j);
  const std::string s = j.get<std::string>();
  const auto space = s.find_first_of(" \t");
  if (space == std::string::npos) expected(path, what, j);
  const std::string word = lower(s.substr(0, space));
  const auto start = s.find_first_not_of(" \t", space);
  if (start == std::string::npos || (word != "onpath" && word != "exists")) expected(path, what, j);
  auto end = s.find_last_not_of(" \t");
  return SkipIf{word == "onpath" ? SkipIf::Kind::onpath : SkipIf::Kind::exists, s.substr(start, end - start + 1)};
}

Step parse_step(const json& j, const std::string& path) {
  Step step;
  if (j.is_string()) {
    step.script = j.get<std::string>();
    return step;
  }
  if (!j.is_object()) expected(path, "a script or a mapping with Script", j);
  bool has_script = false;
  std::map<std::string_view, std::string> seen;
  for (const auto& [key, value] : j.items()) {
    const std::string_view name = canonical(key, kStepKeys);
    if (name.empty()) fail(path, fmt::format("expected only the keys {}, got {}", names_list(kStepKeys), quote(key)));
    if (auto it = seen.find(name); it != seen.end())
      fail(path, fmt::format("expected {} once, got {} and {}", name, quote(it->second), quote(key)));
    seen[name] = key;
    const std::string p = join(path, name);
    if (name == "Script") {
      step.script = require_string(value, p, "a script");
      has_script = true;
    } else if (name == "RequiresPrivilege") {
      if (value.is_boolean()) step.requires_privilege = value.get<bool>();
      else if (value.is_string() && lower(value.get<std::string>()) == "true") step.requires_privilege = true;
      else if (value.is_string() && lower(value.get<std::string>()) == "false") step.requires_privilege = false;
      else expected(p, "true or false", value);
    } else if (name == "Setenv") {
      step.setenv = parse_setenv(value, p);
    } else if (name == "Timeout") {
      step.timeout = parse_timeout(value, p);
    } else {
      step.skip_if = parse_skip_if(value, p);
    }
  }
  if (!has_script) fail(join(path, "Script"), "expected a script, got nothing");
  return step;
}

// Parses the step keys of `j` into `lc`; keys that are not step names go to `other` (or are an
// error when `other` is null).
Lifecycle parse_lifecycle(const json& j, const std::string& path, std::map<std::string, Lifecycle>* other) {
  require_object(j, path, "a mapping of lifecycle steps");
  Lifecycle lc;
  std::map<std::string_view, std::string> seen;
  for (const auto& [key, value] : j.items()) {
    const std::string_view name = canonical(key, kStepNames);
    if (name.empty()) {
      if (other == nullptr)
        fail(path, fmt::format("expected only the keys {}, got {}", names_list(kStepNames), quote(key)));
      (*other)[key] = parse_lifecycle(value, join(path, key), nullptr);
      continue;
    }
    if (auto it = seen.find(name); it != seen.end())
      fail(path, fmt::format("expected {} once, got {} and {}", name, quote(it->second), quote(key)));
    seen[name] = key;
    const std::string p = join(path, name);
    if (name == "Setenv") lc.setenv = parse_setenv(value, p);
    else if (name == "Bootstrap") lc.bootstrap = parse_step(value, p);
    else if (name == "Install") lc.install = parse_step(value, p);
    else if (name == "Startup") lc.startup = parse_step(value, p);
    else if (name == "Run") lc.run = parse_step(value, p);
    else if (name == "Shutdown") lc.shutdown = parse_step(value, p);
    else lc.recover = parse_step(value, p);
  }
  if (lc.startup && lc.run) fail(path, "expected either Startup or Run, got both");
  return lc;
}

bool is_regex(std::string_view v) { return v.size() >= 2 && v.front() == '/' && v.back() == '/'; }

// std::regex is a backtracking matcher with no time limit. A platform pattern is accepted only
// in a shape whose matching time stays small on values of at most kMaxPlatformValueLength:
// no counted repetition (`x{n}` is expanded into n copies at compile time), no repeated group
// that itself repeats or alternates (`(a+)+`, `(a|a)*` backtrack exponentially), and at most
// kMaxRegexQuantifiers repetition operators (`.*.*.*` backtracks polynomially).
// Returns what is expected, or empty when the pattern is acceptable.
constexpr int kMaxRegexQuantifiers = 4;

std::string regex_guard(std::string_view re) {
  struct Frame {
    bool repeats_or_alternates = false;
  };
  std::vector<Frame> frames(1);
  bool after_risky_group = false;  // the previous token closed a group that repeats or alternates
  bool after_quantifier = false;
  int quantifiers = 0;
  for (std::size_t i = 0; i < re.size(); ++i) {
    const char c = re[i];
    bool risky_group = false, quantifier = false;
    if (c == '\\') {
      ++i;
    } else if (c == '[') {  // a character class: skip to its closing bracket
      std::size_t j = i + 1;
      if (j < re.size() && re[j] == '^') ++j;
      if (j < re.size() && re[j] == ']') ++j;
      while (j < re.size() && re[j] != ']') j += re[j] == '\\' ? 2 : 1;
      i = j;
    } else if (c == '{') {
      return "a regular expression without {n,m} repetition";
    } else if (c == '(') {
      frames.emplace_back();
    } else if (c == ')') {
      if (frames.size() > 1) {
        risky_group = frames.back().repeats_or_alternates;
        frames.pop_back();
        if (risky_group) frames.back().repeats_or_alternates = true;
      }
    } else if (c == '|') {
      frames.back().repeats_or_alternates = true;
    } else if (c == '*' || c == '+' || (c == '?' && i > 0 && re[i - 1] != '(')) {
      if (c == '?' && after_quantifier) {  // lazy quantifier: part of the previous one
        after_quantifier = false;
        continue;
      }
      if (after_risky_group) return "a regular expression without a repeated group that itself repeats or alternates";
      if (++quantifiers > kMaxRegexQuantifiers)
        return fmt::format("a regular expression with at most {} repetition operators", kMaxRegexQuantifiers);
      frames.back().repeats_or_alternates = true;
      quantifier = true;
    }
    after_risky_group = risky_group;
    after_quantifier = quantifier;
  }
  return {};
}

std::map<std::string, std::string> parse_platform(const json& j, const std::string& path) {
  require_object(j, path, "a mapping of platform attributes");
  std::map<std::string, std::string> platform;
  for (const auto& [key, value] : j.items()) {
    const std::string p = join(path, key);
    const std::string v = require_string(value, p, "an exact value, \"*\" or \"/regex/\"");
    if (is_regex(v)) {
      if (v.size() - 2 > kMaxPlatformRegexLength)
        fail(p, fmt::format("expected a regular expression of at most {} characters, got {} characters",
                            kMaxPlatformRegexLength, v.size() - 2));
      if (auto why = regex_guard(std::string_view(v).substr(1, v.size() - 2)); !why.empty()) expected(p, why, value);
      try {
        std::regex re(v.substr(1, v.size() - 2), std::regex::ECMAScript);
      } catch (const std::regex_error&) {
        expected(p, "a valid regular expression", value);
      }
    }
    platform[key] = v;
  }
  return platform;
}

template <class E, std::size_t N>
E parse_enum(const json& j, const std::string& path, const std::array<std::pair<std::string_view, E>, N>& values) {
  std::string names;
  for (const auto& [n, e] : values) {
    if (j.is_string() && j.get_ref<const std::string&>() == n) return e;
    names += names.empty() ? std::string(n) : fmt::format(", {}", n);
  }
  expected(path, fmt::format("one of {}", names), j);
}

constexpr std::array<std::pair<std::string_view, Access>, 3> kAccess = {
    {{"NONE", Access::none}, {"OWNER", Access::owner}, {"ALL", Access::all}}};
constexpr std::array<std::pair<std::string_view, Unarchive>, 2> kUnarchive = {
    {{"NONE", Unarchive::none}, {"ZIP", Unarchive::zip}}};
constexpr std::array<std::pair<std::string_view, DependencyType>, 2> kDependencyType = {
    {{"HARD", DependencyType::hard}, {"SOFT", DependencyType::soft}}};
constexpr std::array<std::pair<std::string_view, ComponentType>, 4> kComponentType = {
    {{"aws.greengrass.generic", ComponentType::generic},
     {"aws.greengrass.plugin", ComponentType::plugin},
     {"aws.greengrass.lambda", ComponentType::lambda},
     {"aws.greengrass.nucleus", ComponentType::nucleus}}};
constexpr std::array<std::string_view, 6> kAlgorithms = {"SHA-256", "SHA-384", "SHA-512", "SHA-224", "SHA-1", "MD5"};

Artifact parse_artifact(const json& j, const std::string& path) {
  require_object(j, path, "a mapping with URI");
  check_keys(j, path, std::array<std::string_view, 5>{"URI", "Digest", "Algorithm", "Unarchive", "Permission"});
  Artifact a;
  if (!j.contains("URI")) fail(join(path, "URI"), "expected a URI, got nothing");
  a.uri = require_string(j["URI"], join(path, "URI"), "a URI");
  if (a.uri.empty() || a.uri.find('\0') != std::string::npos) expected(join(path, "URI"), "a URI", j["URI"]);
  if (j.contains("Digest")) {
    const std::string p = join(path, "Digest");
    a.digest = require_string(j["Digest"], p, "a Base64 digest");
    if (a.digest.empty() || !base64_decode(a.digest)) expected(p, "a Base64 digest", j["Digest"]);
    a.algorithm = "SHA-256";
  }
  if (j.contains("Algorithm")) {
    const std::string p = join(path, "Algorithm");
    const std::string alg = require_string(j["Algorithm"], p, "a digest algorithm");
    if (std::find(kAlgorithms.begin(), kAlgorithms.end(), alg) == kAlgorithms.end())
      expected(p, fmt::format("one of {}", names_list(kAlgorithms)), j["Algorithm"]);
    a.algorithm = alg;
  }
  if (j.contains("Unarchive")) a.unarchive = parse_enum(j["Unarchive"], join(path, "Unarchive"), kUnarchive);
  if (j.contains("Permission")) {
    const std::string p = join(path, "Permission");
    const json& perm = require_object(j["Permission"], p, "a mapping with Read and Execute");
    check_keys(perm, p, std::array<std::string_view, 2>{"Read", "Execute"});
    if (perm.contains("Read")) a.permission.read = parse_enum(perm["Read"], join(p, "Read"), kAccess);
    if (perm.contains("Execute")) a.permission.execute = parse_enum(perm["Execute"], join(p, "Execute"), kAccess);
  }
  return a;
}

Manifest parse_manifest(const json& j, const std::string& path) {
  require_object(j, path, "a mapping with Platform and Lifecycle or Selections");
  check_keys(j, path, std::array<std::string_view, 5>{"Name", "Platform", "Lifecycle", "Selections", "Artifacts"});
  Manifest m;
  if (j.contains("Name")) m.name = require_string(j["Name"], join(path, "Name"), "a text");
  if (j.contains("Platform")) m.platform = parse_platform(j["Platform"], join(path, "Platform"));
  if (j.contains("Lifecycle") && j.contains("Selections"))
    fail(path, "expected either Lifecycle or Selections, got both");
  if (j.contains("Lifecycle")) m.lifecycle = parse_lifecycle(j["Lifecycle"], join(path, "Lifecycle"), nullptr);
  if (j.contains("Selections")) {
    const std::string p = join(path, "Selections");
    const json& sel = j["Selections"];
    if (!sel.is_array()) expected(p, "a list of selection keys", sel);
    for (std::size_t i = 0; i < sel.size(); ++i) {
      const std::string s = require_string(sel[i], index(p, i), "a selection key");
      if (s.empty()) expected(index(p, i), "a selection key", sel[i]);
      m.selections.push_back(s);
    }
  }
  if (j.contains("Artifacts")) {
    const std::string p = join(path, "Artifacts");
    const json& arts = j["Artifacts"];
    if (!arts.is_array()) expected(p, "a list of artifacts", arts);
    for (std::size_t i = 0; i < arts.size(); ++i) m.artifacts.push_back(parse_artifact(arts[i], index(p, i)));
  }
  return m;
}

Recipe parse_document(const json& doc) {
  if (!doc.is_object()) expected("", "a mapping of recipe keys", doc);
  check_keys(doc, "",
             std::array<std::string_view, 11>{"RecipeFormatVersion", "ComponentName", "ComponentVersion",
                                              "ComponentDescription", "ComponentPublisher", "ComponentSource",
                                              "ComponentType", "ComponentConfiguration", "ComponentDependencies",
                                              "Manifests", "Lifecycle"});
  const json none;
  const auto get = [&](const char* key) -> const json& { return doc.contains(key) ? doc[key] : none; };
  Recipe r;
  const json& fv = get("RecipeFormatVersion");
  if (!fv.is_string() || fv.get_ref<const std::string&>() != kRecipeFormatVersion)
    expected("RecipeFormatVersion", fmt::format("{}", kRecipeFormatVersion), fv);
  r.name = component_name(get("ComponentName"), "ComponentName");
  {
    const json& v = get("ComponentVersion");
    const std::string text = require_string(v, "ComponentVersion", "a semantic version MAJOR.MINOR.PATCH");
    auto parsed = parse_version(text);
    if (!parsed)
      fail("ComponentVersion", fmt::format("expected a semantic version MAJOR.MINOR.PATCH, got {} ({})", quote(text),
                                           reason_of(parsed.error(), "version", text)));
    r.version = std::move(parsed).value();
  }
  if (doc.contains("ComponentDescription"))
    r.description = require_string(doc["ComponentDescription"], "ComponentDescription", "a text");
  if (doc.contains("ComponentPublisher"))
    r.publisher = require_string(doc["ComponentPublisher"], "ComponentPublisher", "a text");
  if (doc.contains("ComponentSource"))
    r.source = require_string(doc["ComponentSource"], "ComponentSource", "a text");
  if (doc.contains("ComponentType")) r.type = parse_enum(doc["ComponentType"], "ComponentType", kComponentType);
  if (doc.contains("ComponentConfiguration")) {
    const json& cc = require_object(doc["ComponentConfiguration"], "ComponentConfiguration",
                                    "a mapping with DefaultConfiguration");
    check_keys(cc, "ComponentConfiguration", std::array<std::string_view, 1>{"DefaultConfiguration"});
    if (cc.contains("DefaultConfiguration")) {
      const json& dc = cc["DefaultConfiguration"];
      if (dc.is_null()) r.default_configuration = json::object();
      else r.default_configuration = require_object(dc, "ComponentConfiguration.DefaultConfiguration", "a mapping");
    }
  }
  if (doc.contains("ComponentDependencies")) {
    const std::string path = "ComponentDependencies";
    const json& deps = require_object(doc[path], path, "a mapping of component names to dependency settings");
    for (const auto& [key, value] : deps.items()) {
      Dependency d;
      d.name = component_name(json(key), path);
      if (d.name == r.name) fail(join(path, key), fmt::format("expected another component, got {} itself", quote(key)));
      const std::string p = join(path, key);
      require_object(value, p, "a mapping with VersionRequirement and DependencyType");
      check_keys(value, p, std::array<std::string_view, 2>{"VersionRequirement", "DependencyType"});
      if (value.contains("VersionRequirement")) {
        const std::string rp = join(p, "VersionRequirement");
        const std::string text = require_string(value["VersionRequirement"], rp, "a version range");
        auto range = VersionRange::parse(text);
        if (!range)
          fail(rp, fmt::format("expected a version range, got {} ({})", quote(text),
                               reason_of(range.error(), "version range", text)));
        d.requirement = std::move(range).value();
      }
      if (value.contains("DependencyType"))
        d.type = parse_enum(value["DependencyType"], join(p, "DependencyType"), kDependencyType);
      r.dependencies.push_back(std::move(d));
    }
  }
  if (doc.contains("Manifests")) {
    const json& ms = doc["Manifests"];
    if (!ms.is_array()) expected("Manifests", "a list of manifests", ms);
    for (std::size_t i = 0; i < ms.size(); ++i) r.manifests.push_back(parse_manifest(ms[i], index("Manifests", i)));
  }
  if (doc.contains("Lifecycle")) r.lifecycle = parse_lifecycle(doc["Lifecycle"], "Lifecycle", &r.lifecycle_selections);
  return r;
}

// `.json` recipes are strict JSON, as the nucleus reads them with Jackson's JSON parser
// (DeploymentService: getRecipeSerializerJson() for the `json` extension).
result<json> parse_strict_json(std::string_view text, std::string_view file_name) {
  constexpr int kMaxDepth = 128;  // as parse_yaml_or_json
  struct TooDeep {};
  try {
    return json::parse(text, [](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) throw TooDeep{};
      return true;
    });
  } catch (const json::parse_error& e) {
    const std::size_t at = std::min(e.byte == 0 ? 0 : e.byte - 1, text.size());
    std::size_t line = 1, column = 1;
    for (std::size_t i = 0; i < at; ++i) {
      if (text[i] == '\n') ++line, column = 1;
      else ++column;
    }
    std::string what = e.what();  // "[json.exception.parse_error.101] parse error at line 3, column 1: <what>"
    if (auto p = what.find("parse error"); p != std::string::npos)
      if (auto colon = what.find(": ", p); colon != std::string::npos) what = what.substr(colon + 2);
    return make_error(errc::parse, fmt::format("{}:{}:{}: not valid JSON: {}", file_name, line, column, what));
  } catch (const TooDeep&) {
    return make_error(errc::parse,
                      fmt::format("{}: not valid JSON: nested more than {} levels deep", file_name, kMaxDepth));
  }
}

}  // namespace

std::string_view to_string(ComponentType t) {
  for (const auto& [n, e] : kComponentType)
    if (e == t) return n;
  return {};
}
std::string_view to_string(DependencyType t) { return t == DependencyType::hard ? "HARD" : "SOFT"; }
std::string_view to_string(Unarchive u) { return u == Unarchive::zip ? "ZIP" : "NONE"; }
std::string_view to_string(Access a) {
  for (const auto& [n, e] : kAccess)
    if (e == a) return n;
  return {};
}

result<Recipe> parse_recipe(std::string_view text, std::string_view file_name) {
  auto doc = file_name.ends_with(".json") ? parse_strict_json(text, file_name) : parse_yaml_or_json(text, file_name);
  if (!doc) return std::move(doc).error();
  try {
    return parse_document(*doc);
  } catch (const Invalid& e) {
    if (e.path.empty()) return make_error(errc::invalid, fmt::format("{}: {}", file_name, e.what));
    return make_error(errc::invalid, fmt::format("{}: {}: {}", file_name, e.path, e.what));
  }
}

bool platform_value_matches(std::string_view pattern, const std::optional<std::string>& value) {
  if (pattern == "*") return true;
  if (!value) return false;
  if (!is_regex(pattern)) return pattern == *value;
  if (pattern.size() - 2 > kMaxPlatformRegexLength || value->size() > kMaxPlatformValueLength ||
      !regex_guard(pattern.substr(1, pattern.size() - 2)).empty())
    return false;
  try {
    const std::regex re(std::string(pattern.substr(1, pattern.size() - 2)), std::regex::ECMAScript);
    return std::regex_match(*value, re);
  } catch (const std::regex_error&) {
    return false;  // invalid, or too complex for std::regex: treated as no match
  }
}

result<Selection> select_manifest(const Recipe& recipe, const Platform& platform, std::string_view where) {
  // The global lifecycle of `selections` (`all` implied last), with its path for messages.
  const auto global = [&](const std::vector<std::string>& selections) -> std::pair<Lifecycle, std::string> {
    for (const auto& s : selections)
      if (auto it = recipe.lifecycle_selections.find(s); it != recipe.lifecycle_selections.end())
        return {it->second, join("Lifecycle", s)};
    if (auto it = recipe.lifecycle_selections.find("all"); it != recipe.lifecycle_selections.end())
      return {it->second, "Lifecycle.all"};
    return {recipe.lifecycle, "Lifecycle"};
  };
  if (recipe.manifests.empty()) {
    auto [lc, path] = global({});
    return Selection{Selection::npos, std::move(lc), std::move(path), {}};
  }
  for (std::size_t i = 0; i < recipe.manifests.size(); ++i) {
    const Manifest& m = recipe.manifests[i];
    const bool match = std::all_of(m.platform.begin(), m.platform.end(), [&](const auto& kv) {
      const auto it = platform.find(kv.first);
      return platform_value_matches(kv.second, it == platform.end() ? std::nullopt
                                                                     : std::optional<std::string>(it->second));
    });
    if (!match) continue;
    if (m.lifecycle) return Selection{i, *m.lifecycle, join(index("Manifests", i), "Lifecycle"), m.artifacts};
    auto [lc, path] = global(m.selections);
    return Selection{i, std::move(lc), std::move(path), m.artifacts};
  }
  std::string attrs;
  for (const auto& [k, v] : platform) attrs += fmt::format("{}{}={}", attrs.empty() ? "" : ", ", k, v);
  const std::string label = where.empty() ? fmt::format("{} {}", recipe.name, recipe.version.to_string()) : std::string(where);
  return make_error(errc::not_found,
                    fmt::format("{}: Manifests: expected one whose Platform matches this device ({}), got none", label,
                                attrs));
}

}  // namespace canopy::recipe
