//! The managed local MQTT broker, built-in component `canopy.LocalBroker`: Mosquitto started
//! through the Launcher with a generated configuration, supervised (restart with backoff),
//! reconfigured when services.canopy.LocalBroker.configuration changes, stopped at shutdown.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include "canopy/broker/local_ca.hpp"
#include "canopy/broker/settings.hpp"
#include "canopy/core/error.hpp"
#include "canopy/core/paths.hpp"
#include "canopy/lifecycle/manager.hpp"

namespace canopy::config {
class ConfigStore;
}
namespace canopy::lifecycle {
class Launcher;
class ProcessTable;
}  // namespace canopy::lifecycle

namespace canopy::broker {

/// Fixed parameters of the supervisor (not user settings).
struct LocalBrokerOptions {
  RootLayout layout;
  std::string version;                    ///< shown as the component's version
  std::filesystem::path mosquitto;        ///< the binary; empty: /usr/sbin/mosquitto, else $PATH
  std::uint64_t log_file_bytes = 10u << 20;
  std::uint32_t log_files = 5;
  std::chrono::milliseconds stop_grace{5'000};       ///< SIGTERM to SIGKILL
  std::chrono::milliseconds ready_timeout{15'000};   ///< until every port accepts connections
  std::chrono::milliseconds backoff_initial{1'000};  ///< first restart delay, doubling
  std::chrono::milliseconds backoff_max{60'000};
  std::chrono::milliseconds stable{60'000};          ///< up this long: the backoff starts over
  std::string tpm_tcti;  ///< for a caKey in the TPM (mqtt.tpmTcti); empty: TPM2OPENSSL_TCTI or the default
};

/// The supervisor. Lives on one executor (the services strand): every method must be called
/// there and every callback runs there. `store`, `launcher` and `processes` must outlive it.
///
/// States: STARTING (spawned, ports not yet accepting), RUNNING, ERRORED (mosquitto exited;
/// a restart is scheduled with backoff 1 s doubling to 60 s, reset after 60 s up), BROKEN
/// (invalid configuration, a taken port, files that cannot be written, no mosquitto binary:
/// nothing is retried until the configuration changes or the operator restarts it),
/// FINISHED (enabled: false, or stopped at shutdown).
class LocalBroker {
 public:
  LocalBroker(boost::asio::any_io_executor executor, LocalBrokerOptions options, config::ConfigStore& store,
              lifecycle::Launcher& launcher, lifecycle::ProcessTable& processes);
  ~LocalBroker();
  LocalBroker(const LocalBroker&) = delete;
  LocalBroker& operator=(const LocalBroker&) = delete;

  /// Reads the settings and starts Mosquitto (asynchronously); subscribes to configuration
  /// changes (a change regenerates the files and restarts the broker, unless they come out
  /// identical). Problems are states with reasons, never errors: canopyd keeps running.
  void start();

  /// Stops Mosquitto for good (SIGTERM to its process group, SIGKILL after stop_grace) and
  /// calls `done` once it is gone (at once when nothing runs). Used at canopyd shutdown,
  /// after the components stopped.
  void stop(std::function<void()> done);

  /// `canopy component restart canopy.LocalBroker`: stops Mosquitto if it runs and starts it
  /// again with the current settings; clears BROKEN and the backoff.
  void restart();

  /// The component as `canopy component list/details` shows it.
  lifecycle::ComponentInfo info() const;

  /// The `broker` object of `canopy status --json`: state, enabled, localPort, tlsPort,
  /// tlsBindAddress, pid, restarts, lastError (absent when none).
  nlohmann::json status() const;

  /// A client device certificate of the local CA (created on first use) and the CA
  /// certificate. Errors: errc::invalid (name, days); the CA's errors.
  result<nlohmann::json> issue_client_certificate(const std::string& name, int days);

  /// Whether a TCP listener could bind `address`:`port` now (SO_REUSEADDR, as Mosquitto does).
  /// Errors: errc::busy with a sentence naming the port, the address and the likely culprit.
  static result<void> check_port(const std::string& address, int port);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace canopy::broker
