//! A real Mosquitto broker on a free loopback port, from a generated configuration.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "support/process.hpp"

namespace canopy::test {

class Mosquitto {
 public:
  /// TLS settings of the listener (see mosquitto.conf(5)). File paths are written into the
  /// configuration as given; make them absolute.
  struct Tls {
    std::filesystem::path cafile;    ///< CA(s) that client certificates must chain to
    std::filesystem::path certfile;  ///< the broker's certificate
    std::filesystem::path keyfile;   ///< the broker's private key
    std::filesystem::path crlfile;   ///< optional CRL (PEM) checked against client certificates
    bool require_certificate = true;  ///< clients must present a certificate signed by cafile
    bool use_identity_as_username = false;
    std::string tls_version = "tlsv1.2";  ///< the minimum version (tlsv1.3 | tlsv1.2 | tlsv1.1)
  };

  struct Options {
    /// Extra lines appended after the generated `listener <port> 127.0.0.1` block (and after
    /// the TLS lines when `tls` is set).
    std::string listener_config;
    bool allow_anonymous = true;
    /// When set, the listener speaks TLS only.
    std::optional<Tls> tls;
  };

  /// Starts `mosquitto -c <dir>/mosquitto.conf` on a free port and waits (20 s at most)
  /// until it accepts connections. If the port was taken in the meantime it tries another
  /// one. Throws std::runtime_error, with the broker's log, if it does not come up.
  Mosquitto(const std::filesystem::path& dir, Options options);
  /// Stops the broker by its PID (SIGTERM, then SIGKILL); prints its log if the current
  /// test failed.
  ~Mosquitto();
  Mosquitto(const Mosquitto&) = delete;
  Mosquitto& operator=(const Mosquitto&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return process_->pid(); }
  bool tls() const { return tls_; }
  std::string log() const;
  Process& process() { return *process_; }

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  bool tls_ = false;
  std::unique_ptr<Process> process_;
};

}  // namespace canopy::test
