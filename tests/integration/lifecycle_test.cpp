// Components run by a real canopyd, deployed with the real canopy CLI: lifecycle steps and
// states, timeouts, SkipIf, Setenv, users, recovery and BROKEN, stopping, log caps,
// dependencies, rollback, and restarts after a clean stop or a kill -9.
#include <csignal>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <grp.h>
#include <pwd.h>

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

// Fast retries so crash loops reach BROKEN quickly; the BROKEN count is the default 3 unless a
// test says otherwise.
std::string config_yaml(const std::string& extra_lifecycle = "", const std::string& extra_nucleus = "") {
  return "services:\n"
         "  canopy.Nucleus:\n"
         "    configuration:\n"
         "      awsRegion: eu-west-1\n"
         "      lifecycle:\n"
         "        restartBackoffInitialMs: 50\n"
         "        restartBackoffMaxMs: 200\n"
         "        stopGraceSeconds: 1\n"
         "        deploymentTimeoutSeconds: 60\n" +
         extra_lifecycle + extra_nucleus + "system:\n  thingName: lifecycle-test-thing\n";
}

struct User {
  uid_t uid;
  gid_t gid;
};
User ggc_user() {
  const passwd* pw = ::getpwnam("ggc_user");
  if (!pw) return {0, 0};
  return {pw->pw_uid, pw->pw_gid};
}

bool pid_alive(pid_t pid) { return pid > 0 && ::kill(pid, 0) == 0; }

// Every process whose process group is `pgid` (reads /proc).
std::vector<pid_t> group_members(pid_t pgid) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const auto name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    long ppid = 0, pg = 0;
    rest >> state >> ppid >> pg;
    if (pg == pgid && state != "Z") out.push_back(static_cast<pid_t>(std::stol(name)));
  }
  return out;
}

char process_state(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() ? '?' : stat[close + 2];
}

class Lifecycle : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "these tests switch users and need root";
    if (!::getpwnam("ggc_user")) GTEST_SKIP() << "user ggc_user is missing; run scripts/setup.d/users.sh";
    fs::create_directories(recipes());
    fs::create_directories(artifacts());
    fs::create_directories(scratch());
    ::chmod(scratch().c_str(), 0777);
  }

  void start(const std::string& yaml = config_yaml()) {
    Canopyd::Options o;
    o.config_yaml = yaml;
    daemon_ = std::make_unique<Canopyd>(dir_.path(), o);
    ASSERT_TRUE(daemon_->wait_ready()) << daemon_->logs();
  }

  void kill9() {
    daemon_->process().signal(SIGKILL);
    daemon_->process().wait(10s);
    daemon_.reset();
  }

  fs::path recipes() const { return dir_.path() / "recipes"; }
  fs::path artifacts() const { return dir_.path() / "artifacts"; }
  fs::path scratch() const { return dir_.path() / "scratch"; }
  fs::path root() const { return dir_.path() / "root"; }

  // Writes a recipe. `lifecycle` is the YAML body of the global Lifecycle (indented 2 spaces).
  void recipe(const std::string& name, const std::string& version, const std::string& lifecycle,
              const std::string& extra = "") {
    write_file(recipes() / (name + "-" + version + ".yaml"),
               "RecipeFormatVersion: '2020-01-25'\n"
               "ComponentName: " + name + "\n"
               "ComponentVersion: '" + version + "'\n" + extra +
               "Lifecycle:\n" + lifecycle);
  }

  CommandResult cli(std::vector<std::string> args, std::chrono::seconds deadline = 90s) {
    args.insert(args.begin(), {canopy_cli_path().string(), "--root", root().string()});
    return run_command(args, deadline);
  }

  CommandResult deploy(std::vector<std::string> args) {
    std::vector<std::string> full{"deployment", "create", "--recipeDir", recipes().string(), "--artifactDir",
                                  artifacts().string(), "--wait", "--timeout", "80"};
    full.insert(full.end(), args.begin(), args.end());
    return cli(full);
  }

  nlohmann::json details(const std::string& name) {
    auto r = cli({"component", "details", name, "--json"});
    if (r.exit_code != 0) return nlohmann::json();
    try {
      return nlohmann::json::parse(r.output).at("componentDetails");
    } catch (...) {
      ADD_FAILURE() << "component details did not print JSON: " << r.output;
      return nlohmann::json();
    }
  }

  std::string state(const std::string& name) {
    auto d = details(name);
    return d.is_object() ? d.value("state", std::string()) : std::string("(absent)");
  }

  bool wait_state(const std::string& name, const std::string& want, std::chrono::seconds deadline = 30s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      if (state(name) == want) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  std::string log_of(const std::string& name) {
    std::error_code ec;
    if (!fs::exists(root() / "logs" / (name + ".log"), ec)) return {};
    return read_file(root() / "logs" / (name + ".log"));
  }

  bool wait_log(const std::string& name, const std::string& text, std::chrono::seconds deadline = 30s) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < until) {
      if (log_of(name).find(text) != std::string::npos) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  // How many times `text` occurs in the component's log.
  std::size_t count_in_log(const std::string& name, const std::string& text) {
    const auto log = log_of(name);
    std::size_t n = 0;
    for (auto pos = log.find(text); pos != std::string::npos; pos = log.find(text, pos + 1)) ++n;
    return n;
  }

  pid_t pid_of(const std::string& name) {
    auto d = details(name);
    return d.is_object() ? d.value("pid", 0) : 0;
  }

  std::string diagnostics() { return daemon_ ? daemon_->logs() : std::string(); }

  TempDir dir_;
  std::unique_ptr<Canopyd> daemon_;
};

const char* kSleepRun = "  Run: sleep 3600\n";

TEST_F(Lifecycle, RunStepGetsTheGreengrassEnvironmentUserAndWorkFolder) {
  start();
  recipe("com.test.Env", "1.0.0",
         "  Setenv:\n    LEVEL: lifecycle\n    OVERRIDDEN: lifecycle\n"
         "  Run:\n"
         "    Setenv:\n      OVERRIDDEN: step\n"
         "    Script: |\n"
         "      echo \"who uid=$(id -u) gid=$(id -g) cwd=$(pwd)\"\n"
         "      env | sort | sed 's/^/env /'\n"
         "      echo \"pgid=$(ps -o pgid= $$ | tr -d ' ') pid=$$\"\n"
         "      exec sleep 3600\n");
  auto r = deploy({"--merge", "com.test.Env=1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  ASSERT_TRUE(wait_log("com.test.Env", "pgid=")) << log_of("com.test.Env");
  const auto log = log_of("com.test.Env");
  const auto u = ggc_user();
  EXPECT_THAT(log, HasSubstr("who uid=" + std::to_string(u.uid) + " gid=" + std::to_string(u.gid)));
  EXPECT_THAT(log, HasSubstr("cwd=" + (root() / "work" / "com.test.Env").string()));
  EXPECT_THAT(log, HasSubstr("(stdout) env SVCUID="));
  EXPECT_THAT(log, HasSubstr("env AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT=" + (root() / "ipc.socket").string()));
  EXPECT_THAT(log, HasSubstr("env AWS_IOT_THING_NAME=lifecycle-test-thing"));
  EXPECT_THAT(log, HasSubstr("env AWS_REGION=eu-west-1"));
  EXPECT_THAT(log, HasSubstr("env AWS_DEFAULT_REGION=eu-west-1"));
  EXPECT_THAT(log, HasSubstr("env GGC_VERSION=0.1.0"));
  EXPECT_THAT(log, HasSubstr("env GG_ROOT_CA_PATH="));
  EXPECT_THAT(log, HasSubstr("env LEVEL=lifecycle"));
  EXPECT_THAT(log, HasSubstr("env OVERRIDDEN=step"));
  // Nothing of canopyd's own environment leaks in.
  EXPECT_THAT(log, Not(HasSubstr("env NOTIFY_SOCKET=")));
  EXPECT_THAT(log, Not(HasSubstr("env CANOPY_BINARY_DIR=")));
  // Its own process group, the one canopyd reports.
  const pid_t pid = pid_of("com.test.Env");
  ASSERT_GT(pid, 0);
  EXPECT_THAT(log, HasSubstr("pgid=" + std::to_string(pid) + " pid=" + std::to_string(pid)));
  EXPECT_EQ(state("com.test.Env"), "RUNNING");
}

TEST_F(Lifecycle, RequiresPrivilegeRunsAsRootAndOtherStepsAsTheDefaultUser) {
  start();
  recipe("com.test.Priv", "1.0.0",
         "  Install:\n    RequiresPrivilege: true\n    Script: echo \"install uid=$(id -u) gid=$(id -g)\"\n"
         "  Run: echo \"run uid=$(id -u) gid=$(id -g) groups=$(id -G)\"; exec sleep 3600\n");
  auto r = deploy({"--merge", "com.test.Priv=1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  ASSERT_TRUE(wait_log("com.test.Priv", "run uid="));
  const auto u = ggc_user();
  EXPECT_THAT(log_of("com.test.Priv"), HasSubstr("install uid=0 gid=0"));
  EXPECT_THAT(log_of("com.test.Priv"), HasSubstr("run uid=" + std::to_string(u.uid) + " gid=" + std::to_string(u.gid)));
  // The operators' group (which can read the CLI token) is never handed to components.
  if (const group* g = ::getgrnam("canopy")) {
    EXPECT_THAT(log_of("com.test.Priv"), Not(HasSubstr(" " + std::to_string(g->gr_gid))));
  }
}

TEST_F(Lifecycle, RunWithPicksAnotherUser) {
  start();
  recipe("com.test.Nobody", "1.0.0", "  Run: echo \"run uid=$(id -u)\"; exec sleep 3600\n");
  auto r = deploy({"--merge", "com.test.Nobody=1.0.0", "--runWith", "com.test.Nobody:posixUser=nobody:nogroup"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  ASSERT_TRUE(wait_log("com.test.Nobody", "run uid="));
  EXPECT_THAT(log_of("com.test.Nobody"), HasSubstr("run uid=" + std::to_string(::getpwnam("nobody")->pw_uid)));
}

TEST_F(Lifecycle, InstallThenStartupReachesRunningAndRunExitZeroFinishes) {
  start();
  recipe("com.test.Startup", "1.0.0",
         "  Install: echo installing\n"
         "  Startup: sh -c 'sleep 3600 >/dev/null 2>&1 &'; echo started\n");
  recipe("com.test.Once", "1.0.0", "  Run: echo once\n");
  auto r = deploy({"--merge", "com.test.Startup=1.0.0", "--merge", "com.test.Once=1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  EXPECT_EQ(state("com.test.Startup"), "RUNNING");
  EXPECT_TRUE(wait_state("com.test.Once", "FINISHED"));
  const auto log = log_of("com.test.Startup");
  EXPECT_LT(log.find("(stdout) installing"), log.find("(stdout) started"));
  // The daemon the Startup step left behind lives in the component's group and goes with it.
  const pid_t pgid = pid_of("com.test.Startup");
  ASSERT_GT(pgid, 0);
  EXPECT_FALSE(group_members(pgid).empty());
  auto s = cli({"component", "stop", "com.test.Startup"});
  ASSERT_EQ(s.exit_code, 0) << s.output;
  EXPECT_TRUE(wait_state("com.test.Startup", "FINISHED"));
  EXPECT_TRUE(group_members(pgid).empty());
}

TEST_F(Lifecycle, StartupTimeoutFromAnInterpolatedTimeoutIsAnError) {
  start(config_yaml("        brokenAfterErrors: 1\n"));
  recipe("com.test.Slow", "1.0.0",
         "  Startup:\n    Script: sleep 30\n    Timeout: '{configuration:/startupSeconds}'\n",
         "ComponentConfiguration:\n  DefaultConfiguration:\n    startupSeconds: 1\n");
  auto r = deploy({"--merge", "com.test.Slow=1.0.0", "--failure-handling-policy", "DO_NOTHING"});
  EXPECT_NE(r.exit_code, 0) << r.output;
  ASSERT_TRUE(wait_state("com.test.Slow", "BROKEN")) << diagnostics();
  const auto d = details("com.test.Slow");
  EXPECT_EQ(d["statusCode"], "STARTUP_TIMEOUT");
  EXPECT_THAT(d["statusReason"].get<std::string>(), HasSubstr("did not finish in time"));
}

TEST_F(Lifecycle, SkipIfOnpathAndExistsSkipSteps) {
  start();
  recipe("com.test.Skip", "1.0.0",
         "  Install:\n    SkipIf: onpath sh\n    Script: echo install-ran\n"
         "  Startup:\n    SkipIf: exists {work:path}/marker\n    Script: echo startup-ran; touch marker\n");
  auto r = deploy({"--merge", "com.test.Skip=1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  EXPECT_THAT(log_of("com.test.Skip"), Not(HasSubstr("install-ran")));
  EXPECT_THAT(log_of("com.test.Skip"), HasSubstr("startup-ran"));
  // Second start: the marker exists, so Startup is skipped.
  ASSERT_EQ(cli({"component", "restart", "com.test.Skip"}).exit_code, 0);
  ASSERT_TRUE(wait_state("com.test.Skip", "RUNNING"));
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(count_in_log("com.test.Skip", "startup-ran"), 1u);
}

TEST_F(Lifecycle, CrashLoopWithRecoverBecomesBrokenAndRestartClearsIt) {
  start(config_yaml("        brokenAfterErrors: 2\n"));
  const auto flag = scratch() / "healthy";
  recipe("com.test.Crash", "1.0.0",
         "  Run: test -f " + flag.string() + " || { echo crashing; exit 7; }; exec sleep 3600\n"
         "  Recover: echo recovering\n");
  // As in Greengrass, a Run step counts as RUNNING once launched, so the deployment itself may
  // succeed before the first crash; what matters is where the crash loop ends.
  deploy({"--merge", "com.test.Crash=1.0.0", "--failure-handling-policy", "DO_NOTHING"});
  ASSERT_TRUE(wait_state("com.test.Crash", "BROKEN")) << diagnostics();
  auto d = details("com.test.Crash");
  EXPECT_EQ(d["recentErrors"], 2);
  EXPECT_THAT(d["statusReason"].get<std::string>(), HasSubstr("canopy component restart com.test.Crash"));
  EXPECT_EQ(count_in_log("com.test.Crash", "(stdout) crashing"), 2u);
  EXPECT_EQ(count_in_log("com.test.Crash", "(stdout) recovering"), 1u);  // after the first error only
  // BROKEN stays BROKEN.
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(state("com.test.Crash"), "BROKEN");
  EXPECT_EQ(count_in_log("com.test.Crash", "(stdout) crashing"), 2u);
  // Fixed, then `component restart` clears it.
  write_file(flag, "");
  auto rr = cli({"component", "restart", "com.test.Crash"});
  ASSERT_EQ(rr.exit_code, 0) << rr.output;
  EXPECT_TRUE(wait_state("com.test.Crash", "RUNNING")) << diagnostics();
}

TEST_F(Lifecycle, StopRunsShutdownThenTermThenKillAndReapsLeftovers) {
  start();
  recipe("com.test.Stubborn", "1.0.0",
         "  Run: sleep 3600 & sleep 3600 & trap '' TERM; echo ready; while true; do sleep 1; done\n"
         "  Shutdown: echo shutting-down\n");
  auto r = deploy({"--merge", "com.test.Stubborn=1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  ASSERT_TRUE(wait_log("com.test.Stubborn", "ready"));
  const pid_t pgid = pid_of("com.test.Stubborn");
  ASSERT_GT(pgid, 0);
  EXPECT_GE(group_members(pgid).size(), 3u);
  auto s = cli({"component", "stop", "com.test.Stubborn"});
  ASSERT_EQ(s.exit_code, 0) << s.output;
  ASSERT_TRUE(wait_state("com.test.Stubborn", "FINISHED")) << diagnostics();
  EXPECT_THAT(log_of("com.test.Stubborn"), HasSubstr("(stdout) shutting-down"));
  EXPECT_TRUE(group_members(pgid).empty());
  EXPECT_THAT(daemon_->logs(), HasSubstr("did not stop within 1000 ms of SIGTERM; sending SIGKILL"));
  // Stopped means stopped: it does not come back by itself.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(state("com.test.Stubborn"), "FINISHED");
}

TEST_F(Lifecycle, PauseAndResumeStopAndContinueTheProcessGroup) {
  start();
  recipe("com.test.Pause", "1.0.0", kSleepRun);
  ASSERT_EQ(deploy({"--merge", "com.test.Pause=1.0.0"}).exit_code, 0) << diagnostics();
  const pid_t pgid = pid_of("com.test.Pause");
  ASSERT_EQ(cli({"component", "pause", "com.test.Pause"}).exit_code, 0);
  EXPECT_EQ(process_state(pgid), 'T');
  EXPECT_TRUE(details("com.test.Pause")["paused"].get<bool>());
  ASSERT_EQ(cli({"component", "resume", "com.test.Pause"}).exit_code, 0);
  EXPECT_NE(process_state(pgid), 'T');
  auto again = cli({"component", "resume", "com.test.Pause"});
  EXPECT_NE(again.exit_code, 0);
  EXPECT_THAT(again.output, HasSubstr("is not paused"));
}

TEST_F(Lifecycle, ComponentLogIsCappedWhateverTheComponentPrints) {
  start(config_yaml("", "      logging:\n        fileSizeKB: 64\n        maxFiles: 2\n"));
  recipe("com.test.Noisy", "1.0.0",
         "  Run: head -c 30000000 /dev/zero | tr '\\0' x | fold -w 200; echo END-OF-NOISE; exec sleep 3600\n");
  ASSERT_EQ(deploy({"--merge", "com.test.Noisy=1.0.0"}).exit_code, 0) << diagnostics();
  ASSERT_TRUE(wait_log("com.test.Noisy", "END-OF-NOISE", 120s));
  std::uintmax_t total = 0;
  int files = 0;
  for (const auto& e : fs::directory_iterator(root() / "logs"))
    if (e.path().filename().string().rfind("com.test.Noisy.log", 0) == 0) {
      total += e.file_size();
      ++files;
    }
  EXPECT_LE(files, 2);
  EXPECT_LE(total, 2u * 64u * 1024u);
}

TEST_F(Lifecycle, DependenciesStartInOrderAndAHardDependencyRestartRestartsDependents) {
  start();
  recipe("com.test.Base", "1.0.0", "  Startup: sleep 0.3; sh -c 'sleep 3600 >/dev/null 2>&1 &'\n");
  recipe("com.test.Hard", "1.0.0", kSleepRun,
         "ComponentDependencies:\n  com.test.Base:\n    VersionRequirement: '^1.0.0'\n    DependencyType: HARD\n");
  recipe("com.test.Soft", "1.0.0", kSleepRun,
         "ComponentDependencies:\n  com.test.Base:\n    VersionRequirement: '>=1.0.0'\n    DependencyType: SOFT\n");
  auto r = deploy({"--merge", "com.test.Hard=1.0.0", "--merge", "com.test.Soft=1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  // Base is pulled in as a dependency and reached RUNNING before its dependents started.
  const auto logs = daemon_->logs();
  const auto base_running = logs.find("component=com.test.Base version=1.0.0 state STARTING -> RUNNING");
  const auto hard_starting = logs.find("component=com.test.Hard version=1.0.0 state INSTALLED -> STARTING");
  const auto soft_starting = logs.find("component=com.test.Soft version=1.0.0 state INSTALLED -> STARTING");
  ASSERT_NE(base_running, std::string::npos) << logs;
  EXPECT_LT(base_running, hard_starting);
  EXPECT_LT(base_running, soft_starting);
  const pid_t hard = pid_of("com.test.Hard");
  const pid_t soft = pid_of("com.test.Soft");
  ASSERT_EQ(cli({"component", "restart", "com.test.Base"}).exit_code, 0);
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < until && (pid_of("com.test.Hard") == hard || state("com.test.Hard") != "RUNNING"))
    std::this_thread::sleep_for(50ms);
  EXPECT_NE(pid_of("com.test.Hard"), hard);
  EXPECT_EQ(state("com.test.Hard"), "RUNNING");
  EXPECT_EQ(pid_of("com.test.Soft"), soft);  // SOFT dependents keep running
  EXPECT_FALSE(pid_alive(hard));
}

TEST_F(Lifecycle, ADependencyCycleIsRejectedWithTheCycleNamed) {
  start();
  recipe("com.test.A", "1.0.0", kSleepRun, "ComponentDependencies:\n  com.test.B:\n    VersionRequirement: '*'\n");
  recipe("com.test.B", "1.0.0", kSleepRun, "ComponentDependencies:\n  com.test.A:\n    VersionRequirement: '*'\n");
  auto r = deploy({"--merge", "com.test.A=1.0.0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("dependency cycle: com.test.A -> com.test.B -> com.test.A"));
  EXPECT_EQ(state("com.test.A"), "(absent)");
}

TEST_F(Lifecycle, AVersionConflictNamesBothRequirers) {
  start();
  recipe("com.test.C", "1.0.0", kSleepRun);
  recipe("com.test.C", "2.0.0", kSleepRun);
  recipe("com.test.A", "1.0.0", kSleepRun, "ComponentDependencies:\n  com.test.C:\n    VersionRequirement: '>=2.0.0'\n");
  recipe("com.test.B", "1.0.0", kSleepRun, "ComponentDependencies:\n  com.test.C:\n    VersionRequirement: '<2.0.0'\n");
  auto r = deploy({"--merge", "com.test.A=1.0.0", "--merge", "com.test.B=1.0.0"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("com.test.A requires com.test.C >=2.0.0, com.test.B requires com.test.C <2.0.0"));
  EXPECT_EQ(state("com.test.A"), "(absent)");
}

TEST_F(Lifecycle, AFailingUpdateRollsBackToThePreviousVersionAndConfiguration) {
  start();
  recipe("com.test.App", "1.0.0", "  Run: echo \"v1 says {configuration:/greeting}\"; exec sleep 3600\n",
         "ComponentConfiguration:\n  DefaultConfiguration:\n    greeting: hello\n");
  ASSERT_EQ(deploy({"--merge", "com.test.App=1.0.0", "--update-config",
                    R"({"com.test.App":{"MERGE":{"greeting":"one"}}})"})
                .exit_code,
            0)
      << diagnostics();
  ASSERT_TRUE(wait_log("com.test.App", "v1 says one"));
  recipe("com.test.App", "2.0.0", "  Install: exit 1\n  Run: exec sleep 3600\n");
  auto r = deploy({"--merge", "com.test.App=2.0.0", "--update-config", R"({"com.test.App":{"MERGE":{"greeting":"two"}}})"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("Install step failed with exit code 1"));
  ASSERT_TRUE(wait_state("com.test.App", "RUNNING")) << diagnostics();
  const auto d = details("com.test.App");
  EXPECT_EQ(d["version"], "1.0.0");
  EXPECT_EQ(d["configuration"]["greeting"], "one");
  ASSERT_TRUE(wait_log("com.test.App", "v1 says one"));
  auto list = cli({"deployment", "list", "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  const auto all = nlohmann::json::parse(list.output)["localDeployments"];
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[1]["status"], "FAILED");
  EXPECT_EQ(all[1]["deploymentStatusDetails"]["detailedDeploymentStatus"], "FAILED_ROLLBACK_COMPLETE");
}

TEST_F(Lifecycle, DoNothingLeavesTheFailedUpdateInPlace) {
  start(config_yaml("        brokenAfterErrors: 1\n"));
  recipe("com.test.App", "1.0.0", kSleepRun);
  ASSERT_EQ(deploy({"--merge", "com.test.App=1.0.0"}).exit_code, 0) << diagnostics();
  recipe("com.test.App", "2.0.0", "  Install: exit 1\n  Run: exec sleep 3600\n");
  auto r = deploy({"--merge", "com.test.App=2.0.0", "--failure-handling-policy", "DO_NOTHING"});
  EXPECT_NE(r.exit_code, 0);
  const auto d = details("com.test.App");
  EXPECT_EQ(d["version"], "2.0.0");
  EXPECT_EQ(d["state"], "BROKEN");
}

TEST_F(Lifecycle, RemovingAComponentStopsItAndForgetsIt) {
  start();
  recipe("com.test.Gone", "1.0.0", kSleepRun);
  ASSERT_EQ(deploy({"--merge", "com.test.Gone=1.0.0"}).exit_code, 0) << diagnostics();
  const pid_t pgid = pid_of("com.test.Gone");
  auto r = deploy({"--remove", "com.test.Gone"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(state("com.test.Gone"), "(absent)");
  EXPECT_TRUE(group_members(pgid).empty());
}

TEST_F(Lifecycle, AfterACleanStopOrAKillDashNineCanopydStartsTheDeployedSetAgain) {
  start();
  recipe("com.test.Keep", "1.0.0", "  Run: echo started; exec sleep 3600\n  Shutdown: echo clean-shutdown\n");
  ASSERT_EQ(deploy({"--merge", "com.test.Keep=1.0.0"}).exit_code, 0) << diagnostics();
  const pid_t first = pid_of("com.test.Keep");
  ASSERT_EQ(daemon_->stop(), 0);
  daemon_.reset();
  EXPECT_THAT(log_of("com.test.Keep"), HasSubstr("clean-shutdown"));
  EXPECT_TRUE(group_members(first).empty());

  start();
  ASSERT_TRUE(wait_state("com.test.Keep", "RUNNING")) << diagnostics();
  const pid_t second = pid_of("com.test.Keep");
  EXPECT_NE(second, first);

  // kill -9: the component survives canopyd at first; the next canopyd stops it, then starts
  // a fresh one, so no orphan holds a dead IPC connection.
  kill9();
  EXPECT_FALSE(group_members(second).empty());
  start();
  ASSERT_TRUE(wait_state("com.test.Keep", "RUNNING")) << diagnostics();
  EXPECT_TRUE(group_members(second).empty());
  EXPECT_NE(pid_of("com.test.Keep"), second);
  EXPECT_THAT(daemon_->logs(), HasSubstr("was still running from a previous canopyd"));
}

TEST_F(Lifecycle, KillDashNineDuringADeploymentRestartsIntoTheOldSet) {
  start();
  recipe("com.test.App", "1.0.0", "  Run: echo \"v1 {configuration:/v}\"; exec sleep 3600\n",
         "ComponentConfiguration:\n  DefaultConfiguration:\n    v: old\n");
  ASSERT_EQ(deploy({"--merge", "com.test.App=1.0.0"}).exit_code, 0) << diagnostics();
  recipe("com.test.App", "2.0.0", "  Install: echo installing-v2; sleep 60\n  Run: exec sleep 3600\n",
         "ComponentConfiguration:\n  DefaultConfiguration:\n    v: new\n");
  recipe("com.test.Extra", "1.0.0", kSleepRun);
  auto r = cli({"deployment", "create", "--recipeDir", recipes().string(), "--merge", "com.test.App=2.0.0", "--merge",
                "com.test.Extra=1.0.0", "--update-config", R"({"com.test.App":{"MERGE":{"v":"merged"}}})"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_TRUE(wait_log("com.test.App", "installing-v2")) << diagnostics();
  kill9();
  start();
  ASSERT_TRUE(wait_state("com.test.App", "RUNNING")) << diagnostics();
  const auto d = details("com.test.App");
  EXPECT_EQ(d["version"], "1.0.0");
  EXPECT_EQ(d["configuration"]["v"], "old");
  EXPECT_EQ(state("com.test.Extra"), "(absent)");
  auto list = nlohmann::json::parse(cli({"deployment", "list", "--json"}).output)["localDeployments"];
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1]["status"], "FAILED");
  EXPECT_THAT(list[1]["message"].get<std::string>(), HasSubstr("canopyd stopped while this deployment was being applied"));
  // The install step of v2 did not survive either.
  EXPECT_THAT(daemon_->logs(), HasSubstr("step=install was still running from a previous canopyd"));
}

TEST_F(Lifecycle, BootstrapExit100RestartsCanopydOnceAfterTheDeployment) {
  start();
  recipe("com.test.Boot", "1.0.0", "  Bootstrap: echo bootstrapping; exit 100\n  Run: echo running; exec sleep 3600\n");
  auto r = deploy({"--merge", "com.test.Boot=1.0.0"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  // canopyd replaces itself (same pid) and reports READY=1 a second time.
  const auto until = std::chrono::steady_clock::now() + 30s;
  std::size_t ready = 0;
  while (std::chrono::steady_clock::now() < until) {
    ready = 0;
    for (const auto& n : daemon_->notifications(100ms))
      if (n.find("READY=1") != std::string::npos) ++ready;
    if (ready >= 2) break;
  }
  ASSERT_GE(ready, 2u) << diagnostics();
  EXPECT_TRUE(daemon_->process().running());
  ASSERT_TRUE(wait_state("com.test.Boot", "RUNNING")) << diagnostics();
  EXPECT_THAT(diagnostics(), HasSubstr("restarting canopyd"));
  // Bootstrap belongs to the deployment: the restarted canopyd does not run it again.
  EXPECT_EQ(count_in_log("com.test.Boot", "(stdout) bootstrapping"), 1u);
  EXPECT_EQ(count_in_log("com.test.Boot", "(stdout) running"), 2u);
}

TEST_F(Lifecycle, ADamagedDeployedSetIsRecoveredFromItsBackup) {
  start();
  recipe("com.test.Keep", "1.0.0", kSleepRun);
  ASSERT_EQ(deploy({"--merge", "com.test.Keep=1.0.0"}).exit_code, 0) << diagnostics();
  ASSERT_EQ(daemon_->stop(), 0);
  daemon_.reset();
  write_file(root() / "deployments" / "deployed.json", "{\"groups\": tru");
  start();
  ASSERT_TRUE(wait_state("com.test.Keep", "RUNNING")) << diagnostics();
  EXPECT_THAT(diagnostics(), HasSubstr("the deployed set was damaged"));
  bool moved_aside = false;
  for (const auto& e : fs::directory_iterator(root() / "deployments"))
    if (e.path().filename().string().rfind("deployed.json.corrupt-", 0) == 0) moved_aside = true;
  EXPECT_TRUE(moved_aside);
  // The deployment that made it stays SUCCEEDED.
  auto list = nlohmann::json::parse(cli({"deployment", "list", "--json"}).output)["localDeployments"];
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["status"], "SUCCEEDED");
}

TEST_F(Lifecycle, ResourceLimitsApplyOrSayWhyNot) {
  start();
  recipe("com.test.Limited", "1.0.0", kSleepRun);
  auto r = deploy({"--merge", "com.test.Limited=1.0.0", "--systemLimits", "com.test.Limited:memory=65536,cpus=0.5"});
  ASSERT_EQ(r.exit_code, 0) << r.output << diagnostics();
  const auto logs = daemon_->logs();
  if (logs.find("component resource limits are not applied") != std::string::npos) {
    EXPECT_THAT(logs, HasSubstr("component=com.test.Limited resource limits (memory 67108864 bytes, 0.5 CPUs) are not applied"));
    GTEST_SKIP() << "cgroup v2 with the memory and cpu controllers is not available here; checked the log line only";
  }
  // cgroup v2: the component's process is in a cgroup with the limits.
  const pid_t pid = pid_of("com.test.Limited");
  const auto cg = read_file("/proc/" + std::to_string(pid) + "/cgroup");
  EXPECT_THAT(cg, HasSubstr("com.test.Limited"));
}

}  // namespace
}  // namespace canopy::test
