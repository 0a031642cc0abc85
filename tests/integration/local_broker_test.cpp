// The managed local broker (canopy.LocalBroker) with a real canopyd, a real Mosquitto and the
// real canopy CLI: the loopback listener, client device certificates and their ACL on the TLS
// listener, a taken port, a killed broker, a configuration change, and no leftover mosquitto.
#include <csignal>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <nlohmann/json.hpp>

#include "support/daemon.hpp"
#include "support/mqtt_client.hpp"
#include "support/pki.hpp"
#include "support/process.hpp"

namespace canopy::test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

MqttClient::Options plain(int port, const std::string& id) {
  MqttClient::Options o;
  o.port = port;
  o.client_id = id;
  return o;
}

MqttClient::Options tls(int port, const std::string& id, const fs::path& ca, const fs::path& crt = {},
                        const fs::path& key = {}) {
  MqttClient::Options o = plain(port, id);
  o.cafile = ca;
  o.certfile = crt;
  o.keyfile = key;
  return o;
}

struct Ports {
  int local = free_port();
  int tls = free_port();
};

std::string broker_yaml(const Ports& p, const std::string& devices =
                                            "        dev1:\n          publish: ['dev/dev1/#']\n"
                                            "          subscribe: ['cmd/dev1']\n") {
  return "services:\n  canopy.LocalBroker:\n    configuration:\n      localPort: " + std::to_string(p.local) +
         "\n      tlsPort: " + std::to_string(p.tls) + "\n      clientDevices:\n" + devices;
}

class LocalBrokerTest : public ::testing::Test {
 protected:
  CommandResult cli(std::vector<std::string> args) {
    std::vector<std::string> argv = {canopy_cli_path().string(), "--root", d->root().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return run_command(argv, 60s);
  }
  nlohmann::json status() {
    auto r = cli({"status", "--json"});
    if (r.exit_code != 0) return nullptr;
    const auto at = r.output.find('{');
    return at == std::string::npos ? nlohmann::json(nullptr) : nlohmann::json::parse(r.output.substr(at), nullptr, false);
  }
  nlohmann::json details() {
    auto r = cli({"component", "details", "canopy.LocalBroker", "--json"});
    const auto at = r.output.find('{');
    if (r.exit_code != 0 || at == std::string::npos) return nullptr;
    auto j = nlohmann::json::parse(r.output.substr(at), nullptr, false);
    return j.contains("componentDetails") ? j["componentDetails"] : j;
  }
  // Polls the broker's status until pred holds (20 s at most).
  template <class Pred>
  bool wait_broker(Pred pred, std::chrono::milliseconds deadline = 20s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      auto s = status();
      if (s.is_object() && s["broker"].is_object() && pred(s["broker"])) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }
  bool wait_running() {
    return wait_broker([](const nlohmann::json& b) { return b["state"] == "RUNNING"; });
  }
  void start(const std::string& yaml) {
    d = std::make_unique<Canopyd>(dir.path(), Canopyd::Options{.config_yaml = yaml, .extra_args = {}, .env = {}, .foreground = true, .notify = true});
    ASSERT_TRUE(d->wait_ready());
  }
  std::vector<pid_t> our_mosquittos() {
    std::vector<pid_t> pids;
    for (const auto& e : fs::directory_iterator("/proc")) {
      const std::string name = e.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::string cmd;
      try {
        cmd = read_file(e.path() / "cmdline");
      } catch (...) {
        continue;
      }
      if (cmd.find("mosquitto") != std::string::npos && cmd.find(dir.path().string()) != std::string::npos)
        pids.push_back(std::stoi(name));
    }
    return pids;
  }
  void TearDown() override {
    if (d) {
      const auto code = d->stop();
      EXPECT_TRUE(code.has_value());
      d.reset();
    }
    // Checked with ps: canopyd stopped the broker it started.
    EXPECT_TRUE(our_mosquittos().empty()) << run_command({"ps", "-ef"}).output;
  }

  TempDir dir;
  Ports ports;
  std::unique_ptr<Canopyd> d;
};

TEST_F(LocalBrokerTest, RunsAndServesLocalClientsOnLoopback) {
  start(broker_yaml(ports));
  ASSERT_TRUE(wait_running()) << status().dump(2);
  auto list = cli({"component", "list"});
  EXPECT_EQ(list.exit_code, 0) << list.output;
  EXPECT_THAT(list.output, HasSubstr("canopy.LocalBroker"));
  EXPECT_THAT(list.output, HasSubstr("RUNNING"));
  const auto s = status();
  EXPECT_EQ(s["broker"]["localPort"], ports.local);
  EXPECT_EQ(s["broker"]["tlsPort"], ports.tls);
  EXPECT_GT(s["broker"]["pid"].get<int>(), 0);
  EXPECT_THAT(cli({"status"}).output, HasSubstr("local broker    RUNNING, loopback port " + std::to_string(ports.local)));

  MqttClient sub(plain(ports.local, "sub"));
  ASSERT_TRUE(sub.subscribe("local/#", 1));
  MqttClient pub(plain(ports.local, "pub"));
  ASSERT_TRUE(pub.publish("local/a", "hello", 1));
  ASSERT_TRUE(sub.wait_for(1, 10s));
  EXPECT_EQ(sub.messages()[0].payload, "hello");
  // Mosquitto's own log goes into the component log.
  const auto until = std::chrono::steady_clock::now() + 10s;
  std::string log;
  while (std::chrono::steady_clock::now() < until) {
    log = read_file(d->root() / "logs" / "canopy.LocalBroker.log");
    if (log.find("mosquitto version") != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_THAT(log, HasSubstr("mosquitto version"));
}

TEST_F(LocalBrokerTest, ClientDeviceCertificatesAndTheirAcl) {
  start(broker_yaml(ports));
  ASSERT_TRUE(wait_running()) << status().dump(2);
  const fs::path out = dir.path() / "dev1";
  fs::create_directories(out);
  auto issued = cli({"client-device", "issue", "dev1", "--days", "30", "--out", out.string()});
  ASSERT_EQ(issued.exit_code, 0) << issued.output;
  EXPECT_THAT(issued.output, HasSubstr("mosquitto_pub -h localhost -p " + std::to_string(ports.tls)));
  EXPECT_EQ(fs::status(out / "dev1.key").permissions(), fs::perms::owner_read | fs::perms::owner_write);
  // No silent overwrite.
  auto again = cli({"client-device", "issue", "dev1", "--out", out.string()});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_THAT(again.output, HasSubstr("already exists; use --force"));
  EXPECT_EQ(cli({"client-device", "issue", "dev1", "--out", out.string(), "--force"}).exit_code, 0);
  auto bad = cli({"client-device", "issue", "bad/name", "--out", out.string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_THAT(bad.output, HasSubstr("not a valid client device name"));

  MqttClient local(plain(ports.local, "local"));
  ASSERT_TRUE(local.subscribe("dev/#", 1));
  MqttClient dev(tls(ports.tls, "dev1", out / "ca.crt", out / "dev1.crt", out / "dev1.key"));
  ASSERT_TRUE(dev.subscribe("cmd/dev1", 1));
  ASSERT_TRUE(dev.subscribe("cmd/other", 1));  // refused by the ACL (SUBACK 0x80)
  ASSERT_TRUE(dev.publish("dev/dev1/temp", "21.5", 1));
  ASSERT_TRUE(dev.publish("dev/dev2/temp", "forbidden", 1));  // dropped by the ACL
  ASSERT_TRUE(local.publish("cmd/other", "not for dev1", 1));
  ASSERT_TRUE(local.publish("cmd/dev1", "reboot", 1));
  ASSERT_TRUE(local.wait_for(1, 10s));
  ASSERT_TRUE(dev.wait_for(1, 10s));
  std::this_thread::sleep_for(500ms);
  ASSERT_EQ(local.count(), 1u);
  EXPECT_EQ(local.messages()[0].topic, "dev/dev1/temp");
  ASSERT_EQ(dev.count(), 1u);
  EXPECT_EQ(dev.messages()[0].topic, "cmd/dev1");

  // Without a certificate, and with a certificate of another CA: refused.
  EXPECT_THROW(MqttClient(tls(ports.tls, "anon", out / "ca.crt")), std::runtime_error);
  TestPki pki(dir.path() / "pki");
  EXPECT_THROW(MqttClient(tls(ports.tls, "other", out / "ca.crt", pki.pair("client").crt, pki.pair("client").key)),
               std::runtime_error);
  // A device missing from clientDevices connects but has no access.
  ASSERT_EQ(cli({"client-device", "issue", "dev9", "--out", out.string(), "--force"}).exit_code, 0);
  MqttClient dev9(tls(ports.tls, "dev9", out / "ca.crt", out / "dev9.crt", out / "dev9.key"));
  ASSERT_TRUE(dev9.publish("dev/dev9/x", "no", 1));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(local.count(), 1u);
  // The CA key is for canopyd alone.
  EXPECT_EQ(fs::status(d->root() / "broker" / "ca" / "ca.key").permissions(),
            fs::perms::owner_read | fs::perms::owner_write);
}

TEST_F(LocalBrokerTest, ATakenPortIsReportedAndCanopydStaysUp) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(ports.local));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  start(broker_yaml(ports));
  ASSERT_TRUE(wait_broker([](const nlohmann::json& b) { return b["state"] == "BROKEN"; })) << status().dump(2);
  const std::string expected = "port " + std::to_string(ports.local) + " on 127.0.0.1 is already in use";
  EXPECT_THAT(status()["broker"]["lastError"].get<std::string>(), HasSubstr(expected));
  EXPECT_THAT(status()["broker"]["lastError"].get<std::string>(), HasSubstr("systemctl disable --now mosquitto"));
  const auto det = details();
  EXPECT_EQ(det["state"], "BROKEN");
  EXPECT_EQ(det["statusCode"], "PORT_IN_USE");
  EXPECT_THAT(det["statusReason"].get<std::string>(), HasSubstr(expected));
  EXPECT_THAT(cli({"status"}).output, HasSubstr(expected));
  EXPECT_TRUE(d->process().running());
  EXPECT_TRUE(our_mosquittos().empty());
  // Freed, and restarted by the operator: it runs.
  ::close(fd);
  auto r = cli({"component", "restart", "canopy.LocalBroker"});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(wait_running()) << status().dump(2);
  auto stop = cli({"component", "stop", "canopy.LocalBroker"});
  EXPECT_NE(stop.exit_code, 0);
  EXPECT_THAT(stop.output, HasSubstr("built into canopyd"));
}

TEST_F(LocalBrokerTest, AKilledBrokerIsRestarted) {
  start(broker_yaml(ports));
  ASSERT_TRUE(wait_running()) << status().dump(2);
  const int pid = details()["pid"].get<int>();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(wait_broker([pid](const nlohmann::json& b) {
    return b["state"] == "RUNNING" && b["pid"] != pid && b["restarts"] == 1;
  })) << status().dump(2);
  MqttClient c(plain(ports.local, "after"));
  EXPECT_TRUE(c.publish("x", "y", 1));
  EXPECT_THAT(read_file(d->root() / "logs" / "canopy.LocalBroker.log"), HasSubstr("killed by SIGKILL"));
}

TEST_F(LocalBrokerTest, AConfigurationChangeRegeneratesTheAclAndRestarts) {
  start(broker_yaml(ports));
  ASSERT_TRUE(wait_running()) << status().dump(2);
  const int pid = details()["pid"].get<int>();
  const fs::path out = dir.path() / "certs";
  fs::create_directories(out);
  ASSERT_EQ(cli({"client-device", "issue", "dev2", "--out", out.string()}).exit_code, 0);
  auto set = cli({"config", "set", "canopy.LocalBroker", "clientDevices",
                  R"({"dev2": {"publish": ["dev/dev2/#"], "subscribe": []}})"});
  ASSERT_EQ(set.exit_code, 0) << set.output;
  ASSERT_TRUE(wait_broker([pid](const nlohmann::json& b) { return b["state"] == "RUNNING" && b["pid"] != pid; }))
      << status().dump(2);
  EXPECT_THAT(read_file(d->root() / "broker" / "acl"), HasSubstr("user dev2\ntopic write dev/dev2/#\n"));
  EXPECT_EQ(status()["broker"]["restarts"], 0);  // asked for, not a crash
  MqttClient local(plain(ports.local, "local"));
  ASSERT_TRUE(local.subscribe("dev/#", 1));
  MqttClient dev(tls(ports.tls, "dev2", out / "ca.crt", out / "dev2.crt", out / "dev2.key"));
  ASSERT_TRUE(dev.publish("dev/dev2/t", "ok", 1));
  EXPECT_TRUE(local.wait_for(1, 10s));
  // An invalid value: BROKEN with a sentence naming the key; canopyd keeps running.
  auto bad = cli({"config", "set", "canopy.LocalBroker", "maxInflightMessages", "0"});
  ASSERT_EQ(bad.exit_code, 0) << bad.output;
  ASSERT_TRUE(wait_broker([](const nlohmann::json& b) { return b["state"] == "BROKEN"; })) << status().dump(2);
  EXPECT_THAT(status()["broker"]["lastError"].get<std::string>(),
              HasSubstr("services.canopy.LocalBroker.configuration.maxInflightMessages must be"));
  EXPECT_TRUE(our_mosquittos().empty());
}

}  // namespace
}  // namespace canopy::test
