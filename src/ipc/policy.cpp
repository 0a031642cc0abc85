#include "canopy/ipc/policy.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <utility>

#include <nlohmann/json.hpp>

namespace canopy::ipc {
namespace {

using Token = detail::PatternToken;
using Kind = detail::PatternToken::Kind;
using Pattern = std::vector<Token>;

constexpr std::string_view kEscapeHelp = "use ${*}, ${?} or ${$}";

bool is_escapable(char c) { return c == '*' || c == '?' || c == '$'; }

// `${c}` at `i` with c one of * ? $: the escaped character, else 0.
char escape_at(std::string_view s, std::size_t i) {
  if (i + 3 < s.size() && s[i] == '$' && s[i + 1] == '{' && s[i + 3] == '}' &&
      is_escapable(s[i + 2])) {
    return s[i + 2];
  }
  return 0;
}

bool whole_level(std::string_view s, std::size_t i) {
  return (i == 0 || s[i - 1] == '/') && (i + 1 == s.size() || s[i + 1] == '/');
}

// Turns a resource pattern into NFA steps. Never fails: what validate_resource rejects is
// read as literal text here (as the Greengrass nucleus reads it).
Pattern compile(std::string_view p, ResourceStyle style) {
  const bool mqtt = style == ResourceStyle::mqtt;
  Pattern out;
  if (mqtt && p == "#") {
    out.push_back({Kind::star, 0});
    return out;
  }
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (const char e = escape_at(p, i); e != 0) {
      out.push_back({Kind::literal, e});
      i += 3;
    } else if (c == '*') {
      // Consecutive stars mean the same as one; merging keeps adversarial patterns small.
      if (out.empty() || out.back().kind != Kind::star) out.push_back({Kind::star, 0});
    } else if (c == '?') {
      out.push_back({Kind::one, 0});
    } else if (mqtt && c == '+' && whole_level(p, i)) {
      out.push_back({Kind::plus, 0});
    } else if (mqtt && c == '#' && i > 0 && i + 1 == p.size() && p[i - 1] == '/') {
      // `a/#`: the `/` just pushed becomes part of the tail, so `a` alone matches too.
      out.back() = {Kind::tail, 0};
      out.push_back({Kind::star, 0});
    } else {
      out.push_back({Kind::literal, c});
    }
  }
  return out;
}

// Simulates the NFA of `pat` over `s`: states are positions in `pat`, and every step touches
// each state once, so the cost is O(pat.size() * s.size()) whatever the pattern.
bool run(const Pattern& pat, std::string_view s) {
  const std::size_t n = pat.size();
  if (std::all_of(pat.begin(), pat.end(), [](const Token& t) { return t.kind == Kind::literal; })) {
    return n == s.size() &&
           std::equal(pat.begin(), pat.end(), s.begin(), [](const Token& t, char c) { return t.ch == c; });
  }
  // Cheap rejection on the literal text before the first and after the last wildcard.
  std::size_t prefix = 0;
  while (prefix < n && pat[prefix].kind == Kind::literal) ++prefix;
  std::size_t suffix = 0;
  while (suffix < n - prefix && pat[n - 1 - suffix].kind == Kind::literal) ++suffix;
  if (s.size() < prefix + suffix) return false;
  for (std::size_t i = 0; i < prefix; ++i) {
    if (pat[i].ch != s[i]) return false;
  }
  for (std::size_t i = 0; i < suffix; ++i) {
    if (pat[n - 1 - i].ch != s[s.size() - 1 - i]) return false;
  }

  std::vector<unsigned char> cur(n + 1, 0);
  std::vector<unsigned char> next(n + 1, 0);
  // Epsilon moves only go forward, so one ascending pass closes the set.
  auto close = [&](std::vector<unsigned char>& set) {
    for (std::size_t i = 0; i < n; ++i) {
      if (set[i] == 0) continue;
      if (pat[i].kind == Kind::star || pat[i].kind == Kind::plus) set[i + 1] = 1;
      if (pat[i].kind == Kind::tail) set[n] = 1;
    }
  };
  cur[0] = 1;
  close(cur);
  for (std::size_t k = 0; k < s.size(); ++k) {
    const char c = s[k];
    // A requested resource may itself be a topic filter (SubscribeToTopic "sensors/#"). Its
    // wildcard levels are matched literally, except that a policy's single-character `?`
    // and single-level `+` never stand for them: `sensors/+` must not grant `sensors/#`.
    const bool wildcard_level = (c == '#' || c == '+') && (k == 0 || s[k - 1] == '/') &&
                                (k + 1 == s.size() || s[k + 1] == '/');
    std::fill(next.begin(), next.end(), 0);
    bool any = false;
    for (std::size_t i = 0; i < n; ++i) {
      if (cur[i] == 0) continue;
      const Token& t = pat[i];
      std::size_t to = n + 1;  // none
      switch (t.kind) {
        case Kind::literal: if (t.ch == c) to = i + 1; break;
        case Kind::one: if (!wildcard_level) to = i + 1; break;
        case Kind::star: to = i; break;
        case Kind::plus: if (c != '/' && !(wildcard_level && c == '#')) to = i; break;
        case Kind::tail: if (c == '/') to = i + 1; break;
      }
      if (to <= n) {
        next[to] = 1;
        any = true;
      }
    }
    if (!any) return false;
    close(next);
    cur.swap(next);
  }
  return cur[n] != 0;
}

// Escapes control bytes, `"` and `\` so a client's resource cannot forge log lines.
std::string escape_text(std::string_view s) {
  static constexpr std::array<char, 16> kHex = {'0', '1', '2', '3', '4', '5', '6', '7',
                                                '8', '9', 'a', 'b', 'c', 'd', 'e', 'f'};
  std::string out;
  out.reserve(s.size());
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  return out;
}

std::string quoted(std::string_view s) { return "\"" + escape_text(s) + "\""; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

Error invalid_at(std::string_view where, std::string_view what) {
  std::string message(where);
  message += ": ";
  message += what;
  return make_error(errc::invalid, std::move(message));
}

// A list of strings at `where`; `element` checks one item (its index is added to `where`).
template <class Check>
result<std::vector<std::string>> string_list(const nlohmann::json& j, const std::string& where,
                                             Check element) {
  if (!j.is_array()) return invalid_at(where, "expected a list of strings");
  std::vector<std::string> out;
  out.reserve(j.size());
  for (std::size_t i = 0; i < j.size(); ++i) {
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!j[i].is_string()) {
      return invalid_at(at, std::string("expected a string, got ") + j[i].type_name());
    }
    std::string value = j[i].get<std::string>();
    if (auto ok = element(value); !ok) return invalid_at(at, ok.error().message);
    out.push_back(std::move(value));
  }
  return out;
}

result<Policy> parse_policy(const nlohmann::json& j, std::string destination, std::string id,
                            const std::string& where) {
  if (!j.is_object()) {
    return invalid_at(where, std::string("expected an object with operations and resources, got ") +
                                 j.type_name());
  }
  Policy policy{std::move(destination), std::move(id), {}, {}, {}};
  const nlohmann::json* description = nullptr;
  const nlohmann::json* operations = nullptr;
  const nlohmann::json* resources = nullptr;
  for (const auto& [key, value] : j.items()) {
    const std::string k = lower(key);
    const nlohmann::json** slot = k == "policydescription" ? &description
                                  : k == "operations"      ? &operations
                                  : k == "resources"       ? &resources
                                                           : nullptr;
    if (slot == nullptr) {
      return invalid_at(where + "." + key,
                        "unknown key; expected policyDescription, operations or resources");
    }
    if (*slot != nullptr) return invalid_at(where + "." + key, "duplicate key (keys ignore case)");
    *slot = &value;
  }

  if (description != nullptr && !description->is_null()) {
    if (!description->is_string()) {
      return invalid_at(where + ".policyDescription",
                        std::string("expected a string, got ") + description->type_name());
    }
    policy.description = description->get<std::string>();
  }

  const std::string ops_at = where + ".operations";
  if (operations == nullptr) {
    return invalid_at(ops_at, "missing; list the allowed operations, or \"*\" for all");
  }
  auto ops = string_list(*operations, ops_at, [](const std::string& op) -> result<void> {
    if (op.empty()) return make_error(errc::invalid, "empty operation name");
    return ok();
  });
  if (!ops) return std::move(ops).error();
  if (ops->empty()) return invalid_at(ops_at, "empty list; list the allowed operations, or \"*\" for all");
  policy.operations = std::move(*ops);

  // A missing or null `resources` grants no resource (see the header).
  if (resources != nullptr && !resources->is_null()) {
    auto res = string_list(*resources, where + ".resources",
                           [&](const std::string& r) { return validate_resource(r, policy.destination); });
    if (!res) return std::move(res).error();
    policy.resources = std::move(*res);
  }
  return policy;
}

}  // namespace

ResourceStyle resource_style(std::string_view destination) noexcept {
  return destination == kMqttProxyDestination ? ResourceStyle::mqtt : ResourceStyle::standard;
}

result<void> validate_resource(std::string_view resource, std::string_view destination) {
  if (resource.empty()) return make_error(errc::invalid, "empty resource");
  const bool mqtt = resource_style(destination) == ResourceStyle::mqtt;
  for (std::size_t i = 0; i < resource.size(); ++i) {
    const char c = resource[i];
    if (c == '$' && i + 1 < resource.size() && resource[i + 1] == '{') {
      if (i + 3 >= resource.size()) {
        return make_error(errc::invalid, quoted(resource) + ": unterminated escape " +
                                             quoted(resource.substr(i)) + "; " +
                                             std::string(kEscapeHelp));
      }
      if (escape_at(resource, i) == 0) {
        return make_error(errc::invalid, quoted(resource) + ": invalid escape " +
                                             quoted(resource.substr(i, 4)) + "; " +
                                             std::string(kEscapeHelp));
      }
      i += 3;
    } else if (mqtt && c == '#' && !(i + 1 == resource.size() && whole_level(resource, i))) {
      return make_error(errc::invalid, quoted(resource) +
                                           ": \"#\" must be the whole last level (as in \"sensors/#\")");
    } else if (mqtt && c == '+' && !whole_level(resource, i)) {
      return make_error(errc::invalid,
                        quoted(resource) + ": \"+\" must be a whole level (as in \"sensors/+/temp\")");
    }
  }
  return ok();
}

result<std::vector<Policy>> parse_access_control(const nlohmann::json& access_control,
                                                 std::string_view component) {
  const std::string root = std::string(component) + ": accessControl";
  if (access_control.is_null()) return std::vector<Policy>{};
  if (access_control.is_string()) {
    const auto parsed = nlohmann::json::parse(access_control.get<std::string>(), nullptr, false);
    if (parsed.is_discarded()) {
      return make_error(errc::parse, root + ": a string that is not a JSON object");
    }
    if (parsed.is_string()) return invalid_at(root, "expected an object of destinations, got string");
    return parse_access_control(parsed, component);
  }
  if (!access_control.is_object()) {
    return invalid_at(root, std::string("expected an object of destinations, got ") +
                                access_control.type_name());
  }
  std::vector<Policy> out;
  for (const auto& [destination, policies] : access_control.items()) {
    if (destination.empty()) return invalid_at(root + ".\"\"", "empty destination name");
    const std::string dest_at = root + "." + destination;
    if (policies.is_null()) continue;
    if (!policies.is_object()) {
      return invalid_at(dest_at, std::string("expected an object of policies, got ") + policies.type_name());
    }
    for (const auto& [id, body] : policies.items()) {
      if (id.empty()) return invalid_at(dest_at + ".\"\"", "empty policy id");
      auto policy = parse_policy(body, destination, id, dest_at + ".\"" + id + "\"");
      if (!policy) return std::move(policy).error();
      out.push_back(std::move(*policy));
    }
  }
  return out;  // nlohmann objects iterate in key order: sorted by destination, then id
}

bool resource_matches(std::string_view pattern, std::string_view resource, ResourceStyle style) {
  return run(compile(pattern, style), resource);
}

bool policy_is_broad(const Policy& policy) {
  const auto& ops = policy.operations;
  const auto& res = policy.resources;
  return std::find(ops.begin(), ops.end(), "*") != ops.end() ||
         std::any_of(res.begin(), res.end(), [](const std::string& r) { return r == "*" || r == "#"; });
}

void Authorizer::set_policies(std::string component, std::vector<Policy> policies) {
  std::vector<Entry> entries;
  entries.reserve(policies.size());
  for (Policy& p : policies) {
    Entry e{std::move(p), {}};
    const ResourceStyle style = resource_style(e.policy.destination);
    e.patterns.reserve(e.policy.resources.size());
    for (const std::string& r : e.policy.resources) e.patterns.push_back(compile(r, style));
    entries.push_back(std::move(e));
  }
  components_.insert_or_assign(std::move(component), std::move(entries));
}

void Authorizer::remove(std::string_view component) {
  if (auto it = components_.find(component); it != components_.end()) components_.erase(it);
}

Decision Authorizer::check(std::string_view component, std::string_view destination,
                           std::string_view operation, std::string_view resource) const {
  if (auto it = components_.find(component); it != components_.end() && !resource.empty()) {
    for (const Entry& e : it->second) {
      if (e.policy.destination != destination) continue;
      const auto& ops = e.policy.operations;
      if (std::find(ops.begin(), ops.end(), operation) == ops.end() &&
          std::find(ops.begin(), ops.end(), "*") == ops.end()) {
        continue;
      }
      for (const Pattern& p : e.patterns) {
        if (run(p, resource)) return Decision{true, e.policy.id, {}};
      }
    }
  }
  return Decision{false, {},
                  escape_text(component) + " is not authorized to perform " + escape_text(operation) +
                      " on resource " + quoted(resource) + "; add an accessControl policy for " +
                      escape_text(destination)};
}

result<void> Authorizer::authorize(std::string_view component, std::string_view destination,
                                   std::string_view operation, std::string_view resource) const {
  Decision d = check(component, destination, operation, resource);
  if (d) return ok();
  return make_error(errc::unauthorized, std::move(d.message));
}

std::vector<Policy> Authorizer::policies(std::string_view component) const {
  std::vector<Policy> out;
  if (auto it = components_.find(component); it != components_.end()) {
    for (const Entry& e : it->second) out.push_back(e.policy);
  }
  return out;
}

}  // namespace canopy::ipc
