//! Running component processes: users, process groups, output capture into capped logs,
//! exit notification, leftover-process records, and cgroup v2 resource limits.
//! Used only by the lifecycle manager; everything here runs on the executor it is given.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include <boost/asio/any_io_executor.hpp>

#include "canopy/core/error.hpp"

namespace canopy::lifecycle {

/// The user and groups a step runs as.
struct RunAs {
  std::string user;   ///< user name, for logs
  std::string group;  ///< primary group name, for logs
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;   ///< from passwd; HOME for the process
  /// Extra supplementary groups added after initgroups (e.g. the IPC socket's group).
  std::vector<gid_t> extra_groups;
};

/// Parses `user` or `user:group` (names or numeric ids) and looks them up. Without a group the
/// user's primary group is used. Errors (errc::not_found / errc::invalid), shaped for an
/// operator, e.g. `posixUser "ggc_user:ggc_group": user "ggc_user" does not exist on this
/// device; create it (useradd --system --user-group ggc_user) or set
/// services.canopy.Nucleus.configuration.runWithDefault.posixUser`.
result<RunAs> resolve_user(std::string_view posix_user);

/// The user canopyd itself runs as (root when RequiresPrivilege, or when canopyd is not root
/// and so cannot switch users).
RunAs current_user();

/// A component's log file `logs/<name>.log`: lines `2026-11-30T07:42:00.123Z [INFO] (stdout) text`,
/// rotated to `<name>.log.1` … `<name>.log.<max_files-1>` when the current file would pass
/// max_file_bytes. Total disk use never exceeds max_file_bytes * max_files (a line longer
/// than max_file_bytes is truncated). Write errors (full disk) are counted, never thrown.
/// Not thread-safe: used on one executor.
class ComponentLog {
 public:
  enum class Level { info, warn, error };
  /// Opens (appends to) the file, creating it with mode 0640. Errors: errc::io naming the path;
  /// errc::invalid when max_file_bytes or max_files is 0.
  static result<std::shared_ptr<ComponentLog>> open(const std::filesystem::path& file, std::uint64_t max_file_bytes,
                                                    std::uint32_t max_files);
  ~ComponentLog();
  ComponentLog(const ComponentLog&) = delete;
  ComponentLog& operator=(const ComponentLog&) = delete;

  /// Appends one line (no trailing newline in `text`). `source` is e.g. `stdout`, `stderr`,
  /// `canopy` (lines canopyd writes about the component: step started, exit code).
  void line(Level level, std::string_view source, std::string_view text);
  std::uint64_t write_errors() const { return write_errors_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  ComponentLog() = default;
  void rotate();
  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::uint64_t max_file_bytes_ = 0;
  std::uint32_t max_files_ = 1;
  std::uint64_t write_errors_ = 0;
};

/// How a process ended.
struct ExitStatus {
  int code = -1;    ///< exit code, or -1 when killed by a signal
  int signal = 0;   ///< the signal that killed it, 0 when it exited
  bool ok() const { return code == 0; }
  std::string describe() const;  ///< "exit code 3", "killed by SIGKILL"
};

/// One process to start.
struct ProcessSpec {
  std::string component;  ///< for logs and the process table
  std::string step;       ///< `install`, `run`, ... for logs and the process table
  std::string script;     ///< run as `/bin/sh -c <script>`
  std::filesystem::path cwd;
  std::map<std::string, std::string> env;  ///< the complete environment (nothing is inherited)
  std::optional<RunAs> run_as;             ///< nullopt: canopyd's own user and groups
  std::filesystem::path cgroup;            ///< a cgroup folder to join before exec; empty: none
};

/// Starts processes and reports their exits. Makes canopyd a child subreaper
/// (PR_SET_CHILD_SUBREAPER), so grandchildren a component leaves behind are re-parented to
/// canopyd and reaped here instead of becoming zombies. Handles SIGCHLD on `executor`; one
/// Launcher per process.
class Launcher {
 public:
  using OnExit = std::function<void(ExitStatus)>;
  explicit Launcher(boost::asio::any_io_executor executor);
  ~Launcher();
  Launcher(const Launcher&) = delete;
  Launcher& operator=(const Launcher&) = delete;

  /// Starts `/bin/sh -c script` in a new session and process group (pgid == pid), with the
  /// spec's cwd, environment, user (setgroups/initgroups, setgid, setuid, in that order) and
  /// cgroup, signals unblocked and default dispositions, no inherited descriptors beyond
  /// stdin (/dev/null), stdout and stderr (pipes). Each stdout line goes to `log` at INFO,
  /// each stderr line at WARN (lines longer than 64 KiB are split). `on_exit` runs once on the
  /// executor after the process exited and both pipes reached end of file, or 2 s after the
  /// exit if a leftover child still holds them.
  /// Errors (nothing left running): errc::io / errc::unauthorized naming the step, the
  /// component and what failed in the child before exec (`chdir work/com.x: Permission
  /// denied`, `setuid 998: Operation not permitted`).
  result<pid_t> spawn(const ProcessSpec& spec, std::shared_ptr<ComponentLog> log, OnExit on_exit);

  /// Sends `sig` to the process group `pgid` (ESRCH ignored).
  static void signal_group(pid_t pgid, int sig);
  /// True while any process of the group exists.
  static bool group_alive(pid_t pgid);

  /// Processes started and not yet reported as exited.
  std::size_t running() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The process groups canopyd started, persisted (`<file>`, atomically replaced, mode 0600) so
/// that the next canopyd can stop the ones a previous run left behind when it died by kill -9.
/// Each record holds the pgid and the leader's start time (field 22 of /proc/<pid>/stat), so a
/// recycled PID is never mistaken for a component.
class ProcessTable {
 public:
  struct Record {
    pid_t pgid = 0;
    std::uint64_t start_time = 0;  ///< clock ticks since boot, from /proc/<pid>/stat
    std::string component;
    std::string step;
  };
  /// Reads the records a previous run left in `file` (kept, and written back, until
  /// stop_leftovers() has dealt with them). Never fails; problems become Cleanup::warnings.
  explicit ProcessTable(std::filesystem::path file);
  /// Adds a started group (reads its start time now) and rewrites the file.
  void add(pid_t pgid, std::string component, std::string step);
  /// Removes a group and rewrites the file.
  void remove(pid_t pgid);
  /// Takes the records the constructor read from the file; for each record whose leader still exists with the
  /// same start time, or whose group still has members, sends SIGTERM to the group, waits up
  /// to `grace` for it to go, then SIGKILL. Blocking (called once at start-up, before the
  /// event loop runs). Zombies count as gone (they are not our children to reap). Returns
  /// what it stopped, for the log; afterwards the file holds only this run's records. A
  /// missing or unreadable file is an empty table (an unreadable one is logged by the caller
  /// from the returned warnings).
  struct Cleanup {
    std::vector<Record> stopped;
    std::vector<std::string> warnings;
  };
  Cleanup stop_leftovers(std::chrono::milliseconds grace);

  /// The second line of defence, for a canopyd killed between starting a process and recording
  /// it: every process whose environment holds exactly `marker` (canopyd gives each step
  /// `CANOPYD_SUPERVISED_ROOT=<root>`, a name nothing else sets) gets SIGTERM to its process group, SIGKILL after `grace`.
  /// Reads /proc/<pid>/environ (root, or canopyd's own user's processes). Returns the process
  /// groups it stopped. Blocking; called once at start-up.
  static std::vector<pid_t> stop_marked(std::string_view marker, std::chrono::milliseconds grace);

 private:
  void save();
  std::filesystem::path file_;
  std::vector<Record> records_;         ///< groups this run started
  std::vector<Record> previous_;        ///< the previous run's, until stop_leftovers()
  std::vector<std::string> load_warnings_;
};

/// Resource limits of one component (Greengrass `systemResourceLimits`).
struct ResourceLimits {
  std::optional<std::uint64_t> memory_bytes;  ///< memory.max (Greengrass gives KB: `memory`)
  std::optional<double> cpus;                 ///< cpu.max quota as a number of CPUs (`cpus`)
};

/// cgroup v2 support. canopyd under systemd with Delegate=yes owns its cgroup; to create
/// children it first moves itself into a leaf `<own>/canopyd` (cgroup v2's "no internal
/// processes" rule), enables the memory and cpu controllers for its subtree, and creates
/// `<own>/components/<name>` per component.
class Cgroups {
 public:
  /// Finds the cgroup2 mount and canopyd's own cgroup and checks it can write there. When it
  /// cannot, available() is false and reason() says why in one sentence (logged once by the
  /// caller: "resource limits are not applied: …").
  static Cgroups detect();
  bool available() const { return available_; }
  const std::string& reason() const { return reason_; }
  /// Creates (or reuses) the component's cgroup and writes the limits (unset ones become
  /// "max"). Errors: errc::io naming the file and value.
  result<std::filesystem::path> prepare(const std::string& component, const ResourceLimits& limits);
  /// Kills every process in the component's cgroup (cgroup.kill) and removes it.
  void kill_and_remove(const std::string& component);

 private:
  bool available_ = false;
  std::string reason_;
  std::filesystem::path base_;  ///< <own cgroup>/components
};

}  // namespace canopy::lifecycle
