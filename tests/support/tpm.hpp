//! A real software TPM 2.0 stack for tests: swtpm (TCP, free loopback ports), a private D-Bus
//! session bus, tpm2-abrmd as resource manager, and provisioned keys. Follows the recipe in
//! docs/notes "tpm-and-tls.md" §1.a; every child is started with Process (tracked by PID).
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "support/pki.hpp"
#include "support/process.hpp"

namespace canopy::test {

class SoftwareTpm {
 public:
  /// Empty when everything needed is installed; otherwise which binary, TCTI library or
  /// OpenSSL provider is missing. Tests call GTEST_SKIP() << reason when it is non-empty.
  static std::string unavailable_reason();

  /// Brings up the stack in `dir` (created if missing) and provisions it:
  ///  - `swtpm_setup` into <dir>/tpmstate with EK certificates; its local CA state and its
  ///    configuration live in <dir>/swtpm-config and <dir>/localca (not in /var/lib or ~),
  ///  - `swtpm socket` on two free consecutive 127.0.0.1 ports, server P and control P+1 (the
///    swtpm TCTI always uses P+1); retried if a port was taken meanwhile,
  ///  - `dbus-daemon` with a generated config (no service activation) on <dir>/dbus.sock,
  ///  - `tpm2-abrmd --session --allow-root` on that bus, talking to swtpm,
  ///  - ECC P-256 storage primary persisted at 0x81000000, ECDSA P-256 signing key persisted
  ///    at 0x81000001 (public half in device_public_key_pem()), and a TSS2 PEM key made by
  ///    `openssl genpkey -provider tpm2` under 0x81000000.
  /// Every wait has a deadline (each step 20-60 s). Throws std::runtime_error with the logs
  /// of the failing step; whatever already runs is stopped by the destructors of the members.
  explicit SoftwareTpm(const std::filesystem::path& dir);
  /// Stops tpm2-abrmd, dbus-daemon and swtpm, in that order, by PID: SIGTERM, then SIGKILL
  /// after 5 s, and reaps them. Prints the logs if the current test failed.
  ~SoftwareTpm();
  SoftwareTpm(const SoftwareTpm&) = delete;
  SoftwareTpm& operator=(const SoftwareTpm&) = delete;

  /// The TCTI of the resource manager: "tabrmd:bus_type=session" (needs environment()).
  std::string tcti() const { return "tabrmd:bus_type=session"; }
  /// What a child process needs to reach the TPM: DBUS_SESSION_BUS_ADDRESS (our private
  /// bus), TPM2OPENSSL_TCTI and TPM2TOOLS_TCTI. Pass it as Process::Spec::env,
  /// run_command(..., env) or Canopyd::Options::env. Deliberately no OPENSSL_CONF: loading
  /// tpm2 globally breaks file keys in the same library context (notes, pitfall 5).
  std::map<std::string, std::string> environment() const;
  /// environment() plus OPENSSL_CONF=openssl_config(), for openssl CLI runs that use a TPM
  /// key (s_client, mosquitto_pub with a TSS2 PEM key). Do NOT add `-provider tpm2
  /// -provider default` on top: with both, s_client's CertificateVerify fails with
  /// "ossl_ecdsa_simple_sign_sig: missing private key" (observed with tpm2-openssl 1.1.1).
  /// `-provider tpm2 -provider default` alone (environment()) works too, but about 5x slower
  /// (digests then run in the TPM, pitfall 6).
  std::map<std::string, std::string> openssl_environment() const;
  /// An OpenSSL config that activates tpm2 then default and sets the default properties
  /// "tpm2.digest!=yes,tpm2.cipher!=yes,tpm2.rand!=yes" (tpm2-openssl 1.1.1, pitfalls 4 and 6).
  std::filesystem::path openssl_config() const { return dir_ / "tpm2-openssl.cnf"; }

  /// The persistent device key, "handle:0x81000001".
  std::string handle_uri() const { return "handle:0x81000001"; }
  /// The persistent storage parent, "0x81000000".
  std::string parent_handle() const { return "0x81000000"; }
  /// The TSS2 PEM key file ("-----BEGIN TSS2 PRIVATE KEY-----"), child of parent_handle().
  std::filesystem::path tss2_key_path() const { return dir_ / "keys" / "device.tss2.pem"; }
  /// The public half of handle_uri() as PEM (tpm2_readpublic -f pem).
  std::filesystem::path device_public_key_pem() const { return dir_ / "keys" / "device.pub.pem"; }

  /// Makes a client certificate for a TPM key: a CSR with `openssl req -provider tpm2
  /// -provider default -new -key <key_uri> -subj /CN=<cn>` (TPM environment), signed with the
  /// test CA (pki ca.crt / ca.key, default provider only) with basicConstraints CA:false,
  /// keyUsage critical digitalSignature and extendedKeyUsage clientAuth, valid 30 days.
  /// `key_uri` is handle_uri(), tss2_key_path() or any other form the provider loads.
  /// Throws std::runtime_error with the tool output on failure.
  void make_certificate(const std::string& key_uri, const std::string& cn, const TestPki& pki,
                        const std::filesystem::path& out_crt) const;

  /// How long the constructor took (setup, daemons, provisioning).
  std::chrono::milliseconds startup_time() const { return startup_time_; }
  int swtpm_port() const { return server_port_; }
  int swtpm_ctrl_port() const { return ctrl_port_; }
  const std::filesystem::path& dir() const { return dir_; }
  /// swtpm_setup, swtpm, dbus-daemon and tpm2-abrmd output, for diagnostics.
  std::string logs() const;

 private:
  void setup_state();
  void start_swtpm();
  void start_dbus();
  void start_abrmd();
  void provision();
  /// run_command with environment(); throws with the output unless it exits 0.
  std::string run_checked(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                          const std::string& what) const;

  std::filesystem::path dir_;
  int server_port_ = 0;
  int ctrl_port_ = 0;
  std::chrono::milliseconds startup_time_{0};
  // Declared in start order: destroyed (killed) in reverse if the constructor throws.
  std::unique_ptr<Process> swtpm_;
  std::unique_ptr<Process> dbus_;
  std::unique_ptr<Process> abrmd_;
};

}  // namespace canopy::test
