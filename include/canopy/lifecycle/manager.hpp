//! The component lifecycle manager: one Greengrass state machine per component
//! (NEW, INSTALLED, STARTING, RUNNING, STOPPING, FINISHED, ERRORED, BROKEN), its steps,
//! timeouts, recovery with backoff, the BROKEN policy, and dependency ordering.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"
#include "canopy/core/paths.hpp"
#include "canopy/lifecycle/process.hpp"
#include "canopy/recipe/recipe.hpp"

namespace canopy::config {
class ConfigStore;
}

namespace canopy::lifecycle {

enum class State { new_, installed, starting, running, stopping, finished, errored, broken };

/// `NEW`, `INSTALLED`, ... (Greengrass's LifecycleState spelling).
std::string_view to_string(State s);

/// What a deployment decided about one component.
struct ComponentSpec {
  std::string name;
  std::string version;
  recipe::Lifecycle lifecycle;                   ///< the selected lifecycle, before interpolation
  std::vector<recipe::Dependency> dependencies;  ///< direct dependencies
  std::string posix_user;                        ///< RunWith posixUser; empty: the default
  ResourceLimits limits;
  /// Changes whenever anything that requires a reinstall changes (version, recipe text, run-as
  /// user, limits). Components whose fingerprint is unchanged keep running across deployments.
  std::string fingerprint;
};

/// The settings of the manager (from the nucleus configuration).
struct ManagerSettings {
  RootLayout layout;
  std::string thing_name;
  std::string region;
  std::string ggc_version;
  std::filesystem::path socket_path;
  std::filesystem::path root_ca_path;
  std::string default_posix_user = "ggc_user:ggc_group";
  std::uint64_t log_file_bytes = 10u << 20;
  std::uint32_t log_files = 5;
  std::uint32_t broken_after_errors = 3;              ///< lifecycle.brokenAfterErrors
  std::chrono::seconds error_window{3600};            ///< lifecycle.errorResetTimeSeconds
  std::chrono::milliseconds backoff_initial{1000};    ///< lifecycle.restartBackoffInitialMs
  std::chrono::milliseconds backoff_max{60'000};      ///< lifecycle.restartBackoffMaxMs
  std::chrono::milliseconds stop_grace{5'000};        ///< SIGTERM to SIGKILL
  Cgroups* cgroups = nullptr;  ///< resource limits; null or unavailable: limits are logged as not applied
};

/// What the lifecycle manager calls out to.
struct ManagerHooks {
  /// A fresh IPC token (SVCUID) for the component, bound to the uid it runs as.
  std::function<std::string(const std::string& component, uid_t uid)> issue_token;
  /// The component is gone: forget its token.
  std::function<void(const std::string& component)> revoke_token;
  /// Every state change, after it happened.
  std::function<void(const std::string& component, State state)> on_state;
  /// The component runs with primary group `gid`: let that group connect to the IPC socket
  /// (canopyd adds a POSIX ACL entry; components never get the operators' group, whose
  /// members can read the CLI token).
  std::function<void(gid_t gid)> allow_socket_group;
  /// A Bootstrap step exited 100 (restart canopyd) or 101 (reboot the device).
  std::function<void(const std::string& component, int code)> on_bootstrap_restart;
};

/// A component as `canopy component list/details` shows it.
struct ComponentInfo {
  std::string name;
  std::string version;
  State state = State::new_;
  std::string status_code;    ///< INSTALL_TIMEOUT, STARTUP_ERROR, ... empty when healthy
  std::string status_reason;  ///< a sentence: why it is ERRORED/BROKEN/FINISHED
  pid_t pid = 0;              ///< the Run/Startup process group, 0 when none
  std::uint32_t restart_count = 0;
  std::uint32_t recent_errors = 0;
  bool paused = false;
  bool desired_running = true;
  std::vector<std::string> dependencies;
};

/// Runs components. Lives on one executor (the services strand): every method must be called
/// there, and every callback and hook runs there.
class Manager {
 public:
  Manager(boost::asio::any_io_executor executor, ManagerSettings settings, config::ConfigStore& store,
          Launcher& launcher, ProcessTable& processes, ManagerHooks hooks);
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  /// Checks what a deployment would hand to update() without changing anything: the run-as
  /// users exist, there is no dependency cycle (the cycle is named: `a -> b -> a`), every
  /// dependency is in the set, and each lifecycle interpolates with the proposed
  /// configuration (`configuration` is each component's configuration as it would be).
  result<void> check(const std::vector<ComponentSpec>& target,
                     const std::map<std::string, nlohmann::json>& configuration) const;

  /// Makes `target` the set of components: stops (in reverse dependency order) the ones that
  /// are not in it any more and the ones whose fingerprint changed, then starts the new and
  /// changed ones (Bootstrap, Install, then Startup/Run in dependency order). Unchanged
  /// components keep running; a BROKEN one is cleared and started again, as a redeployment
  /// does in Greengrass. `stopped` runs once every stop has finished and the starts are under
  /// way. Errors: check()'s, before anything changes.
  /// `from_deployment` is false when canopyd starts the deployed set at start-up: Bootstrap
  /// steps run only when a deployment installs or changes a component.
  result<void> update(std::vector<ComponentSpec> target, std::function<void()> stopped, bool from_deployment = true);

  /// Stops every component in reverse dependency order (canopyd shutdown); `done` runs after.
  void stop_all(std::function<void()> done);

  /// `canopy component restart`: stops (Shutdown step, SIGTERM, SIGKILL) and starts again;
  /// clears BROKEN. Errors: errc::not_found.
  result<void> restart(const std::string& name);
  /// `canopy component stop`: stops it and keeps it stopped (FINISHED) until restart or
  /// redeployment. Errors: errc::not_found.
  result<void> stop(const std::string& name);
  /// SIGSTOP / SIGCONT of its process groups. Errors: errc::not_found, errc::conflict when
  /// it is not RUNNING (pause) or not paused (resume).
  result<void> pause(const std::string& name);
  result<void> resume(const std::string& name);

  /// A component's UpdateState (RUNNING or ERRORED).
  void report_state(const std::string& name, std::string_view state);

  std::vector<ComponentInfo> list() const;
  std::optional<ComponentInfo> get(const std::string& name) const;
  std::optional<State> state(const std::string& name) const;

  /// The names in dependency order (dependencies first). Errors: errc::invalid naming a cycle.
  static result<std::vector<std::string>> order(const std::vector<ComponentSpec>& specs);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace canopy::lifecycle
