//! Greengrass component recipes (RecipeFormatVersion 2020-01-25): parsing, validation and
//! platform selection. Pure: no I/O, no logging.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"
#include "canopy/recipe/semver.hpp"

namespace canopy::recipe {

inline constexpr std::string_view kRecipeFormatVersion = "2020-01-25";
inline constexpr std::size_t kMaxComponentNameLength = 128;
/// Longest `/regex/` accepted as a platform value (std::regex backtracks; keep patterns small).
/// std::regex backtracks without a time limit, so a pattern must also keep a safe shape: no
/// counted repetition (`a{3}`), no repeated group that repeats or alternates inside (`(a+)+`,
/// `(a|b)*`), at most 4 repetition operators. Violations are parse errors.
inline constexpr std::size_t kMaxPlatformRegexLength = 256;
/// Longest device attribute value a `/regex/` is run against; longer values never match one.
inline constexpr std::size_t kMaxPlatformValueLength = 64;

enum class ComponentType { generic, plugin, lambda, nucleus };
enum class DependencyType { hard, soft };
enum class Unarchive { none, zip };
enum class Access { none, owner, all };

/// The recipe spelling: `aws.greengrass.generic`, `HARD`, `ZIP`, `OWNER`, ...
std::string_view to_string(ComponentType t);
std::string_view to_string(DependencyType t);
std::string_view to_string(Unarchive u);
std::string_view to_string(Access a);

struct Dependency {
  std::string name;
  VersionRange requirement;  ///< VersionRequirement; `*` when absent
  DependencyType type = DependencyType::hard;
};

struct Permission {
  Access read = Access::owner;
  Access execute = Access::none;
};

struct Artifact {
  std::string uri;
  std::string digest;     ///< Base64 of the digest, empty when absent
  std::string algorithm;  ///< e.g. SHA-256; "SHA-256" when a Digest is given without one
  Unarchive unarchive = Unarchive::none;
  Permission permission;
};

struct SkipIf {
  enum class Kind { onpath, exists };
  Kind kind = Kind::onpath;
  std::string target;  ///< the executable or file, as written (may hold variables)
};

/// One lifecycle step. A step written as a plain string is {Script: that string}.
struct Step {
  std::string script;
  bool requires_privilege = false;
  std::map<std::string, std::string> setenv;
  /// Timeout as written (a literal number of seconds, or text holding `{…}` variables that is
  /// validated after interpolation). Absent means the step's default.
  std::optional<std::string> timeout;
  std::optional<SkipIf> skip_if;
};

struct Lifecycle {
  std::map<std::string, std::string> setenv;  ///< lifecycle-level Setenv, for every step
  std::optional<Step> bootstrap;
  std::optional<Step> install;
  std::optional<Step> startup;
  std::optional<Step> run;
  std::optional<Step> shutdown;
  std::optional<Step> recover;
};

struct Manifest {
  std::string name;                              ///< Name, may be empty
  std::map<std::string, std::string> platform;   ///< exact value, `*` or `/regex/`; empty matches all
  std::optional<Lifecycle> lifecycle;            ///< the manifest's own Lifecycle
  std::vector<std::string> selections;           ///< Selections into the global Lifecycle
  std::vector<Artifact> artifacts;
};

struct Recipe {
  std::string format_version{kRecipeFormatVersion};
  std::string name;
  Version version;
  std::string description;
  std::string publisher;
  std::string source;
  ComponentType type = ComponentType::generic;
  nlohmann::json default_configuration = nlohmann::json::object();
  std::vector<Dependency> dependencies;  ///< sorted by name
  std::vector<Manifest> manifests;
  /// The global Lifecycle: its step keys (Install, Run, ...) form `lifecycle`; any other key is a
  /// selection section (e.g. `linux:`, `all:`) holding a Lifecycle of its own.
  Lifecycle lifecycle;
  std::map<std::string, Lifecycle> lifecycle_selections;
};

/// Parses and validates a recipe in YAML or JSON. `file_name` labels errors, and a name ending in
/// `.json` makes the text strict JSON (as the Greengrass nucleus reads `.json` recipes with a JSON
/// parser: a trailing comma or a comment is an error there, though YAML would accept it).
///
/// Stops at the first error and returns it (errc::parse for text that is not YAML/JSON, with
/// file:line:column; errc::invalid otherwise), shaped
/// `<file>: <field path>: expected <what>, got <value>`, e.g.
/// `hello-1.0.0.yaml: Manifests[1].Lifecycle.Run.Timeout: expected a number of seconds, got "abc"`.
/// Indexes in paths are zero-based. Top-level, dependency, manifest and artifact keys are
/// case-sensitive; lifecycle keys (step names and the keys inside a step) are case-insensitive as
/// in the Java nucleus, and error paths use their canonical spelling. Unknown keys are rejected
/// (typos otherwise silently do nothing), except inside DefaultConfiguration and as selection
/// sections of the global Lifecycle.
result<Recipe> parse_recipe(std::string_view text, std::string_view file_name);

/// The device's platform attributes: `os`, `architecture`, `architecture.detail`, custom keys.
using Platform = std::map<std::string, std::string>;

/// True when the manifest's platform value `pattern` accepts `value` (absent when the device
/// lacks the key): `*` accepts anything, even an absent key; `/re/` must match the whole value
/// (ECMAScript syntax, close to Java's for the patterns recipes use; a value longer than
/// kMaxPlatformValueLength never matches a regex); anything else is compared exactly.
bool platform_value_matches(std::string_view pattern, const std::optional<std::string>& value);

/// What applies on one device: the manifest that matched and the lifecycle it resolves to.
struct Selection {
  /// Index into Recipe::manifests, or npos for a recipe without manifests.
  std::size_t manifest_index = npos;
  Lifecycle lifecycle;
  /// Where `lifecycle` is written in the recipe, for messages: `Manifests[1].Lifecycle`,
  /// `Lifecycle.linux` (a global selection section) or `Lifecycle`.
  std::string lifecycle_path;
  std::vector<Artifact> artifacts;
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
};

/// Picks the first manifest whose every Platform key matches. Its lifecycle is the manifest's
/// own Lifecycle if it has one; otherwise the first global selection section named by its
/// Selections, `all` implied last; otherwise the global step keys. A recipe without manifests
/// runs everywhere with the global lifecycle (`all` section, else the step keys).
/// Error errc::not_found, prefixed with `where` (default: name and version):
/// `hello-1.0.0.yaml: Manifests: expected one whose Platform matches this device (os=linux, ...), got none`.
result<Selection> select_manifest(const Recipe& recipe, const Platform& platform, std::string_view where = {});

}  // namespace canopy::recipe
