// The C++ IPC client library against a real canopyd, and policies that reload when a
// component's accessControl configuration changes.
#include <atomic>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "canopy/ipc/client.hpp"
#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr const char* kTokenA = "token-a-0123456789abcdef";
constexpr const char* kTokenB = "token-b-0123456789abcdef";

std::string config() {
  return std::string(
             "services:\n"
             "  canopy.Nucleus:\n"
             "    configuration:\n"
             "      ipc:\n"
             "        staticIdentities:\n"
             "          com.example.A: ") +
         kTokenA + "\n          com.example.B: " + kTokenB +
         "\n"
         "  com.example.B:\n"
         "    configuration:\n"
         "      color: green\n"
         "      accessControl:\n"
         "        aws.greengrass.ipc.pubsub:\n"
         "          b1:\n"
         "            operations: ['aws.greengrass#SubscribeToTopic']\n"
         "            resources: ['x/*']\n";
}

std::unique_ptr<ipc::Client> connect(const Canopyd& d, const char* token) {
  auto c = ipc::Client::connect({d.root() / "ipc.socket", token, 10s});
  EXPECT_TRUE(c) << (c ? "" : c.error().message);
  return c ? std::move(*c) : nullptr;
}

nlohmann::json publish(const std::string& topic) {
  return {{"topic", topic}, {"publishMessage", {{"jsonMessage", {{"message", {{"n", 1}}}}}}}};
}

TEST(IpcClient, PoliciesReloadWhenAccessControlChanges) {
  TempDir dir;
  Canopyd d(dir.path(), {.config_yaml = config(), .extra_args = {}, .env = {}, .foreground = true, .notify = true});
  ASSERT_TRUE(d.wait_ready());
  auto a = connect(d, kTokenA);
  ASSERT_TRUE(a);

  auto denied = a->call("aws.greengrass#PublishToTopic", publish("x/1"));
  ASSERT_FALSE(denied);
  EXPECT_EQ(denied.error().code, errc::unauthorized);
  EXPECT_THAT(denied.error().message, HasSubstr("com.example.A is not authorized to perform aws.greengrass#PublishToTopic"));
  EXPECT_THAT(denied.error().message, HasSubstr("x/1"));

  // Grant it through the CLI; the policy applies to the very next call.
  auto grant = run_command({canopy_cli_path().string(), "--root", d.root().string(), "config", "set", "com.example.A",
                            "accessControl",
                            R"({"aws.greengrass.ipc.pubsub":{"a1":{"operations":["aws.greengrass#PublishToTopic"],"resources":["x/*"]}}})"});
  ASSERT_EQ(grant.exit_code, 0) << grant.output;
  auto allowed = a->call("aws.greengrass#PublishToTopic", publish("x/1"));
  EXPECT_TRUE(allowed) << allowed.error().message;
  auto other = a->call("aws.greengrass#PublishToTopic", publish("y/1"));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().code, errc::unauthorized);

  // A malformed policy denies everything rather than half-understanding it, and says why.
  auto broken2 = run_command({canopy_cli_path().string(), "--root", d.root().string(), "config", "set", "com.example.A",
                              "/accessControl/aws.greengrass.ipc.pubsub/a1/operations", "\"not a list\""});
  ASSERT_EQ(broken2.exit_code, 0) << broken2.output;
  auto after = a->call("aws.greengrass#PublishToTopic", publish("x/1"));
  ASSERT_FALSE(after);
  EXPECT_EQ(after.error().code, errc::unauthorized);
  EXPECT_THAT(d.logs(), HasSubstr("component=com.example.A has an invalid accessControl policy"));
}

TEST(IpcClient, SubscribeReceivesInOrderAndCloseEndsTheSubscription) {
  TempDir dir;
  std::string cfg = config() +
                    "  com.example.A:\n    configuration:\n      accessControl:\n        aws.greengrass.ipc.pubsub:\n"
                    "          a1: {operations: ['*'], resources: ['x/*']}\n";
  Canopyd d(dir.path(), {.config_yaml = cfg, .extra_args = {}, .env = {}, .foreground = true, .notify = true});
  ASSERT_TRUE(d.wait_ready());
  auto a = connect(d, kTokenA);
  auto b = connect(d, kTokenB);
  ASSERT_TRUE(a && b);
  std::mutex m;
  std::vector<nlohmann::json> got;
  auto stream = b->subscribe("aws.greengrass#SubscribeToTopic", {{"topic", "x/+"}}, [&](std::string_view body) {
    std::lock_guard lock(m);
    got.push_back(nlohmann::json::parse(body));
  });
  ASSERT_TRUE(stream) << stream.error().message;
  for (int i = 0; i < 100; ++i) {
    auto r = a->call("aws.greengrass#PublishToTopic",
                     {{"topic", "x/" + std::to_string(i % 3)}, {"publishMessage", {{"jsonMessage", {{"message", {{"i", i}}}}}}}});
    ASSERT_TRUE(r) << r.error().message;
  }
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard lock(m);
      if (got.size() >= 100) break;
    }
    std::this_thread::sleep_for(10ms);
  }
  {
    std::lock_guard lock(m);
    ASSERT_EQ(got.size(), 100u);
    for (int i = 0; i < 100; ++i) {
      EXPECT_EQ(got[static_cast<std::size_t>(i)]["jsonMessage"]["message"]["i"], i);
      EXPECT_EQ(got[static_cast<std::size_t>(i)]["jsonMessage"]["context"]["topic"], "x/" + std::to_string(i % 3));
    }
  }
  (*stream)->close();
  // Once the close is processed, nothing more arrives.
  for (int i = 0; i < 200; ++i) {
    auto status = run_command({canopy_cli_path().string(), "--root", d.root().string(), "status", "--json"});
    if (nlohmann::json::parse(status.output)["pubsub"]["subscriptions"] == 0) break;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_TRUE(a->call("aws.greengrass#PublishToTopic", publish("x/9")));
  std::this_thread::sleep_for(100ms);
  std::lock_guard lock(m);
  EXPECT_EQ(got.size(), 100u);
}

TEST(IpcClient, GetConfigurationOfAnotherComponentAndErrorsComeBackAsErrc) {
  TempDir dir;
  Canopyd d(dir.path(), {.config_yaml = config(), .extra_args = {}, .env = {}, .foreground = true, .notify = true});
  ASSERT_TRUE(d.wait_ready());
  auto a = connect(d, kTokenA);
  ASSERT_TRUE(a);
  auto color = a->call("aws.greengrass#GetConfiguration", {{"componentName", "com.example.B"}, {"keyPath", {"color"}}});
  ASSERT_TRUE(color) << color.error().message;
  EXPECT_EQ((*color)["value"], (nlohmann::json{{"color", "green"}}));
  auto missing = a->call("aws.greengrass#GetConfiguration", {{"componentName", "com.example.B"}, {"keyPath", {"nope"}}});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, errc::not_found);
  auto bad = a->call("aws.greengrass#PublishToTopic", {{"topic", 5}});
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid);
  auto refused = ipc::Client::connect({d.root() / "ipc.socket", "wrong-token-0123456789", 10s});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::unauthorized);
}

TEST(IpcClient, ConnectionAndStreamLimitsAreEnforcedWithClearAnswers) {
  TempDir dir;
  std::string cfg = config();
  cfg.replace(cfg.find("        staticIdentities:"), 0,
              "        maxConnections: 3\n        maxStreamsPerConnection: 2\n");
  cfg += "  com.example.A:\n    configuration:\n      accessControl:\n        aws.greengrass.ipc.pubsub:\n"
         "          a1: {operations: ['*'], resources: ['*']}\n";
  Canopyd d(dir.path(), {.config_yaml = cfg, .extra_args = {}, .env = {}, .foreground = true, .notify = true});
  ASSERT_TRUE(d.wait_ready());
  auto a = connect(d, kTokenA);
  ASSERT_TRUE(a);
  // Two open subscriptions are allowed; the third stream is refused, the connection lives on.
  auto s1 = a->subscribe("aws.greengrass#SubscribeToTopic", {{"topic", "l/1"}}, [](std::string_view) {});
  auto s2 = a->subscribe("aws.greengrass#SubscribeToTopic", {{"topic", "l/2"}}, [](std::string_view) {});
  ASSERT_TRUE(s1 && s2);
  auto s3 = a->subscribe("aws.greengrass#SubscribeToTopic", {{"topic", "l/3"}}, [](std::string_view) {});
  ASSERT_FALSE(s3);
  EXPECT_THAT(s3.error().message, HasSubstr("too many open streams on this connection (limit 2)"));
  (*s2)->close();
  bool reopened = false;
  for (int i = 0; i < 100 && !reopened; ++i) {
    reopened = static_cast<bool>(a->subscribe("aws.greengrass#SubscribeToTopic", {{"topic", "l/4"}}, [](std::string_view) {}));
    if (!reopened) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(reopened) << "closing a stream frees its slot";

  // Connections: a is one; two more fit; the fourth is refused and counted.
  auto b = connect(d, kTokenB);
  auto c = connect(d, kTokenB);
  ASSERT_TRUE(b && c);
  auto refused = ipc::Client::connect({d.root() / "ipc.socket", kTokenB, 5s});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, errc::no_connection);
  EXPECT_THAT(refused.error().message, HasSubstr("connection limit"));
  EXPECT_THAT(d.logs(), HasSubstr("3 connections open (ipc.maxConnections)"));
  c.reset();
  bool again = false;
  for (int i = 0; i < 200 && !again; ++i) {
    again = static_cast<bool>(ipc::Client::connect({d.root() / "ipc.socket", kTokenB, 5s}));
    if (!again) std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(again) << "a closed connection frees its slot";
  EXPECT_TRUE(a->call("aws.greengrass#PublishToTopic", publish("l/1")));
}

}  // namespace
}  // namespace canopy::test
