//! The nucleus configuration: the YAML file parsed once into typed structs.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <spdlog/common.h>

#include "canopy/core/error.hpp"
#include "canopy/core/log.hpp"

namespace canopy::config {

/// services.canopy.Nucleus.configuration.logging
struct LoggingConfig {
  spdlog::level::level_enum level = spdlog::level::info;
  log::Format format = log::Format::text;
  std::uint64_t file_size_kb = 10240;  ///< fileSizeKB: one log file before rotation
  std::uint32_t max_files = 5;         ///< maxFiles: files kept per log, current included
  std::filesystem::path output_directory;  ///< outputDirectory: empty means <root>/logs
};

/// services.canopy.Nucleus.configuration.mqtt (the cloud link)
struct MqttConfig {
  std::uint16_t port = 8883;
  std::string version = "5";  ///< "5" or "3.1.1"
  std::uint32_t keep_alive_seconds = 60;
  std::uint32_t connect_timeout_seconds = 10;
  /// alpn: offer ALPN `x-amzn-mqtt-ca` (AWS IoT Core's MQTT on port 443)
  bool alpn = false;
  std::uint64_t reconnect_base_ms = 1000;     ///< reconnectBaseMs: first backoff cap, doubled per failure
  std::uint64_t reconnect_max_ms = 120'000;   ///< reconnectMaxMs: the largest backoff cap
  std::uint64_t reconnect_stable_seconds = 60;  ///< reconnectStableSeconds: connected this long resets the backoff
  std::uint32_t max_inflight = 100;           ///< maxInflight: unacknowledged QoS 1 publishes
  std::uint32_t max_publish_rate = 100;       ///< maxPublishRate: publishes per second, 0 = unlimited
  std::string tpm_tcti;  ///< tpmTcti: the TPM's TCTI for TPM keys; empty = TPM2OPENSSL_TCTI or the default
};

enum class WhenFull { reject_new, drop_oldest, drop_qos0_first };
enum class Durability { full, normal };

/// services.canopy.Nucleus.configuration.spooler (the store-and-forward queue)
struct SpoolerConfig {
  std::uint64_t max_size_bytes = 100ull << 20;
  std::uint64_t max_messages = 1'000'000;
  WhenFull when_full = WhenFull::reject_new;
  Durability durability = Durability::full;
  std::uint64_t ttl_seconds = 0;  ///< 0: messages never expire
  std::uint32_t group_commit_messages = 512;   ///< groupCommitMessages: most messages per commit
  std::uint32_t group_commit_interval_ms = 2;  ///< groupCommitIntervalMs: longest wait for more
  /// qos0BypassSpool: QoS 0 PublishToIoTCore goes straight to the cloud while connected (and is
  /// dropped, counted, while not). false: QoS 0 is spooled like QoS 1.
  bool qos0_bypass = false;
  /// liveSharePercent: while a backlog drains, the share of sends for newer messages on topics
  /// with no backlog left (per-topic order is always kept); 0 = strictly oldest first.
  std::uint32_t live_share_percent = 50;
};

/// services.canopy.Nucleus.configuration.runWithDefault
struct RunWithDefault {
  std::string posix_user = "ggc_user:ggc_group";
};

/// services.canopy.Nucleus.configuration.lifecycle (component supervision)
struct LifecycleConfig {
  std::uint32_t broken_after_errors = 3;        ///< brokenAfterErrors: errors within the window that make BROKEN
  std::uint64_t error_reset_seconds = 3600;     ///< errorResetTimeSeconds: the window
  std::uint64_t backoff_initial_ms = 1000;      ///< restartBackoffInitialMs: first retry delay, doubled per error
  std::uint64_t backoff_max_ms = 60'000;        ///< restartBackoffMaxMs
  std::uint64_t stop_grace_seconds = 5;         ///< stopGraceSeconds: SIGTERM to SIGKILL
  std::uint64_t deployment_timeout_seconds = 600;  ///< deploymentTimeoutSeconds: wait for RUNNING/FINISHED
};

/// One entry of deployment.trustedSigners.
struct TrustedSignerConfig {
  std::filesystem::path public_key_path;  ///< publicKeyPath (relative: to the configuration file's folder)
  std::string public_key_pem;             ///< publicKey: the PEM itself
  std::string not_after;                  ///< notAfter: RFC 3339, empty when the key does not expire
  int line = 0;                           ///< where it was configured, for messages
};

/// services.canopy.Nucleus.configuration.deployment: who may sign recipes. Only the
/// configuration file sets it; deployments cannot change it.
struct DeploymentTrustConfig {
  bool require_signatures = false;  ///< requireSignatures (the packaged config.yaml sets true)
  std::vector<TrustedSignerConfig> trusted_signers;  ///< trustedSigners
  std::vector<std::string> revoked_key_ids;          ///< revokedKeyIds (hex SHA-256 key ids)
  std::uint32_t signature_threshold = 1;             ///< signatureThreshold
  std::filesystem::path download_ca_file;            ///< downloadCaFile: CAs for https:// artifacts; empty: the system's
  std::uint64_t max_download_bytes = 1ull << 30;     ///< maxDownloadBytes: the largest artifact downloaded
  std::uint64_t component_store_max_bytes = 10ull << 30;  ///< componentStoreMaxSizeBytes: packages/ cap
};

/// services.canopy.Nucleus.configuration.ipc (the component IPC server)
struct IpcConfig {
  std::string socket_group = "canopy";           ///< socketGroup: group of the 0660 socket and operators
  std::uint32_t max_connections = 1024;          ///< maxConnections
  std::uint32_t max_streams_per_connection = 512;  ///< maxStreamsPerConnection
  std::uint64_t max_frame_payload_bytes = 128 * 1024;  ///< maxFramePayloadBytes
  std::uint64_t max_queued_bytes_per_connection = 4 * 1024 * 1024;  ///< maxQueuedBytesPerConnection
  std::string slow_reader_policy = "drop-oldest";  ///< slowReaderPolicy: drop-oldest or disconnect
  std::uint32_t handshake_timeout_seconds = 10;  ///< handshakeTimeoutSeconds
  /// staticIdentities: name -> token. Fixed IPC identities for integrations and tests; the
  /// token must be at least 16 characters. Components deployed by Canopy get their own.
  std::vector<std::pair<std::string, std::string>> static_identities;
};

/// Everything canopyd reads from its configuration file, with built-in defaults.
struct NucleusConfig {
  // system:
  std::filesystem::path root_path = "/var/lib/canopy";
  std::string thing_name;  ///< empty: the host name
  std::filesystem::path certificate_file_path;
  std::filesystem::path private_key_path;
  std::filesystem::path root_ca_path;
  std::filesystem::path ipc_socket_path;  ///< empty: <root>/ipc.socket

  // services.canopy.Nucleus.configuration:
  std::string aws_region;
  std::string iot_data_endpoint;  ///< empty: no cloud link
  std::chrono::seconds shutdown_timeout{30};
  LoggingConfig logging;
  MqttConfig mqtt;
  SpoolerConfig spooler;
  RunWithDefault run_with_default;
  LifecycleConfig lifecycle;
  DeploymentTrustConfig deployment;
  IpcConfig ipc;

  /// services other than canopy.Nucleus (component configurations), kept as JSON for
  /// the configuration store.
  nlohmann::json other_services = nlohmann::json::object();
};

/// A parsed configuration and the warnings (unknown keys) found on the way.
struct Loaded {
  NucleusConfig config;
  std::vector<std::string> warnings;
};

/// Parses configuration text. `file_name` is used in messages only.
/// Unknown keys become warnings (`config.yaml:7: system.rootPth: unknown key, ignored`).
/// Errors (errc::config): every wrong type or value, one per line, each as
/// `config.yaml:12: services.canopy.Nucleus.configuration.logging.level: expected one of
/// trace, debug, info, warn, error, got "loud"`; YAML syntax errors with line and column.
result<Loaded> parse(std::string_view text, std::string_view file_name);

/// Reads and parses a file. Errors: errc::not_found / errc::io naming the file, or parse()'s.
result<Loaded> load_file(const std::filesystem::path& path);

/// Canonical names, for messages and `canopy config`.
std::string_view to_string(WhenFull v);
std::string_view to_string(Durability v);

}  // namespace canopy::config
