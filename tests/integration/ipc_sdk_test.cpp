// canopyd's Greengrass IPC server driven by the real AWS IoT Device SDK v2 for JavaScript
// (greengrasscoreipc, npm aws-iot-device-sdk-v2). Each test starts its own canopyd on a
// temporary root and runs tests/js/ipc_client.js in node as one or more components; the
// client prints one JSON line per step and event, which the tests assert on.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using ::testing::AnyOf;
using ::testing::Eq;
using ::testing::HasSubstr;

const fs::path kNode = "/usr/bin/node";
fs::path js_dir() { return fs::path(CANOPY_SOURCE_DIR) / "tests" / "js"; }

constexpr const char* kPubToken = "pub-token-0123456789abcdef";
constexpr const char* kSubToken = "sub-token-0123456789abcdef";
constexpr const char* kCfgToken = "cfg-token-0123456789abcdef";

// com.example.Pub may publish to sensors/*; com.example.Sub may subscribe and publish on
// sensors/# sensors/+ sensors/* echo/*; com.example.Cfg has configuration but no policy.
constexpr const char* kConfig = R"(services:
  canopy.Nucleus:
    configuration:
      ipc:
        staticIdentities:
          com.example.Pub: "pub-token-0123456789abcdef"
          com.example.Sub: "sub-token-0123456789abcdef"
          com.example.Cfg: "cfg-token-0123456789abcdef"
  com.example.Pub:
    configuration:
      greeting: hello
      accessControl:
        aws.greengrass.ipc.pubsub:
          "com.example.Pub:pubsub:1":
            operations: ["aws.greengrass#PublishToTopic"]
            resources: ["sensors/*"]
  com.example.Sub:
    configuration:
      accessControl:
        aws.greengrass.ipc.pubsub:
          "com.example.Sub:pubsub:1":
            operations: ["aws.greengrass#SubscribeToTopic", "aws.greengrass#PublishToTopic"]
            resources: ["sensors/#", "sensors/+", "sensors/*", "echo/*"]
  com.example.Cfg:
    configuration:
      greeting: hello
)";

// One run of ipc_client.js: its script, its process and its output (stdout and stderr).
class NodeClient {
 public:
  NodeClient(const fs::path& dir, std::string name, const json& script, std::map<std::string, std::string> env)
      : name_(std::move(name)), output_(dir / (name_ + ".out")) {
    const fs::path script_file = dir / (name_ + ".json");
    write_file(script_file, script.dump(2));
    process_ = std::make_unique<Process>(
        Process::Spec{{kNode.string(), (js_dir() / "ipc_client.js").string(), script_file.string()}, std::move(env),
                      output_, true});
  }

  const std::string& name() const { return name_; }
  std::string output() const { return fs::exists(output_) ? read_file(output_) : std::string(); }

  /// Every JSON object line printed so far (SDK noise on stderr is skipped).
  std::vector<json> lines() const {
    std::vector<json> out;
    std::istringstream in(output());
    for (std::string line; std::getline(in, line);) {
      if (line.empty() || line.front() != '{') continue;
      auto j = json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.is_object()) out.push_back(std::move(j));
    }
    return out;
  }

  /// Waits until a printed line satisfies `pred`; false on deadline or if node exited first.
  bool wait_for(const std::function<bool(const json&)>& pred, std::chrono::milliseconds deadline = 20s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    for (;;) {
      const bool alive = process_->running();
      for (const auto& l : lines())
        if (pred(l)) return true;
      if (!alive || std::chrono::steady_clock::now() >= until) return false;
      std::this_thread::sleep_for(20ms);
    }
  }

  /// Waits for the step line with this tag (see step()).
  bool wait_for_step(const std::string& tag, std::chrono::milliseconds deadline = 20s) {
    return wait_for([&](const json& l) { return l.contains("step") && l.value("tag", "") == tag; }, deadline);
  }

  /// Exit code, or nullopt when node did not exit by the deadline.
  std::optional<int> wait(std::chrono::milliseconds deadline = 60s) { return process_->wait(deadline); }

  /// The step line with this tag (null if absent).
  json step(const std::string& tag) const {
    for (const auto& l : lines())
      if (l.contains("step") && l.value("tag", "") == tag) return l;
    return nullptr;
  }

  /// The events of stream `id` of kind `event`, in arrival order, without the "id" member.
  std::vector<json> events(const std::string& id, const std::string& event = "message") const {
    std::vector<json> out;
    for (auto l : lines())
      if (l.value("event", "") == event && l.value("id", "") == id) {
        l.erase("id");
        out.push_back(std::move(l));
      }
    return out;
  }

 private:
  std::string name_;
  fs::path output_;
  std::unique_ptr<Process> process_;
};

// A step object, tagged so the test can find its result line.
json step(const std::string& tag, json body) {
  body["tag"] = tag;
  return body;
}

json script(std::vector<json> steps) { return json{{"totalTimeoutMs", 60000}, {"steps", std::move(steps)}}; }

json connect_step() { return {{"op", "connect"}, {"tag", "connect"}, {"timeoutMs", 10000}}; }

json ok_response(const json& body) { return {{"ok", true}, {"response", body}}; }

// The parts of a step line a test asserts on: ok + response, or ok + error.
json outcome(const json& line) {
  if (line.is_null()) return "missing";
  json o = {{"ok", line.value("ok", false)}};
  if (line.contains("response")) o["response"] = line["response"];
  if (line.contains("error")) o["error"] = {{"name", line["error"].value("name", "")},
                                            {"message", line["error"].value("message", "")}};
  return o;
}

json service_error(const std::string& name, const std::string& message) {
  return {{"ok", false}, {"error", {{"name", name}, {"message", message}}}};
}

class IpcSdk : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kNode)) GTEST_SKIP() << "node is not installed at " << kNode << "; skipping the JS SDK tests";
    if (!fs::exists(js_dir() / "node_modules" / "aws-iot-device-sdk-v2" / "package.json"))
      GTEST_SKIP() << "the JS SDK is missing: " << (js_dir() / "node_modules" / "aws-iot-device-sdk-v2")
                   << " (run scripts/setup.d/js-sdk.sh)";
    Canopyd::Options o;
    o.config_yaml = kConfig;
    daemon_ = std::make_unique<Canopyd>(dir_.path(), o);
    ASSERT_TRUE(daemon_->wait_ready()) << "canopyd did not become ready";
    ASSERT_TRUE(fs::exists(socket())) << socket();
  }

  void TearDown() override {
    if (HasFailure())
      for (const auto& c : clients_)
        std::fprintf(stderr, "----- node %s output -----\n%s----- end of node %s output -----\n", c->name().c_str(),
                     c->output().c_str(), c->name().c_str());
    clients_.clear();  // kills any node still running, before canopyd stops
    daemon_.reset();
  }

  fs::path socket() const { return daemon_->root() / "ipc.socket"; }

  std::string cli_token() const {
    const auto info = json::parse(read_file(daemon_->root() / "cli_ipc_info" / "0"));
    EXPECT_EQ(info.at("domain_socket_path").get<std::string>(), socket().string());
    return info.at("cli_auth_token").get<std::string>();
  }

  /// Starts ipc_client.js with this token (the component identity) and script.
  NodeClient& start(const std::string& name, const std::string& token, const json& s) {
    clients_.push_back(std::make_unique<NodeClient>(
        dir_.path(), name, s,
        std::map<std::string, std::string>{{"SVCUID", token},
                                           {"AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", socket().string()}}));
    return *clients_.back();
  }

  /// Runs a script to completion; expects exit code `expected_exit`.
  NodeClient& run(const std::string& name, const std::string& token, const json& s, int expected_exit = 0) {
    NodeClient& c = start(name, token, s);
    const auto code = c.wait(60s);
    EXPECT_TRUE(code.has_value()) << "node " << name << " did not exit within 60 s";
    if (code) {
      EXPECT_EQ(*code, expected_exit) << "node " << name << " exit code";
    }
    return c;
  }

  /// Waits until canopyd counts `n` open IPC connections besides the `canopy status` asking
  /// (so a node client that exited is known to be gone, with its streams).
  void wait_for_connections(int n, std::chrono::seconds deadline = 20s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    std::string last;
    while (std::chrono::steady_clock::now() < until) {
      auto r = run_command({canopy_cli_path().string(), "--root", daemon_->root().string(), "status", "--json"}, 20s);
      last = r.output;
      const auto j = json::parse(r.output, nullptr, false);
      if (r.exit_code == 0 && !j.is_discarded() && j["ipc"].value("connections", -1) == n + 1) return;
      std::this_thread::sleep_for(50ms);
    }
    ADD_FAILURE() << "canopyd did not get to " << n << " other IPC connections; last status: " << last;
  }

  /// Waits for a streaming step's line (the subscription is active once it is printed).
  void wait_subscribed(NodeClient& c, const std::string& tag) {
    ASSERT_TRUE(c.wait_for_step(tag, 20s)) << c.name() << ": no result for step " << tag;
    ASSERT_EQ(c.step(tag).value("ok", false), true) << c.step(tag).dump();
  }

  TempDir dir_;
  std::unique_ptr<Canopyd> daemon_;
  std::vector<std::unique_ptr<NodeClient>> clients_;
};

// ---------------------------------------------------------------------------------------
// Connection

TEST_F(IpcSdk, ConnectWithAValidTokenSucceeds) {
  auto& c = run("pub", kPubToken, script({connect_step(), step("close", {{"op", "close"}})}));
  EXPECT_EQ(outcome(c.step("connect")), json({{"ok", true}}));
  EXPECT_EQ(outcome(c.step("close")), json({{"ok", true}}));
}

TEST_F(IpcSdk, BadTokenIsRefusedAndCanopydKeepsServing) {
  // canopyd answers a ConnectAck without ConnectionAccepted and closes (as the Java nucleus
  // does). The CRT client closes too on such an ack, so the JS SDK reports either the
  // handshake failure or the closed connection, whichever event it sees first.
  json bad = connect_step();
  bad["expectError"] = json::array({"HandshakeError", "NetworkError"});
  auto& refused = run("bad", "not-a-valid-token-0123456789", script({bad}));
  const json line = refused.step("connect");
  ASSERT_FALSE(line.is_null()) << refused.output();
  EXPECT_EQ(line["ok"], false);
  EXPECT_THAT(line["error"].value("name", ""), AnyOf(Eq("HandshakeError"), Eq("NetworkError")));

  // No token at all (SVCUID unset: the SDK sends a Connect without a payload).
  auto& anonymous = run("anonymous", "", script({bad}));
  EXPECT_EQ(anonymous.step("connect").value("ok", true), false) << anonymous.output();

  EXPECT_THAT(daemon_->logs(), HasSubstr("refused: the authToken is not valid"));
  EXPECT_THAT(daemon_->logs(), HasSubstr("refused: the Connect payload has no authToken"));
  ASSERT_TRUE(daemon_->process().running());

  // A valid client afterwards is served normally.
  auto& good = run("good", kPubToken,
                   script({connect_step(), step("publish", {{"op", "publishToTopic"},
                                                            {"topic", "sensors/t1"},
                                                            {"json", {{"n", 1}}}})}));
  EXPECT_EQ(outcome(good.step("connect")), json({{"ok", true}}));
  EXPECT_EQ(outcome(good.step("publish")), ok_response(json::object()));
}

// ---------------------------------------------------------------------------------------
// Local pub/sub

TEST_F(IpcSdk, JsonAndBinaryMessagesReachSubscribersInAnotherProcessIncludingWildcards) {
  auto& sub = start(
      "sub", kSubToken,
      script({connect_step(),
              step("sub-plus", {{"op", "subscribeToTopic"}, {"id", "plus"}, {"topic", "sensors/+"}}),
              step("sub-hash", {{"op", "subscribeToTopic"}, {"id", "hash"}, {"topic", "sensors/#"}}),
              step("sub-t1", {{"op", "subscribeToTopic"}, {"id", "t1"}, {"topic", "sensors/t1"}}),
              step("sub-others", {{"op", "subscribeToTopic"},
                                  {"id", "others"},
                                  {"topic", "sensors/t3"},
                                  {"receiveMode", "RECEIVE_MESSAGES_FROM_OTHERS"}}),
              step("wait-plus", {{"op", "waitMessages"}, {"id", "plus"}, {"count", 4}, {"timeoutMs", 30000}}),
              step("wait-hash", {{"op", "waitMessages"}, {"id", "hash"}, {"count", 4}, {"timeoutMs", 10000}}),
              step("wait-t1", {{"op", "waitMessages"}, {"id", "t1"}, {"count", 2}, {"timeoutMs", 10000}}),
              step("wait-others", {{"op", "waitMessages"}, {"id", "others"}, {"count", 1}, {"timeoutMs", 10000}})}));
  wait_subscribed(sub, "sub-others");  // the last subscription: all four are active

  const json temp = {{"temp", 21.5}, {"unit", "C"}, {"tags", {"a", "b"}}, {"ok", true}, {"none", nullptr}};
  const std::string bytes_b64 = "AAEC/f7/aGVsbG8=";  // 00 01 02 fd fe ff "hello"
  auto& pub = run("pub", kPubToken,
                  script({connect_step(),
                          step("p1", {{"op", "publishToTopic"}, {"topic", "sensors/t1"}, {"json", temp}}),
                          step("p2", {{"op", "publishToTopic"}, {"topic", "sensors/t1"}, {"binaryBase64", bytes_b64}}),
                          step("p3", {{"op", "publishToTopic"}, {"topic", "sensors/t2"}, {"json", {{"n", 2}}}}),
                          step("p4", {{"op", "publishToTopic"}, {"topic", "sensors/t3"}, {"json", "from Pub"}})}));
  for (const char* p : {"p1", "p2", "p3", "p4"}) EXPECT_EQ(outcome(pub.step(p)), ok_response(json::object())) << p;

  const auto code = sub.wait(60s);
  ASSERT_TRUE(code.has_value()) << "the subscriber did not exit";
  EXPECT_EQ(*code, 0);

  const json m1 = {{"event", "message"}, {"topic", "sensors/t1"}, {"json", temp}};
  const json m2 = {{"event", "message"}, {"topic", "sensors/t1"}, {"binary", bytes_b64}};
  const json m3 = {{"event", "message"}, {"topic", "sensors/t2"}, {"json", {{"n", 2}}}};
  const json m4 = {{"event", "message"}, {"topic", "sensors/t3"}, {"json", "from Pub"}};
  EXPECT_EQ(json(sub.events("t1")), json({m1, m2}));
  // Wildcard filters default to RECEIVE_MESSAGES_FROM_OTHERS: a message from another
  // component is delivered.
  EXPECT_EQ(json(sub.events("plus")), json({m1, m2, m3, m4}));
  EXPECT_EQ(json(sub.events("hash")), json({m1, m2, m3, m4}));
  EXPECT_EQ(json(sub.events("others")), json({m4}));
}

TEST_F(IpcSdk, ReceiveModesAndTheirDefaults) {
  // One component subscribes and publishes on the same topics. Each publish's response comes
  // after any event it caused on the same connection, so once the later publishes have been
  // seen on "all" and "plain", an echo to "others" or "wild" would already have arrived.
  auto& c = run(
      "sub", kSubToken,
      script({connect_step(),
              step("sub-all", {{"op", "subscribeToTopic"},
                               {"id", "all"},
                               {"topic", "echo/all"},
                               {"receiveMode", "RECEIVE_ALL_MESSAGES"}}),
              step("sub-others", {{"op", "subscribeToTopic"},
                                  {"id", "others"},
                                  {"topic", "echo/others"},
                                  {"receiveMode", "RECEIVE_MESSAGES_FROM_OTHERS"}}),
              step("sub-wild", {{"op", "subscribeToTopic"}, {"id", "wild"}, {"topic", "echo/+"}}),
              step("sub-plain", {{"op", "subscribeToTopic"}, {"id", "plain"}, {"topic", "echo/plain"}}),
              step("pub-others", {{"op", "publishToTopic"}, {"topic", "echo/others"}, {"text", "o"}}),
              step("pub-plain", {{"op", "publishToTopic"}, {"topic", "echo/plain"}, {"text", "p"}}),
              step("pub-all", {{"op", "publishToTopic"}, {"topic", "echo/all"}, {"text", "a"}}),
              step("wait-all", {{"op", "waitMessages"}, {"id", "all"}, {"count", 1}}),
              step("wait-plain", {{"op", "waitMessages"}, {"id", "plain"}, {"count", 1}}),
              step("count-others", {{"op", "expectEventCount"}, {"id", "others"}, {"count", 0}}),
              step("count-wild", {{"op", "expectEventCount"}, {"id", "wild"}, {"count", 0}})}));
  EXPECT_EQ(json(c.events("all")), json({{{"event", "message"}, {"topic", "echo/all"}, {"binary", "YQ=="}}}));
  // No receiveMode on a plain topic: RECEIVE_ALL_MESSAGES, own publishes come back.
  EXPECT_EQ(json(c.events("plain")), json({{{"event", "message"}, {"topic", "echo/plain"}, {"binary", "cA=="}}}));
  // RECEIVE_MESSAGES_FROM_OTHERS, and the wildcard default: none of the own publishes.
  EXPECT_EQ(json(c.events("others")), json::array());
  EXPECT_EQ(json(c.events("wild")), json::array());
  EXPECT_EQ(outcome(c.step("count-others")), ok_response({{"count", 0}}));
  EXPECT_EQ(outcome(c.step("count-wild")), ok_response({{"count", 0}}));
}

// ---------------------------------------------------------------------------------------
// Configuration

TEST_F(IpcSdk, GetUpdateAndSubscribeToOwnConfiguration) {
  auto& c = run(
      "cfg", kCfgToken,
      script({connect_step(),
              step("get-root", {{"op", "getConfiguration"}, {"keyPath", json::array()}}),
              step("get-leaf", {{"op", "getConfiguration"}, {"keyPath", {"greeting"}}}),
              step("get-missing", {{"op", "getConfiguration"}, {"keyPath", {"nope"}}, {"expectError", "ResourceNotFoundError"}}),
              step("subscribe", {{"op", "subscribeToConfigurationUpdate"}, {"id", "cfg"}, {"keyPath", json::array()}}),
              step("update", {{"op", "updateConfiguration"},
                              {"keyPath", {"greeting"}},
                              {"valueToMerge", "hi"},
                              {"timestampNow", true}}),
              step("wait-event", {{"op", "waitEvents"}, {"id", "cfg"}, {"count", 1}}),
              step("get-updated", {{"op", "getConfiguration"}, {"keyPath", {"greeting"}}}),
              // Epoch second 1000 is older than the change just made.
              step("update-stale", {{"op", "updateConfiguration"},
                                    {"keyPath", {"greeting"}},
                                    {"valueToMerge", "stale"},
                                    {"timestamp", 1000},
                                    {"expectError", "FailedUpdateConditionCheckError"}}),
              step("get-after-stale", {{"op", "getConfiguration"}, {"keyPath", {"greeting"}}}),
              step("close", {{"op", "close"}})}));
  EXPECT_EQ(outcome(c.step("get-root")),
            ok_response({{"componentName", "com.example.Cfg"}, {"value", {{"greeting", "hello"}}}}));
  // Greengrass wraps a leaf as {key: value}.
  EXPECT_EQ(outcome(c.step("get-leaf")),
            ok_response({{"componentName", "com.example.Cfg"}, {"value", {{"greeting", "hello"}}}}));
  EXPECT_EQ(outcome(c.step("get-missing")),
            service_error("ResourceNotFoundError", "GetConfiguration: component com.example.Cfg has no configuration at /nope"));
  EXPECT_EQ(outcome(c.step("subscribe")), ok_response(json::object()));
  EXPECT_EQ(outcome(c.step("update")), ok_response(json::object()));
  EXPECT_EQ(json(c.events("cfg", "configurationUpdate")),
            json({{{"event", "configurationUpdate"}, {"componentName", "com.example.Cfg"}, {"keyPath", {"greeting"}}}}));
  EXPECT_EQ(outcome(c.step("get-updated")),
            ok_response({{"componentName", "com.example.Cfg"}, {"value", {{"greeting", "hi"}}}}));
  EXPECT_EQ(outcome(c.step("update-stale")),
            service_error("FailedUpdateConditionCheckError",
                          "UpdateConfiguration: the proposed timestamp is older than the configuration's latest change"));
  EXPECT_EQ(outcome(c.step("get-after-stale")),
            ok_response({{"componentName", "com.example.Cfg"}, {"value", {{"greeting", "hi"}}}}));
}

TEST_F(IpcSdk, ConfigurationChangedByAnotherComponentIsSeenByItsSubscriber) {
  auto& watcher = start(
      "cfg", kCfgToken,
      script({connect_step(),
              step("subscribe", {{"op", "subscribeToConfigurationUpdate"},
                                 {"id", "pub"},
                                 {"componentName", "com.example.Pub"},
                                 {"keyPath", {"greeting"}}}),
              step("wait-event", {{"op", "waitEvents"}, {"id", "pub"}, {"count", 1}, {"timeoutMs", 30000}}),
              step("get", {{"op", "getConfiguration"}, {"componentName", "com.example.Pub"}, {"keyPath", {"greeting"}}})}));
  wait_subscribed(watcher, "subscribe");

  auto& pub = run("pub", kPubToken,
                  script({connect_step(), step("update", {{"op", "updateConfiguration"},
                                                          {"keyPath", {"greeting"}},
                                                          {"valueToMerge", "bonjour"},
                                                          {"timestampNow", true}})}));
  EXPECT_EQ(outcome(pub.step("update")), ok_response(json::object()));

  const auto code = watcher.wait(60s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  EXPECT_EQ(json(watcher.events("pub", "configurationUpdate")),
            json({{{"event", "configurationUpdate"}, {"componentName", "com.example.Pub"}, {"keyPath", {"greeting"}}}}));
  EXPECT_EQ(outcome(watcher.step("get")),
            ok_response({{"componentName", "com.example.Pub"}, {"value", {{"greeting", "bonjour"}}}}));
}

// ---------------------------------------------------------------------------------------
// Authorization

TEST_F(IpcSdk, UnauthorizedCallsAreRejectedNamingOperationAndResource) {
  auto& pub = run("pub", kPubToken,
                  script({connect_step(),
                          step("publish", {{"op", "publishToTopic"},
                                           {"topic", "other/topic"},
                                           {"json", {{"x", 1}}},
                                           {"expectError", "UnauthorizedError"}}),
                          step("status", {{"op", "rawCall"},
                                          {"operation", "canopy#GetStatus"},
                                          {"expectError", "UnauthorizedError"}}),
                          step("release", {{"op", "rawCall"},
                                           {"operation", "canopy#ReleaseHeldMessages"},
                                           {"expectError", "UnauthorizedError"}}),
                          // The connection stays usable after a denied call.
                          step("allowed", {{"op", "publishToTopic"}, {"topic", "sensors/t1"}, {"json", 1}})}));
  EXPECT_EQ(outcome(pub.step("publish")),
            service_error("UnauthorizedError",
                          "com.example.Pub is not authorized to perform aws.greengrass#PublishToTopic on resource "
                          "\"other/topic\"; add an accessControl policy for aws.greengrass.ipc.pubsub"));
  EXPECT_EQ(outcome(pub.step("status")),
            service_error("UnauthorizedError",
                          "com.example.Pub is not authorized to perform canopy#GetStatus: only the canopy CLI may"));
  EXPECT_EQ(outcome(pub.step("release")),
            service_error("UnauthorizedError", "com.example.Pub is not authorized to perform "
                                               "canopy#ReleaseHeldMessages: only the canopy CLI may"));
  EXPECT_EQ(outcome(pub.step("allowed")), ok_response(json::object()));

  // com.example.Cfg has no accessControl at all.
  auto& cfg = run("cfg", kCfgToken,
                  script({connect_step(), step("subscribe", {{"op", "subscribeToTopic"},
                                                             {"id", "s"},
                                                             {"topic", "sensors/t1"},
                                                             {"expectError", "UnauthorizedError"}})}));
  EXPECT_EQ(outcome(cfg.step("subscribe")),
            service_error("UnauthorizedError",
                          "com.example.Cfg is not authorized to perform aws.greengrass#SubscribeToTopic on resource "
                          "\"sensors/t1\"; add an accessControl policy for aws.greengrass.ipc.pubsub"));
}

// ---------------------------------------------------------------------------------------
// UpdateState and the CLI's GetStatus

TEST_F(IpcSdk, UpdateStateIsShownByGetStatus) {
  auto& pub = run("pub", kPubToken,
                  script({connect_step(), step("state", {{"op", "updateState"}, {"state", "RUNNING"}})}));
  EXPECT_EQ(outcome(pub.step("state")), ok_response(json::object()));
  auto& sub = run("sub", kSubToken,
                  script({connect_step(), step("state", {{"op", "updateState"}, {"state", "ERRORED"}})}));
  EXPECT_EQ(outcome(sub.step("state")), ok_response(json::object()));

  auto& cli = run("cli", cli_token(),
                  script({connect_step(), step("status", {{"op", "rawCall"}, {"operation", "canopy#GetStatus"}})}));
  const json status = cli.step("status");
  ASSERT_EQ(status.value("ok", false), true) << status.dump();
  EXPECT_EQ(status["response"]["reportedStates"],
            json({{"com.example.Pub", "RUNNING"}, {"com.example.Sub", "ERRORED"}}));
  EXPECT_EQ(status["response"]["pid"], daemon_->process().pid());
  EXPECT_EQ(status["response"]["root"], daemon_->root().string());
}

// ---------------------------------------------------------------------------------------
// Configuration validation (the CLI's canopy#UpdateConfiguration asks validators first)

TEST_F(IpcSdk, RejectedValidationFailsTheCliUpdateAndAcceptedAppliesIt) {
  auto& validator = start(
      "validator", kCfgToken,
      script({connect_step(),
              step("validate", {{"op", "subscribeToValidateConfigurationUpdates"},
                                {"id", "v"},
                                {"answer", "REJECTED"},
                                {"message", "greeting must stay"}}),
              step("wait-report", {{"op", "waitReports"}, {"id", "v"}, {"count", 1}, {"timeoutMs", 30000}})}));
  wait_subscribed(validator, "validate");

  const std::string token = cli_token();
  const json update = {{"op", "rawCall"},
                       {"operation", "canopy#UpdateConfiguration"},
                       {"timeoutMs", 20000},
                       {"request", {{"componentName", "com.example.Cfg"}, {"keyPath", {"greeting"}}, {"valueToMerge", "nope"}}}};
  json rejected = update;
  rejected["expectError"] = "ConflictError";
  auto& cli = run("cli", token, script({connect_step(), step("update", rejected)}));
  EXPECT_EQ(outcome(cli.step("update")),
            service_error("ConflictError", "com.example.Cfg rejected the configuration: com.example.Cfg: greeting must stay"));

  const auto code = validator.wait(60s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
  const auto asked = validator.events("v", "validateConfigurationUpdate");
  ASSERT_EQ(asked.size(), 1u) << validator.output();
  EXPECT_EQ(asked[0]["configuration"], json({{"greeting", "nope"}}));
  EXPECT_THAT(asked[0].value("deploymentId", ""), ::testing::StartsWith("cli-"));

  auto& check = run("check", kCfgToken,
                    script({connect_step(), step("get", {{"op", "getConfiguration"}, {"keyPath", {"greeting"}}})}));
  EXPECT_EQ(outcome(check.step("get")),
            ok_response({{"componentName", "com.example.Cfg"}, {"value", {{"greeting", "hello"}}}}));

  // Now a validator that accepts: the update applies. The rejecting one must be gone first.
  wait_for_connections(0);
  auto& accepting = start("accepting", kCfgToken,
                          script({connect_step(),
                                  step("validate", {{"op", "subscribeToValidateConfigurationUpdates"},
                                                    {"id", "v"},
                                                    {"answer", "ACCEPTED"}}),
                                  step("wait-report", {{"op", "waitReports"}, {"id", "v"}, {"count", 1}, {"timeoutMs", 30000}})}));
  wait_subscribed(accepting, "validate");
  json accepted = update;
  accepted["request"]["valueToMerge"] = "yes";
  auto& cli2 = run("cli2", token, script({connect_step(), step("update", accepted)}));
  EXPECT_EQ(outcome(cli2.step("update")), ok_response(json::object()));
  ASSERT_TRUE(accepting.wait(60s).has_value());
  EXPECT_EQ(accepting.events("v", "validateConfigurationUpdate").size(), 1u);

  auto& check2 = run("check2", kCfgToken,
                     script({connect_step(), step("get", {{"op", "getConfiguration"}, {"keyPath", {"greeting"}}})}));
  EXPECT_EQ(outcome(check2.step("get")),
            ok_response({{"componentName", "com.example.Cfg"}, {"value", {{"greeting", "yes"}}}}));
}

// The same through the operator's command line: `canopy config set` fails when a component
// rejects the change, and succeeds once no validator objects.
TEST_F(IpcSdk, CliConfigSetIsRejectedByANodeValidator) {
  if (!fs::exists(canopy_cli_path())) GTEST_SKIP() << "canopy config set not available: " << canopy_cli_path();
  auto& validator = start(
      "validator", kCfgToken,
      script({connect_step(),
              step("validate", {{"op", "subscribeToValidateConfigurationUpdates"},
                                {"id", "v"},
                                {"answer", "REJECTED"},
                                {"message", "greeting must stay"}}),
              step("wait-report", {{"op", "waitReports"}, {"id", "v"}, {"count", 1}, {"timeoutMs", 30000}})}));
  wait_subscribed(validator, "validate");

  const std::string root = daemon_->root().string();
  auto r = run_command({canopy_cli_path().string(), "--root", root, "config", "set", "com.example.Cfg", "greeting",
                        "\"nope\""},
                       60s);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_EQ(r.output, "canopy: com.example.Cfg rejected the configuration: com.example.Cfg: greeting must stay\n");
  ASSERT_TRUE(validator.wait(60s).has_value());
  EXPECT_EQ(validator.events("v", "validateConfigurationUpdate").size(), 1u);

  // The validator is gone: nobody objects and the value is applied.
  wait_for_connections(0);
  auto ok = run_command({canopy_cli_path().string(), "--root", root, "config", "set", "com.example.Cfg", "greeting",
                         "\"yes\""},
                        60s);
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  auto& check = run("check", kCfgToken,
                    script({connect_step(), step("get", {{"op", "getConfiguration"}, {"keyPath", {"greeting"}}})}));
  EXPECT_EQ(outcome(check.step("get")),
            ok_response({{"componentName", "com.example.Cfg"}, {"value", {{"greeting", "yes"}}}}));
}

}  // namespace
}  // namespace canopy::test
