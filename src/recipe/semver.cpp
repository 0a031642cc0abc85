#include "canopy/recipe/semver.hpp"

#include <optional>

#include <fmt/format.h>

namespace canopy::recipe {
namespace {

Error version_error(std::string_view text, std::string_view why) {
  return make_error(errc::invalid, fmt::format("version \"{}\" is not valid: {}", text, why));
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_ident_char(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}
bool all_digits(std::string_view s) {
  for (char c : s)
    if (!is_digit(c)) return false;
  return !s.empty();
}

// A number of a version core: digits, no leading zero, at most 999999. Empty text on success.
std::string parse_number(std::string_view s, std::uint32_t& out) {
  if (!all_digits(s)) return "expected MAJOR.MINOR.PATCH with decimal numbers";
  if (s.size() > 1 && s[0] == '0') return fmt::format("the number \"{}\" has a leading zero", s);
  if (s.size() > 6) return fmt::format("the number {} is larger than {}", s, kMaxVersionNumber);
  std::uint32_t v = 0;
  for (char c : s) v = v * 10 + static_cast<std::uint32_t>(c - '0');
  out = v;
  return {};
}

// Dot-separated identifiers of a pre-release (numeric ones without leading zeros) or build.
std::string parse_identifiers(std::string_view s, bool prerelease, std::vector<std::string>& out) {
  const char* what = prerelease ? "pre-release" : "build metadata";
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = s.find('.', start);
    const std::string_view id = s.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (id.empty()) return fmt::format("empty {} identifier", what);
    for (char c : id)
      if (!is_ident_char(c)) return fmt::format("invalid character '{}' in {}", c, what);
    if (prerelease && all_digits(id) && id.size() > 1 && id[0] == '0')
      return fmt::format("the pre-release number \"{}\" has a leading zero", id);
    out.emplace_back(id);
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return {};
}

// Splits `core[-pre][+build]`. Returns an error reason or empty.
std::string split_version(std::string_view text, std::string_view& core, std::vector<std::string>& pre,
                          std::string& build) {
  std::string_view rest = text;
  if (const auto plus = rest.find('+'); plus != std::string_view::npos) {
    std::vector<std::string> ids;
    if (auto why = parse_identifiers(rest.substr(plus + 1), false, ids); !why.empty()) return why;
    build = std::string(rest.substr(plus + 1));
    rest = rest.substr(0, plus);
  }
  if (const auto dash = rest.find('-'); dash != std::string_view::npos) {
    if (auto why = parse_identifiers(rest.substr(dash + 1), true, pre); !why.empty()) return why;
    rest = rest.substr(0, dash);
  }
  core = rest;
  return {};
}

int compare_identifiers(const std::string& a, const std::string& b) {
  const bool an = all_digits(a), bn = all_digits(b);
  if (an && bn) {
    if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
    return a.compare(b) < 0 ? -1 : (a == b ? 0 : 1);
  }
  if (an != bn) return an ? -1 : 1;
  const int c = a.compare(b);
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

// A possibly partial version inside a range: `1`, `1.2`, `1.x`, `*`, `1.2.3-rc.1`.
struct Partial {
  int count = 0;  // how many of major, minor, patch are concrete
  std::uint32_t n[3] = {0, 0, 0};
  std::vector<std::string> prerelease;
};

Version make_version(std::uint32_t a, std::uint32_t b, std::uint32_t c, bool zero_pre = false) {
  Version v;
  v.major = a;
  v.minor = b;
  v.patch = c;
  if (zero_pre) v.prerelease = {"0"};
  return v;
}

Version floor_of(const Partial& p) {
  Version v = make_version(p.n[0], p.n[1], p.n[2]);
  v.prerelease = p.prerelease;
  return v;
}

std::string parse_partial(std::string_view text, Partial& out) {
  if (!text.empty() && (text[0] == 'v' || text[0] == 'V')) text.remove_prefix(1);
  std::string_view core;
  std::string build;
  if (auto why = split_version(text, core, out.prerelease, build); !why.empty()) return why;
  if (core.empty()) return "expected a version";
  bool wildcard = false;
  int parts = 0;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = core.find('.', start);
    const std::string_view part =
        core.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (parts == 3) return "expected at most MAJOR.MINOR.PATCH";
    if (part == "x" || part == "X" || part == "*") {
      wildcard = true;
    } else {
      if (wildcard) return fmt::format("\"{}\" follows a wildcard", part);
      if (auto why = parse_number(part, out.n[parts]); !why.empty()) return why;
      ++out.count;
    }
    ++parts;
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (!out.prerelease.empty() && out.count < 3) return "a pre-release needs MAJOR.MINOR.PATCH";
  return {};
}

using Op = VersionRange::Op;
using Comparator = VersionRange::Comparator;

// Appends the comparators for one `<op><partial>` token; empty text on success.
std::string desugar(std::string_view op, const Partial& p, std::vector<Comparator>& out) {
  const auto add = [&](Op o, Version v) { out.push_back(Comparator{o, std::move(v)}); };
  const std::uint32_t a = p.n[0], b = p.n[1], c = p.n[2];
  const auto upper_of_partial = [&]() {  // exclusive upper bound of an X-range
    return p.count == 1 ? make_version(a + 1, 0, 0, true) : make_version(a, b + 1, 0, true);
  };
  if (op.empty() || op == "=") {
    if (p.count == 3) return add(Op::eq, floor_of(p)), std::string();
    if (p.count == 0) return {};
    add(Op::ge, floor_of(p));
    add(Op::lt, upper_of_partial());
  } else if (op == ">") {
    if (p.count == 0) add(Op::lt, make_version(0, 0, 0, true));
    else if (p.count == 3) add(Op::gt, floor_of(p));
    else add(Op::ge, p.count == 1 ? make_version(a + 1, 0, 0) : make_version(a, b + 1, 0));
  } else if (op == ">=") {
    if (p.count > 0) add(Op::ge, floor_of(p));
  } else if (op == "<") {
    if (p.count == 0) add(Op::lt, make_version(0, 0, 0, true));
    else if (p.count == 3) add(Op::lt, floor_of(p));
    else add(Op::lt, make_version(a, b, 0, true));
  } else if (op == "<=") {
    if (p.count == 3) add(Op::le, floor_of(p));
    else if (p.count > 0) add(Op::lt, upper_of_partial());
  } else if (op == "~") {
    if (p.count == 0) return {};
    add(Op::ge, floor_of(p));
    add(Op::lt, p.count == 1 ? make_version(a + 1, 0, 0, true) : make_version(a, b + 1, 0, true));
  } else if (op == "^") {
    if (p.count == 0) return {};
    add(Op::ge, floor_of(p));
    if (a > 0 || p.count == 1) add(Op::lt, make_version(a + 1, 0, 0, true));
    else if (b > 0 || p.count == 2) add(Op::lt, make_version(0, b + 1, 0, true));
    else add(Op::lt, make_version(0, 0, c + 1, true));
  } else {
    return fmt::format("unknown operator \"{}\"", op);
  }
  return {};
}

bool test_comparator(const Comparator& cmp, const Version& v) {
  const auto o = v <=> cmp.version;
  switch (cmp.op) {
    case Op::lt: return o < 0;
    case Op::le: return o <= 0;
    case Op::gt: return o > 0;
    case Op::ge: return o >= 0;
    case Op::eq: return o == 0;
  }
  return false;
}

bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool is_op_only(std::string_view t) {
  return t == "<" || t == "<=" || t == ">" || t == ">=" || t == "=" || t == "^" || t == "~";
}

}  // namespace

std::string Version::to_string() const {
  std::string s = fmt::format("{}.{}.{}", major, minor, patch);
  for (std::size_t i = 0; i < prerelease.size(); ++i) s += (i == 0 ? "-" : ".") + prerelease[i];
  if (!build.empty()) s += "+" + build;
  return s;
}

result<Version> parse_version(std::string_view text) {
  if (text.size() > kMaxVersionLength)
    return version_error(text, fmt::format("longer than {} characters", kMaxVersionLength));
  Version v;
  std::string_view core;
  if (auto why = split_version(text, core, v.prerelease, v.build); !why.empty()) return version_error(text, why);
  std::uint32_t* fields[3] = {&v.major, &v.minor, &v.patch};
  std::size_t start = 0;
  for (int i = 0; i < 3; ++i) {
    const std::size_t dot = core.find('.', start);
    if ((i < 2) != (dot != std::string_view::npos)) return version_error(text, "expected MAJOR.MINOR.PATCH");
    const std::string_view part =
        core.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (auto why = parse_number(part, *fields[i]); !why.empty()) return version_error(text, why);
    start = dot + 1;
  }
  return v;
}

std::strong_ordering operator<=>(const Version& a, const Version& b) {
  if (auto c = a.major <=> b.major; c != 0) return c;
  if (auto c = a.minor <=> b.minor; c != 0) return c;
  if (auto c = a.patch <=> b.patch; c != 0) return c;
  if (a.prerelease.empty() || b.prerelease.empty()) {
    if (a.prerelease.empty() && b.prerelease.empty()) return std::strong_ordering::equal;
    return a.prerelease.empty() ? std::strong_ordering::greater : std::strong_ordering::less;
  }
  const std::size_t n = std::min(a.prerelease.size(), b.prerelease.size());
  for (std::size_t i = 0; i < n; ++i) {
    const int c = compare_identifiers(a.prerelease[i], b.prerelease[i]);
    if (c != 0) return c < 0 ? std::strong_ordering::less : std::strong_ordering::greater;
  }
  return a.prerelease.size() <=> b.prerelease.size();
}

bool operator==(const Version& a, const Version& b) { return (a <=> b) == 0; }

result<VersionRange> VersionRange::parse(std::string_view text) {
  const auto fail = [&](std::string_view why) {
    return make_error(errc::invalid, fmt::format("version range \"{}\" is not valid: {}", text, why));
  };
  if (text.size() > 1024) return fail("longer than 1024 characters");
  VersionRange r;
  r.text_ = std::string(text);
  r.sets_.clear();
  std::size_t start = 0;
  while (true) {
    const std::size_t bar = text.find("||", start);
    const std::string_view set_text =
        trim(text.substr(start, bar == std::string_view::npos ? std::string_view::npos : bar - start));
    std::vector<std::string> tokens;
    for (std::size_t i = 0; i < set_text.size();) {
      if (is_space(set_text[i])) {
        ++i;
        continue;
      }
      std::size_t j = i;
      while (j < set_text.size() && !is_space(set_text[j])) ++j;
      tokens.emplace_back(set_text.substr(i, j - i));
      i = j;
    }
    // Join an operator written apart from its version (`>= 1.0.0`).
    for (std::size_t i = 0; i + 1 < tokens.size(); ++i)
      if (is_op_only(tokens[i])) {
        tokens[i] += tokens[i + 1];
        tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      }
    std::vector<Comparator> set;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      if (i + 2 < tokens.size() && tokens[i + 1] == "-") {  // hyphen range
        Partial lo, hi;
        if (auto why = parse_partial(tokens[i], lo); !why.empty()) return fail(fmt::format("\"{}\": {}", tokens[i], why));
        if (auto why = parse_partial(tokens[i + 2], hi); !why.empty())
          return fail(fmt::format("\"{}\": {}", tokens[i + 2], why));
        if (auto why = desugar(">=", lo, set); !why.empty()) return fail(why);
        if (auto why = desugar("<=", hi, set); !why.empty()) return fail(why);
        i += 2;
        continue;
      }
      const std::string& t = tokens[i];
      std::size_t op_len = 0;
      while (op_len < t.size() && (t[op_len] == '<' || t[op_len] == '>' || t[op_len] == '=' || t[op_len] == '^' ||
                                   t[op_len] == '~'))
        ++op_len;
      const std::string_view op(t.data(), op_len);
      if (op_len == t.size()) return fail(fmt::format("\"{}\" is missing a version", t));
      if (!op.empty() && !(is_op_only(op))) return fail(fmt::format("unknown operator \"{}\"", op));
      Partial p;
      if (auto why = parse_partial(std::string_view(t).substr(op_len), p); !why.empty())
        return fail(fmt::format("\"{}\": {}", t, why));
      if (auto why = desugar(op, p, set); !why.empty()) return fail(why);
    }
    r.sets_.push_back(std::move(set));
    if (bar == std::string_view::npos) break;
    start = bar + 2;
  }
  return r;
}

bool VersionRange::satisfies(const Version& v) const {
  for (const auto& set : sets_) {
    bool all = true;
    for (const auto& c : set)
      if (!test_comparator(c, v)) {
        all = false;
        break;
      }
    if (!all) continue;
    if (v.prerelease.empty()) return true;
    // npm: a pre-release only matches a set that names a pre-release of the same version core.
    for (const auto& c : set)
      if (!c.version.prerelease.empty() && c.version.major == v.major && c.version.minor == v.minor &&
          c.version.patch == v.patch)
        return true;
  }
  return false;
}

}  // namespace canopy::recipe
