//! Test fixture support: a real canopyd on a temporary root, ready-waiting through
//! NOTIFY_SOCKET (the same READY=1 systemd gets), logs printed when a test fails.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "support/process.hpp"

namespace canopy::test {

std::filesystem::path canopyd_path();
std::filesystem::path canopy_cli_path();

class Canopyd {
 public:
  struct Options {
    /// Written to <dir>/config.yaml and passed with --config. Unless it mentions
    /// canopy.LocalBroker, `services.canopy.LocalBroker.configuration.enabled: false` is added.
    std::optional<std::string> config_yaml;
    std::vector<std::string> extra_args;
    std::map<std::string, std::string> env;
    bool foreground = true;
    bool notify = true;  ///< set NOTIFY_SOCKET to our own socket
    /// With no config_yaml: pass no --config at all (built-in defaults, the local broker on
    /// 1883/8883 included). Otherwise such a canopyd gets a file that disables the broker.
    bool no_config_file = false;
  };

  /// Starts canopyd with `--root <dir>/root`. Does not wait; call wait_ready().
  explicit Canopyd(const std::filesystem::path& dir, Options options);
  /// Stops it (SIGTERM, then SIGKILL after 20 s) and prints its output if the current
  /// test failed.
  ~Canopyd();
  Canopyd(const Canopyd&) = delete;
  Canopyd& operator=(const Canopyd&) = delete;

  /// Waits for READY=1 on the notify socket; false on timeout or if canopyd exited.
  bool wait_ready(std::chrono::milliseconds deadline = std::chrono::seconds(20));
  /// Every notify message received so far (READY=1, STOPPING=1, WATCHDOG=1 ...).
  std::vector<std::string> notifications(std::chrono::milliseconds wait = std::chrono::milliseconds(0));
  /// SIGTERM and wait; the exit code, or nullopt on timeout.
  std::optional<int> stop(std::chrono::milliseconds deadline = std::chrono::seconds(20));

  Process& process() { return *process_; }
  const std::filesystem::path& root() const { return root_; }
  std::filesystem::path config_path() const { return dir_ / "config.yaml"; }
  /// Console output plus logs/canopyd.log.
  std::string logs() const;

 private:
  std::filesystem::path dir_;
  std::filesystem::path root_;
  std::filesystem::path output_;
  int notify_fd_ = -1;
  std::vector<std::string> received_;
  std::unique_ptr<Process> process_;
};

}  // namespace canopy::test
