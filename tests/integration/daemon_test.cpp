// canopyd as a process: readiness, the root lock, graceful stop, configuration errors.
#include <csignal>
#include <filesystem>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

TEST(Daemon, StartsOnAFreshRootAndBecomesReady) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  for (const char* sub : {"config", "packages/recipes", "packages/artifacts", "packages/artifacts-unarchived", "work",
                          "deployments", "spool", "logs"})
    EXPECT_TRUE(fs::is_directory(d.root() / sub)) << sub;
  EXPECT_EQ(fs::status(d.root() / "config").permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_EQ(fs::status(d.root() / "spool").permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_THAT(read_file(d.root() / "logs" / "canopyd.log"), HasSubstr("ready"));
}

TEST(Daemon, SigtermStopsGracefullyWithExitZeroAndStoppingNotification) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  const auto code = d.stop(10s);
  ASSERT_TRUE(code.has_value()) << "canopyd did not stop within 10 s of SIGTERM";
  EXPECT_EQ(*code, 0);
  bool stopping = false;
  for (const auto& m : d.notifications(100ms)) stopping |= m.find("STOPPING=1") != std::string::npos;
  EXPECT_TRUE(stopping);
}

TEST(Daemon, PingsTheSystemdWatchdogWhenTheUnitSetsOne) {
  TempDir dir;
  Canopyd::Options o;
  o.env = {{"WATCHDOG_USEC", "200000"}};  // what systemd sets for WatchdogSec=200ms
  Canopyd d(dir.path(), o);
  ASSERT_TRUE(d.wait_ready());
  int pings = 0;
  for (int i = 0; i < 100 && pings < 3; ++i) {
    pings = 0;
    for (const auto& m : d.notifications(20ms)) pings += m.find("WATCHDOG=1") != std::string::npos;
  }
  EXPECT_GE(pings, 3);
}

TEST(Daemon, NoWatchdogPingsWithoutWatchdogSec) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  for (const auto& m : d.notifications(500ms)) EXPECT_EQ(m.find("WATCHDOG=1"), std::string::npos);
}

TEST(Daemon, SigintAlsoStopsWithExitZero) {
  TempDir dir;
  Canopyd d(dir.path(), {});
  ASSERT_TRUE(d.wait_ready());
  d.process().signal(SIGINT);
  EXPECT_EQ(d.process().wait(10s), std::optional<int>(0));
}

TEST(Daemon, SecondInstanceOnTheSameRootIsRefusedNamingTheHolder) {
  TempDir dir;
  Canopyd first(dir.path(), {});
  ASSERT_TRUE(first.wait_ready());
  TempDir dir2;
  auto r = run_command({canopyd_path().string(), "--root", (dir.path() / "root").string(), "--foreground"}, 20s);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("is in use by canopyd (pid " + std::to_string(first.process().pid()) + ")"));
  EXPECT_TRUE(first.process().running());
}

TEST(Daemon, LockIsReleasedWhenTheHolderIsKilled) {
  TempDir dir;
  {
    Canopyd first(dir.path(), {});
    ASSERT_TRUE(first.wait_ready());
    first.process().signal(SIGKILL);
    first.process().wait(10s);
  }
  Canopyd second(dir.path(), {});
  EXPECT_TRUE(second.wait_ready());
}

TEST(Daemon, BadConfigurationExitsTwoWithFileLineAndKeyAndStartsNothing) {
  TempDir dir;
  Canopyd::Options o;
  o.config_yaml =
      "system:\n"
      "  thingName: gw-1\n"
      "services:\n"
      "  canopy.Nucleus:\n"
      "    configuration:\n"
      "      logging:\n"
      "        level: loud\n";
  Canopyd d(dir.path(), o);
  const auto code = d.process().wait(20s);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 2);
  EXPECT_THAT(d.logs(), HasSubstr("config.yaml:7: services.canopy.Nucleus.configuration.logging.level: expected one "
                                  "of trace, debug, info, warn, error, got \"loud\""));
  EXPECT_FALSE(fs::exists(d.root())) << "nothing may be created for a rejected configuration";
}

TEST(Daemon, MissingConfigurationFileIsAClearErrorWithExitTwo) {
  TempDir dir;
  auto r = run_command({canopyd_path().string(), "--root", (dir.path() / "root").string(), "--foreground", "--config",
                        (dir.path() / "nope.yaml").string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("nope.yaml does not exist"));
}

TEST(Daemon, UnknownKeysAreWarnedAboutButDoNotStopTheStart) {
  TempDir dir;
  Canopyd::Options o;
  o.config_yaml = "system:\n  rootPth: /x\n";
  Canopyd d(dir.path(), o);
  ASSERT_TRUE(d.wait_ready());
  EXPECT_THAT(d.logs(), HasSubstr("config.yaml:2: system.rootPth: unknown key, ignored"));
}

TEST(Daemon, CommandLineRootAndLevelOverrideTheFile) {
  TempDir dir;
  Canopyd::Options o;
  o.config_yaml = "system:\n  rootPath: " + (dir.path() / "from-file").string() +
                  "\nservices:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        level: error\n";
  o.extra_args = {"--log-level", "debug"};
  Canopyd d(dir.path(), o);
  ASSERT_TRUE(d.wait_ready());
  EXPECT_TRUE(fs::exists(dir.path() / "root" / "canopyd.lock"));
  EXPECT_FALSE(fs::exists(dir.path() / "from-file"));
  // At level error the "ready" info line would not be written; --log-level debug wins.
  EXPECT_THAT(read_file(d.root() / "logs" / "canopyd.log"), HasSubstr("ready"));
}

TEST(Daemon, FileRootIsUsedWithoutRootOnTheCommandLine) {
  TempDir dir;
  const fs::path root = dir.path() / "from-file";
  write_file(dir.path() / "c.yaml", "system:\n  rootPath: " + root.string() + "\n");
  Process p({{canopyd_path().string(), "--foreground", "--config", (dir.path() / "c.yaml").string()},
             {},
             dir.path() / "out",
             true});
  for (int i = 0; i < 2000 && !fs::exists(root / "logs" / "canopyd.log"); ++i) std::this_thread::sleep_for(10ms);
  EXPECT_TRUE(fs::exists(root / "canopyd.lock"));
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait(10s), std::optional<int>(0));
}

TEST(Daemon, JsonLogFormatWritesOneObjectPerLine) {
  TempDir dir;
  Canopyd::Options o;
  o.config_yaml = "services:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        format: json\n";
  Canopyd d(dir.path(), o);
  ASSERT_TRUE(d.wait_ready());
  const std::string log = read_file(d.root() / "logs" / "canopyd.log");
  EXPECT_THAT(log, HasSubstr("\"level\":\"info\""));
  EXPECT_THAT(log, HasSubstr("\"module\":\"nucleus\""));
  EXPECT_EQ(log.front(), '{');
}

TEST(Daemon, SighupRereadsLoggingSettings) {
  TempDir dir;
  Canopyd::Options o;
  o.config_yaml = "services:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        level: info\n";
  Canopyd d(dir.path(), o);
  ASSERT_TRUE(d.wait_ready());
  write_file(d.config_path(),
             "services:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        level: debug\n        format: json\n");
  d.process().signal(SIGHUP);
  const fs::path log = d.root() / "logs" / "canopyd.log";
  bool reloaded = false;
  for (int i = 0; i < 500 && !reloaded; ++i) {
    reloaded = read_file(log).find("logging settings re-read") != std::string::npos;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(reloaded);
  EXPECT_THAT(read_file(log), HasSubstr("\"msg\":\"SIGHUP: logging settings re-read"));
  // A broken file on SIGHUP keeps the running settings and says why.
  write_file(d.config_path(), "services:\n  canopy.Nucleus:\n    configuration:\n      logging:\n        level: [\n");
  d.process().signal(SIGHUP);
  bool kept = false;
  for (int i = 0; i < 500 && !kept; ++i) {
    kept = read_file(log).find("keeping the current logging settings") != std::string::npos;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_TRUE(kept);
  EXPECT_TRUE(d.process().running());
}

TEST(Daemon, DetachesWithoutForegroundAndParentReportsTheStart) {
  TempDir dir;
  auto r = run_command({canopyd_path().string(), "--root", (dir.path() / "root").string()}, 20s,
                       {{"NOTIFY_SOCKET", ""}, {"INVOCATION_ID", ""}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("started in the background (pid "));
  const auto pos = r.output.find("(pid ");
  ASSERT_NE(pos, std::string::npos);
  const pid_t pid = std::stoi(r.output.substr(pos + 5));
  ASSERT_GT(pid, 1);
  EXPECT_EQ(::kill(pid, 0), 0);
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 1000 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_NE(::kill(pid, 0), 0) << "the detached canopyd did not stop on SIGTERM";
}

TEST(Daemon, CorruptConfigurationStoreIsRecoveredFromItsBackupOrRefusedClearly) {
  TempDir dir;
  const fs::path store = dir.path() / "root" / "config" / "store.json";
  {
    Canopyd d(dir.path(), {});
    ASSERT_TRUE(d.wait_ready());
    for (const char* v : {"1", "2"}) {
      auto r = run_command({canopy_cli_path().string(), "--root", d.root().string(), "config", "set", "com.x", "a", v});
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }
  // The snapshot is damaged: the backup (the previous commit) is used, and the log says so.
  write_file(store, "garbage{");
  {
    Canopyd d(dir.path(), {});
    ASSERT_TRUE(d.wait_ready());
    EXPECT_THAT(d.logs(), HasSubstr("store.json: not valid JSON"));
    auto r = run_command({canopy_cli_path().string(), "--root", d.root().string(), "config", "get", "com.x", "a"});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output, "1\n");
  }
  bool kept = false;
  for (const auto& e : fs::directory_iterator(store.parent_path()))
    kept |= e.path().filename().string().rfind("store.json.corrupt-", 0) == 0;
  EXPECT_TRUE(kept) << "the damaged snapshot is moved aside, never deleted";

  // Snapshot and backup damaged: canopyd refuses to start and says what it kept.
  write_file(store, "garbage{");
  write_file(store.string() + ".bak", "also garbage");
  auto r = run_command({canopyd_path().string(), "--root", (dir.path() / "root").string(), "--foreground"}, 20s);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("the backup is corrupt too"));
  EXPECT_THAT(r.output, HasSubstr("The damaged files are kept for inspection"));
}

TEST(Daemon, VersionPrintsVersionAndGitHash) {
  auto r = run_command({canopyd_path().string(), "--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_THAT(r.output, ::testing::MatchesRegex("canopyd [0-9]+\\.[0-9]+\\.[0-9]+ \\(git ([0-9a-f]+|unknown)\\)\n"));
  auto cli = run_command({canopy_cli_path().string(), "--version"});
  EXPECT_EQ(cli.exit_code, 0);
  EXPECT_THAT(cli.output, HasSubstr("canopy "));
}

TEST(Daemon, HelpListsEveryOption) {
  auto r = run_command({canopyd_path().string(), "--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt : {"--root", "--config", "--log-level", "--foreground", "--version", "--help"})
    EXPECT_THAT(r.output, HasSubstr(opt));
  auto bad = run_command({canopyd_path().string(), "--no-such-flag"});
  EXPECT_EQ(bad.exit_code, 2);
}

}  // namespace
}  // namespace canopy::test
