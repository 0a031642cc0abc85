//! Local deployments: the queue, version resolution, the component store on disk, the
//! configuration update, apply through the lifecycle manager, rollback, and persistence so
//! that a canopyd killed mid-deployment restarts into the old set or the new one, never a mix.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"
#include "canopy/core/paths.hpp"
#include "canopy/lifecycle/manager.hpp"
#include "canopy/recipe/recipe.hpp"
#include "canopy/trust/signature.hpp"

namespace canopy::config {
class ConfigStore;
}

namespace canopy::deploy {

enum class FailurePolicy { rollback, do_nothing };

/// One component's configuration update (Greengrass `ConfigurationUpdate`): RESET pointers
/// first, then DefaultConfiguration at timestamp 1, then MERGE at the deployment's timestamp.
struct ConfigUpdate {
  nlohmann::json merge;              ///< null: none
  std::vector<std::string> reset;    ///< JSON pointers; "" resets everything
};

/// RunWith of one component.
struct RunWith {
  std::string posix_user;
  lifecycle::ResourceLimits limits;
};

/// A local deployment (CreateLocalDeployment / `canopy deployment create`).
struct Request {
  std::string group = "LOCAL_DEPLOYMENTS";
  std::map<std::string, std::string> add;  ///< root components to add or update: name -> version
  std::vector<std::string> remove;         ///< root components to remove
  std::map<std::string, ConfigUpdate> configuration;
  std::map<std::string, RunWith> run_with;
  std::filesystem::path recipe_dir;    ///< empty: only recipes already installed
  std::filesystem::path artifact_dir;  ///< `<dir>/<name>/<version>/<file>`
  FailurePolicy failure_policy = FailurePolicy::rollback;
  bool allow_downgrade = false;                  ///< allowDowngrade (Canopy): install a lower version than the installed one
  bool notify_components = false;                ///< NOTIFY_COMPONENTS (local default: skip)
  std::chrono::seconds notify_timeout{60};       ///< ComponentUpdatePolicy.Timeout
};

/// Parses the CreateLocalDeployment request body (Greengrass model, camelCase). Errors
/// (errc::invalid) name the member.
result<Request> parse_request(const nlohmann::json& body);

/// The state of one deployment, as GetLocalDeploymentStatus shows it.
struct Record {
  std::string id;
  std::string status = "QUEUED";   ///< QUEUED, IN_PROGRESS, SUCCEEDED, FAILED, CANCELED
  std::string detailed;            ///< SUCCESSFUL, FAILED_NO_STATE_CHANGE, FAILED_ROLLBACK_NOT_REQUESTED, FAILED_ROLLBACK_COMPLETE, REJECTED
  std::string message;             ///< what happened, one or two sentences
  std::int64_t created_ms = 0;
  std::int64_t updated_ms = 0;
  nlohmann::json request;          ///< the request as received
  /// name -> version of the target set (filled once resolved).
  std::map<std::string, std::string> components;
  nlohmann::json to_json() const;
  static Record from_json(const nlohmann::json& j);
};

struct Settings {
  RootLayout layout;
  recipe::Platform platform;
  std::string default_posix_user = "ggc_user:ggc_group";  ///< owner of artifacts without RunWith
  std::chrono::seconds deployment_timeout{600};  ///< how long a deployment waits for its components
  std::size_t history = 100;                     ///< finished deployments kept
  /// Who may sign recipes. With require_signatures, every recipe a deployment brings must
  /// carry `<recipe>.sig` with enough valid signatures of trusted keys, or nothing is written.
  trust::TrustPolicy trust;
  std::filesystem::path download_ca_file;          ///< CAs for https:// artifacts; empty: the system's
  std::uint64_t max_download_bytes = 1ull << 30;   ///< the largest artifact downloaded
  std::uint64_t store_max_bytes = 0;               ///< packages/ may not grow past this; 0: no cap
};

/// What the deployer calls out to (implemented by the nucleus over IPC).
struct Hooks {
  /// NOTIFY_COMPONENTS: tell subscribers an update is coming; `done(defer_ms)` with the
  /// largest recheckAfterMs any of them asked for (0: go ahead).
  std::function<void(const std::string& deployment, std::chrono::seconds timeout, std::function<void(std::int64_t)> done)>
      pre_update;
  std::function<void(const std::string& deployment)> post_update;
  /// ConfigurationValidationPolicy: ask a running component whether `configuration` is
  /// acceptable; `done(accepted, message)`. Called for each deployed component whose
  /// configuration the deployment changes, before anything changes.
  std::function<void(const std::string& component, const nlohmann::json& configuration, const std::string& deployment,
                     std::function<void(bool, std::string)> done)>
      validate;
};

/// Owns the deployment queue. Lives on the services strand like the lifecycle manager.
class Deployer {
 public:
  Deployer(boost::asio::any_io_executor executor, Settings settings, config::ConfigStore& store,
           lifecycle::Manager& manager, Hooks hooks);
  ~Deployer();
  Deployer(const Deployer&) = delete;
  Deployer& operator=(const Deployer&) = delete;

  /// Loads the deployed set and the history. A deployment that was IN_PROGRESS when the last
  /// canopyd died is rolled back to the set before it (configuration included) and marked
  /// FAILED; queued ones are queued again. Then starts every deployed component.
  /// Errors: errc::corrupt / errc::io naming the file (canopyd refuses to start rather than
  /// run a set it cannot read).
  result<void> start();

  /// Queues a deployment; returns its id. Errors (errc::invalid, nothing queued): a recipe or
  /// artifact folder that does not exist or is not readable, an empty deployment.
  result<std::string> submit(const Request& request, nlohmann::json raw);

  std::optional<Record> get(const std::string& id) const;
  std::vector<Record> list() const;
  /// Cancels a QUEUED deployment. Errors: errc::not_found; errc::conflict when it is already
  /// being applied or finished.
  result<std::string> cancel(const std::string& id);

  /// The lifecycle manager's state hook (the nucleus forwards it).
  void on_component_state(const std::string& component, lifecycle::State state);

  /// The components of every group as deployed now: name -> version.
  std::map<std::string, std::string> deployed() const;

  /// A deployment runs now.
  bool busy() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// This device's platform attributes: `os` (linux), `architecture` (amd64, aarch64, arm, x86,
/// as Greengrass names them), `architecture.detail` (uname's machine, e.g. armv7l).
recipe::Platform detect_platform();

}  // namespace canopy::deploy
