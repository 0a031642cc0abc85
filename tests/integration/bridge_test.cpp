// canopy.MqttBridge against real brokers: a local Mosquitto (the test's own, reached through
// brokerUri, so these tests do not depend on the managed broker), the TLS "cloud" Mosquitto,
// canopyd, plain MQTT clients and the JS SDK as a pub/sub component. Loops, outages and kill -9
// rounds with the publisher a plain client of the local broker.
#include <csignal>
#include <fstream>
#include <random>

#include <fmt/format.h>
#include <gmock/gmock.h>

#include "integration/cloud_fixture.hpp"
#include "support/tcp_proxy.hpp"

namespace canopy::test::cloud {
namespace {

using ::testing::HasSubstr;

/// A local Mosquitto as the bridge's local broker: large queues (the bridge's session holds
/// what arrives while canopyd is away) and a large in-flight window (acks come after commits).
std::unique_ptr<Mosquitto> local_broker(const fs::path& dir) {
  return std::make_unique<Mosquitto>(dir / "local",
                                     Mosquitto::Options{.listener_config = "max_queued_messages 200000\n"
                                                                           "max_inflight_messages 1000\n"
                                                                           "set_tcp_nodelay true\n",
                                                        .allow_anonymous = true,
                                                        .tls = std::nullopt});
}

std::unique_ptr<MqttClient> local_client(const Mosquitto& b, const std::string& id) {
  return std::make_unique<MqttClient>(MqttClient::Options{b.port(), id, {}, {}, {}, true});
}

std::string bridge_yaml(int local_port, const std::string& mappings) {
  return "  canopy.LocalBroker:\n    configuration:\n      enabled: false\n"
         "  canopy.MqttBridge:\n    configuration:\n      brokerUri: \"mqtt://127.0.0.1:" +
         std::to_string(local_port) + "\"\n      mqttTopicMapping:\n" + mappings;
}

Canopyd::Options with(const CloudConfig& c, const std::string& extra) {
  return {.config_yaml = yaml(c) + extra, .extra_args = {}, .env = {}, .foreground = true, .notify = true};
}

const char* kMappings =
    "        toCloud: {topic: \"clients/+/hello\", source: LocalMqtt, target: IotCore, targetTopicPrefix: \"gw/\"}\n"
    "        fromCloud: {topic: \"cmd/#\", source: IotCore, target: LocalMqtt}\n"
    "        sensorsOut: {topic: \"sensors/#\", source: Pubsub, target: LocalMqtt}\n"
    "        actuatorsIn: {topic: \"actuators/#\", source: LocalMqtt, target: Pubsub}\n"
    "        loopA: {topic: \"loop/#\", source: LocalMqtt, target: Pubsub}\n"
    "        loopB: {topic: \"loop/#\", source: Pubsub, target: LocalMqtt}\n";

nlohmann::json mapping_status(const Canopyd& d, const std::string& name) {
  const auto s = status(d);
  if (!s.contains("bridge")) return nullptr;
  for (const auto& m : s["bridge"]["mappings"])
    if (m["name"] == name) return m;
  return nullptr;
}

TEST(Bridge, LocalToCloudAndCloudToLocal) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto local = local_broker(dir.path());
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("gw/#", 1));
  Canopyd d(dir.path(), with(cloud.config_for(cloud.broker.port()), bridge_yaml(local->port(), kMappings)));
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) {
    return cloud_state_is(s, "connected") && s["bridge"]["localBroker"].value("state", "") == "connected";
  })) << status(d).dump(2);

  auto device = local_client(*local, "device-1");
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(device->publish("clients/dev1/hello", "hello:" + std::to_string(i), 1));
  ASSERT_TRUE(watcher->wait_for(10, 20s));
  const auto got = watcher->messages();
  EXPECT_EQ(got[0].topic, "gw/clients/dev1/hello");
  for (int i = 0; i < 10; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)].payload, "hello:" + std::to_string(i));

  // Cloud to local: a command reaches a local subscriber (the cloud subscription is made
  // asynchronously: send until it arrives).
  ASSERT_TRUE(device->subscribe("cmd/#", 1));
  auto sender = cloud.client("sender");
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (device->count() == 0 && std::chrono::steady_clock::now() < until) {
    sender->publish("cmd/dev1/reboot", "now", 1);
    std::this_thread::sleep_for(200ms);
  }
  ASSERT_GE(device->count(), 1u);
  EXPECT_EQ(device->messages()[0].payload, "now");
  const auto m = mapping_status(d, "toCloud");
  EXPECT_EQ(m["received"], 10);
  EXPECT_EQ(m["forwarded"], 10);
  EXPECT_EQ(m["failed"], 0);
}

TEST(Bridge, PubsubAndLocalMqttBothWaysWithTheJsSdkAndNoLoops) {
  TempDir dir;
  CloudConfig cfg;  // no cloud: only local mappings
  auto local = local_broker(dir.path());
  // Continues com.example.Pub's accessControl, the last block yaml() writes.
  const std::string policy =
      "        aws.greengrass.ipc.pubsub:\n          p2:\n"
      "            operations: ['aws.greengrass#PublishToTopic', 'aws.greengrass#SubscribeToTopic']\n"
      "            resources: ['*']\n";
  std::string y = yaml(cfg) + policy + bridge_yaml(local->port(), kMappings);
  Canopyd d(dir.path(), {.config_yaml = y, .extra_args = {}, .env = {}, .foreground = true, .notify = true});
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) {
    return s.contains("bridge") && s["bridge"]["localBroker"].value("state", "") == "connected";
  })) << status(d).dump(2);

  auto device = local_client(*local, "device-2");
  ASSERT_TRUE(device->subscribe("sensors/#", 1));
  ASSERT_TRUE(device->subscribe("loop/#", 1));

  const nlohmann::json script = {
      {"totalTimeoutMs", 60000},
      {"steps",
       {{{"op", "connect"}},
        {{"op", "subscribeToTopic"}, {"id", "act"}, {"topic", "actuators/#"}},
        {{"op", "subscribeToTopic"}, {"id", "loop"}, {"topic", "loop/#"}},
        {{"op", "publishToTopic"}, {"topic", "sensors/t1"}, {"text", "21.5"}},
        {{"op", "waitEvents"}, {"id", "act"}, {"count", 1}, {"timeoutMs", 30000}},
        {{"op", "waitEvents"}, {"id", "loop"}, {"count", 1}, {"timeoutMs", 30000}},
        {{"op", "sleep"}, {"ms", 1000}},
        {{"op", "expectEventCount"}, {"id", "loop"}, {"count", 1}},
        {{"op", "close"}}}}};
  std::string skip;
  auto sdk = start_sdk_script(dir.path(), d, script, skip);
  if (!sdk) GTEST_SKIP() << skip;
  // The device sends an actuator command and a loop message until the component has them.
  const auto until = std::chrono::steady_clock::now() + 30s;
  std::optional<int> code;
  bool sent_loop = false;
  while (!(code = sdk->wait(300ms)) && std::chrono::steady_clock::now() < until) {
    device->publish("actuators/valve", "open", 1);
    if (!sent_loop && mapping_status(d, "actuatorsIn").value("forwarded", 0) > 0) {
      ASSERT_TRUE(device->publish("loop/x", "once", 1));
      sent_loop = true;
    }
  }
  const std::string out = sdk_output(dir.path());
  ASSERT_TRUE(code.has_value()) << out;
  EXPECT_EQ(*code, 0) << out;
  // Pub/sub to local: the component's sensor reading reached the device.
  std::size_t sensors = 0, loops = 0;
  for (const auto& m : device->messages()) {
    if (m.topic == "sensors/t1") ++sensors;
    if (m.topic == "loop/x") ++loops;
  }
  EXPECT_EQ(sensors, 1u);
  // loop/x went local -> pub/sub once and never came back to the local broker as a copy.
  EXPECT_EQ(loops, 1u) << "the device's own publish arrives once; a bridged copy would make it 2 or more";
  EXPECT_EQ(mapping_status(d, "loopA")["forwarded"], 1);
  EXPECT_EQ(mapping_status(d, "loopB")["received"], 0);
}

// kill -9 of canopyd at random moments while a plain MQTT client publishes to the local
// broker; the cloud link is up in even rounds and cut in odd ones. Every message the local
// broker acknowledged to the publisher must reach the cloud.
TEST(Bridge, Kill9RoundsLoseNothingTheLocalBrokerAccepted) {
  constexpr int kRounds = 12;
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto local = local_broker(dir.path());
  TcpProxy proxy(cloud.broker.port());
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("gw/#", 1));
  auto cfg = cloud.config_for(proxy.port());
  cfg.mqtt_yaml = "        maxPublishRate: 0\n";
  const auto opts = with(cfg, bridge_yaml(local->port(), kMappings));

  auto device = local_client(*local, "device-k9");
  std::atomic<bool> stop{false};
  std::atomic<long> acked{0};
  std::thread publisher;
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> delay_ms(150, 700);
  for (int round = 0; round < kRounds; ++round) {
    if (round % 2 == 0 && proxy.is_cut()) proxy.restore();
    if (round % 2 == 1 && !proxy.is_cut()) proxy.cut(true);
    Canopyd d(dir.path(), opts);
    ASSERT_TRUE(d.wait_ready()) << "round " << round;
    if (round == 0) {
      // The bridge's session must exist before the first publish: a broker keeps messages only
      // for subscriptions that exist (the documented first-start window).
      ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) {
        return s.contains("bridge") && s["bridge"]["localBroker"].value("state", "") == "connected";
      }));
      std::this_thread::sleep_for(300ms);
      publisher = std::thread([&] {
        for (long seq = 0; !stop.load(); ++seq) {
          if (device->publish("clients/k9/hello", "gw/clients/k9/hello:" + std::to_string(seq), 1)) acked = seq + 1;
          else break;
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    d.process().signal(SIGKILL);
    ASSERT_TRUE(d.process().wait(10s).has_value());
  }
  stop = true;
  publisher.join();
  const long total = acked.load();
  if (proxy.is_cut()) proxy.restore();
  Canopyd d(dir.path(), opts);
  ASSERT_TRUE(d.wait_ready());
  std::map<std::string, std::set<long>> expected;
  for (long i = 0; i < total; ++i) expected["gw/clients/k9/hello"].insert(i);
  // Everything the local broker accepted: what it still queues for the bridge, then the spool.
  const auto until = std::chrono::steady_clock::now() + 120s;
  Audit a;
  while (std::chrono::steady_clock::now() < until) {
    a = audit(watcher->messages(), expected);
    if (a.missing == 0) break;
    std::this_thread::sleep_for(200ms);
  }
  const auto s = status(d);
  std::printf("bridge kill -9 rounds: %d rounds, %ld accepted by the local broker, %zu received at the cloud, "
              "missing=%zu duplicates=%zu out_of_order=%zu\n",
              kRounds, total, watcher->count(), a.missing, a.duplicates, a.out_of_order);
  // Which sequence numbers are missing, as ranges: tells a lost in-flight window from a gap.
  std::set<long> seen;
  for (const auto& m : watcher->messages()) seen.insert(std::stol(m.payload.substr(m.payload.rfind(':') + 1)));
  std::string ranges;
  for (long i = 0; i < total && ranges.size() < 400; ++i) {
    if (seen.count(i)) continue;
    long j = i;
    while (j + 1 < total && !seen.count(j + 1)) ++j;
    ranges += fmt::format("{}-{} ", i, j);
    i = j;
  }
  EXPECT_GT(total, 0);
  EXPECT_EQ(a.missing, 0u) << "missing: " << ranges;
  EXPECT_EQ(a.out_of_order, 0u);
}

// The managed broker end to end: a client device with a certificate issued by
// `canopy client-device issue` publishes on the TLS listener; the bridge (default brokerUri:
// the managed broker's loopback port) takes it to the cloud. Then the broker is killed: canopyd
// restarts it, the bridge reconnects, and what was committed before is delivered.
TEST(Bridge, ClientDeviceThroughTheManagedBrokerToTheCloudSurvivesABrokerKill) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  TcpProxy proxy(cloud.broker.port());
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("gw/#", 1));
  const int local_port = free_port(), tls_port = free_port();
  auto cfg = cloud.config_for(proxy.port());
  cfg.mqtt_yaml = "        maxPublishRate: 0\n";
  const std::string extra =
      "  canopy.LocalBroker:\n    configuration:\n      localPort: " + std::to_string(local_port) +
      "\n      tlsPort: " + std::to_string(tls_port) +
      "\n      clientDevices:\n        sensor7:\n          publish: ['clients/sensor7/#']\n          subscribe: []\n"
      "  canopy.MqttBridge:\n    configuration:\n      mqttTopicMapping:\n" + std::string(kMappings);
  Canopyd d(dir.path(), {.config_yaml = yaml(cfg) + extra, .extra_args = {}, .env = {}, .foreground = true, .notify = true});
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) {
    return s["broker"].value("state", "") == "RUNNING" && s["bridge"]["localBroker"].value("state", "") == "connected" &&
           cloud_state_is(s, "connected");
  }, 30s)) << status(d).dump(2);

  const fs::path out = dir.path() / "device";
  fs::create_directories(out);
  auto issued = run_command({canopy_cli_path().string(), "--root", d.root().string(), "client-device", "issue",
                             "sensor7", "--out", out.string()});
  ASSERT_EQ(issued.exit_code, 0) << issued.output;
  MqttClient device({tls_port, "sensor7", out / "ca.crt", out / "sensor7.crt", out / "sensor7.key", true});
  ASSERT_TRUE(device.publish("clients/sensor7/hello", "gw/clients/sensor7/hello:0", 1));
  ASSERT_TRUE(watcher->wait_for(1, 20s));
  EXPECT_EQ(watcher->messages()[0].topic, "gw/clients/sensor7/hello");

  // With the cloud cut, messages go into the spool; then the broker is killed.
  proxy.cut(true);
  for (int i = 1; i <= 20; ++i)
    ASSERT_TRUE(device.publish("clients/sensor7/hello", "gw/clients/sensor7/hello:" + std::to_string(i), 1));
  // 20, or 21 when the first one's PUBACK was still on its way when the link was cut.
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["queued"].get<int>() >= 20; }))
      << status(d).dump(2);
  const int pid = status(d)["broker"]["pid"].get<int>();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(wait_status(d, [pid](const nlohmann::json& s) {
    return s["broker"].value("state", "") == "RUNNING" && s["broker"]["pid"] != pid &&
           s["bridge"]["localBroker"].value("state", "") == "connected";
  }, 30s)) << status(d).dump(2);
  // The device reconnects (a new client) and goes on; the cloud comes back.
  MqttClient device2({tls_port, "sensor7", out / "ca.crt", out / "sensor7.crt", out / "sensor7.key", true});
  for (int i = 21; i <= 30; ++i)
    ASSERT_TRUE(device2.publish("clients/sensor7/hello", "gw/clients/sensor7/hello:" + std::to_string(i), 1));
  proxy.restore();
  std::map<std::string, std::set<long>> expected;
  for (long i = 0; i <= 30; ++i) expected["gw/clients/sensor7/hello"].insert(i);
  const auto until = std::chrono::steady_clock::now() + 30s;
  Audit a;
  while (std::chrono::steady_clock::now() < until) {
    a = audit(watcher->messages(), expected);
    if (a.missing == 0) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_EQ(a.missing, 0u) << status(d).dump(2);
  EXPECT_EQ(a.out_of_order, 0u);
  EXPECT_GE(status(d)["bridge"]["localBroker"]["connects"].get<int>(), 2);
}

TEST(Bridge, RefusesABadMappingClearlyAndKeepsRunning) {
  TempDir dir;
  CloudConfig cfg;
  auto local = local_broker(dir.path());
  Canopyd d(dir.path(), with(cfg, bridge_yaml(local->port(),
                                              "        bad: {topic: \"a/#/b\", source: LocalMqtt, target: Cloud}\n")));
  ASSERT_TRUE(d.wait_ready());
  const auto s = status(d);
  ASSERT_TRUE(s.contains("bridge")) << s.dump(2);
  EXPECT_THAT(s["bridge"].value("configurationError", ""), HasSubstr("mqttTopicMapping.bad.target"));
  EXPECT_THAT(d.logs(), HasSubstr("mqttTopicMapping.bad.topic"));
}

}  // namespace
}  // namespace canopy::test::cloud
