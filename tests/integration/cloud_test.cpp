// The cloud link against a real TLS Mosquitto "cloud" (require_certificate true): connect,
// PublishToIoTCore and SubscribeToIoTCore through IPC, the TLS negative matrix, bad requests,
// an outage through a cuttable proxy, the spool's bound under each policy, a corrupt spool.
#include <atomic>
#include <csignal>
#include <fstream>
#include <functional>

#include <gmock/gmock.h>

#include "integration/cloud_fixture.hpp"
#include "support/tcp_proxy.hpp"
#include "support/tls_legacy_server.hpp"

namespace canopy::test::cloud {
namespace {

using ::testing::HasSubstr;

Canopyd::Options with(const CloudConfig& c) {
  return {.config_yaml = yaml(c), .extra_args = {}, .env = {}, .foreground = true, .notify = true};
}

// The usual scene of a test of how the link meets a cloud: the cloud Mosquitto with
// `extra_config`, a watcher on tele/#, canopyd configured against the cloud (`edit` may change
// that configuration first) and connected, an IPC publisher.
struct CloudScene {
  explicit CloudScene(const std::string& extra_config, int watch_qos = 1,
                      const std::function<void(CloudConfig&)>& edit = {})
      : cloud(dir.path(), "server", extra_config), watcher(cloud.client("watcher")) {
    watch_ok = watcher->subscribe("tele/#", watch_qos);
    auto cfg = cloud.config_for(cloud.broker.port());
    if (edit) edit(cfg);
    d.emplace(dir.path(), with(cfg));
  }
  ::testing::AssertionResult start() {
    if (!watch_ok) return ::testing::AssertionFailure() << "the watcher could not subscribe";
    if (!d->wait_ready()) return ::testing::AssertionFailure() << "canopyd did not start";
    if (!wait_status(*d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }))
      return ::testing::AssertionFailure() << "canopyd did not connect to the cloud: " << status(*d).dump();
    ipc = ipc_connect(*d);
    if (!ipc) return ::testing::AssertionFailure() << "no IPC connection";
    return ::testing::AssertionSuccess();
  }
  bool publish(const nlohmann::json& request) {
    return static_cast<bool>(ipc->call("aws.greengrass#PublishToIoTCore", request));
  }

  TempDir dir;
  CloudBroker cloud;
  std::unique_ptr<MqttClient> watcher;
  bool watch_ok = false;
  std::optional<Canopyd> d;
  std::unique_ptr<ipc::Client> ipc;
};

TEST(CloudLink, PublishesThroughTheSpoolAndReceivesCloudSubscriptions) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));

  Canopyd d(dir.path(), with(cloud.config_for(cloud.broker.port())));
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); })) << status(d).dump(2);
  const auto st = status(d);
  EXPECT_EQ(st["cloud"]["clientId"], kThing);
  EXPECT_THAT(st["cloud"]["key"].get<std::string>(), HasSubstr("file "));
  const auto human = run_command({canopy_cli_path().string(), "--root", d.root().string(), "status"});
  EXPECT_THAT(human.output, HasSubstr("cloud link      connected to 127.0.0.1:"));
  EXPECT_THAT(human.output, HasSubstr("spool           0 messages"));

  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  for (int i = 0; i < 20; ++i) {
    auto r = c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "tele/a:" + std::to_string(i)));
    ASSERT_TRUE(r) << r.error().message;
  }
  ASSERT_TRUE(watcher->wait_for(20, 20s)) << watcher->count();
  auto got = watcher->messages();
  for (int i = 0; i < 20; ++i) EXPECT_EQ(got[static_cast<std::size_t>(i)].payload, "tele/a:" + std::to_string(i));
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["queued"] == 0 && s["spool"]["delivered"] == 20; }))
      << status(d)["spool"].dump();

  // SubscribeToIoTCore: two local subscribers share the cloud subscription; both get the message.
  std::atomic<int> events{0};
  std::string payload_seen;
  std::mutex m;
  auto on_event = [&](std::string_view ev) {
    auto j = nlohmann::json::parse(ev);
    std::lock_guard lock(m);
    payload_seen = j["message"]["payload"].get<std::string>();
    ++events;
  };
  auto s1 = c->subscribe("aws.greengrass#SubscribeToIoTCore", {{"topicName", "down/+/cmd"}, {"qos", "1"}}, on_event);
  ASSERT_TRUE(s1) << s1.error().message;
  auto s2 = c->subscribe("aws.greengrass#SubscribeToIoTCore", {{"topicName", "down/#"}, {"qos", "0"}}, on_event);
  ASSERT_TRUE(s2) << s2.error().message;
  // The cloud subscription is made asynchronously: publish until it arrives.
  auto sender = cloud.client("sender");
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (events.load() < 2 && std::chrono::steady_clock::now() < until) {
    ASSERT_TRUE(sender->publish("down/gw/cmd", "reboot-please", 1));
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_GE(events.load(), 2);
  {
    std::lock_guard lock(m);
    EXPECT_EQ(payload_seen, base64_encode(std::string_view("reboot-please")));
  }
  s1->reset();
  s2->reset();
  c.reset();
  // A graceful stop ends the connection and exits 0. (It sends an MQTT DISCONNECT; under heavy
  // CPU load Mosquitto 2.0.11 sometimes logs that one as "Protocol error", not yet understood,
  // so the broker's wording is not asserted.)
  const auto code = d.stop();
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_THAT(cloud.broker.log(), HasSubstr(std::string("Client ") + kThing + " disconnected"));
}

// The real AWS IoT Device SDK for JavaScript as the component: PublishToIoTCore and
// SubscribeToIoTCore through greengrasscoreipc, and an unauthorized topic refused.
TEST(CloudLink, WorksWithTheAwsIotDeviceSdk) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));
  Canopyd d(dir.path(), with(cloud.config_for(cloud.broker.port())));
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }));

  const nlohmann::json script = {
      {"totalTimeoutMs", 60000},
      {"steps",
       {{{"op", "connect"}},
        {{"op", "subscribeToIoTCore"}, {"id", "down"}, {"topicName", "down/+/cmd"}, {"qos", "1"}},
        {{"op", "publishToIoTCore"}, {"topicName", "tele/sdk"}, {"qos", "1"}, {"text", "tele/sdk:0"}},
        {{"op", "publishToIoTCore"}, {"topicName", "tele/sdk"}, {"qos", "0"}, {"text", "tele/sdk:1"}},
        {{"op", "publishToIoTCore"}, {"topicName", "secret/x"}, {"text", "no"}, {"expectError", "UnauthorizedError"}},
        {{"op", "waitEvents"}, {"id", "down"}, {"count", 1}, {"timeoutMs", 30000}},
        {{"op", "close"}}}}};
  std::string skip;
  auto sdk = start_sdk_script(dir.path(), d, script, skip);
  if (!sdk) GTEST_SKIP() << skip;
  // The cloud sends a command until the component has it.
  auto sender = cloud.client("sender");
  std::optional<int> code;
  const auto until = std::chrono::steady_clock::now() + 60s;
  while (!(code = sdk->wait(200ms)) && std::chrono::steady_clock::now() < until) sender->publish("down/gw/cmd", "reboot", 1);
  const std::string out = sdk_output(dir.path());
  ASSERT_TRUE(code.has_value()) << out;
  EXPECT_EQ(*code, 0) << out;
  EXPECT_THAT(out, HasSubstr(R"("event":"iotCoreMessage")"));
  EXPECT_THAT(out, HasSubstr(R"("payload":"reboot")"));
  ASSERT_TRUE(watcher->wait_for(2, 20s)) << out;
  std::set<std::string> payloads;
  for (const auto& m : watcher->messages()) payloads.insert(m.payload);
  EXPECT_TRUE(payloads.count("tele/sdk:0") && payloads.count("tele/sdk:1"));
}

TEST(CloudLink, RefusesBadRequestsAndUnauthorizedTopics) {
  TempDir dir;
  CloudConfig cfg;  // no endpoint: messages wait in the spool
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  EXPECT_TRUE(cloud_state_is(status(d), "disabled"));
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);

  auto denied = c->call("aws.greengrass#PublishToIoTCore", publish_request("secret/x", "x"));
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().code, errc::unauthorized);
  EXPECT_THAT(denied.error().message, HasSubstr("secret/x"));

  auto wildcard = c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/#", "x"));
  ASSERT_FALSE(wildcard);
  EXPECT_THAT(wildcard.error().message, HasSubstr("tele/#"));

  auto qos2 = c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "x", 2));
  ASSERT_FALSE(qos2);
  EXPECT_THAT(qos2.error().message, HasSubstr("QoS 2 is not supported"));

  auto bad64 = c->call("aws.greengrass#PublishToIoTCore", {{"topicName", "tele/a"}, {"payload", "!!not base64!!"}});
  ASSERT_FALSE(bad64);
  EXPECT_THAT(bad64.error().message, HasSubstr("base64"));

  auto big = c->call("aws.greengrass#PublishToIoTCore", publish_request("big", std::string(129 * 1024, 'x')));
  ASSERT_FALSE(big);
  EXPECT_THAT(big.error().message, HasSubstr("at most 131072 bytes"));

  auto badfilter = c->call("aws.greengrass#SubscribeToIoTCore", {{"topicName", "down/#/x"}});
  ASSERT_FALSE(badfilter);

  // Nothing of that reached the spool, and the daemon is fine.
  const auto s = status(d);
  EXPECT_EQ(s["spool"]["queued"], 0);
  EXPECT_EQ(s["spool"]["accepted"], 0);
  auto okay = c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/ok", "fine"));
  EXPECT_TRUE(okay) << okay.error().message;
  EXPECT_EQ(status(d)["spool"]["queued"], 1);
}

// --- the TLS negative matrix: each refused, with a sentence that names the cause ------------

std::string wait_error(const Canopyd& d) {
  std::string last;
  wait_status(d, [&](const nlohmann::json& s) {
    if (!s.contains("cloud") || !s["cloud"].contains("lastError")) return false;
    last = s["cloud"]["lastError"].get<std::string>();
    return !last.empty();
  });
  return last;
}

TEST(CloudTls, RefusesAServerSignedByAnotherCa) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto cfg = cloud.config_for(cloud.broker.port());
  cfg.ca = cloud.pki.file("wrong-ca.crt");
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  EXPECT_THAT(wait_error(d), HasSubstr("server's certificate is not trusted"));
  EXPECT_FALSE(cloud_state_is(status(d), "connected"));
}

TEST(CloudTls, RefusesAServerCertificateForAnotherHost) {
  TempDir dir;
  CloudBroker cloud(dir.path(), "server-wrong-host");
  Canopyd d(dir.path(), with(cloud.config_for(cloud.broker.port())));
  ASSERT_TRUE(d.wait_ready());
  EXPECT_THAT(wait_error(d), HasSubstr("not for the host name 127.0.0.1"));
}

TEST(CloudTls, ReportsThatTheCloudRefusedAnExpiredDeviceCertificate) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto cfg = cloud.config_for(cloud.broker.port());
  cfg.cert = cloud.pki.pair("client-expired").crt;
  cfg.key = cloud.pki.pair("client-expired").key;
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  EXPECT_THAT(wait_error(d), HasSubstr("certificate expired"));
  EXPECT_THAT(d.logs(), HasSubstr("has expired"));
  EXPECT_FALSE(cloud_state_is(status(d), "connected"));
}

TEST(CloudTls, RefusesAServerThatOffersOnlyTls11) {
  TempDir dir;
  TestPki pki(dir.path() / "pki");
  LegacyTlsServer legacy(pki, dir.path() / "legacy");
  const auto cfg = config_with(pki, legacy.port());
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  EXPECT_THAT(wait_error(d), HasSubstr("TLS"));
  EXPECT_FALSE(cloud_state_is(status(d), "connected"));
}

TEST(CloudTls, RefusesToStartWithAKeyFileOthersCanRead) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto cfg = cloud.config_for(cloud.broker.port());
  fs::permissions(cfg.key, fs::perms(0644));
  Canopyd d(dir.path(), with(cfg));
  EXPECT_FALSE(d.wait_ready(10s));
  auto code = d.process().wait(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_THAT(d.logs(), HasSubstr("chmod 600 " + cfg.key.string()));
}

TEST(CloudTls, RefusesToStartWithoutAClientCertificate) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto cfg = cloud.config_for(cloud.broker.port());
  cfg.cert.clear();
  Canopyd d(dir.path(), with(cfg));
  EXPECT_FALSE(d.wait_ready(10s));
  auto code = d.process().wait(10s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_THAT(d.logs(), HasSubstr("system.certificateFilePath is not set"));
}

// --- outage: a proxy cut during a steady publish load, then restored -----------------------

TEST(CloudOutage, EveryMessageArrivesInOrderPerTopicAfterTheLinkComesBack) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  TcpProxy proxy(cloud.broker.port());
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));
  auto cfg = cloud.config_for(proxy.port());
  cfg.mqtt_yaml = "        maxPublishRate: 0\n";  // the test cloud is not AWS: no 100/s quota
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }));
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);

  const std::vector<std::string> topics = {"tele/a", "tele/b", "tele/c"};
  std::map<std::string, std::set<long>> sent;
  constexpr int kTotal = 1500;
  auto phase_start = std::chrono::steady_clock::now();
  const auto phase = [&](const char* name) {
    const auto now = std::chrono::steady_clock::now();
    std::printf("outage: %s took %lld ms\n", name,
                static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(now - phase_start).count()));
    phase_start = now;
  };
  for (int i = 0; i < kTotal; ++i) {
    if (i == kTotal / 3) {
      phase("publishing while connected");
      proxy.cut(true);
    }
    if (i == 2 * kTotal / 3) {
      phase("publishing while cut");
      proxy.restore();
    }
    const auto& t = topics[static_cast<std::size_t>(i) % topics.size()];
    auto r = c->call("aws.greengrass#PublishToIoTCore", publish_request(t, t + ":" + std::to_string(i)));
    ASSERT_TRUE(r) << "publish " << i << ": " << r.error().message;
    sent[t].insert(i);
  }
  phase("publishing after the restore");
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["queued"] == 0; }, 60s)) << status(d).dump(2);
  phase("draining");
  // Every acknowledged message has arrived once its PUBACK deleted it.
  const auto a = audit(watcher->messages(), sent);
  EXPECT_EQ(a.missing, 0u);
  EXPECT_EQ(a.out_of_order, 0u);
  const auto s = status(d);
  EXPECT_GE(s["cloud"]["connects"].get<int>(), 2) << "the link should have reconnected after the cut";
  std::printf("outage: %d sent, %zu received, %zu duplicates, resent=%d\n", kTotal, watcher->count(), a.duplicates,
              s["spool"]["resent"].get<int>());
}

// --- live traffic is interleaved with a backlog, per-topic order kept ---------------------------

TEST(CloudOutage, FreshMessagesOnOtherTopicsOvertakeABacklog) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  TcpProxy proxy(cloud.broker.port());
  proxy.cut(true);
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));
  auto cfg = cloud.config_for(proxy.port());
  cfg.mqtt_yaml = "        maxPublishRate: 100\n";  // AWS's quota: a backlog of 600 takes about 6 s
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  std::map<std::string, std::set<long>> sent;
  for (int i = 0; i < 600; ++i) {
    ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/backlog", "tele/backlog:" + std::to_string(i))));
    sent["tele/backlog"].insert(i);
  }
  proxy.restore();
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }));
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/live", "tele/live:" + std::to_string(i))));
    sent["tele/live"].insert(i);
    std::this_thread::sleep_for(50ms);
  }
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["queued"] == 0; }, 60s));
  const auto got = watcher->messages();
  const auto a = audit(got, sent);
  EXPECT_EQ(a.missing, 0u);
  EXPECT_EQ(a.out_of_order, 0u);
  std::size_t last_live = 0, last_backlog = 0;
  for (std::size_t i = 0; i < got.size(); ++i) (got[i].topic == "tele/live" ? last_live : last_backlog) = i;
  EXPECT_LT(last_live, last_backlog) << "the live messages waited for the whole backlog";
  EXPECT_GT(status(d)["cloud"]["sentInterleaved"].get<int>(), 0);
}

TEST(CloudLink, ResubscribesAfterAReconnectAndSurvivesASessionTakeover) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  TcpProxy proxy(cloud.broker.port());
  Canopyd d(dir.path(), with(cloud.config_for(proxy.port())));
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }));
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  std::atomic<int> events{0};
  auto sub = c->subscribe("aws.greengrass#SubscribeToIoTCore", {{"topicName", "down/#"}, {"qos", "1"}},
                          [&](std::string_view) { ++events; });
  ASSERT_TRUE(sub) << sub.error().message;
  auto sender = cloud.client("sender");
  const auto deliver = [&](int want) {
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (events.load() < want && std::chrono::steady_clock::now() < until) {
      sender->publish("down/x", "hello", 1);
      std::this_thread::sleep_for(200ms);
    }
    return events.load() >= want;
  };
  ASSERT_TRUE(deliver(1));

  // The link drops and comes back: the cloud subscription is made again.
  proxy.cut(true);
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return !cloud_state_is(s, "connected"); }));
  proxy.restore();
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }));
  const int before = events.load();
  ASSERT_TRUE(deliver(before + 1));

  // Another client takes the thing's client id: canopyd says so, backs off and comes back.
  {
    MqttClient thief({cloud.broker.port(), kThing, cloud.pki.ca(), cloud.pki.pair("client").crt,
                      cloud.pki.pair("client").key, true});
    std::string err;
    ASSERT_TRUE(wait_status(d, [&](const nlohmann::json& s) {
      err = s["cloud"].value("lastError", "");
      return err.find("took the session over") != std::string::npos || err.find("closed the connection") != std::string::npos;
    })) << status(d).dump(2);
  }
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }, 30s));
}

TEST(CloudLink, SpeaksMqtt311AndSendsQos0StraightWhenConfigured) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));
  auto cfg = cloud.config_for(cloud.broker.port());
  cfg.mqtt_yaml = "        version: \"3.1.1\"\n";
  cfg.spooler_yaml = "        qos0BypassSpool: true\n";
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }));
  EXPECT_EQ(status(d)["cloud"]["mqttVersion"], "3.1.1");
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/q1", "tele/q1:1", 1)));
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/q0", "tele/q0:1", 0)));
  ASSERT_TRUE(watcher->wait_for(2, 20s));
  const auto s = status(d)["spool"];
  EXPECT_EQ(s["accepted"], 1) << "the QoS 0 message should not have gone through the spool";
}

// --- the cloud misbehaving: each named, survived, nothing lost ---------------------------------

// A TLS server that answers like a web server: the link names the malformed packet, keeps
// retrying with backoff, and the message waits in the spool.
TEST(CloudMqtt, AServerThatDoesNotSpeakMqttIsNamedAndTheMessageWaits) {
  TempDir dir;
  TestPki pki(dir.path() / "pki");
  const auto server = pki.pair("server");
  const int port = free_port();
  const std::string reply = "HTTP/1.1 400 Bad Request\\r\\nContent-Length: 200\\r\\n\\r\\n" + std::string(200, 'x');
  Process web(Process::Spec{{"/usr/bin/socat",
                             "OPENSSL-LISTEN:" + std::to_string(port) + ",bind=127.0.0.1,reuseaddr,fork,cert=" +
                                 server.crt.string() + ",key=" + server.key.string() + ",verify=0",
                             "SYSTEM:printf '" + reply + "'; sleep 5"},
                            {},
                            dir.path() / "socat.log",
                            true});
  ASSERT_TRUE(wait_for_port(port, 10s)) << read_file(dir.path() / "socat.log");
  const auto cfg = config_with(pki, port);
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "kept")));
  EXPECT_THAT(wait_error(d), HasSubstr("malformed MQTT packet"));
  const auto s = status(d);
  EXPECT_EQ(s["cloud"]["connects"], 0);
  EXPECT_EQ(s["spool"]["queued"], 1);
  EXPECT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "still accepted")));
}

// The cloud completes TLS but refuses the MQTT connection (here: no anonymous clients and no
// user name): the CONNACK's reason is named, nothing is sent, the message waits in the spool.
TEST(CloudMqtt, ACloudThatRefusesTheConnectionIsNamedAndTheMessageWaits) {
  TempDir dir;
  TestPki pki(dir.path() / "pki");
  Mosquitto strict(dir.path() / "strict", Mosquitto::Options{.listener_config = "", .allow_anonymous = false, .tls = pki.broker_tls("server")});
  const auto cfg = config_with(pki, strict.port());
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "kept")));
  EXPECT_THAT(wait_error(d), HasSubstr(std::string("the cloud refused the MQTT connection as ") + kThing +
                                       ": not authorized (0x87)"));
  const auto s = status(d);
  EXPECT_EQ(s["cloud"]["connects"], 0);
  EXPECT_EQ(s["spool"]["queued"], 1);
}

// The cloud announces a Maximum Packet Size (MQTT 5 CONNACK): a larger message is not sent
// (the cloud would drop the connection for it), it stays in the spool with a log line naming
// it, and the messages after it flow.
TEST(CloudMqtt, AMessageOverTheCloudsMaximumPacketSizeWaitsAndTheRestFlow) {
  CloudScene scene("max_packet_size 2000\n", 1, [](CloudConfig& c) { c.spooler_yaml = "        qos0BypassSpool: true\n"; });
  ASSERT_TRUE(scene.start());
  auto& d = *scene.d;
  auto& watcher = scene.watcher;
  ASSERT_TRUE(scene.publish(publish_request("tele/a", "before")));
  ASSERT_TRUE(scene.publish(publish_request("tele/big", std::string(3000, 'b'))));
  ASSERT_TRUE(scene.publish(publish_request("tele/c", "after")));
  ASSERT_TRUE(watcher->wait_for(2, 20s)) << watcher->count();
  // QoS 0 that would bypass the spool: too large, so it is spooled instead (and waits there too).
  ASSERT_TRUE(scene.publish(publish_request("tele/big0", std::string(3000, 'z'), 0)));
  ASSERT_TRUE(scene.publish(publish_request("tele/d", "direct", 0)));
  ASSERT_TRUE(watcher->wait_for(3, 20s)) << watcher->count();
  const auto got = watcher->messages();
  EXPECT_EQ(got[0].payload, "before");
  EXPECT_EQ(got[1].payload, "after");
  EXPECT_EQ(got[2].payload, "direct");
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["queued"] == 2; })) << status(d).dump();
  EXPECT_EQ(status(d)["spool"]["accepted"], 4) << "3 QoS 1 messages and the large QoS 0 one";
  EXPECT_THAT(d.logs(), HasSubstr("exceed the cloud's Maximum Packet Size of 2000"));
  EXPECT_TRUE(cloud_state_is(status(d), "connected")) << "the link must not have been dropped";
  EXPECT_EQ(status(d)["cloud"]["connects"], 1);
}

// MQTT 5 CONNACK capabilities: Retain Available 0 and Maximum QoS 0 are honoured, so the cloud
// never has a reason to drop the connection over them.
TEST(CloudMqtt, ACloudWithoutRetainGetsRetainedMessagesWithoutTheFlag) {
  CloudScene scene("retain_available false\n");
  ASSERT_TRUE(scene.start());
  auto& d = *scene.d;
  auto& watcher = scene.watcher;
  auto retained = publish_request("tele/r", "kept?");
  retained["retain"] = true;
  ASSERT_TRUE(scene.publish(retained));
  ASSERT_TRUE(scene.publish(publish_request("tele/n", "next")));
  ASSERT_TRUE(watcher->wait_for(2, 20s)) << watcher->count();
  EXPECT_EQ(watcher->messages()[0].payload, "kept?");
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["queued"] == 0; }));
  EXPECT_EQ(status(d)["cloud"]["connects"], 1) << "the cloud must not have dropped the connection";
  EXPECT_THAT(d.logs(), HasSubstr("sent without the retain flag: the cloud does not keep retained messages"));
  // Nothing is held: releasing says so and changes nothing (no reconnect).
  const auto released = run_command({canopy_cli_path().string(), "--root", d.root().string(), "cloud", "release-held"});
  EXPECT_EQ(released.exit_code, 0) << released.output;
  EXPECT_THAT(released.output, HasSubstr("No message is held; nothing was changed."));
  EXPECT_EQ(status(d)["cloud"]["connects"], 1);
}

TEST(CloudMqtt, ACloudThatTakesOnlyQos0GetsQos0AndQos1Waits) {
  CloudScene scene("max_qos 0\n", 0);
  ASSERT_TRUE(scene.start());
  auto& d = *scene.d;
  auto& watcher = scene.watcher;
  ASSERT_TRUE(scene.publish(publish_request("tele/q1", "at least once", 1)));
  ASSERT_TRUE(scene.publish(publish_request("tele/q0", "at most once", 0)));
  ASSERT_TRUE(watcher->wait_for(1, 20s));
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["delivered"] == 1; }))
      << status(d).dump();
  EXPECT_EQ(watcher->messages()[0].payload, "at most once");
  EXPECT_EQ(status(d)["spool"]["queued"], 1) << "the QoS 1 message waits in the spool";
  EXPECT_EQ(status(d)["cloud"]["connects"], 1) << "the cloud must not have dropped the connection";
  EXPECT_THAT(d.logs(), HasSubstr("the cloud accepts only QoS 0"));
  EXPECT_EQ(watcher->count(), 1u);
}

// MQTT 3.1.1 has no way to refuse one message but to close the connection (Mosquitto does so
// for a retained message when retain_available is false; AWS IoT for a topic the policy does
// not allow). Without care that message is sent again after each reconnect, forever, and the
// ones behind it wait. The link finds it, holds it in the spool, and the rest flow.
TEST(CloudMqtt, AMessageTheCloudDropsTheConnectionForIsHeldAndTheRestFlow) {
  CloudScene scene("retain_available false\n", 1, [](CloudConfig& c) { c.mqtt_yaml = "        version: \"3.1.1\"\n"; });
  ASSERT_TRUE(scene.start());
  auto& d = *scene.d;
  auto& watcher = scene.watcher;
  ASSERT_TRUE(scene.publish(publish_request("tele/a", "before")));
  ASSERT_TRUE(watcher->wait_for(1, 20s));
  auto poison = publish_request("tele/p", "retained");
  poison["retain"] = true;
  ASSERT_TRUE(scene.publish(poison));
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(scene.publish(publish_request("tele/b", "after " + std::to_string(i))));
  ASSERT_TRUE(wait_status(
      d, [](const nlohmann::json& s) { return s["cloud"]["held"].size() == 1 && s["spool"]["queued"] == 1; }, 90s))
      << status(d).dump() << "\n" << d.logs();
  // Every message but the held one arrived, in order, after it was held.
  std::vector<std::string> after;
  for (const auto& m : watcher->messages())
    if (m.topic == "tele/b" && (after.empty() || after.back() != m.payload)) after.push_back(m.payload);
  std::vector<std::string> want;
  for (int i = 0; i < 5; ++i) want.push_back("after " + std::to_string(i));
  EXPECT_EQ(after, want);
  for (const auto& m : watcher->messages()) EXPECT_NE(m.topic, "tele/p");
  const auto logs = d.logs();
  EXPECT_THAT(logs, HasSubstr("sending one message at a time to find one it refuses"));
  EXPECT_THAT(logs, HasSubstr("topic=tele/p"));
  EXPECT_THAT(logs, HasSubstr("It is held: kept in the spool, not sent again until canopyd restarts or an operator "
                              "runs canopy cloud release-held"));
  const auto human = run_command({canopy_cli_path().string(), "--root", d.root().string(), "status"});
  EXPECT_THAT(human.output, HasSubstr("held: 1 message(s) the cloud closed the connection for"));
  // Held, not lost: the row is still in the spool, and the link stays up.
  const auto connects = status(d)["cloud"]["connects"].get<int>();
  const auto seen = watcher->count();
  ASSERT_TRUE(scene.publish(publish_request("tele/b", "later")));
  ASSERT_TRUE(watcher->wait_for(seen + 1, 20s));
  EXPECT_EQ(watcher->messages().back().payload, "later");
  EXPECT_EQ(status(d)["cloud"]["connects"], connects);
  EXPECT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["queued"] == 1; })) << status(d).dump();

  // The operator releases it: the link reconnects and sends it again. This cloud still refuses
  // it, so it is found and held again (after 3 more drops and 2 probes).
  const auto released = run_command({canopy_cli_path().string(), "--root", d.root().string(), "cloud", "release-held"});
  EXPECT_EQ(released.exit_code, 0) << released.output;
  EXPECT_THAT(released.output, HasSubstr("Released 1 held message(s)"));
  EXPECT_THAT(d.logs(), HasSubstr("released 1 held message(s) (topic=tele/p id="));
  ASSERT_TRUE(wait_status(
      d,
      [connects](const nlohmann::json& s) {
        return s["cloud"]["connects"].get<int>() >= connects + 3 && s["cloud"]["held"].size() == 1;
      },
      60s))
      << status(d).dump();
  EXPECT_EQ(status(d)["spool"]["queued"], 1);
}

// A cloud that stops answering without closing (a half-open connection): the keep-alive ping
// finds it, the link says so and reconnects once the cloud answers again.
TEST(CloudMqtt, AFrozenCloudIsFoundByTheKeepAliveAndTheLinkReconnects) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto cfg = cloud.config_for(cloud.broker.port());
  cfg.mqtt_yaml = "        keepAliveSeconds: 5\n";
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }));
  ASSERT_EQ(::kill(cloud.broker.pid(), SIGSTOP), 0);
  std::string error;
  const bool found = wait_status(
      d,
      [&](const nlohmann::json& s) {
        error = s["cloud"].value("lastError", "");
        return error.find("keep-alive") != std::string::npos;
      },
      30s);
  ASSERT_EQ(::kill(cloud.broker.pid(), SIGCONT), 0);
  ASSERT_TRUE(found) << status(d).dump();
  EXPECT_THAT(error, HasSubstr("did not answer a keep-alive ping within 5 s"));
  EXPECT_TRUE(wait_status(
      d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected") && s["cloud"]["connects"] == 2; }, 30s))
      << status(d).dump();
}

// --- the spool's bound under each policy -------------------------------------------------------

TEST(SpoolBound, RejectNewRefusesThePublishAndKeepsWhatIsStored) {
  TempDir dir;
  CloudConfig cfg;
  cfg.spooler_yaml = "        maxMessages: 5\n        whenFull: reject-new\n";
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", std::to_string(i))));
  auto r = c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "6"));
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr("spool is full"));
  const auto s = status(d)["spool"];
  EXPECT_EQ(s["queued"], 5);
  EXPECT_EQ(s["rejected_full"], 1);
  EXPECT_EQ(s["dropped_full"], 0);
  EXPECT_EQ(s["accepted"], 5);
}

TEST(SpoolBound, DropOldestKeepsTheNewestAndDeliversThem) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  TcpProxy proxy(cloud.broker.port());
  proxy.cut(true);
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));
  auto cfg = cloud.config_for(proxy.port());
  cfg.spooler_yaml = "        maxMessages: 5\n        whenFull: drop-oldest\n";
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  for (int i = 0; i < 8; ++i)
    ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "tele/a:" + std::to_string(i))));
  auto s = status(d)["spool"];
  EXPECT_EQ(s["queued"], 5);
  EXPECT_EQ(s["dropped_full"], 3);
  proxy.restore();
  ASSERT_TRUE(watcher->wait_for(5, 30s));
  std::this_thread::sleep_for(300ms);
  const auto got = watcher->messages();
  std::string seen;
  for (const auto& m : got) seen += m.payload + " ";
  ASSERT_EQ(got.size(), 5u) << seen << status(d).dump();
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(got[i].payload, "tele/a:" + std::to_string(i + 3));
}

TEST(SpoolBound, DropQos0FirstDropsOnlyQos0ThenRefuses) {
  TempDir dir;
  CloudConfig cfg;
  cfg.spooler_yaml = "        maxMessages: 4\n        whenFull: drop-qos0-first\n";
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "q0-a", 0)));
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "q1-a", 1)));
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "q0-b", 0)));
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "q1-b", 1)));
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "q1-c", 1)));  // drops q0-a
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "q1-d", 1)));  // drops q0-b
  auto refused = c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "q1-e", 1));
  ASSERT_FALSE(refused);
  EXPECT_THAT(refused.error().message, HasSubstr("spool is full"));
  const auto s = status(d)["spool"];
  EXPECT_EQ(s["queued"], 4);
  EXPECT_EQ(s["dropped_full"], 2);
  EXPECT_EQ(s["rejected_full"], 1);
}

// --- a corrupt spool database is moved aside, never deleted ----------------------------------

TEST(SpoolCorruption, IsMovedAsideWithALogLineAndANewSpoolStarts) {
  TempDir dir;
  fs::create_directories(dir.path() / "root" / "spool");
  {
    std::ofstream bad(dir.path() / "root" / "spool" / "spool.db", std::ios::binary);
    bad << std::string(8192, '\x5a');
  }
  CloudConfig cfg;
  Canopyd d(dir.path(), with(cfg));
  ASSERT_TRUE(d.wait_ready());
  const auto s = status(d)["spool"];
  ASSERT_TRUE(s.contains("quarantined")) << s.dump();
  const fs::path moved = s["quarantined"].get<std::string>();
  EXPECT_TRUE(fs::exists(moved));
  EXPECT_EQ(fs::file_size(moved), 8192u);
  EXPECT_THAT(d.logs(), HasSubstr(moved.string()));
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/a", "after")));
}

}  // namespace
}  // namespace canopy::test::cloud
