// Components written with the real AWS IoT Device SDK v2 for JavaScript, deployed from recipes
// with the real `canopy` CLI into a real canopyd: canopyd installs the recipe and artifacts,
// runs the lifecycle (as ggc_user when the test runs as root), and the component talks to the
// IPC server with the SVCUID it was given. The tests assert on what the components print
// (<root>/logs/<name>.log) and on `canopy component list --json`.
//
// ComponentSdk.ProbeTalksToCanopydFromItsRecipe: tests/js/components/probe.js subscribes,
// publishes and receives its own message, reads a value set by --update-config, reports
// RUNNING. ComponentSdk.SamplesDeliverSensorReadingsToTheSubscriber: the samples in recipes/
// and artifacts/ (HelloWorld, Sensor, Subscriber) as scripts/run.sh deploys them.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

const fs::path kNode = "/usr/bin/node";
fs::path source_dir() { return fs::path(CANOPY_SOURCE_DIR); }
fs::path node_modules() { return source_dir() / "tests" / "js" / "node_modules"; }

constexpr const char* kProbe = "com.example.Probe";

// The probe's recipe: the SDK through NODE_PATH from configuration, a Run step only (no
// Startup), pub/sub allowed on probe/*.
json probe_recipe() {
  return {
      {"RecipeFormatVersion", "2020-01-25"},
      {"ComponentName", kProbe},
      {"ComponentVersion", "1.0.0"},
      {"ComponentDescription", "component_sdk_test: the JS SDK against canopyd"},
      {"ComponentConfiguration",
       {{"DefaultConfiguration",
         {{"topic", "probe/echo"},
          {"greeting", "from the recipe"},
          {"nodeModules", "/usr/lib/node_modules"},
          {"accessControl",
           {{"aws.greengrass.ipc.pubsub",
             {{"com.example.Probe:pubsub:1",
               {{"operations", {"aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"}},
                {"resources", {"probe/*"}}}}}}}}}}}},
      {"Manifests",
       {{{"Platform", {{"os", "linux"}}},
         {"Lifecycle",
          {{"Setenv", {{"NODE_PATH", "{configuration:/nodeModules}"}}}, {"Run", "node {artifacts:path}/probe.js"}}},
         {"Artifacts", {{{"URI", "s3://canopy-tests/com.example.Probe/1.0.0/probe.js"}}}}}}}};
}

class ComponentSdk : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kNode)) GTEST_SKIP() << "node is not installed at " << kNode << "; skipping the JS SDK component tests";
    if (!fs::exists(node_modules() / "aws-iot-device-sdk-v2" / "package.json"))
      GTEST_SKIP() << "the JS SDK is missing: " << (node_modules() / "aws-iot-device-sdk-v2")
                   << " (run scripts/setup.d/js-sdk.sh)";
    if (::geteuid() == 0) {
      // Components run as ggc_user: it must reach the SDK in the checkout.
      auto r = run_command({"/usr/sbin/runuser", "-u", "ggc_user", "--", "/usr/bin/test", "-r",
                            (node_modules() / "aws-iot-device-sdk-v2" / "package.json").string()},
                           30s);
      ASSERT_EQ(r.exit_code, 0) << "ggc_user cannot read " << node_modules()
                                << " (is ggc_user missing — scripts/setup.d/users.sh — or is a parent folder "
                                   "of the checkout not traversable by others?) "
                                << r.output;
    }
    daemon_ = std::make_unique<Canopyd>(dir_.path(), Canopyd::Options{});
    ASSERT_TRUE(daemon_->wait_ready()) << "canopyd did not become ready";
  }

  void TearDown() override {
    if (HasFailure() && daemon_) {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(daemon_->root() / "logs", ec)) {
        if (e.path().filename() == "canopyd.log" || e.path().extension() != ".log") continue;
        std::fprintf(stderr, "----- %s -----\n%s----- end of %s -----\n", e.path().c_str(), read_file(e.path()).c_str(),
                     e.path().filename().c_str());
      }
    }
    daemon_.reset();  // canopyd stops its components before it exits
  }

  CommandResult cli(std::vector<std::string> args, std::chrono::seconds deadline = 60s) {
    args.insert(args.begin(), {canopy_cli_path().string(), "--root", daemon_->root().string()});
    return run_command(args, deadline);
  }

  /// `canopy deployment create ... --wait`; the CLI's output is returned for messages.
  CommandResult deploy(const fs::path& recipes, const fs::path& artifacts, const std::vector<std::string>& merges,
                       const json& update_config) {
    std::vector<std::string> args = {"deployment",    "create", "--recipeDir", recipes.string(), "--artifactDir",
                                     artifacts.string()};
    for (const auto& m : merges) args.insert(args.end(), {"--merge", m});
    args.insert(args.end(), {"--update-config", update_config.dump(), "--wait", "--timeout", "120"});
    return cli(args, 150s);
  }

  fs::path log_file(const std::string& component) const { return daemon_->root() / "logs" / (component + ".log"); }

  /// Every line of the component's log.
  std::vector<std::string> log_lines(const std::string& component) const {
    std::vector<std::string> out;
    if (!fs::exists(log_file(component))) return out;
    std::istringstream in(read_file(log_file(component)));
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

  /// Waits until a line of the component's log satisfies `pred`; that line, or nullopt.
  std::optional<std::string> wait_for_line(const std::string& component, const std::function<bool(const std::string&)>& pred,
                                           std::chrono::milliseconds deadline) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    for (;;) {
      for (const auto& l : log_lines(component))
        if (pred(l)) return l;
      if (std::chrono::steady_clock::now() >= until) return std::nullopt;
      std::this_thread::sleep_for(100ms);
    }
  }

  /// The state `canopy component list --json` reports for `component` ("" if not listed).
  std::string state_of(const std::string& component) {
    auto r = cli({"component", "list", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const auto start = r.output.find('{');
    if (start == std::string::npos) return "";
    const auto list = json::parse(r.output.substr(start), nullptr, false);
    if (list.is_discarded() || !list.contains("components")) return "";
    for (const auto& c : list["components"])
      if (c.value("componentName", "") == component) return c.value("state", "");
    return "";
  }

  TempDir dir_;
  std::unique_ptr<Canopyd> daemon_;
};

// The JSON the probe printed after "probe: " on each of its lines.
std::vector<json> probe_results(const std::vector<std::string>& lines) {
  std::vector<json> out;
  for (const auto& l : lines) {
    const auto at = l.find("probe: {");
    if (at == std::string::npos) continue;
    auto j = json::parse(l.substr(at + 7), nullptr, false);
    if (!j.is_discarded()) out.push_back(std::move(j));
  }
  return out;
}

json probe_step(const std::vector<json>& results, const std::string& name) {
  for (const auto& r : results)
    if (r.value("step", "") == name) return r;
  return nullptr;
}

TEST_F(ComponentSdk, ProbeTalksToCanopydFromItsRecipe) {
  const fs::path recipes = dir_.path() / "recipes";
  const fs::path artifacts = dir_.path() / "artifacts" / kProbe / "1.0.0";
  fs::create_directories(recipes);
  fs::create_directories(artifacts);
  write_file(recipes / "com.example.Probe-1.0.0.json", probe_recipe().dump(2));
  fs::copy_file(source_dir() / "tests" / "js" / "components" / "probe.js", artifacts / "probe.js");

  const json update = {{kProbe, {{"MERGE", {{"nodeModules", node_modules().string()}, {"greeting", "hello from the test"}}}}}};
  auto r = deploy(recipes, dir_.path() / "artifacts", {std::string(kProbe) + "=1.0.0"}, update);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  auto done = wait_for_line(kProbe, [](const std::string& l) { return l.find("probe: {\"step\":\"done\"") != std::string::npos; },
                            60s);
  ASSERT_TRUE(done) << "the probe did not finish its steps";
  const auto results = probe_results(log_lines(kProbe));

  const json connect = probe_step(results, "connect");
  EXPECT_EQ(connect, (json{{"step", "connect"}, {"ok", true}, {"svcuid", true}}));

  const json config = probe_step(results, "getConfiguration");
  ASSERT_FALSE(config.is_null());
  EXPECT_EQ(config.value("ok", false), true) << config.dump();
  EXPECT_EQ(config.value("componentName", ""), kProbe);
  const json value = config.value("value", json::object());
  ASSERT_TRUE(value.is_object()) << config.dump();
  EXPECT_EQ(value.value("greeting", ""), "hello from the test");
  EXPECT_EQ(value.value("topic", ""), "probe/echo");

  const json subscribed = probe_step(results, "subscribeToTopic");
  EXPECT_EQ(subscribed, (json{{"step", "subscribeToTopic"}, {"ok", true}, {"topic", "probe/echo"}}));

  const json published = probe_step(results, "publishToTopic");
  ASSERT_FALSE(published.is_null());
  EXPECT_EQ(published.value("ok", false), true) << published.dump();
  const std::string nonce = published.value("nonce", "");
  ASSERT_FALSE(nonce.empty()) << published.dump();

  const json received = probe_step(results, "receive");
  EXPECT_EQ(received, (json{{"step", "receive"}, {"ok", true}, {"topic", "probe/echo"}, {"message", {{"nonce", nonce}}}}));

  const json state = probe_step(results, "updateState");
  EXPECT_EQ(state, (json{{"step", "updateState"}, {"ok", true}, {"state", "RUNNING"}}));

  EXPECT_EQ(probe_step(results, "done"), (json{{"step", "done"}, {"failures", 0}}));
  EXPECT_EQ(state_of(kProbe), "RUNNING");
}

TEST_F(ComponentSdk, SamplesDeliverSensorReadingsToTheSubscriber) {
  const std::string sdk = node_modules().string();
  const json update = {
      {"com.example.Sensor", {{"MERGE", {{"nodeModules", sdk}, {"intervalSeconds", 0.5}}}}},
      {"com.example.Subscriber", {{"MERGE", {{"nodeModules", sdk}}}}},
  };
  auto r = deploy(source_dir() / "recipes", source_dir() / "artifacts",
                  {"com.example.HelloWorld=1.0.0", "com.example.Sensor=1.0.0", "com.example.Subscriber=1.0.0"}, update);
  ASSERT_EQ(r.exit_code, 0) << r.output;

  // A reading the Sensor published, as the Subscriber logged it.
  auto reading = wait_for_line("com.example.Subscriber",
                               [](const std::string& l) {
                                 return l.find("subscriber: reading on sensors/temperature: {") != std::string::npos;
                               },
                               20s);
  ASSERT_TRUE(reading) << "the Subscriber logged no reading";
  const auto payload = json::parse(reading->substr(reading->find(": {") + 2), nullptr, false);
  ASSERT_FALSE(payload.is_discarded()) << *reading;
  EXPECT_TRUE(payload["temperature"].is_number()) << *reading;
  EXPECT_EQ(payload.value("unit", ""), "C") << *reading;
  const std::string seq = "\"seq\":" + std::to_string(payload.value("seq", -1)) + ",";
  EXPECT_TRUE(wait_for_line("com.example.Sensor",
                            [&](const std::string& l) {
                              return l.find("sensor: published {") != std::string::npos && l.find(seq) != std::string::npos;
                            },
                            20s))
      << "the Sensor did not log publishing " << seq;

  EXPECT_TRUE(wait_for_line("com.example.HelloWorld",
                            [](const std::string& l) { return l.find("Hello, world!") != std::string::npos; }, 20s));
  // node is on PATH, so the Sensor's Install step (which fails) is skipped.
  EXPECT_THAT(daemon_->logs(), HasSubstr("component=com.example.Sensor step=install skipped (SkipIf)"));
  for (const char* c : {"com.example.HelloWorld", "com.example.Sensor", "com.example.Subscriber"})
    EXPECT_EQ(state_of(c), "RUNNING") << c;
}

}  // namespace
}  // namespace canopy::test
