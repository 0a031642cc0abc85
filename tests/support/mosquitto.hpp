//! A real Mosquitto broker on a free loopback port, from a generated configuration.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "support/process.hpp"

namespace canopy::test {

class Mosquitto {
 public:
  struct Options {
    /// Extra lines appended after the generated `listener <port> 127.0.0.1` block,
    /// e.g. TLS settings (cafile, certfile, keyfile, require_certificate true).
    std::string listener_config;
    bool allow_anonymous = true;
  };
  /// Starts `mosquitto -c <dir>/mosquitto.conf` on a free port and waits (20 s at most)
  /// until it accepts connections. Throws std::runtime_error, with the broker's log, if
  /// it does not come up.
  Mosquitto(const std::filesystem::path& dir, Options options);
  /// Kills the broker by PID; prints its log if the current test failed.
  ~Mosquitto();
  Mosquitto(const Mosquitto&) = delete;
  Mosquitto& operator=(const Mosquitto&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return process_->pid(); }
  std::string log() const;
  Process& process() { return *process_; }

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace canopy::test
