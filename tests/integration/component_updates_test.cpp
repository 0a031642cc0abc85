// NOTIFY_COMPONENTS deployments (SubscribeToComponentUpdates, DeferComponentUpdate) and
// UpdateState during Startup, against a real canopyd with real components and the CLI.
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include <pwd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "canopy/ipc/client.hpp"
#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr const char* kWatcherToken = "watcher-token-0123456789abcdef";

// Collects stream events; waits for them with a deadline.
struct Events {
  std::mutex m;
  std::condition_variable cv;
  std::vector<nlohmann::json> items;
  void add(std::string_view body) {
    std::lock_guard lock(m);
    items.push_back(nlohmann::json::parse(body));
    cv.notify_all();
  }
  bool wait_count(std::size_t n, std::chrono::seconds deadline) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, deadline, [&] { return items.size() >= n; });
  }
  nlohmann::json at(std::size_t i) {
    std::lock_guard lock(m);
    return items.at(i);
  }
};

class ComponentUpdates : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || !::getpwnam("ggc_user")) GTEST_SKIP() << "needs root and ggc_user (scripts/setup.d/users.sh)";
    fs::create_directories(dir_.path() / "recipes");
    Canopyd::Options o;
    o.config_yaml = std::string("services:\n  canopy.Nucleus:\n    configuration:\n      ipc:\n        staticIdentities:\n"
                                "          com.test.Watcher: ") +
                    kWatcherToken +
                    "\n      lifecycle:\n        restartBackoffInitialMs: 50\n        stopGraceSeconds: 1\n";
    daemon_ = std::make_unique<Canopyd>(dir_.path(), o);
    ASSERT_TRUE(daemon_->wait_ready()) << daemon_->logs();
  }

  CommandResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), {canopy_cli_path().string(), "--root", (dir_.path() / "root").string()});
    return run_command(args, 90s);
  }

  void recipe(const std::string& name, const std::string& lifecycle) {
    write_file(dir_.path() / "recipes" / (name + "-1.0.0.yaml"),
               "RecipeFormatVersion: '2020-01-25'\nComponentName: " + name + "\nComponentVersion: '1.0.0'\nLifecycle:\n" +
                   lifecycle);
  }

  std::string deployment_status(const std::string& id) {
    auto r = cli({"deployment", "status", id, "--json"});
    if (r.exit_code != 0) return "(error) " + r.output;
    return nlohmann::json::parse(r.output)["deployment"]["status"];
  }

  bool wait_status(const std::string& id, const std::string& want, std::chrono::seconds deadline = 30s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      if (deployment_status(id) == want) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  std::unique_ptr<ipc::Client> watcher() {
    auto c = ipc::Client::connect({dir_.path() / "root" / "ipc.socket", kWatcherToken, 10s});
    EXPECT_TRUE(c.has_value()) << (c ? "" : c.error().message);
    return c ? std::move(*c) : nullptr;
  }

  // Starts a NOTIFY_COMPONENTS deployment without waiting; returns its id.
  std::string deploy_notify(const std::string& name, int timeout_seconds) {
    auto r = cli({"deployment", "create", "--recipeDir", (dir_.path() / "recipes").string(), "--merge", name + "=1.0.0",
                  "--notify-components", "--notify-timeout", std::to_string(timeout_seconds), "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return nlohmann::json::parse(r.output).value("deploymentId", std::string());
  }

  TempDir dir_;
  std::unique_ptr<Canopyd> daemon_;
};

TEST_F(ComponentUpdates, ASubscriberIsToldAndMayDeferUntilItAgrees) {
  auto client = watcher();
  ASSERT_TRUE(client);
  Events events;
  auto stream = client->subscribe("aws.greengrass#SubscribeToComponentUpdates", nlohmann::json::object(),
                                  [&](std::string_view body) { events.add(body); });
  ASSERT_TRUE(stream.has_value()) << stream.error().message;
  recipe("com.test.App", "  Run: exec sleep 3600\n");
  const std::string id = deploy_notify("com.test.App", 30);
  ASSERT_FALSE(id.empty());

  ASSERT_TRUE(events.wait_count(1, 20s)) << daemon_->logs();
  EXPECT_EQ(events.at(0)["preUpdateEvent"]["deploymentId"], id);
  EXPECT_EQ(events.at(0)["preUpdateEvent"]["isGgcRestarting"], false);
  auto deferred = client->call("aws.greengrass#DeferComponentUpdate",
                               {{"deploymentId", id}, {"message", "busy"}, {"recheckAfterMs", 400}});
  ASSERT_TRUE(deferred.has_value()) << deferred.error().message;

  // Asked again after the deferral; meanwhile nothing was installed.
  ASSERT_TRUE(events.wait_count(2, 20s)) << daemon_->logs();
  EXPECT_EQ(events.at(1)["preUpdateEvent"]["deploymentId"], id);
  EXPECT_EQ(deployment_status(id), "IN_PROGRESS");
  EXPECT_NE(cli({"component", "details", "com.test.App"}).exit_code, 0);

  auto agreed = client->call("aws.greengrass#DeferComponentUpdate", {{"deploymentId", id}, {"recheckAfterMs", 0}});
  ASSERT_TRUE(agreed.has_value()) << agreed.error().message;
  ASSERT_TRUE(wait_status(id, "SUCCEEDED")) << daemon_->logs();
  ASSERT_TRUE(events.wait_count(3, 20s));
  EXPECT_EQ(events.at(2)["postUpdateEvent"]["deploymentId"], id);
}

TEST_F(ComponentUpdates, ASubscriberThatNeverAnswersDelaysOnlyUntilTheTimeout) {
  auto client = watcher();
  ASSERT_TRUE(client);
  Events events;
  auto stream = client->subscribe("aws.greengrass#SubscribeToComponentUpdates", nlohmann::json::object(),
                                  [&](std::string_view body) { events.add(body); });
  ASSERT_TRUE(stream.has_value());
  recipe("com.test.App", "  Run: exec sleep 3600\n");
  const std::string id = deploy_notify("com.test.App", 1);
  ASSERT_TRUE(wait_status(id, "SUCCEEDED")) << daemon_->logs();
  EXPECT_GE(events.items.size(), 1u);
}

TEST_F(ComponentUpdates, DeferWithoutAPendingUpdateIsRefusedClearly) {
  auto client = watcher();
  ASSERT_TRUE(client);
  auto r = client->call("aws.greengrass#DeferComponentUpdate", {{"deploymentId", "nope"}, {"recheckAfterMs", 10}});
  ASSERT_FALSE(r.has_value());
  EXPECT_THAT(r.error().message, HasSubstr("no component update is waiting for an answer"));
}

TEST_F(ComponentUpdates, StartupThatReportsErroredThroughUpdateStateIsErroredDespiteExitZero) {
  const fs::path node = "/usr/bin/node";
  const fs::path js = fs::path(CANOPY_SOURCE_DIR) / "tests" / "js";
  if (!fs::exists(node) || !fs::exists(js / "node_modules" / "aws-iot-device-sdk-v2"))
    GTEST_SKIP() << "node or the JS SDK is missing (scripts/setup.d/js-sdk.sh)";
  const fs::path script = dir_.path() / "report-errored.json";
  write_file(script, R"({"totalTimeoutMs": 20000, "steps": [{"op": "connect"}, {"op": "updateState", "state": "ERRORED"}, {"op": "close"}]})");
  const fs::path script2 = dir_.path() / "report-running.json";
  write_file(script2, R"({"totalTimeoutMs": 20000, "steps": [{"op": "connect"}, {"op": "updateState", "state": "RUNNING"}, {"op": "close"}]})");
  write_file(dir_.path() / "recipes" / "com.test.Reporter-1.0.0.yaml",
             "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Reporter\nComponentVersion: '1.0.0'\n"
             "Lifecycle:\n  Startup: " + node.string() + " " + (js / "ipc_client.js").string() + " " + script.string() + "\n");
  write_file(dir_.path() / "recipes" / "com.test.Good-1.0.0.yaml",
             "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Good\nComponentVersion: '1.0.0'\n"
             "Lifecycle:\n  Startup: " + node.string() + " " + (js / "ipc_client.js").string() + " " + script2.string() + "\n");
  auto r = cli({"deployment", "create", "--recipeDir", (dir_.path() / "recipes").string(), "--merge",
                "com.test.Reporter=1.0.0", "--merge", "com.test.Good=1.0.0", "--failure-handling-policy", "DO_NOTHING",
                "--wait", "--timeout", "60"});
  EXPECT_NE(r.exit_code, 0) << r.output;
  auto d = nlohmann::json::parse(cli({"component", "details", "com.test.Reporter", "--json"}).output)["componentDetails"];
  EXPECT_THAT(d["state"].get<std::string>(), ::testing::AnyOf("ERRORED", "BROKEN", "INSTALLED", "STARTING"));
  EXPECT_THAT(daemon_->logs(), HasSubstr("component=com.test.Reporter version=1.0.0 state STARTING -> ERRORED"));
  auto g = nlohmann::json::parse(cli({"component", "details", "com.test.Good", "--json"}).output)["componentDetails"];
  EXPECT_EQ(g["state"], "RUNNING");
  EXPECT_THAT(daemon_->logs(), HasSubstr("component=com.test.Good version=1.0.0 state STARTING -> RUNNING"));
}

TEST_F(ComponentUpdates, AComponentThatRejectsItsNewConfigurationStopsTheDeployment) {
  const fs::path node = "/usr/bin/node";
  const fs::path js = fs::path(CANOPY_SOURCE_DIR) / "tests" / "js";
  if (!fs::exists(node) || !fs::exists(js / "node_modules" / "aws-iot-device-sdk-v2"))
    GTEST_SKIP() << "node or the JS SDK is missing (scripts/setup.d/js-sdk.sh)";
  const fs::path script = dir_.path() / "validator.json";
  write_file(script, R"({"totalTimeoutMs": 600000, "steps": [{"op": "connect"},
    {"op": "subscribeToValidateConfigurationUpdates", "id": "v", "answer": "REJECTED", "message": "limit 500 is above the sensor's 100"},
    {"op": "sleep", "ms": 590000}]})");
  write_file(dir_.path() / "recipes" / "com.test.Validator-1.0.0.yaml",
             "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Validator\nComponentVersion: '1.0.0'\n"
             "ComponentConfiguration:\n  DefaultConfiguration:\n    limit: 10\n"
             "Lifecycle:\n  Run: exec " + node.string() + " " + (js / "ipc_client.js").string() + " " + script.string() + "\n");
  auto r = cli({"deployment", "create", "--recipeDir", (dir_.path() / "recipes").string(), "--merge",
                "com.test.Validator=1.0.0", "--wait", "--timeout", "60"});
  ASSERT_EQ(r.exit_code, 0) << r.output << daemon_->logs();
  // Wait until its validation stream is open.
  const fs::path log = dir_.path() / "root" / "logs" / "com.test.Validator.log";
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < until &&
         (!fs::exists(log) || read_file(log).find(R"("step":"subscribeToValidateConfigurationUpdates")") == std::string::npos))
    std::this_thread::sleep_for(50ms);
  ASSERT_THAT(read_file(log), HasSubstr(R"("step":"subscribeToValidateConfigurationUpdates")"));
  const pid_t pid = nlohmann::json::parse(cli({"component", "details", "com.test.Validator", "--json"}).output)["componentDetails"]["pid"];

  auto bad = cli({"deployment", "create", "--update-config", R"({"com.test.Validator":{"MERGE":{"limit":500}}})", "--wait",
                  "--timeout", "60"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("com.test.Validator rejected its new configuration: limit 500 is above the sensor's 100"));
  const auto d = nlohmann::json::parse(cli({"component", "details", "com.test.Validator", "--json"}).output)["componentDetails"];
  EXPECT_EQ(d["configuration"]["limit"], 10);
  EXPECT_EQ(d["pid"], pid);
  EXPECT_THAT(read_file(log), HasSubstr(R"("configuration":{"limit":500})"));
}

}  // namespace
}  // namespace canopy::test
