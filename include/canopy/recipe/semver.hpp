//! Semantic versions (semver 2.0.0) and npm-style version ranges, as recipes use them.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "canopy/core/error.hpp"

namespace canopy::recipe {

/// MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]. Greengrass limits: each number ≤ 999999, the
/// whole text ≤ 64 characters. Build metadata is kept but ignored by comparison.
struct Version {
  std::uint32_t major = 0;
  std::uint32_t minor = 0;
  std::uint32_t patch = 0;
  std::vector<std::string> prerelease;  ///< dot-separated identifiers, empty for a release
  std::string build;                    ///< text after '+', without the '+'

  /// The canonical text, e.g. `1.2.3-rc.1+b7`.
  std::string to_string() const;
};

inline constexpr std::uint32_t kMaxVersionNumber = 999999;
inline constexpr std::size_t kMaxVersionLength = 64;

/// Parses a version. Errors (errc::invalid) name the text and what is wrong:
/// `version "1.2" is not valid: expected MAJOR.MINOR.PATCH`.
result<Version> parse_version(std::string_view text);

/// Semver precedence: numbers, then pre-release (a release ranks above its pre-releases;
/// numeric identifiers compare numerically and rank below alphanumeric ones). Build metadata
/// is ignored, so 1.0.0+a == 1.0.0+b.
std::strong_ordering operator<=>(const Version& a, const Version& b);
bool operator==(const Version& a, const Version& b);

/// An npm-style range: `||`-separated sets of space-separated comparators. Supported forms:
/// `1.2.3` and `=1.2.3` (exact), `<`, `<=`, `>`, `>=` (partial versions allowed), `^1.2.3`,
/// `~1.2`, X-ranges (`1.x`, `1.2.*`, `*`, empty), hyphen ranges (`1.2 - 2.3.4`).
/// As in npm, a pre-release version satisfies a set only if one of the set's comparators names a
/// pre-release of the same MAJOR.MINOR.PATCH.
class VersionRange {
 public:
  enum class Op { lt, le, gt, ge, eq };
  struct Comparator {
    Op op = Op::ge;
    Version version;
  };

  /// Parses a range. Errors (errc::invalid): `version range ">=1.0.0 <" is not valid: ...`.
  static result<VersionRange> parse(std::string_view text);

  /// The range that every release satisfies (`*`).
  VersionRange() = default;

  bool satisfies(const Version& v) const;
  /// The text the range was parsed from.
  const std::string& text() const { return text_; }
  /// Desugared comparator sets (any set may match; all comparators of a set must).
  const std::vector<std::vector<Comparator>>& sets() const { return sets_; }

 private:
  std::string text_ = "*";
  std::vector<std::vector<Comparator>> sets_{std::vector<Comparator>{}};
};

/// Shorthand for range.satisfies(version).
inline bool satisfies(const Version& version, const VersionRange& range) { return range.satisfies(version); }

}  // namespace canopy::recipe
