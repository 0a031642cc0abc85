//! The device's TLS client identity: its X.509 certificate and a private key held in a PEM file
//! or in a TPM 2.0 (OpenSSL 3's tpm2 provider), made into an OpenSSL SSL_CTX for the cloud link.
//!
//! Why a context per identity: Debian 12's tpm2-openssl 1.1.1 must be loaded before the default
//! provider and routes every signature of its library context into the TPM, which breaks file
//! keys and slows everything else down. So a TPM identity gets its own OSSL_LIB_CTX (tpm2, then
//! default, with digests, ciphers and random numbers kept out of the TPM) and its SSL_CTX is
//! made in it; file keys, HTTPS downloads and signature checks stay in the default context.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "canopy/core/error.hpp"

using SSL_CTX = struct ssl_ctx_st;
using EVP_PKEY = struct evp_pkey_st;
using OSSL_LIB_CTX = struct ossl_lib_ctx_st;

namespace canopy::trust {

struct TlsIdentityOptions {
  std::filesystem::path certificate_path;  ///< PEM, the device certificate (chain allowed)
  /// A PEM key file, `handle:0x81xxxxxx` (a persistent TPM key) or a TSS2 PEM key file
  /// ("-----BEGIN TSS2 PRIVATE KEY-----").
  std::string private_key;
  std::filesystem::path root_ca_path;  ///< CAs the server certificate must chain to
  /// The TPM's TCTI for the tpm2 provider (e.g. `device:/dev/tpmrm0`, `tabrmd:bus_type=session`);
  /// empty: TPM2OPENSSL_TCTI from the environment, else the TSS default search.
  std::string tpm_tcti;
  /// ALPN protocol to offer (AWS IoT Core takes MQTT on port 443 with `x-amzn-mqtt-ca`).
  std::string alpn;
};

/// Where the key lives, for status and logs.
enum class KeyStorage { file, tpm_handle, tpm_key_file };

/// A private key from a PEM file, a TPM handle (`handle:0x81…`) or a TSS2 PEM key file, in the
/// library context it must be used in (its own OSSL_LIB_CTX for a TPM key, as explained above;
/// the default context, null, for a file key). Immutable; the key never leaves the TPM.
class PrivateKey {
 public:
  /// Loads the key. A key file (PEM or TSS2) readable by group or others is refused
  /// (check_private_key_file_mode). `tpm_tcti`: as TlsIdentityOptions::tpm_tcti; `what` names
  /// the setting in messages (e.g. "system.privateKeyPath").
  /// Errors: those of TlsIdentity::load that concern the key.
  static result<std::shared_ptr<PrivateKey>> load(const std::string& uri, const std::string& tpm_tcti,
                                                  const std::string& what);
  ~PrivateKey();
  PrivateKey(const PrivateKey&) = delete;
  PrivateKey& operator=(const PrivateKey&) = delete;

  EVP_PKEY* get() const;
  /// The library context to sign in (null: the default one).
  OSSL_LIB_CTX* library_context() const;
  KeyStorage storage() const;
  /// "file /etc/…", "TPM handle 0x81000001", "TPM key file /etc/…".
  const std::string& description() const;

  struct Impl;

 private:
  explicit PrivateKey(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// An SSL_CTX for mutual TLS as this device: TLS 1.2 or later (1.3 with a TPM key: tpm2-openssl
/// 1.1.1 cannot do TLS 1.2 with NIST curves), the server's certificate verified against
/// root_ca_path. Host name checks are per connection (set_peer_host). Immutable, thread-safe.
class TlsIdentity {
 public:
  /// Loads and checks everything, so the operator learns at start-up, not at the first
  /// connect. Errors (each naming the file and what to do):
  /// - errc::config: a key file readable by group or others (with the chmod to run); a file
  ///   that is not a certificate or key; a key that does not match the certificate;
  /// - errc::not_found / errc::io: a missing or unreadable file;
  /// - errc::unsupported: the tpm2 provider is not installed;
  /// - errc::no_connection: the TPM (or its resource manager) cannot be reached, or the handle
  ///   holds no usable key.
  static result<std::shared_ptr<TlsIdentity>> load(const TlsIdentityOptions& options);
  ~TlsIdentity();
  TlsIdentity(const TlsIdentity&) = delete;
  TlsIdentity& operator=(const TlsIdentity&) = delete;

  /// The context; owned by this object. Callers take their own reference (SSL_CTX_up_ref) if
  /// it must outlive the identity.
  SSL_CTX* ssl_context() const;
  KeyStorage key_storage() const;
  /// "file /etc/canopy/device.key", "TPM handle 0x81000001", "TPM key file /etc/…".
  std::string key_description() const;
  /// The certificate's subject and validity, for status and messages.
  std::string certificate_subject() const;
  /// Seconds since the epoch; the certificate is not valid after this.
  std::int64_t certificate_not_after() const;

  struct Impl;

 private:
  explicit TlsIdentity(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// Refuses a private key file that group or others can read (mode & 077), naming the file, its
/// mode and the chmod to run. errc::config; errc::not_found / errc::io if it cannot be checked.
result<void> check_private_key_file_mode(const std::filesystem::path& path);

/// Why the last TLS operation on this thread failed, as one readable sentence built from
/// OpenSSL's error queue (which it empties), e.g. "certificate verify failed (hostname mismatch)".
std::string last_tls_error(const std::string& fallback = "unknown TLS error");

}  // namespace canopy::trust
