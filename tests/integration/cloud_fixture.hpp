// Shared parts of the cloud link tests: a TLS "cloud" Mosquitto with require_certificate, the
// test PKI, canopyd configured against it, an IPC publisher, a cloud-side subscriber.
#pragma once

#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "canopy/core/base64.hpp"
#include "canopy/ipc/client.hpp"
#include "support/daemon.hpp"
#include "support/mosquitto.hpp"
#include "support/mqtt_client.hpp"
#include "support/pki.hpp"
#include "support/process.hpp"

namespace canopy::test::cloud {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

constexpr const char* kPubToken = "pub-token-0123456789abcdef";
constexpr const char* kThing = "gw-test-1";

/// What goes into canopyd's configuration file for a cloud test.
struct CloudConfig {
  std::optional<int> port;  ///< the cloud's (or the proxy's) port; unset: no endpoint
  std::string endpoint = "127.0.0.1";
  fs::path cert, key, ca;
  std::string private_key_override;  ///< e.g. "handle:0x81000001"
  std::string spooler_yaml;          ///< extra lines under spooler:, each "        key: value\n"
  std::string mqtt_yaml;             ///< extra lines under mqtt:
  std::string resources = "['tele/#', 'down/#', 'big', 'bad/#']";
};

inline std::string yaml(const CloudConfig& c) {
  std::string y = "system:\n  thingName: " + std::string(kThing) + "\n";
  if (!c.cert.empty()) y += "  certificateFilePath: " + c.cert.string() + "\n";
  if (!c.private_key_override.empty()) y += "  privateKeyPath: \"" + c.private_key_override + "\"\n";
  else if (!c.key.empty()) y += "  privateKeyPath: " + c.key.string() + "\n";
  if (!c.ca.empty()) y += "  rootCaPath: " + c.ca.string() + "\n";
  y += "services:\n  canopy.Nucleus:\n    configuration:\n";
  if (c.port) y += "      iotDataEndpoint: \"" + c.endpoint + "\"\n";
  y += "      mqtt:\n        port: " + std::to_string(c.port.value_or(8883)) +
       "\n        reconnectBaseMs: 100\n        reconnectMaxMs: 1000\n        connectTimeoutSeconds: 5\n" + c.mqtt_yaml;
  y += "      spooler:\n        durability: full\n" + c.spooler_yaml;
  y += "      ipc:\n        maxFramePayloadBytes: 1048576\n        staticIdentities:\n          com.example.Pub: " + std::string(kPubToken) + "\n";
  y += "  com.example.Pub:\n    configuration:\n      accessControl:\n        aws.greengrass.ipc.mqttproxy:\n"
       "          p1:\n            operations: ['aws.greengrass#PublishToIoTCore', 'aws.greengrass#SubscribeToIoTCore']\n"
       "            resources: " +
       c.resources + "\n";
  return y;
}

/// canopyd's configuration for a cloud at 127.0.0.1:`port`, with the test PKI's client
/// certificate and key as the device identity and its CA as the root.
inline CloudConfig config_with(const TestPki& pki, int port) {
  CloudConfig c;
  c.port = port;
  c.cert = pki.pair("client").crt;
  c.key = pki.pair("client").key;
  c.ca = pki.ca();
  return c;
}

/// The test PKI and a TLS cloud broker requiring client certificates.
struct CloudBroker {
  /// `extra_config`: more mosquitto.conf lines (e.g. "max_packet_size 2000\n").
  explicit CloudBroker(const fs::path& dir, const std::string& server_cert = "server",
                       const std::string& extra_config = "")
      : pki(dir / "pki"),
        // Large queues: the watcher must not be the one losing messages when a backlog drains
        // in a burst (Mosquitto's default drops past 1000 queued per client).
        broker(dir / "broker", Mosquitto::Options{.listener_config = "max_queued_messages 1000000\n" + extra_config,
                                                  .allow_anonymous = true,
                                                  .tls = pki.broker_tls(server_cert)}) {}
  TestPki pki;
  Mosquitto broker;

  CloudConfig config_for(int port) const { return config_with(pki, port); }
  /// A cloud-side client (its own identity: the same CA, a different client id).
  std::unique_ptr<MqttClient> client(const std::string& id) const {
    return std::make_unique<MqttClient>(MqttClient::Options{broker.port(), id, pki.ca(), pki.pair("client").crt,
                                                            pki.pair("client").key, true});
  }
};

inline std::unique_ptr<ipc::Client> ipc_connect(const Canopyd& d) {
  auto c = ipc::Client::connect({d.root() / "ipc.socket", kPubToken, 10s});
  EXPECT_TRUE(c) << (c ? "" : c.error().message);
  return c ? std::move(*c) : nullptr;
}

inline nlohmann::json publish_request(const std::string& topic, const std::string& payload, int qos = 1) {
  return {{"topicName", topic}, {"qos", std::to_string(qos)}, {"payload", base64_encode(std::string_view(payload))}};
}

inline nlohmann::json status(const Canopyd& d) {
  auto r = run_command({canopy_cli_path().string(), "--root", d.root().string(), "status", "--json"});
  if (r.exit_code != 0) return nullptr;
  const auto at = r.output.find('{');
  return at == std::string::npos ? nlohmann::json(nullptr) : nlohmann::json::parse(r.output.substr(at), nullptr, false);
}

/// Polls `canopy status --json` until pred(status) or the deadline.
template <class Pred>
bool wait_status(const Canopyd& d, Pred pred, std::chrono::milliseconds deadline = 20s) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    auto s = status(d);
    if (s.is_object() && pred(s)) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

inline bool cloud_state_is(const nlohmann::json& s, const std::string& state) {
  return s.contains("cloud") && s["cloud"].is_object() && s["cloud"].value("state", "") == state;
}

/// The JS SDK client (tests/js/ipc_client.js) as component com.example.Pub, running `script`;
/// its output goes to <dir>/sdk.out. Null (with the reason in `skip`) when node or the SDK is
/// missing.
inline std::unique_ptr<Process> start_sdk_script(const fs::path& dir, const Canopyd& d, const nlohmann::json& script,
                                                 std::string& skip) {
  const fs::path node = "/usr/bin/node";
  const fs::path js = fs::path(CANOPY_SOURCE_DIR) / "tests" / "js";
  if (!fs::exists(node) || !fs::exists(js / "node_modules" / "aws-iot-device-sdk-v2" / "package.json")) {
    skip = "node or the JS SDK is missing (scripts/setup.d/js-sdk.sh installs it)";
    return nullptr;
  }
  {
    std::ofstream f(dir / "sdk.json");
    f << script.dump(2);
  }
  return std::make_unique<Process>(Process::Spec{
      {node.string(), (js / "ipc_client.js").string(), (dir / "sdk.json").string()},
      {{"SVCUID", kPubToken}, {"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", (d.root() / "ipc.socket").string()}},
      dir / "sdk.out",
      true});
}

inline std::string sdk_output(const fs::path& dir) {
  std::ifstream in(dir / "sdk.out");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

/// Checks the "every message arrived, in order per topic" promise on payloads "<topic>:<seq>":
/// the first copy of each sequence number must come in increasing order per topic (later copies
/// are duplicates of QoS 1 redelivery). Returns {missing, duplicates, out_of_order}.
struct Audit {
  std::size_t missing = 0, duplicates = 0, out_of_order = 0;
};
inline Audit audit(const std::vector<MqttClient::Message>& got, const std::map<std::string, std::set<long>>& expected) {
  Audit a;
  std::map<std::string, std::set<long>> seen;
  std::map<std::string, long> last_first;
  for (const auto& m : got) {
    const auto colon = m.payload.rfind(':');
    if (colon == std::string::npos) continue;
    const long seq = std::stol(m.payload.substr(colon + 1));
    if (!seen[m.topic].insert(seq).second) {
      ++a.duplicates;
      continue;
    }
    auto it = last_first.find(m.topic);
    if (it != last_first.end() && seq < it->second) ++a.out_of_order;
    last_first[m.topic] = seq;
  }
  for (const auto& [topic, seqs] : expected)
    for (long s : seqs)
      if (!seen[topic].count(s)) ++a.missing;
  return a;
}

}  // namespace canopy::test::cloud
