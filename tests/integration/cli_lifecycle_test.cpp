// The greengrass-cli operator commands of `canopy` against a real canopyd: logs, component and
// deployment commands.
//
// Tests marked `// needs-server-ops` call IPC operations (ListComponents, GetComponentDetails,
// CreateLocalDeployment, ...) that canopyd's server side provides; they state the behaviour the
// CLI expects from those operations.
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

CommandResult cli(const Canopyd& d, std::vector<std::string> args, std::chrono::seconds deadline = 60s) {
  args.insert(args.begin(), {canopy_cli_path().string(), "--root", d.root().string()});
  return run_command(args, deadline);
}

std::string numbered_lines(int from, int to) {
  std::string text;
  for (int i = from; i <= to; ++i) text += "line " + std::to_string(i) + "\n";
  return text;
}

void append(const fs::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::app | std::ios::binary);
  out << text;
}

/// Polls `p`'s output until it contains `text` or 10 s pass.
bool wait_for_output(const Process& p, const std::string& text) {
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < until) {
    if (p.output().find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

int accepted_connections(const Canopyd& d) {
  auto r = cli(d, {"status", "--json"});
  if (r.exit_code != 0) return -1;
  return nlohmann::json::parse(r.output)["ipc"]["acceptedTotal"].get<int>();
}

TEST(CliLogs, PrintsTheLastLinesOfALogAndListsTheLogsThatExist) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  write_file(d.root() / "logs" / "com.example.A.log", numbered_lines(1, 100));

  auto last = cli(d, {"logs", "com.example.A", "-n", "3"});
  EXPECT_EQ(last.exit_code, 0);
  EXPECT_EQ(last.output, "line 98\nline 99\nline 100\n");
  auto fifty = cli(d, {"logs", "com.example.A"});
  EXPECT_EQ(fifty.output, numbered_lines(51, 100));

  auto own = cli(d, {"logs", "canopyd", "--lines", "1000"});
  EXPECT_EQ(own.exit_code, 0);
  EXPECT_FALSE(own.output.empty());

  auto unknown = cli(d, {"logs", "com.example.Nobody"});
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_THAT(unknown.output, HasSubstr("there is no log for com.example.Nobody"));
  EXPECT_THAT(unknown.output, HasSubstr("logs that exist: canopyd, com.example.A"));

  auto escape = cli(d, {"logs", "../cli_ipc_info/0"});
  EXPECT_EQ(escape.exit_code, 2);
  EXPECT_THAT(escape.output, HasSubstr("must not contain / or .."));
}

TEST(CliLogs, FollowSurvivesRotationAndStopsCleanlyOnASignal) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  const auto log = d.root() / "logs" / "com.example.A.log";
  write_file(log, numbered_lines(1, 10));

  for (int sig : {SIGINT, SIGTERM}) {
    Process follow({{canopy_cli_path().string(), "--root", d.root().string(), "logs", "com.example.A", "-f", "-n", "2"},
                    {},
                    dir.path() / ("follow-" + std::to_string(sig) + ".out"),
                    true});
    ASSERT_TRUE(wait_for_output(follow, "line 9\nline 10\n")) << follow.output();
    append(log, "before rotation\n");
    ASSERT_TRUE(wait_for_output(follow, "before rotation\n")) << follow.output();
    fs::rename(log, d.root() / "logs" / "com.example.A.log.1");
    write_file(log, "after rotation\n");
    ASSERT_TRUE(wait_for_output(follow, "after rotation\n")) << follow.output();
    append(log, "still following\n");
    ASSERT_TRUE(wait_for_output(follow, "still following\n")) << follow.output();
    EXPECT_THAT(follow.output(), Not(HasSubstr("line 8")));

    follow.signal(sig);
    EXPECT_EQ(follow.wait(5s), std::optional<int>(0)) << follow.output();
    fs::remove(d.root() / "logs" / "com.example.A.log.1");
    write_file(log, numbered_lines(1, 10));
  }
}

TEST(CliDeployment, BadInputIsRejectedBeforeCanopydIsContacted) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  const int before = accepted_connections(d);
  ASSERT_GT(before, 0);

  auto merge = cli(d, {"deployment", "create", "--merge", "com.example.Hello"});
  EXPECT_EQ(merge.exit_code, 2);
  EXPECT_THAT(merge.output, HasSubstr("--merge \"com.example.Hello\" is not of the form name=version"));
  auto version = cli(d, {"deployment", "create", "-m", "com.example.Hello=latest"});
  EXPECT_EQ(version.exit_code, 2);
  EXPECT_THAT(version.output, HasSubstr("latest is not a semantic version"));
  auto config = cli(d, {"deployment", "create", "-c", R"({"com.example.Hello": {"MERGE": 1}})"});
  EXPECT_EQ(config.exit_code, 2);
  EXPECT_THAT(config.output, HasSubstr("MERGE for com.example.Hello must be a JSON object"));
  auto folder = cli(d, {"deployment", "create", "-r", (dir.path() / "no-such-folder").string(), "-m", "a.b=1.0.0"});
  EXPECT_EQ(folder.exit_code, 2);
  EXPECT_THAT(folder.output, HasSubstr("does not exist"));
  auto policy = cli(d, {"deployment", "create", "-m", "a.b=1.0.0", "-fp", "SOMETIMES"});
  EXPECT_EQ(policy.exit_code, 2);
  EXPECT_THAT(policy.output, HasSubstr("must be ROLLBACK or DO_NOTHING"));

  // Only the status call itself connected since.
  EXPECT_EQ(accepted_connections(d), before + 1);
}

TEST(CliDeployment, HelpDocumentsGreengrassCliFlags) {
  auto r = run_command({canopy_cli_path().string(), "deployment", "create", "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"-r,--recipeDir", "-a,--artifactDir", "-m,--merge", "--remove", "-c,--update-config",
                           "-g,--groupId", "--failure-handling-policy", "-fp", "--runWith", "--systemLimits", "--wait",
                           "--timeout", "Examples:"})
    EXPECT_THAT(r.output, HasSubstr(word));
  for (const char* command : {"component", "deployment", "logs"}) {
    auto help = run_command({canopy_cli_path().string(), command, "--help"});
    EXPECT_EQ(help.exit_code, 0) << command;
    EXPECT_THAT(help.output, HasSubstr("Example")) << command;
  }
}

// needs-server-ops: aws.greengrass#GetComponentDetails answering ResourceNotFoundError (or
// ComponentNotFoundError) for a component that is not deployed.
TEST(CliComponent, DetailsOfAComponentThatIsNotDeployedSaysSo) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  auto details = cli(d, {"component", "details", "com.example.Nobody"});
  EXPECT_EQ(details.exit_code, 1);
  EXPECT_THAT(details.output, HasSubstr("component com.example.Nobody is not deployed on this device"));
  auto restart = cli(d, {"component", "restart", "com.example.Nobody"});
  EXPECT_EQ(restart.exit_code, 1);
  EXPECT_THAT(restart.output, HasSubstr("component com.example.Nobody is not deployed on this device"));
}

// needs-server-ops: ListComponents, ListLocalDeployments and GetLocalDeploymentStatus
// (ResourceNotFoundError for an unknown ID).
TEST(CliDeployment, ListsWorkOnAFreshDeviceAndAnUnknownIdIsReported) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  auto components = cli(d, {"component", "list", "--json"});
  ASSERT_EQ(components.exit_code, 0) << components.output;
  EXPECT_TRUE(nlohmann::json::parse(components.output)["components"].is_array());
  auto deployments = cli(d, {"deployment", "list", "--json"});
  ASSERT_EQ(deployments.exit_code, 0) << deployments.output;
  EXPECT_TRUE(nlohmann::json::parse(deployments.output)["localDeployments"].is_array());
  auto status = cli(d, {"deployment", "status", "no-such-deployment"});
  EXPECT_EQ(status.exit_code, 1);
  EXPECT_THAT(status.output, HasSubstr("there is no local deployment with ID no-such-deployment"));
}

// needs-server-ops: the whole local deployment flow (CreateLocalDeployment,
// GetLocalDeploymentStatus with components, ListComponents, GetComponentDetails,
// RestartComponent, StopComponent, ListLocalDeployments) and component logs in
// <root>/logs/NAME.log.
TEST(CliDeployment, LocalDeploymentEndToEnd) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  fs::create_directories(dir.path() / "recipes");
  fs::create_directories(dir.path() / "artifacts");
  write_file(dir.path() / "recipes" / "com.example.Sleeper-1.0.0.yaml",
             "---\n"
             "RecipeFormatVersion: '2020-01-25'\n"
             "ComponentName: com.example.Sleeper\n"
             "ComponentVersion: '1.0.0'\n"
             "ComponentConfiguration:\n"
             "  DefaultConfiguration:\n"
             "    Message: hello\n"
             "Manifests:\n"
             "  - Platform:\n"
             "      os: linux\n"
             "    Lifecycle:\n"
             "      Run: \"echo {configuration:/Message} from sleeper; exec sleep 600\"\n");

  // Relative folders, which the CLI makes absolute: canopyd never sees the CLI's working folder.
  const auto relative = [&](const char* name) { return fs::relative(dir.path() / name, fs::current_path()).string(); };
  auto create = cli(d, {"deployment", "create", "--recipeDir", relative("recipes"), "--artifactDir",
                        relative("artifacts"), "--merge", "com.example.Sleeper=1.0.0", "--wait",
                        "--timeout", "60"},
                    90s);
  ASSERT_EQ(create.exit_code, 0) << create.output;
  EXPECT_THAT(create.output, HasSubstr("succeeded"));
  EXPECT_THAT(create.output, HasSubstr("deployment SUCCEEDED"));  // the progress line on stderr

  auto list = cli(d, {"component", "list"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_THAT(list.output, HasSubstr("NAME"));
  EXPECT_THAT(list.output, HasSubstr("com.example.Sleeper"));
  EXPECT_THAT(list.output, HasSubstr("RUNNING"));

  auto details = cli(d, {"component", "details", "com.example.Sleeper", "--json"});
  ASSERT_EQ(details.exit_code, 0) << details.output;
  const auto j = nlohmann::json::parse(details.output)["componentDetails"];
  EXPECT_EQ(j["componentName"], "com.example.Sleeper");
  EXPECT_EQ(j["version"], "1.0.0");
  EXPECT_EQ(j["state"], "RUNNING");
  EXPECT_EQ(j["configuration"]["Message"], "hello");

  auto logs = cli(d, {"logs", "com.example.Sleeper"});
  EXPECT_THAT(logs.output, HasSubstr("hello from sleeper"));

  EXPECT_EQ(cli(d, {"component", "restart", "com.example.Sleeper"}).exit_code, 0);
  EXPECT_EQ(cli(d, {"component", "stop", "com.example.Sleeper"}).exit_code, 0);

  auto history = cli(d, {"deployment", "list"});
  EXPECT_EQ(history.exit_code, 0);
  EXPECT_THAT(history.output, HasSubstr("SUCCEEDED"));

  auto config = cli(d, {"deployment", "create", "-c", R"({"com.example.Sleeper": {"MERGE": {"Message": "hi"}}})",
                        "--wait", "--timeout", "60"},
                    90s);
  ASSERT_EQ(config.exit_code, 0) << config.output;
  auto changed = cli(d, {"component", "details", "com.example.Sleeper", "--json"});
  EXPECT_EQ(nlohmann::json::parse(changed.output)["componentDetails"]["configuration"]["Message"], "hi");

  auto remove = cli(d, {"deployment", "create", "--remove", "com.example.Sleeper", "--wait", "--timeout", "60"}, 90s);
  ASSERT_EQ(remove.exit_code, 0) << remove.output;
  auto gone = cli(d, {"component", "details", "com.example.Sleeper"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_THAT(gone.output, HasSubstr("is not deployed on this device"));
}

// needs-server-ops: a deployment whose component cannot install ends FAILED, and --wait exits 1
// naming the failure.
TEST(CliDeployment, WaitReportsAFailedDeployment) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  fs::create_directories(dir.path() / "recipes");
  write_file(dir.path() / "recipes" / "com.example.Broken-1.0.0.yaml",
             "---\n"
             "RecipeFormatVersion: '2020-01-25'\n"
             "ComponentName: com.example.Broken\n"
             "ComponentVersion: '1.0.0'\n"
             "Manifests:\n"
             "  - Platform:\n"
             "      os: linux\n"
             "    Lifecycle:\n"
             "      Install: \"exit 3\"\n"
             "      Run: \"sleep 600\"\n");
  auto create = cli(d, {"deployment", "create", "-r", (dir.path() / "recipes").string(), "-m",
                        "com.example.Broken=1.0.0", "--wait", "--timeout", "120"},
                    150s);
  EXPECT_EQ(create.exit_code, 1) << create.output;
  EXPECT_THAT(create.output, HasSubstr("FAILED"));
}

}  // namespace
}  // namespace canopy::test
