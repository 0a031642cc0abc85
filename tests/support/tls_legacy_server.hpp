//! A TLS server that offers ONLY TLS 1.1 (openssl s_server -tls1_1 at security level 0), for
//! tests proving that clients refuse legacy protocol versions.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "support/pki.hpp"
#include "support/process.hpp"

namespace canopy::test {

/// `openssl s_server -accept 127.0.0.1:<free port> -tls1_1 -cipher DEFAULT:@SECLEVEL=0
/// -cert <pair>.crt -key <pair>.key -www`, run as a Process in `dir`.
///
/// Observed with OpenSSL 3.0 (Debian 12):
///  - a default client (`openssl s_client`, TLS 1.0..1.3 offered, security level 1+) fails
///    with "legacy sigalg disallowed or unsupported" (TLS 1.1 signs with MD5+SHA1);
///  - a client with a TLS 1.2 minimum (what Canopy uses), or TLS 1.3 only, gets a
///    protocol_version alert (70) from the server ("tlsv1 alert protocol version"; the server
///    logs "unsupported protocol");
///  - `s_client -tls1_1 -cipher DEFAULT:@SECLEVEL=0` connects (TLSv1.1, ECDHE-ECDSA-AES256-SHA).
/// -www answers each connection on its own (no stdin interaction) and keeps serving after
/// failed handshakes.
class LegacyTlsServer {
 public:
  /// Starts the server and waits (20 s at most) until its port accepts; retries with another
  /// port if the chosen one was taken meanwhile. Throws std::runtime_error with its output.
  LegacyTlsServer(const TestPki& pki, const std::filesystem::path& dir, const std::string& cert = "server");
  /// Stops the server by PID (SIGTERM, then SIGKILL after 5 s).
  ~LegacyTlsServer();
  LegacyTlsServer(const LegacyTlsServer&) = delete;
  LegacyTlsServer& operator=(const LegacyTlsServer&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return process_->pid(); }
  /// The server's stdout/stderr (handshake errors are logged there).
  std::string log() const;

 private:
  std::filesystem::path dir_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace canopy::test
