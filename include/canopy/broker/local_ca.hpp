//! The local certificate authority of client devices: an EC P-256 CA kept under
//! `<root>/broker/ca/`, the broker's server certificate, and client device certificates.
//! OpenSSL 3 EVP API only (no openssl command line).
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "canopy/core/error.hpp"

namespace canopy::trust {
class PrivateKey;
}

namespace canopy::broker {

/// A certificate and its new private key, both PEM.
struct IssuedCertificate {
  std::string certificate_pem;
  std::string private_key_pem;  ///< PKCS#8, unencrypted
};

/// The local CA. Not thread-safe (used on the services strand).
class LocalCa {
 public:
  /// Loads `<dir>/ca.key` and `<dir>/ca.crt`, or creates them when both are missing: a new
  /// EC P-256 key (file mode 0600) and a self-signed certificate valid 10 years
  /// (basicConstraints critical CA:TRUE, keyUsage critical keyCertSign and cRLSign), subject
  /// `CN=Canopy local CA <host name>`. `dir` is created with mode 0755 (the certificate is public;
  /// the key file's 0600 keeps it from everyone else, Mosquitto included).
  /// Errors: errc::io naming the file; errc::corrupt when one of the two files is missing or
  /// they do not belong together or cannot be parsed (never overwritten: the operator decides).
  ///
  /// With `key` (a key held in a TPM, see trust::PrivateKey): no `ca.key` file is ever written;
  /// `ca.crt` is made from that key when missing, and must belong to it when present. Every
  /// certificate is then signed inside the TPM.
  static result<LocalCa> open_or_create(const std::filesystem::path& dir,
                                        std::shared_ptr<trust::PrivateKey> key = nullptr);

  LocalCa(LocalCa&&) noexcept;
  LocalCa& operator=(LocalCa&&) noexcept;
  ~LocalCa();

  /// The CA certificate, PEM.
  const std::string& certificate_pem() const { return ca_pem_; }

  /// A client device certificate: a new EC P-256 key, CN = `name`, valid `days` days,
  /// keyUsage digitalSignature, extendedKeyUsage clientAuth, signed by the CA.
  /// Errors: errc::invalid for a name outside [A-Za-z0-9._-]{1,64} or days outside 1..3650.
  result<IssuedCertificate> issue_client(const std::string& name, int days) const;

  /// Makes sure `crt`/`key` hold a server certificate of this CA that is valid for at least
  /// `renew_before` more: otherwise issues a new one (new key; CN = first DNS name; SAN = the
  /// DNS names and IP addresses given; extendedKeyUsage serverAuth; valid `days`). Files are
  /// written atomically with mode 0644 (certificate) and 0600 (key; the caller adjusts its
  /// group for Mosquitto). Returns true when it issued a new one.
  /// Errors: errc::io naming the file.
  result<bool> ensure_server_certificate(const std::filesystem::path& crt, const std::filesystem::path& key,
                                         const std::vector<std::string>& dns_names,
                                         const std::vector<std::string>& ip_addresses, int days,
                                         std::chrono::hours renew_before) const;

 private:
  struct Impl;
  explicit LocalCa(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::string ca_pem_;
};

}  // namespace canopy::broker
