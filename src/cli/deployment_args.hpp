//! `canopy deployment create`: validation of its arguments and the
//! aws.greengrass#CreateLocalDeployment request they make. Everything here runs before canopyd
//! is contacted, so bad input is reported without side effects.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"

namespace canopy::cli {

/// The options of `deployment create` as the operator typed them.
struct CreateArgs {
  std::optional<std::string> recipe_dir;      ///< --recipeDir / -r
  std::optional<std::string> artifact_dir;    ///< --artifactDir / -a
  std::vector<std::string> merge;             ///< --merge / -m name=version
  std::vector<std::string> remove;            ///< --remove name
  std::optional<std::string> update_config;   ///< --update-config / -c: JSON, @file or a file path
  std::optional<std::string> group_id;        ///< --groupId / -g
  std::optional<std::string> failure_policy;  ///< --failure-handling-policy / -fp
  std::vector<std::string> run_with;          ///< --runWith name:posixUser=user[:group]
  std::vector<std::string> system_limits;     ///< --systemLimits name:memory=KB,cpus=N, or JSON
  bool allow_downgrade = false;               ///< --allow-downgrade
  bool notify_components = false;             ///< --notify-components (ComponentUpdatePolicy NOTIFY_COMPONENTS)
  int notify_timeout_seconds = 60;            ///< --notify-timeout: how long components may take to answer
};

/// Parses `name=version`; the version must be a semantic version (1.0.0).
/// Errors: errc::invalid with a sentence naming the bad value.
result<std::pair<std::string, std::string>> parse_merge(std::string_view text);

/// Reads an --update-config value: `@file`, a JSON object, or (as greengrass-cli does) the path
/// of a file holding one; relative paths are taken from `cwd`. The object maps component names to
/// `{"MERGE": {...}, "RESET": ["/json/pointer", ...]}` (at least one of the two, nothing else).
/// Returns the object, ready for componentToConfiguration. Errors: errc::invalid.
result<nlohmann::json> parse_update_config(std::string_view text, const std::filesystem::path& cwd);

/// Adds one --runWith value (`name:posixUser=user[:group]` or `name:windowsUser=user`) to
/// `run_with` (componentToRunWithInfo). Errors: errc::invalid.
result<void> add_run_with(std::string_view text, nlohmann::json& run_with);

/// Adds one --systemLimits value to `run_with` (componentToRunWithInfo): either
/// `name:memory=KB,cpus=N` (either key may be left out), or greengrass-cli's form, a JSON object
/// `{"name": {"memory": KB, "cpus": N}}` given inline, as `@file` or as a file path.
/// memory is a whole number of kilobytes, cpus a positive number. Errors: errc::invalid.
result<void> add_system_limits(std::string_view text, const std::filesystem::path& cwd, nlohmann::json& run_with);

/// Makes a directory option absolute (from `cwd`, with a leading `~/` taken from $HOME) and checks
/// that it is an existing directory; canopyd resolves nothing against the CLI's working
/// directory. `option` names the flag in the error. Errors: errc::invalid.
result<std::string> absolute_directory(std::string_view text, const std::filesystem::path& cwd,
                                       std::string_view option);

/// Validates every option and builds the CreateLocalDeployment request; optional members are
/// left out when not given. Also refuses a component that is both merged and removed, and one
/// merged twice with different versions. Errors: errc::invalid, the first problem found.
result<nlohmann::json> build_create_request(const CreateArgs& args, const std::filesystem::path& cwd);

}  // namespace canopy::cli
