//! The test PKI made by tests/pki/gen.sh (file names documented at the top of that script).
#pragma once

#include <filesystem>
#include <string>

#include "support/mosquitto.hpp"

namespace canopy::test {

/// tests/pki/gen.sh in the source tree.
std::filesystem::path pki_script_path();

class TestPki {
 public:
  /// A certificate and its key, e.g. {dir/"client-expired.crt", dir/"client-expired.key"}.
  struct Pair {
    std::filesystem::path crt;
    std::filesystem::path key;
  };

  /// Runs gen.sh into `dir` (created if missing). Throws std::runtime_error with the
  /// script's output if it fails.
  explicit TestPki(const std::filesystem::path& dir);

  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path file(const std::string& name) const { return dir_ / name; }
  /// `<name>.crt` and `<name>.key`: "ca", "server", "server-wrong-host", "client",
  /// "client-expired", "client-not-yet-valid", "client-revoked", "client-wrong-ca",
  /// "client-fake-ca", "wrong-ca", "fake-ca".
  Pair pair(const std::string& name) const { return {dir_ / (name + ".crt"), dir_ / (name + ".key")}; }
  std::filesystem::path ca() const { return dir_ / "ca.crt"; }
  std::filesystem::path crl() const { return dir_ / "crl.pem"; }

  /// A TLS listener for Mosquitto: trusts ca.crt, serves `server_cert` (a pair name),
  /// requires client certificates; with `with_crl`, also checks crl.pem.
  Mosquitto::Tls broker_tls(const std::string& server_cert = "server", bool with_crl = false) const;

 private:
  std::filesystem::path dir_;
};

}  // namespace canopy::test
