#include "canopy/config/nucleus_config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace canopy::config {
namespace {
using ::testing::HasSubstr;

TEST(NucleusConfig, EmptyDocumentGivesTheBuiltInDefaults) {
  auto r = parse("", "config.yaml");
  ASSERT_TRUE(r) << r.error().message;
  const NucleusConfig& c = r->config;
  EXPECT_EQ(c.root_path, "/var/lib/canopy");
  EXPECT_EQ(c.thing_name, "");
  EXPECT_EQ(c.logging.level, spdlog::level::info);
  EXPECT_EQ(c.logging.format, log::Format::text);
  EXPECT_EQ(c.logging.file_size_kb, 10240u);
  EXPECT_EQ(c.logging.max_files, 5u);
  EXPECT_EQ(c.mqtt.port, 8883);
  EXPECT_EQ(c.mqtt.version, "5");
  EXPECT_EQ(c.mqtt.keep_alive_seconds, 60u);
  EXPECT_EQ(c.spooler.max_size_bytes, 100ull << 20);
  EXPECT_EQ(c.spooler.max_messages, 1'000'000u);
  EXPECT_EQ(c.spooler.when_full, WhenFull::reject_new);
  EXPECT_EQ(c.spooler.durability, Durability::full);
  EXPECT_EQ(c.spooler.ttl_seconds, 0u);
  EXPECT_EQ(c.run_with_default.posix_user, "ggc_user:ggc_group");
  EXPECT_EQ(c.shutdown_timeout, std::chrono::seconds(30));
  EXPECT_TRUE(r->warnings.empty());
}

TEST(NucleusConfig, EveryKeyIsParsed) {
  const char* text = R"(
system:
  rootPath: /srv/canopy
  thingName: gw-7
  certificateFilePath: /etc/canopy/device.pem.crt
  privateKeyPath: handle:0x81000002
  rootCaPath: /etc/canopy/AmazonRootCA1.pem
  ipcSocketPath: /run/canopy/ipc.socket
services:
  canopy.Nucleus:
    version: 0.1.0
    configuration:
      awsRegion: eu-west-1
      iotDataEndpoint: abc-ats.iot.eu-west-1.amazonaws.com
      shutdownTimeoutSeconds: 12
      logging:
        level: debug
        format: json
        fileSizeKB: 2048
        maxFiles: 3
        outputDirectory: /var/log/canopy
      mqtt:
        port: 443
        version: 3.1.1
        keepAliveSeconds: 30
        connectTimeoutSeconds: 5
      spooler:
        maxSizeInBytes: 1048576
        maxMessages: 5000
        whenFull: drop-qos0-first
        durability: normal
        ttlSeconds: 86400
      runWithDefault:
        posixUser: app:apps
  com.example.Hello:
    configuration:
      greeting: hi
)";
  auto r = parse(text, "config.yaml");
  ASSERT_TRUE(r) << r.error().message;
  const NucleusConfig& c = r->config;
  EXPECT_EQ(c.root_path, "/srv/canopy");
  EXPECT_EQ(c.thing_name, "gw-7");
  EXPECT_EQ(c.certificate_file_path, "/etc/canopy/device.pem.crt");
  EXPECT_EQ(c.private_key_path, "handle:0x81000002");
  EXPECT_EQ(c.root_ca_path, "/etc/canopy/AmazonRootCA1.pem");
  EXPECT_EQ(c.ipc_socket_path, "/run/canopy/ipc.socket");
  EXPECT_EQ(c.aws_region, "eu-west-1");
  EXPECT_EQ(c.iot_data_endpoint, "abc-ats.iot.eu-west-1.amazonaws.com");
  EXPECT_EQ(c.shutdown_timeout, std::chrono::seconds(12));
  EXPECT_EQ(c.logging.level, spdlog::level::debug);
  EXPECT_EQ(c.logging.format, log::Format::json);
  EXPECT_EQ(c.logging.file_size_kb, 2048u);
  EXPECT_EQ(c.logging.max_files, 3u);
  EXPECT_EQ(c.logging.output_directory, "/var/log/canopy");
  EXPECT_EQ(c.mqtt.port, 443);
  EXPECT_EQ(c.mqtt.version, "3.1.1");
  EXPECT_EQ(c.mqtt.keep_alive_seconds, 30u);
  EXPECT_EQ(c.mqtt.connect_timeout_seconds, 5u);
  EXPECT_EQ(c.spooler.max_size_bytes, 1048576u);
  EXPECT_EQ(c.spooler.max_messages, 5000u);
  EXPECT_EQ(c.spooler.when_full, WhenFull::drop_qos0_first);
  EXPECT_EQ(c.spooler.durability, Durability::normal);
  EXPECT_EQ(c.spooler.ttl_seconds, 86400u);
  EXPECT_EQ(c.run_with_default.posix_user, "app:apps");
  EXPECT_EQ(c.other_services["com.example.Hello"]["configuration"]["greeting"], "hi");
  EXPECT_TRUE(r->warnings.empty());
}

TEST(NucleusConfig, IpcKeysAreParsed) {
  auto r = parse(R"(
services:
  canopy.Nucleus:
    configuration:
      ipc:
        socketGroup: operators
        maxConnections: 300
        maxStreamsPerConnection: 20
        maxFramePayloadBytes: 65536
        maxQueuedBytesPerConnection: 1048576
        slowReaderPolicy: disconnect
        handshakeTimeoutSeconds: 3
        staticIdentities:
          com.example.A: token-a-0123456789abcdef
)",
                 "config.yaml");
  ASSERT_TRUE(r) << r.error().message;
  const IpcConfig& ipc = r->config.ipc;
  EXPECT_EQ(ipc.socket_group, "operators");
  EXPECT_EQ(ipc.max_connections, 300u);
  EXPECT_EQ(ipc.max_streams_per_connection, 20u);
  EXPECT_EQ(ipc.max_frame_payload_bytes, 65536u);
  EXPECT_EQ(ipc.max_queued_bytes_per_connection, 1048576u);
  EXPECT_EQ(ipc.slow_reader_policy, "disconnect");
  EXPECT_EQ(ipc.handshake_timeout_seconds, 3u);
  ASSERT_EQ(ipc.static_identities.size(), 1u);
  EXPECT_EQ(ipc.static_identities[0].first, "com.example.A");
  EXPECT_EQ(ipc.static_identities[0].second, "token-a-0123456789abcdef");
  auto defaults = parse("", "c.yaml");
  ASSERT_TRUE(defaults);
  EXPECT_EQ(defaults->config.ipc.socket_group, "canopy");
  EXPECT_EQ(defaults->config.ipc.max_frame_payload_bytes, 128u * 1024);
  EXPECT_EQ(defaults->config.ipc.slow_reader_policy, "drop-oldest");
}

TEST(NucleusConfig, CloudLinkAndSpoolerKeys) {
  auto r = parse(
      "services:\n  canopy.Nucleus:\n    configuration:\n      mqtt:\n        alpn: true\n"
      "        reconnectBaseMs: 50\n        reconnectMaxMs: 5000\n        reconnectStableSeconds: 5\n"
      "        maxInflight: 7\n        maxPublishRate: 0\n        tpmTcti: device:/dev/tpmrm0\n"
      "      spooler:\n        groupCommitMessages: 64\n        groupCommitIntervalMs: 0\n"
      "        qos0BypassSpool: true\n        liveSharePercent: 0\n",
      "c.yaml");
  ASSERT_TRUE(r) << r.error().message;
  const auto& c = r->config;
  EXPECT_TRUE(c.mqtt.alpn);
  EXPECT_EQ(c.mqtt.reconnect_base_ms, 50u);
  EXPECT_EQ(c.mqtt.reconnect_max_ms, 5000u);
  EXPECT_EQ(c.mqtt.reconnect_stable_seconds, 5u);
  EXPECT_EQ(c.mqtt.max_inflight, 7u);
  EXPECT_EQ(c.mqtt.max_publish_rate, 0u);
  EXPECT_EQ(c.mqtt.tpm_tcti, "device:/dev/tpmrm0");
  EXPECT_EQ(c.spooler.group_commit_messages, 64u);
  EXPECT_EQ(c.spooler.group_commit_interval_ms, 0u);
  EXPECT_TRUE(c.spooler.qos0_bypass);
  EXPECT_EQ(c.spooler.live_share_percent, 0u);

  auto bad = parse("services:\n  canopy.Nucleus:\n    configuration:\n      mqtt:\n        alpn: maybe\n"
                   "        maxInflight: 0\n      spooler:\n        liveSharePercent: 150\n",
                   "c.yaml");
  ASSERT_FALSE(bad);
  EXPECT_THAT(bad.error().message, ::testing::HasSubstr("c.yaml:5: services.canopy.Nucleus.configuration.mqtt.alpn: expected true or false, got \"maybe\""));
  EXPECT_THAT(bad.error().message, ::testing::HasSubstr("mqtt.maxInflight"));
  EXPECT_THAT(bad.error().message, ::testing::HasSubstr("spooler.liveSharePercent"));
}

TEST(NucleusConfig, TheAnnotatedSampleParsesWithoutWarnings) {
  auto r = load_file(std::string(CANOPY_SOURCE_DIR) + "/config/config.yaml");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_TRUE(r->warnings.empty()) << r->warnings.front();
}

TEST(NucleusConfig, NullValuesKeepDefaults) {
  auto r = parse("system:\n  thingName:\nservices:\n  canopy.Nucleus:\n    configuration:\n      logging:\n", "c.yaml");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->config.logging.level, spdlog::level::info);
}

TEST(NucleusConfig, UnknownKeysAreWarningsWithLineAndPath) {
  auto r = parse("system:\n  thingName: a\n  rootPth: /x\nextra: 1\n", "config.yaml");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->warnings.size(), 2u);
  EXPECT_EQ(r->warnings[0], "config.yaml:3: system.rootPth: unknown key, ignored");
  EXPECT_EQ(r->warnings[1], "config.yaml:4: extra: unknown key, ignored");
}

struct BadCase {
  const char* name;
  const char* yaml;
  const char* message;
};

class BadConfig : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadConfig, IsRejectedWithFileLineKeyPathAndExpectation) {
  auto r = parse(GetParam().yaml, "config.yaml");
  ASSERT_FALSE(r) << "accepted: " << GetParam().yaml;
  EXPECT_EQ(r.error().code, errc::config);
  EXPECT_THAT(r.error().message, HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Cases, BadConfig,
    ::testing::Values(
        BadCase{"level", "services:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        level: loud\n",
                "config.yaml:5: services.canopy.Nucleus.configuration.logging.level: expected one of trace, debug, "
                "info, warn, error, got \"loud\""},
        BadCase{"format", "services:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        format: xml\n",
                "config.yaml:5: services.canopy.Nucleus.configuration.logging.format: expected one of text, json, got "
                "\"xml\""},
        BadCase{"fileSizeNotNumber",
                "services:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        fileSizeKB: big\n",
                "config.yaml:5: services.canopy.Nucleus.configuration.logging.fileSizeKB: expected a number of KiB "
                "from 1 to 4194304, got \"big\""},
        BadCase{"maxFilesZero", "services:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        maxFiles: 0\n",
                "logging.maxFiles: expected an integer from 1 to 1000, got \"0\""},
        BadCase{"negativePort", "services:\n  canopy.Nucleus:\n    configuration:\n      mqtt:\n        port: -1\n",
                "config.yaml:5: services.canopy.Nucleus.configuration.mqtt.port: expected an integer from 1 to 65535"},
        BadCase{"portTooBig", "services:\n  canopy.Nucleus:\n    configuration:\n      mqtt:\n        port: 70000\n",
                "mqtt.port: expected an integer from 1 to 65535, got \"70000\""},
        BadCase{"mqttVersion", "services:\n  canopy.Nucleus:\n    configuration:\n      mqtt:\n        version: 4\n",
                "mqtt.version: expected one of 5, 3.1.1, got \"4\""},
        BadCase{"whenFull", "services:\n  canopy.Nucleus:\n    configuration:\n      spooler:\n        whenFull: panic\n",
                "spooler.whenFull: expected one of reject-new, drop-oldest, drop-qos0-first, got \"panic\""},
        BadCase{"durability",
                "services:\n  canopy.Nucleus:\n    configuration:\n      spooler:\n        durability: maybe\n",
                "spooler.durability: expected one of full, normal, got \"maybe\""},
        BadCase{"spoolTooSmall",
                "services:\n  canopy.Nucleus:\n    configuration:\n      spooler:\n        maxSizeInBytes: 10\n",
                "spooler.maxSizeInBytes: expected a number of bytes from 4096"},
        BadCase{"posixUserEmptyGroup",
                "services:\n  canopy.Nucleus:\n    configuration:\n      runWithDefault:\n        posixUser: \"app:\"\n",
                "runWithDefault.posixUser: expected user or user:group, got \"app:\""},
        BadCase{"posixUserTwoColons",
                "services:\n  canopy.Nucleus:\n    configuration:\n      runWithDefault:\n        posixUser: a:b:c\n",
                "expected user or user:group, got \"a:b:c\""},
        BadCase{"systemNotMap", "system: 5\n", "config.yaml:1: system: expected a mapping of keys, got \"5\""},
        BadCase{"loggingIsList", "services:\n  canopy.Nucleus:\n    configuration:\n      logging: [a, b]\n",
                "config.yaml:4: services.canopy.Nucleus.configuration.logging: expected a mapping of keys, got a list"},
        BadCase{"thingNameMap", "system:\n  thingName: {a: 1}\n",
                "config.yaml:2: system.thingName: expected a string, got a mapping"},
        BadCase{"relativeRoot", "system:\n  rootPath: relative/root\n",
                "system.rootPath: expected an absolute path, got \"relative/root\""},
        BadCase{"shutdownZero",
                "services:\n  canopy.Nucleus:\n    configuration:\n      shutdownTimeoutSeconds: 0\n",
                "shutdownTimeoutSeconds: expected a number of seconds from 1 to 3600, got \"0\""},
        BadCase{"yamlSyntax", "system:\n  thingName: [unclosed\n", "config.yaml:3:1: not valid YAML"},
        BadCase{"shortStaticToken",
                "services:\n  canopy.Nucleus:\n    configuration:\n      ipc:\n        staticIdentities:\n          a: short\n",
                "config.yaml:6: services.canopy.Nucleus.configuration.ipc.staticIdentities.a: expected a token of at "
                "least 16 characters"},
        BadCase{"slowReader",
                "services:\n  canopy.Nucleus:\n    configuration:\n      ipc:\n        slowReaderPolicy: block\n",
                "ipc.slowReaderPolicy: expected one of drop-oldest, disconnect, got \"block\""},
        BadCase{"framePayloadTooBig",
                "services:\n  canopy.Nucleus:\n    configuration:\n      ipc:\n        maxFramePayloadBytes: 99999999\n",
                "ipc.maxFramePayloadBytes: expected a number of bytes from 1024 to 8388608"},
        BadCase{"recursiveAlias", "services:\n  com.x: &a {b: *a}\n",
                 "services.com.x: nested more than 128 levels deep (or a recursive alias)"},
        BadCase{"topLevelList", "- a\n- b\n", "config.yaml:1: : expected a mapping of keys, got a list"}),
    [](const auto& tpi) { return std::string(tpi.param.name); });

TEST(NucleusConfig, AllErrorsAreReportedNotOnlyTheFirst) {
  auto r = parse("system:\n  thingName: [x]\nservices:\n  canopy.Nucleus:\n    configuration:\n      mqtt:\n        port: 0\n",
                 "config.yaml");
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr("system.thingName"));
  EXPECT_THAT(r.error().message, HasSubstr("mqtt.port"));
}

TEST(NucleusConfig, MissingFileIsNotFound) {
  auto r = load_file("/nonexistent/canopy.yaml");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found);
  EXPECT_THAT(r.error().message, HasSubstr("/nonexistent/canopy.yaml does not exist"));
}

}  // namespace
}  // namespace canopy::config
