// Launcher, ComponentLog, resolve_user, ProcessTable and Cgroups against real processes.
// Every process a test starts is killed by process group in TearDown and reaped by the
// Launcher; every file lives in a TempDir.
#include "canopy/lifecycle/process.hpp"

#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <grp.h>
#include <pwd.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/process.hpp"

namespace canopy::lifecycle {
namespace {
namespace fs = std::filesystem;
namespace net = boost::asio;
using namespace std::chrono_literals;

std::vector<std::string> file_lines(const fs::path& file) {
  std::vector<std::string> out;
  std::istringstream in(test::read_file(file));
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The texts of the lines of one level and source, e.g. ("INFO", "stdout").
std::vector<std::string> texts(const fs::path& file, const std::string& level, const std::string& source) {
  const std::string tag = " [" + level + "] (" + source + ") ";
  std::vector<std::string> out;
  for (const auto& line : file_lines(file)) {
    const auto at = line.find(tag);
    if (at != std::string::npos) out.push_back(line.substr(at + tag.size()));
  }
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

class LauncherTest : public ::testing::Test {
 protected:
  struct Run {
    pid_t pid = -1;
    std::optional<ExitStatus> status;
    std::chrono::steady_clock::time_point exited_at;
  };

  void SetUp() override { launcher_ = std::make_unique<Launcher>(io_.get_executor()); }

  void TearDown() override {
    for (pid_t g : groups_) Launcher::signal_group(g, SIGKILL);
    EXPECT_TRUE(run_until([&] { return launcher_->running() == 0; }, 10s)) << "processes did not exit";
    // Grandchildren re-parented to us are reaped on SIGCHLD too; give them a moment.
    run_until([&] { return false; }, 50ms);
    launcher_.reset();
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() >= deadline) return false;
      if (io_.stopped()) io_.restart();
      io_.run_for(10ms);
    }
    return true;
  }

  ProcessSpec spec(std::string script) {
    ProcessSpec s;
    s.component = "com.example.Test";
    s.step = "run";
    s.script = std::move(script);
    s.cwd = dir_.path();
    s.env = {{"PATH", "/usr/bin:/bin"}};
    return s;
  }

  std::shared_ptr<ComponentLog> open_log(const std::string& name = "com.example.Test.log") {
    auto log = ComponentLog::open(dir_.path() / name, 10u << 20, 2);
    EXPECT_TRUE(log) << (log ? "" : log.error().message);
    return log ? *log : nullptr;
  }

  std::shared_ptr<Run> start(const ProcessSpec& s, std::shared_ptr<ComponentLog> log) {
    auto run = std::make_shared<Run>();
    auto pid = launcher_->spawn(s, std::move(log), [run](ExitStatus st) {
      run->status = st;
      run->exited_at = std::chrono::steady_clock::now();
    });
    EXPECT_TRUE(pid) << (pid ? "" : pid.error().message);
    if (pid) {
      run->pid = *pid;
      groups_.push_back(*pid);
    }
    return run;
  }

  bool wait_exit(const std::shared_ptr<Run>& run, std::chrono::milliseconds limit = 10s) {
    return run_until([&] { return run->status.has_value(); }, limit);
  }

  net::io_context io_;
  test::TempDir dir_;
  std::unique_ptr<Launcher> launcher_;
  std::vector<pid_t> groups_;
};

TEST(ExitStatus, Describe) {
  EXPECT_EQ((ExitStatus{0, 0}).describe(), "exit code 0");
  EXPECT_EQ((ExitStatus{3, 0}).describe(), "exit code 3");
  EXPECT_EQ((ExitStatus{-1, SIGKILL}).describe(), "killed by SIGKILL");
  EXPECT_TRUE((ExitStatus{0, 0}).ok());
  EXPECT_FALSE((ExitStatus{-1, SIGTERM}).ok());
}

TEST_F(LauncherTest, ReportsExitCodesAndSignals) {
  auto log = open_log();
  auto zero = start(spec("exit 0"), log);
  auto three = start(spec("exit 3"), log);
  auto killed = start(spec("kill -KILL $$"), log);
  EXPECT_EQ(launcher_->running(), 3u);
  ASSERT_TRUE(run_until([&] { return zero->status && three->status && killed->status; }, 10s));
  EXPECT_TRUE(zero->status->ok());
  EXPECT_EQ(zero->status->describe(), "exit code 0");
  EXPECT_EQ(three->status->code, 3);
  EXPECT_EQ(three->status->describe(), "exit code 3");
  EXPECT_EQ(killed->status->signal, SIGKILL);
  EXPECT_EQ(killed->status->code, -1);
  EXPECT_EQ(killed->status->describe(), "killed by SIGKILL");
  EXPECT_EQ(launcher_->running(), 0u);
}

TEST_F(LauncherTest, CapturesStdoutAndStderrAsLines) {
  auto log = open_log();
  auto run = start(spec("echo out1; echo err1 >&2; printf 'crlf\\r\\n'; "
                        "head -c 70000 /dev/zero | tr '\\0' a; echo; printf partial"),
                   log);
  ASSERT_TRUE(wait_exit(run));
  EXPECT_TRUE(run->status->ok());
  const auto out = texts(log->path(), "INFO", "stdout");
  ASSERT_EQ(out.size(), 5u) << test::read_file(log->path()).substr(0, 2000);
  EXPECT_EQ(out[0], "out1");
  EXPECT_EQ(out[1], "crlf");
  EXPECT_EQ(out[2], std::string(65536, 'a'));  // a 70000-byte line is split at 64 KiB
  EXPECT_EQ(out[3], std::string(70000 - 65536, 'a'));
  EXPECT_EQ(out[4], "partial");  // no trailing newline: flushed at EOF
  EXPECT_EQ(texts(log->path(), "WARN", "stderr"), std::vector<std::string>{"err1"});

  // Only the prefix: std::regex recurses per character and would overflow on a 64 KiB line.
  const std::regex shape(R"(^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(INFO|WARN)\] \((stdout|stderr)\) )");
  for (const auto& line : file_lines(log->path()))
    EXPECT_TRUE(std::regex_search(line.substr(0, 80), shape)) << line.substr(0, 200);
}

TEST_F(LauncherTest, EnvironmentCwdDescriptorsAndSignalsAreExactlyTheSpec) {
  ::setenv("CANOPY_PROCESS_TEST_LEAK", "1", 1);
  const fs::path work = dir_.path() / "work dir";
  fs::create_directories(work);
  auto s = spec("env; pwd; grep -E '^Sig(Blk|Ign)' /proc/self/status; cat; echo stdin-done; "
                "exec ls /proc/self/fd");
  s.cwd = work;
  s.env["FOO"] = "bar";
  auto log = open_log();
  auto run = start(s, log);
  ASSERT_TRUE(wait_exit(run));
  ::unsetenv("CANOPY_PROCESS_TEST_LEAK");
  const auto out = texts(log->path(), "INFO", "stdout");
  EXPECT_TRUE(contains(out, "FOO=bar"));
  EXPECT_TRUE(contains(out, "PATH=/usr/bin:/bin"));
  for (const auto& line : out) {
    EXPECT_EQ(line.find("CANOPY_PROCESS_TEST_LEAK"), std::string::npos) << line;
    EXPECT_NE(line.rfind("HOME=", 0), 0u) << line;
  }
  EXPECT_TRUE(contains(out, fs::canonical(work).string()));
  // What exec'd programs inherit: stdin, stdout and stderr (3 is the folder ls reads).
  ASSERT_GE(out.size(), 4u);
  EXPECT_EQ(std::vector<std::string>(out.end() - 4, out.end()), (std::vector<std::string>{"0", "1", "2", "3"}));
  EXPECT_TRUE(contains(out, "SigBlk:\t0000000000000000"));
  EXPECT_TRUE(contains(out, "SigIgn:\t0000000000000000"));
  EXPECT_TRUE(contains(out, "stdin-done"));  // stdin is /dev/null: cat ends at once
}

TEST_F(LauncherTest, RunsAsTheGivenUserAndGroups) {
  auto who = resolve_user("nobody:nogroup");
  ASSERT_TRUE(who) << who.error().message;
  who->extra_groups = {4242};
  fs::permissions(dir_.path(), fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                   fs::perms::others_read | fs::perms::others_exec);
  fs::create_directories(dir_.path() / "ro");
  fs::permissions(dir_.path() / "ro", fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                                          fs::perms::others_read | fs::perms::others_exec);
  auto s = spec("id -u; id -g; echo groups=$(id -G); if touch ro/x 2>/dev/null; then echo WROTE; else echo DENIED; fi");
  s.run_as = *who;
  auto log = open_log();
  auto run = start(s, log);
  ASSERT_TRUE(wait_exit(run));
  const auto out = texts(log->path(), "INFO", "stdout");
  ASSERT_GE(out.size(), 4u) << test::read_file(log->path());
  EXPECT_EQ(out[0], std::to_string(who->uid));
  EXPECT_EQ(out[1], std::to_string(who->gid));
  EXPECT_NE(out[2].find(" 4242"), std::string::npos) << out[2];
  EXPECT_NE(out[2].find(std::to_string(who->gid)), std::string::npos) << out[2];
  EXPECT_EQ(out[2].find(" 0"), std::string::npos) << "root's group kept: " << out[2];
  EXPECT_EQ(out[3], "DENIED");
  EXPECT_FALSE(fs::exists(dir_.path() / "ro" / "x"));
}

TEST_F(LauncherTest, SpawnErrorsNameWhatFailedAndLeaveNothingRunning) {
  auto s = spec("echo never");
  s.cwd = dir_.path() / "missing";
  auto r = launcher_->spawn(s, open_log(), [](ExitStatus) { ADD_FAILURE() << "on_exit for a failed spawn"; });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::io);
  EXPECT_NE(r.error().message.find("chdir " + (dir_.path() / "missing").string() + ": No such file or directory"),
            std::string::npos)
      << r.error().message;
  EXPECT_NE(r.error().message.find("com.example.Test"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("run"), std::string::npos) << r.error().message;

  auto c = spec("echo never");
  c.cgroup = dir_.path() / "no-such-cgroup";
  auto rc = launcher_->spawn(c, nullptr, [](ExitStatus) { ADD_FAILURE() << "on_exit for a failed spawn"; });
  ASSERT_FALSE(rc);
  EXPECT_NE(rc.error().message.find("cgroup " + (c.cgroup / "cgroup.procs").string()), std::string::npos)
      << rc.error().message;

  EXPECT_EQ(launcher_->running(), 0u);
  int st = 0;
  EXPECT_EQ(::waitpid(-1, &st, WNOHANG), -1) << "a child is left";
  EXPECT_EQ(errno, ECHILD);
  run_until([] { return false; }, 50ms);  // no on_exit may arrive
}

TEST_F(LauncherTest, LeftoverGrandchildDoesNotHoldOnExitAndIsReapedAfterGroupKill) {
  auto log = open_log();
  const auto started = std::chrono::steady_clock::now();
  auto run = start(spec("sleep 1000 & echo $! > gpid; exit 0"), log);
  ASSERT_TRUE(wait_exit(run, 6s));
  const auto waited = run->exited_at - started;
  EXPECT_GE(waited, 1900ms);  // the 2 s fallback: the grandchild still holds the pipes
  EXPECT_LT(waited, 5s);
  EXPECT_EQ(run->status->code, 0);

  const pid_t grandchild = std::stoi(test::read_file(dir_.path() / "gpid"));
  const fs::path proc = "/proc/" + std::to_string(grandchild);
  ASSERT_TRUE(fs::exists(proc));
  EXPECT_EQ(::getpgid(grandchild), run->pid);
  EXPECT_TRUE(Launcher::group_alive(run->pid));

  Launcher::signal_group(run->pid, SIGKILL);
  // We are its subreaper: the Launcher reaps it, so no zombie stays behind.
  EXPECT_TRUE(run_until([&] { return !fs::exists(proc); }, 5s)) << "grandchild " << grandchild << " not reaped";
  EXPECT_FALSE(Launcher::group_alive(run->pid));
  Launcher::signal_group(run->pid, SIGKILL);  // gone: ESRCH is ignored
}

// The restart case: spawning from inside on_exit.
TEST_F(LauncherTest, OnExitMaySpawnAgain) {
  auto log = open_log();
  auto first = std::make_shared<Run>();
  auto second = std::make_shared<Run>();
  auto r = launcher_->spawn(spec("exit 7"), log, [&, first, second](ExitStatus st) {
    first->status = st;
    auto again = launcher_->spawn(spec("echo again"), log, [second](ExitStatus s2) { second->status = s2; });
    EXPECT_TRUE(again);
    if (again) groups_.push_back(*again);
  });
  ASSERT_TRUE(r);
  groups_.push_back(*r);
  ASSERT_TRUE(wait_exit(second));
  EXPECT_EQ(first->status->code, 7);
  EXPECT_TRUE(second->status->ok());
  EXPECT_EQ(texts(log->path(), "INFO", "stdout"), std::vector<std::string>{"again"});
  EXPECT_EQ(launcher_->running(), 0u);
}

TEST(Launcher, DestroyedWithRunningChildrenNeverCallsOnExit) {
  net::io_context io;
  test::TempDir dir;
  pid_t pid = -1;
  {
    Launcher launcher(io.get_executor());
    ProcessSpec s;
    s.script = "exec sleep 1000";
    s.cwd = dir.path();
    s.env = {{"PATH", "/usr/bin:/bin"}};
    auto r = launcher.spawn(s, nullptr, [](ExitStatus) { ADD_FAILURE() << "on_exit after the Launcher went away"; });
    ASSERT_TRUE(r) << r.error().message;
    pid = *r;
    io.run_for(50ms);
    EXPECT_EQ(launcher.running(), 1u);
  }
  Launcher::signal_group(pid, SIGKILL);
  int st = 0;
  EXPECT_EQ(::waitpid(pid, &st, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(st));
  io.run_for(50ms);
}

TEST(ComponentLog, CapHoldsUnderHeavyOutput) {
  test::TempDir dir;
  const fs::path file = dir.path() / "com.example.Big.log";
  auto log = ComponentLog::open(file, 64 * 1024, 3);
  ASSERT_TRUE(log) << log.error().message;
  const std::string filler(100, 'x');
  std::uint64_t written = 0;
  int i = 0;
  for (; written < (10u << 20); ++i) {
    const std::string text = "line " + std::to_string(i) + " " + filler;
    (*log)->line(ComponentLog::Level::info, "stdout", text);
    written += text.size() + 40;
  }
  std::size_t files = 0;
  std::uintmax_t total = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    ++files;
    total += e.file_size();
  }
  EXPECT_LE(files, 3u);
  EXPECT_LE(total, 3u * 64 * 1024);
  EXPECT_TRUE(fs::exists(file.string() + ".1"));
  EXPECT_TRUE(fs::exists(file.string() + ".2"));
  const auto last = texts(file, "INFO", "stdout");
  ASSERT_FALSE(last.empty());
  EXPECT_EQ(last.back(), "line " + std::to_string(i - 1) + " " + filler);
  EXPECT_EQ((*log)->write_errors(), 0u);
  EXPECT_EQ(fs::status(file).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
}

TEST(ComponentLog, OneFileIsTruncatedInPlace) {
  test::TempDir dir;
  const fs::path file = dir.path() / "one.log";
  auto log = ComponentLog::open(file, 4096, 1);
  ASSERT_TRUE(log);
  for (int i = 0; i < 1000; ++i) (*log)->line(ComponentLog::Level::warn, "stderr", "some text " + std::to_string(i));
  EXPECT_LE(fs::file_size(file), 4096u);
  EXPECT_FALSE(fs::exists(file.string() + ".1"));
  EXPECT_EQ(texts(file, "WARN", "stderr").back(), "some text 999");
}

TEST(ComponentLog, StartsFromTheExistingSizeAndTruncatesLongLines) {
  test::TempDir dir;
  const fs::path file = dir.path() / "c.log";
  test::write_file(file, std::string(3000, 'o') + "\n");
  auto log = ComponentLog::open(file, 4096, 2);
  ASSERT_TRUE(log);
  (*log)->line(ComponentLog::Level::error, "canopy", std::string(2000, 'n'));  // 3001 + ~2040 > 4096
  EXPECT_EQ(fs::file_size(file.string() + ".1"), 3001u);
  EXPECT_EQ(texts(file, "ERROR", "canopy"), std::vector<std::string>{std::string(2000, 'n')});

  (*log)->line(ComponentLog::Level::info, "canopy", std::string(10000, 'L'));
  EXPECT_LE(fs::file_size(file), 4096u);
  const std::string text = test::read_file(file);
  EXPECT_EQ(text.back(), '\n');
  EXPECT_FALSE(ComponentLog::open(dir.path() / "z.log", 0, 1));
  EXPECT_FALSE(ComponentLog::open(dir.path() / "missing-dir" / "x.log", 4096, 1));
}

TEST(ResolveUser, NamesIdsAndPrimaryGroup) {
  const passwd* nobody = ::getpwnam("nobody");
  const group* nogroup = ::getgrnam("nogroup");
  ASSERT_NE(nobody, nullptr);
  ASSERT_NE(nogroup, nullptr);
  const uid_t nobody_uid = nobody->pw_uid;
  const gid_t nobody_gid = nobody->pw_gid;
  const gid_t nogroup_gid = nogroup->gr_gid;

  auto a = resolve_user("nobody:nogroup");
  ASSERT_TRUE(a) << a.error().message;
  EXPECT_EQ(a->user, "nobody");
  EXPECT_EQ(a->group, "nogroup");
  EXPECT_EQ(a->uid, nobody_uid);
  EXPECT_EQ(a->gid, nogroup_gid);

  auto b = resolve_user("nobody");
  ASSERT_TRUE(b);
  EXPECT_EQ(b->gid, nobody_gid);

  auto c = resolve_user("0:0");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->user, "root");
  EXPECT_EQ(c->group, "root");
  EXPECT_EQ(c->home, "/root");

  auto d = resolve_user(std::to_string(nobody_uid));
  ASSERT_TRUE(d);
  EXPECT_EQ(d->user, "nobody");

  auto e = resolve_user("54321:54321");  // numeric ids need no database entry when both are given
  ASSERT_TRUE(e) << e.error().message;
  EXPECT_EQ(e->uid, 54321u);
  EXPECT_EQ(e->gid, 54321u);

  const RunAs me = current_user();
  EXPECT_EQ(me.uid, ::geteuid());
  EXPECT_EQ(me.gid, ::getegid());
  EXPECT_FALSE(me.user.empty());
}

TEST(ResolveUser, ErrorsNameTheFix) {
  auto u = resolve_user("canopy_no_such_user:nogroup");
  ASSERT_FALSE(u);
  EXPECT_EQ(u.error().code, errc::not_found);
  EXPECT_EQ(u.error().message,
            "posixUser \"canopy_no_such_user:nogroup\": user \"canopy_no_such_user\" does not exist on this device; "
            "create it (useradd --system --user-group canopy_no_such_user) or set "
            "services.canopy.Nucleus.configuration.runWithDefault.posixUser");

  auto g = resolve_user("nobody:canopy_no_such_group");
  ASSERT_FALSE(g);
  EXPECT_EQ(g.error().code, errc::not_found);
  EXPECT_EQ(g.error().message,
            "posixUser \"nobody:canopy_no_such_group\": group \"canopy_no_such_group\" does not exist on this "
            "device; create it (groupadd --system canopy_no_such_group) or set "
            "services.canopy.Nucleus.configuration.runWithDefault.posixUser");

  auto n = resolve_user("54321");
  ASSERT_FALSE(n);
  EXPECT_EQ(n.error().code, errc::not_found);
  EXPECT_NE(n.error().message.find("54321:<group>"), std::string::npos) << n.error().message;

  for (const char* bad : {"", ":", "nobody:", ":nogroup", "a:b:c"}) {
    auto r = resolve_user(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().code, errc::invalid) << bad;
    EXPECT_NE(r.error().message.find("posixUser"), std::string::npos) << r.error().message;
  }
}

TEST_F(LauncherTest, ProcessTableStopsLeftoversButNotRecycledPids) {
  // The leftover's command name holds spaces and ')' to prove /proc/<pid>/stat parsing.
  fs::copy_file("/bin/sleep", dir_.path() / "odd) (name");
  auto leftover = start(spec("exec './odd) (name' 1000"), nullptr);
  auto unrelated = start(spec("exec sleep 1000"), nullptr);
  ASSERT_TRUE(run_until([&] { return test::read_file("/proc/" + std::to_string(leftover->pid) + "/comm") ==
                                     "odd) (name\n"; },
                        5s));

  const fs::path file = dir_.path() / "processes.json";
  {
    ProcessTable table(file);
    table.add(leftover->pid, "com.example.Leftover", "run");
    table.add(unrelated->pid, "com.example.Recycled", "run");
    table.add(999999999, "com.example.Gone", "run");  // no such process: start time 0
    table.remove(999999999);
  }
  EXPECT_EQ(fs::status(file).permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
  auto doc = nlohmann::json::parse(test::read_file(file));
  EXPECT_EQ(doc["version"], 1);
  ASSERT_EQ(doc["processes"].size(), 2u);
  EXPECT_EQ(doc["processes"][0]["pgid"], leftover->pid);
  EXPECT_EQ(doc["processes"][0]["component"], "com.example.Leftover");
  EXPECT_EQ(doc["processes"][0]["step"], "run");
  EXPECT_GT(doc["processes"][0]["startTime"].get<std::uint64_t>(), 0u);
  // Pretend the second pid was recycled: a different process now has it.
  doc["processes"][1]["startTime"] = doc["processes"][1]["startTime"].get<std::uint64_t>() + 12345;
  test::write_file(file, doc.dump());

  ProcessTable next(file);
  const auto cleanup = next.stop_leftovers(3s);
  EXPECT_TRUE(cleanup.warnings.empty()) << ::testing::PrintToString(cleanup.warnings);
  ASSERT_EQ(cleanup.stopped.size(), 1u);
  EXPECT_EQ(cleanup.stopped[0].pgid, leftover->pid);
  EXPECT_EQ(cleanup.stopped[0].component, "com.example.Leftover");

  ASSERT_TRUE(wait_exit(leftover, 5s));
  EXPECT_EQ(leftover->status->signal, SIGTERM);
  EXPECT_FALSE(unrelated->status);
  EXPECT_EQ(::kill(unrelated->pid, 0), 0) << "the recycled pid's process was killed";
  EXPECT_TRUE(nlohmann::json::parse(test::read_file(file))["processes"].empty());
}

TEST(ProcessTable, MissingOrCorruptFileIsAnEmptyTable) {
  test::TempDir dir;
  ProcessTable missing(dir.path() / "none.json");
  auto a = missing.stop_leftovers(100ms);
  EXPECT_TRUE(a.stopped.empty());
  EXPECT_TRUE(a.warnings.empty());

  test::write_file(dir.path() / "bad.json", "{not json");
  ProcessTable bad(dir.path() / "bad.json");
  auto b = bad.stop_leftovers(100ms);
  EXPECT_TRUE(b.stopped.empty());
  ASSERT_EQ(b.warnings.size(), 1u);
  EXPECT_NE(b.warnings[0].find("bad.json"), std::string::npos) << b.warnings[0];
}

TEST(Cgroups, DetectExplainsWhyWhenUnavailable) {
  Cgroups cg = Cgroups::detect();
  if (!cg.available()) {
    EXPECT_FALSE(cg.reason().empty());
    std::cout << "cgroup v2 limits unavailable here: " << cg.reason() << "\n";
    auto r = cg.prepare("com.example.Cg", {});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::unsupported);
    EXPECT_NE(r.error().message.find(cg.reason()), std::string::npos);
    return;
  }
  EXPECT_TRUE(cg.reason().empty());
}

// The Launcher's part of cgroups (joining before exec) works on any writable cgroup2 mount,
// even one without controllers, such as the unified hierarchy of a cgroup v1 host.
TEST_F(LauncherTest, JoinsTheGivenCgroupBeforeExec) {
  fs::path mount;
  for (const char* m : {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"}) {
    struct statfs sf {};
    if (::statfs(m, &sf) == 0 && sf.f_type == CGROUP2_SUPER_MAGIC) {
      mount = m;
      break;
    }
  }
  if (mount.empty()) GTEST_SKIP() << "no cgroup2 file system mounted";
  const std::string name = "canopy-process-test-" + std::to_string(::getpid());
  const fs::path cg = mount / name;
  if (::mkdir(cg.c_str(), 0755) != 0) GTEST_SKIP() << "cannot create " << cg << ": " << std::strerror(errno);
  auto s = spec("cat /proc/self/cgroup");
  s.cgroup = cg;
  auto log = open_log();
  auto run = start(s, log);
  const bool exited = wait_exit(run);
  EXPECT_EQ(::rmdir(cg.c_str()), 0) << std::strerror(errno);
  ASSERT_TRUE(exited);
  EXPECT_TRUE(contains(texts(log->path(), "INFO", "stdout"), "0::/" + name)) << test::read_file(log->path());
}

TEST_F(LauncherTest, CgroupLimitsAndKill) {
  Cgroups cg = Cgroups::detect();
  if (!cg.available()) GTEST_SKIP() << "cgroup v2 limits unavailable here: " << cg.reason();
  ResourceLimits limits;
  limits.memory_bytes = 64u << 20;
  limits.cpus = 0.5;
  auto dir = cg.prepare("com.example.CgTest", limits);
  ASSERT_TRUE(dir) << dir.error().message;
  EXPECT_EQ(test::read_file(*dir / "memory.max"), "67108864\n");
  EXPECT_EQ(test::read_file(*dir / "cpu.max"), "50000 100000\n");
  auto s = spec("exec sleep 1000");
  s.cgroup = *dir;
  auto run = start(s, nullptr);
  ASSERT_TRUE(run_until([&] { return test::read_file(*dir / "cgroup.procs").find(std::to_string(run->pid)) !=
                                     std::string::npos; },
                        2s));
  cg.kill_and_remove("com.example.CgTest");
  ASSERT_TRUE(wait_exit(run, 5s));
  EXPECT_EQ(run->status->signal, SIGKILL);
  EXPECT_FALSE(fs::exists(*dir));
}

}  // namespace
}  // namespace canopy::lifecycle
