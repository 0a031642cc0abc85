//! Recipe variable interpolation (`{artifacts:path}`, `{configuration:/ptr}`, ...) with
//! Greengrass's replacement rules. Pure: no I/O.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"
#include "canopy/recipe/recipe.hpp"

namespace canopy::recipe {

/// What a direct dependency contributes: `{Dep:artifacts:path}`,
/// `{Dep:artifacts:decompressedPath}`, `{Dep:configuration:/ptr}`.
struct DependencyVariables {
  std::string artifacts_path;
  std::string artifacts_decompressed_path;
  nlohmann::json configuration = nlohmann::json::object();
};

/// The variables of one component.
struct Variables {
  std::string thing_name;                   ///< {iot:thingName}
  std::string root_path;                    ///< {kernel:rootPath}
  std::string artifacts_path;               ///< {artifacts:path}
  std::string artifacts_decompressed_path;  ///< {artifacts:decompressedPath}
  std::string work_path;                    ///< {work:path}
  nlohmann::json configuration = nlohmann::json::object();  ///< {configuration:/ptr}
  /// Direct dependencies only, by component name; `{Other:...}` for any other name is left as is.
  std::map<std::string, DependencyVariables> dependencies;
};

/// Replaces every `{namespace:key}` and `{Dep:namespace:key}` placeholder in one pass (replaced
/// text is not scanned again). Rules (KernelConfigResolver.java):
/// - `{configuration:/ptr}`: a string becomes its text, a number or boolean its JSON text, null the
///   text `null`, an object or array its serialized JSON; a missing node or an invalid pointer
///   leaves the placeholder unchanged;
/// - a `Dep:` prefix that is not a direct dependency, and any unknown namespace or key, leave the
///   placeholder unchanged.
std::string interpolate(std::string_view text, const Variables& vars);

/// Interpolates every string of a lifecycle (lifecycle and step Setenv values, Script, Timeout,
/// the SkipIf target), then checks that every Timeout is a number of seconds.
/// Error (errc::invalid): `<where>: Lifecycle.Run.Timeout: expected a number of seconds, got "soon" (from
/// "{configuration:/t}")` (the `from` part only when interpolation changed the text).
result<Lifecycle> interpolate(const Lifecycle& lifecycle, const Variables& vars, std::string_view where);

/// A step's Timeout in seconds: nullopt when absent or not (yet) a plain number.
std::optional<std::chrono::seconds> timeout_seconds(const Step& step);

}  // namespace canopy::recipe
