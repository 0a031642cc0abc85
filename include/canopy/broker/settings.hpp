//! The local broker's settings (services.canopy.LocalBroker.configuration), their validation,
//! and the Mosquitto 2.0 configuration and ACL files generated from them. Pure: no I/O.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"

namespace canopy::broker {

/// The built-in component's name, as `canopy component list` shows it and as its
/// configuration is stored (`services.canopy.LocalBroker.configuration`).
inline constexpr const char* kComponentName = "canopy.LocalBroker";

/// What one client device (certificate CN = name) may do on the TLS listener.
struct ClientDevice {
  std::vector<std::string> publish;    ///< topic filters it may publish to (ACL `topic write`)
  std::vector<std::string> subscribe;  ///< topic filters it may subscribe to and receive (`topic read`)
  bool operator==(const ClientDevice&) const = default;
};

/// The validated settings. Defaults are those of an absent key.
struct Settings {
  bool enabled = true;
  int local_port = 1883;                    ///< loopback listener, anonymous; 0: none
  int tls_port = 8883;                      ///< mutual-TLS listener for client devices; 0: none
  std::string tls_bind_address = "0.0.0.0"; ///< an IPv4 or IPv6 literal
  std::uint64_t max_queued_messages = 10000;
  std::uint64_t max_queued_bytes = 64ull << 20;  ///< per client; 0: no byte cap
  std::uint64_t max_inflight_messages = 1000;
  bool persistence = true;
  /// caKey: the local CA's key in a TPM (`handle:0x81…` or a TSS2 PEM key file); empty: a
  /// key file `<root>/broker/ca/ca.key` (0600) made at the first start.
  std::string ca_key;
  std::map<std::string, ClientDevice> client_devices;
  bool operator==(const Settings&) const = default;
};

/// Parses and validates the configuration object (null or absent keys take their defaults;
/// unknown keys are ignored, as they may belong to the bridge). Numbers and booleans may also
/// be given as strings ("1883", "true"). Errors: errc::config with a sentence naming the key,
/// e.g. `services.canopy.LocalBroker.configuration.localPort must be an integer from 0 to
/// 65535, not "abc"`.
result<Settings> parse_settings(const nlohmann::json& configuration);

/// True for a client device name the CA will issue a certificate for: [A-Za-z0-9._-]{1,64}.
bool valid_device_name(std::string_view name);

/// Checks an MQTT topic filter for the ACL: not empty, at most 65535 bytes, no NUL, CR or LF,
/// `#` only as the whole last level, `+` only as a whole level. Errors: errc::config naming
/// `where` (e.g. `clientDevices.dev1.publish[0]`).
result<void> check_acl_filter(std::string_view filter, std::string_view where);

/// Where the generated files live (all under `<root>/broker/`).
struct BrokerFiles {
  std::filesystem::path dir;          ///< <root>/broker
  std::filesystem::path conf;         ///< mosquitto.conf
  std::filesystem::path acl;          ///< acl (the TLS listener's acl_file)
  std::filesystem::path ca_dir;       ///< ca/ (ca.key 0600, never readable by mosquitto; ca.crt)
  std::filesystem::path ca_cert;      ///< ca/ca.crt
  std::filesystem::path server_cert;  ///< server.crt
  std::filesystem::path server_key;   ///< server.key
  std::filesystem::path data_dir;     ///< data/ (persistence_location, with a trailing slash)
  static BrokerFiles under(const std::filesystem::path& root);
};

/// The mosquitto.conf text: general options first (per_listener_settings true, user, logging
/// to stdout with timestamps, set_tcp_nodelay, queue and in-flight limits, persistence), then
/// the loopback listener (`listener <localPort> 127.0.0.1`, `allow_anonymous true`) and the TLS
/// listener (`require_certificate true`, `use_identity_as_username true`,
/// `allow_anonymous false`, `acl_file`). Comments are on their own lines only (Mosquitto 2.0
/// reads a trailing `#` as part of the value). `user` is omitted when empty (canopyd not
/// root: Mosquitto then keeps canopyd's user).
std::string render_mosquitto_conf(const Settings& settings, const BrokerFiles& files, const std::string& user);

/// The acl_file text: one `user <name>` section per client device, `topic write <filter>` per
/// publish filter and `topic read <filter>` per subscribe filter. A device that is not listed
/// has no section and therefore no access at all.
std::string render_acl(const Settings& settings);

}  // namespace canopy::broker
