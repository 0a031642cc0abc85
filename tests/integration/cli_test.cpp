// The canopy CLI against a real canopyd: status, config get|set, and who may use it.
#include <csignal>
#include <filesystem>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

CommandResult cli(const Canopyd& d, std::vector<std::string> args) {
  args.insert(args.begin(), {canopy_cli_path().string(), "--root", d.root().string()});
  return run_command(args, 60s);
}

TEST(Cli, StatusShowsVersionUptimeAndIpcCounters) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  auto r = cli(d, {"status"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("canopyd 0.1.0"));
  EXPECT_THAT(r.output, HasSubstr("pid " + std::to_string(d.process().pid())));
  EXPECT_THAT(r.output, HasSubstr("IPC clients     1 connected (1 authenticated)"));

  auto j = cli(d, {"status", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.output;
  const auto status = nlohmann::json::parse(j.output);
  EXPECT_EQ(status["pid"], d.process().pid());
  EXPECT_EQ(status["root"], d.root().string());
  EXPECT_EQ(status["ipc"]["connections"], 1);
  EXPECT_GE(status["ipc"]["acceptedTotal"].get<int>(), 2);
  EXPECT_TRUE(status["uptimeSeconds"].is_number());
}

TEST(Cli, ConfigSetThenGetRoundTripsAndSurvivesARestart) {
  TempDir dir;
  {
    Canopyd d(dir.path(), {});
    ASSERT_TRUE(d.wait_ready());
    auto set = cli(d, {"config", "set", "com.example.A", "limits.maxItems", "42"});
    ASSERT_EQ(set.exit_code, 0) << set.output;
    EXPECT_THAT(set.output, HasSubstr("com.example.A: limits.maxItems updated"));
    auto set2 = cli(d, {"config", "set", "com.example.A", "/name", "plain text"});
    ASSERT_EQ(set2.exit_code, 0) << set2.output;
    auto get = cli(d, {"config", "get", "com.example.A", "limits.maxItems"});
    EXPECT_EQ(get.exit_code, 0);
    EXPECT_EQ(get.output, "42\n");
    auto all = cli(d, {"config", "get", "com.example.A", "--json"});
    ASSERT_EQ(all.exit_code, 0) << all.output;
    const auto j = nlohmann::json::parse(all.output);
    EXPECT_EQ(j["componentName"], "com.example.A");
    EXPECT_EQ(j["value"], (nlohmann::json{{"limits", {{"maxItems", 42}}}, {"name", "plain text"}}));
  }
  Canopyd again(dir.path(), {});
  ASSERT_TRUE(again.wait_ready());
  auto get = cli(again, {"config", "get", "com.example.A", "name"});
  EXPECT_EQ(get.exit_code, 0) << get.output;
  EXPECT_EQ(get.output, "plain text\n");
}

TEST(Cli, GetOfAMissingComponentSaysSo) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  auto r = cli(d, {"config", "get", "com.example.Nobody"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("component com.example.Nobody has no configuration"));
}

TEST(Cli, WithoutARunningCanopydTheMessageSaysWhatToCheck) {
  TempDir dir;
  auto never = run_command({canopy_cli_path().string(), "--root", (dir.path() / "none").string(), "status"});
  EXPECT_EQ(never.exit_code, 1);
  EXPECT_THAT(never.output, HasSubstr("is canopyd running on this root?"));

  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  ASSERT_EQ(d.stop(20s), std::optional<int>(0));
  auto stopped = cli(d, {"status"});
  EXPECT_EQ(stopped.exit_code, 1);
  EXPECT_THAT(stopped.output, HasSubstr("is canopyd running?"));
}

TEST(Cli, CanopyRootEnvironmentVariableIsTheDefaultRoot) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  auto r = run_command({canopy_cli_path().string(), "status", "--json"}, 30s, {{"CANOPY_ROOT", d.root().string()}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST(Cli, TokenFilesAreReadableOnlyByTheirOwners) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  struct stat st {};
  ASSERT_EQ(::stat((d.root() / "cli_ipc_info" / "0").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(st.st_uid, 0u);
  ASSERT_EQ(::stat((d.root() / "cli_ipc_info").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0711u);
  const auto token = nlohmann::json::parse(read_file(d.root() / "cli_ipc_info" / "0"));
  EXPECT_EQ(token["domain_socket_path"], (d.root() / "ipc.socket").string());
  EXPECT_EQ(token["cli_auth_token"].get<std::string>().size(), 32u);
}

// Runs the CLI as another user (tests run as root).
CommandResult cli_as(const std::string& user, const Canopyd& d, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"/usr/sbin/runuser", "-u", user, "--", canopy_cli_path().string(), "--root",
                                   d.root().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_command(argv, 60s);
}

// A throwaway operators' group with one member, removed again at the end.
class OperatorGroup {
 public:
  OperatorGroup() {
    std::mt19937 rng(std::random_device{}());
    const auto suffix = std::to_string(rng() % 1000000);
    group_ = "cnpyg" + suffix;
    member_ = "cnpym" + suffix;
    ok_ = run_command({"/usr/sbin/groupadd", group_}).exit_code == 0 &&
          run_command({"/usr/sbin/useradd", "-M", "-N", "-G", group_, "-s", "/usr/sbin/nologin", member_}).exit_code == 0;
  }
  ~OperatorGroup() {
    run_command({"/usr/sbin/userdel", member_});
    run_command({"/usr/sbin/groupdel", group_});
  }
  bool ok() const { return ok_; }
  const std::string& group() const { return group_; }
  const std::string& member() const { return member_; }

 private:
  std::string group_, member_;
  bool ok_ = false;
};

TEST(Cli, OperatorsGroupMayUseItAndOrdinaryUsersAreRefusedClearly) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to create a test user and group";
  if (!fs::exists("/usr/sbin/runuser") || !fs::exists("/usr/sbin/useradd"))
    GTEST_SKIP() << "runuser/useradd not installed";
  OperatorGroup ops;
  ASSERT_TRUE(ops.ok());
  TempDir dir;
  ::chmod(dir.path().c_str(), 0755);  // let other users traverse to the root
  Canopyd::Options o;
  o.config_yaml = "services:\n  canopy.Nucleus:\n    configuration:\n      ipc:\n        socketGroup: " + ops.group() + "\n";
  Canopyd d(dir.path(), o);
  ASSERT_TRUE(d.wait_ready());

  struct stat st {};
  ASSERT_EQ(::stat((d.root() / "ipc.socket").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
  ASSERT_EQ(::stat((d.root() / "cli_ipc_info" / ("group-" + ops.group())).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);

  auto member = cli_as(ops.member(), d, {"status", "--json"});
  EXPECT_EQ(member.exit_code, 0) << member.output;

  auto stranger = cli_as("nobody", d, {"status"});
  EXPECT_EQ(stranger.exit_code, 1);
  EXPECT_THAT(stranger.output, HasSubstr("permission denied"));
  EXPECT_THAT(stranger.output, HasSubstr("run as root or as a member of the canopy group"));
  EXPECT_TRUE(d.process().running());
}

TEST(Cli, HelpListsEveryCommand) {
  auto r = run_command({canopy_cli_path().string(), "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* word : {"status", "config", "--root", "--version"}) EXPECT_THAT(r.output, HasSubstr(word));
  auto config = run_command({canopy_cli_path().string(), "config", "--help"});
  EXPECT_THAT(config.output, HasSubstr("get"));
  EXPECT_THAT(config.output, HasSubstr("set"));
  auto bad = run_command({canopy_cli_path().string(), "frobnicate"});
  EXPECT_EQ(bad.exit_code, 2);
}

}  // namespace
}  // namespace canopy::test
