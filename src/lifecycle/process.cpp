// Starting component processes (fork, then exec of /bin/sh -c in the child), turning their
// output into ComponentLog lines, and reaping them on SIGCHLD. Users are resolved here too.
#include "canopy/lifecycle/process.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <climits>
#include <csignal>
#include <cstring>
#include <set>
#include <utility>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "canopy/core/log.hpp"

namespace canopy::lifecycle {
namespace net = boost::asio;

namespace {

constexpr std::string_view kFixSetting = "set services.canopy.Nucleus.configuration.runWithDefault.posixUser";

// ---- users and groups ---------------------------------------------------------------------

struct UserEntry {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
};

struct GroupEntry {
  std::string name;
  gid_t gid = 0;
};

// The *_r lookups take a caller buffer and answer ERANGE when it is too small. "Not found" is
// a null result with 0 (or, on some NSS modules, ENOENT/ESRCH).
template <class Entry, class Lookup>
result<std::optional<Entry>> nss_lookup(std::string_view what, Lookup lookup) {
  std::vector<char> buf(4096);
  for (;;) {
    std::optional<Entry> entry;
    const int rc = lookup(buf, entry);
    if (rc == ERANGE && buf.size() < (std::size_t{1} << 22)) {
      buf.resize(buf.size() * 4);
      continue;
    }
    if (entry) return entry;
    if (rc == 0 || rc == ENOENT || rc == ESRCH) return std::optional<Entry>{};
    return errno_error(fmt::format("cannot look up {}", what), rc);
  }
}

UserEntry to_user(const passwd& pw) { return {pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir ? pw.pw_dir : "/"}; }
GroupEntry to_group(const group& gr) { return {gr.gr_name, gr.gr_gid}; }

result<std::optional<UserEntry>> user_by_name(const std::string& name) {
  return nss_lookup<UserEntry>(fmt::format("user \"{}\"", name), [&](std::vector<char>& buf, auto& out) {
    passwd pw{};
    passwd* found = nullptr;
    const int rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc == 0 && found) out = to_user(pw);
    return rc;
  });
}

result<std::optional<UserEntry>> user_by_id(uid_t uid) {
  return nss_lookup<UserEntry>(fmt::format("user id {}", uid), [&](std::vector<char>& buf, auto& out) {
    passwd pw{};
    passwd* found = nullptr;
    const int rc = ::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found);
    if (rc == 0 && found) out = to_user(pw);
    return rc;
  });
}

result<std::optional<GroupEntry>> group_by_name(const std::string& name) {
  return nss_lookup<GroupEntry>(fmt::format("group \"{}\"", name), [&](std::vector<char>& buf, auto& out) {
    group gr{};
    group* found = nullptr;
    const int rc = ::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found);
    if (rc == 0 && found) out = to_group(gr);
    return rc;
  });
}

result<std::optional<GroupEntry>> group_by_id(gid_t gid) {
  return nss_lookup<GroupEntry>(fmt::format("group id {}", gid), [&](std::vector<char>& buf, auto& out) {
    group gr{};
    group* found = nullptr;
    const int rc = ::getgrgid_r(gid, &gr, buf.data(), buf.size(), &found);
    if (rc == 0 && found) out = to_group(gr);
    return rc;
  });
}

// A decimal id; (uid_t)-1 is excluded because setuid/setgid treat it as "unchanged".
std::optional<std::uint32_t> parse_id(std::string_view text) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  std::uint32_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size() || v == UINT32_MAX) return std::nullopt;
  return v;
}

std::string group_name_or_id(gid_t gid) {
  if (auto g = group_by_id(gid); g && *g) return (*g)->name;
  return std::to_string(gid);
}

// ---- the child side of spawn --------------------------------------------------------------

// Everything the child needs, prepared before fork: after fork only async-signal-safe calls
// are allowed (another thread may have held the malloc lock), so no allocation happens there.
struct ChildPlan {
  int devnull = -1;
  int out_w = -1;
  int err_w = -1;
  int report_w = -1;
  int max_fd = 1024;  // for the close() loop when close_range is missing
  std::string procs_path;  // empty: no cgroup
  bool switch_user = false;
  std::vector<gid_t> groups;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string cwd;
  std::vector<char*> argv;
  std::vector<char*> envp;
  // Failure reports: "<what> <arg>", completed with strerror by the parent.
  std::string msg_setsid = "setsid";
  std::string msg_signals = "sigprocmask";
  std::string msg_stdio = "dup2";
  std::string msg_cgroup;
  std::string msg_setgroups;
  std::string msg_setgid;
  std::string msg_setuid;
  std::string msg_chdir;
  std::string msg_exec = "execve /bin/sh";
};

void write_all(int fd, const void* data, std::size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

// Reports errno and what failed through the error pipe, then exits without running atexit
// handlers or flushing stdio buffers copied from canopyd.
[[noreturn]] void child_fail(const ChildPlan& plan, const std::string& what, int err) {
  write_all(plan.report_w, &err, sizeof err);
  write_all(plan.report_w, what.data(), what.size());
  ::_exit(127);
}

void close_from(const ChildPlan& plan, int first, int last) {
  if (first > last) return;
  if (::close_range(static_cast<unsigned>(first), static_cast<unsigned>(last), 0) == 0) return;
  for (int fd = first; fd <= std::min(last, plan.max_fd); ++fd) ::close(fd);
}

[[noreturn]] void run_child(const ChildPlan& plan) {
  if (::setsid() < 0) child_fail(plan, plan.msg_setsid, errno);

  // Default dispositions first (canopyd's handlers must not run here), then unblock: the
  // parent blocked every signal around fork.
  struct sigaction dfl{};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig = 1; sig < 32; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  if (::sigprocmask(SIG_SETMASK, &none, nullptr) != 0) child_fail(plan, plan.msg_signals, errno);

  if (::dup2(plan.devnull, 0) < 0 || ::dup2(plan.out_w, 1) < 0 || ::dup2(plan.err_w, 2) < 0)
    child_fail(plan, plan.msg_stdio, errno);
  // Everything else goes, except the report pipe (close-on-exec: its EOF tells the parent
  // that exec succeeded).
  close_from(plan, 3, plan.report_w - 1);
  close_from(plan, plan.report_w + 1, INT_MAX);

  if (!plan.procs_path.empty()) {
    const int fd = ::open(plan.procs_path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) child_fail(plan, plan.msg_cgroup, errno);
    char digits[16];
    char* end = digits + sizeof digits;
    char* p = end;
    for (auto v = static_cast<unsigned long>(::getpid()); v > 0 || p == end; v /= 10) *--p = static_cast<char>('0' + v % 10);
    const auto len = static_cast<std::size_t>(end - p);
    ssize_t n;
    do {
      n = ::write(fd, p, len);
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(len)) child_fail(plan, plan.msg_cgroup, n < 0 ? errno : EIO);
    ::close(fd);
  }

  if (plan.switch_user) {
    if (::setgroups(plan.groups.size(), plan.groups.data()) != 0) child_fail(plan, plan.msg_setgroups, errno);
    if (::setgid(plan.gid) != 0) child_fail(plan, plan.msg_setgid, errno);
    if (::setuid(plan.uid) != 0) child_fail(plan, plan.msg_setuid, errno);
  }
  if (!plan.cwd.empty() && ::chdir(plan.cwd.c_str()) != 0) child_fail(plan, plan.msg_chdir, errno);

  ::execve("/bin/sh", plan.argv.data(), plan.envp.data());
  child_fail(plan, plan.msg_exec, errno);
}

// ---- the parent side ----------------------------------------------------------------------

// A descriptor closed on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// The child dup2()s onto 0, 1 and 2; a source that already is one of those (canopyd started
// with them closed) would be overwritten before use, so every descriptor it uses is >= 3.
result<void> lift(Fd& fd) {
  if (fd.get() >= 3) return ok();
  const int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return errno_error("fcntl F_DUPFD_CLOEXEC", errno);
  fd = Fd(moved);
  return ok();
}

result<void> make_pipe(Fd& read_end, Fd& write_end) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return errno_error("pipe2", errno);
  read_end = Fd(p[0]);
  write_end = Fd(p[1]);
  if (auto r = lift(read_end); !r) return r;
  return lift(write_end);
}

ExitStatus to_exit_status(int wait_status) {
  ExitStatus s;
  if (WIFEXITED(wait_status)) {
    s.code = WEXITSTATUS(wait_status);
  } else if (WIFSIGNALED(wait_status)) {
    s.code = -1;
    s.signal = WTERMSIG(wait_status);
  }
  return s;
}

constexpr std::size_t kMaxLine = 64 * 1024;
constexpr auto kPipeGrace = std::chrono::seconds(2);

class Child;

// Shared by the Launcher and every pending handler, so that handlers still queued when the
// Launcher goes away find a valid (stopped) object.
class Reaper : public std::enable_shared_from_this<Reaper> {
 public:
  explicit Reaper(net::any_io_executor executor) : executor_(std::move(executor)), signals_(executor_, SIGCHLD) {}

  void start() { wait_signal(); }
  void stop();
  void add(pid_t pid, const std::shared_ptr<Child>& child) {
    alive_[pid] = child;
    active_.insert(child);
  }
  // The child's on_exit is about to run (or will never run because the Launcher stopped).
  void forget(const std::shared_ptr<Child>& child) { active_.erase(child); }
  bool stopped() const { return stopped_; }
  std::size_t running() const { return active_.size(); }
  const net::any_io_executor& executor() const { return executor_; }

 private:
  void wait_signal() {
    signals_.async_wait([self = shared_from_this()](const boost::system::error_code& ec, int) {
      if (ec || self->stopped_) return;
      self->reap();
      self->wait_signal();
    });
  }
  void reap();

  net::any_io_executor executor_;
  net::signal_set signals_;
  std::map<pid_t, std::shared_ptr<Child>> alive_;  // started, not yet reaped
  std::set<std::shared_ptr<Child>> active_;        // started, on_exit not yet run
  bool stopped_ = false;
};

// One started process: its two output pipes, its exit status and the 2 s grace timer.
class Child : public std::enable_shared_from_this<Child> {
 public:
  Child(std::shared_ptr<Reaper> reaper, std::shared_ptr<ComponentLog> log, Launcher::OnExit on_exit)
      : reaper_(std::move(reaper)), log_(std::move(log)), on_exit_(std::move(on_exit)),
        streams_{Stream(reaper_->executor(), ComponentLog::Level::info, "stdout"),
                 Stream(reaper_->executor(), ComponentLog::Level::warn, "stderr")},
        grace_(reaper_->executor()) {}

  // Takes ownership of the read ends; a descriptor the reactor refuses counts as at EOF.
  void start(Fd out, Fd err) {
    Fd fds[2] = {std::move(out), std::move(err)};
    for (std::size_t i = 0; i < 2; ++i) {
      boost::system::error_code ec;
      streams_[i].desc.assign(fds[i].get(), ec);
      if (ec) {
        log::get("lifecycle")->warn("cannot watch the {} pipe: {}", streams_[i].source, ec.message());
        streams_[i].done = true;
        continue;
      }
      fds[i].release();
      read(i);
    }
  }

  void exited(ExitStatus status) {
    status_ = status;
    exited_ = true;
    if (streams_[0].done && streams_[1].done) {
      finish();
      return;
    }
    // A process the component left behind still holds the pipes; do not wait for it forever.
    grace_.expires_after(kPipeGrace);
    grace_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (ec || self->reported_) return;
      for (auto& s : self->streams_) self->close_stream(s);
      self->finish();
    });
  }

  // The Launcher is going away: drop the pipes, never call on_exit.
  void abandon() {
    reported_ = true;
    boost::system::error_code ec;
    for (auto& s : streams_) {
      s.done = true;
      s.desc.close(ec);
    }
    grace_.cancel();
    on_exit_ = nullptr;
  }

 private:
  struct Stream {
    Stream(const net::any_io_executor& ex, ComponentLog::Level l, std::string_view s)
        : desc(ex), level(l), source(s) {}
    net::posix::stream_descriptor desc;
    std::array<char, 16 * 1024> buf{};
    std::string pending;  // bytes after the last newline
    bool done = false;
    ComponentLog::Level level;
    std::string_view source;
  };

  void read(std::size_t i) {
    auto& s = streams_[i];
    s.desc.async_read_some(net::buffer(s.buf),
                           [self = shared_from_this(), i](const boost::system::error_code& ec, std::size_t n) {
                             self->on_read(i, ec, n);
                           });
  }

  void on_read(std::size_t i, const boost::system::error_code& ec, std::size_t n) {
    auto& s = streams_[i];
    if (s.done) return;  // closed by the grace timer or abandon(), which already flushed
    if (n > 0) consume(s, std::string_view(s.buf.data(), n));
    if (ec) {  // eof, or an error that ends the stream just the same
      close_stream(s);
      if (exited_ && streams_[0].done && streams_[1].done) {
        grace_.cancel();
        finish();
      }
      return;
    }
    read(i);
  }

  void consume(Stream& s, std::string_view data) {
    s.pending.append(data);
    std::size_t start = 0;
    for (auto nl = s.pending.find('\n'); nl != std::string::npos; nl = s.pending.find('\n', start)) {
      emit_line(s, std::string_view(s.pending).substr(start, nl - start));
      start = nl + 1;
    }
    s.pending.erase(0, start);
    // A line without a newline yet: keep at most one maximum-length piece buffered.
    while (s.pending.size() > kMaxLine) {
      emit_piece(s, std::string_view(s.pending).substr(0, kMaxLine));
      s.pending.erase(0, kMaxLine);
    }
  }

  void emit_line(Stream& s, std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (line.size() > kMaxLine) {
      emit_piece(s, line.substr(0, kMaxLine));
      line.remove_prefix(kMaxLine);
    }
    emit_piece(s, line);
  }

  void emit_piece(Stream& s, std::string_view text) {
    if (log_) log_->line(s.level, s.source, text);
  }

  // End of one stream: the partial last line (no newline) is still a line.
  void close_stream(Stream& s) {
    if (s.done) return;
    s.done = true;
    if (!s.pending.empty()) emit_line(s, s.pending);
    s.pending.clear();
    s.pending.shrink_to_fit();
    boost::system::error_code ignored;
    s.desc.close(ignored);
  }

  void finish() {
    if (reported_) return;
    reported_ = true;
    // Posted so that on_exit (which may spawn again or destroy things) never runs inside the
    // reaping loop or a read handler.
    net::post(reaper_->executor(), [self = shared_from_this()] {
      if (self->reaper_->stopped()) return;
      self->reaper_->forget(self);
      auto on_exit = std::move(self->on_exit_);
      if (!on_exit) return;
      try {
        on_exit(self->status_);
      } catch (const std::exception& e) {
        log::get("lifecycle")->error("an exit handler threw: {}", e.what());
      } catch (...) {
        log::get("lifecycle")->error("an exit handler threw a non-standard exception");
      }
    });
  }

  std::shared_ptr<Reaper> reaper_;
  std::shared_ptr<ComponentLog> log_;
  Launcher::OnExit on_exit_;
  std::array<Stream, 2> streams_;
  net::steady_timer grace_;
  ExitStatus status_;
  bool exited_ = false;
  bool reported_ = false;
};

void Reaper::reap() {
  // One SIGCHLD may stand for several exits: collect until nothing is left.
  for (;;) {
    int st = 0;
    const pid_t pid = ::waitpid(-1, &st, WNOHANG);
    if (pid == 0) return;
    if (pid < 0) {
      if (errno == EINTR) continue;
      return;  // ECHILD: no children at all
    }
    const auto it = alive_.find(pid);
    if (it == alive_.end()) continue;  // a re-parented grandchild (we are a subreaper): reaped, that is all
    const auto child = std::move(it->second);
    alive_.erase(it);
    child->exited(to_exit_status(st));
  }
}

void Reaper::stop() {
  stopped_ = true;
  boost::system::error_code ec;
  signals_.cancel(ec);
  signals_.clear(ec);
  for (const auto& child : active_) child->abandon();
  active_.clear();
  alive_.clear();
}

}  // namespace

// ---- public functions ---------------------------------------------------------------------

std::string ExitStatus::describe() const {
  if (signal != 0) {
    if (const char* abbrev = ::sigabbrev_np(signal)) return fmt::format("killed by SIG{}", abbrev);
    return fmt::format("killed by signal {}", signal);
  }
  return fmt::format("exit code {}", code);
}

result<RunAs> resolve_user(std::string_view posix_user) {
  const auto colon = posix_user.find(':');
  const std::string_view user_part = posix_user.substr(0, colon);
  std::optional<std::string_view> group_part;
  if (colon != std::string_view::npos) group_part = posix_user.substr(colon + 1);
  const auto invalid = [&](std::string_view why) {
    return make_error(errc::invalid, fmt::format("posixUser \"{}\": {}; expected user or user:group (names or "
                                                 "numeric ids)",
                                                 posix_user, why));
  };
  if (user_part.empty()) return invalid("the user is empty");
  if (group_part && group_part->empty()) return invalid("the group after ':' is empty");
  if (group_part && group_part->find(':') != std::string_view::npos) return invalid("more than one ':'");

  RunAs out;
  if (const auto uid = parse_id(user_part)) {
    auto entry = user_by_id(*uid);
    if (!entry) return std::move(entry).error();
    if (*entry) {
      out.user = (*entry)->name;
      out.gid = (*entry)->gid;
      out.home = (*entry)->home;
    } else if (group_part) {
      out.user = std::string(user_part);  // a numeric user without a passwd entry is allowed
      out.home = "/";
    } else {
      return make_error(errc::not_found,
                        fmt::format("posixUser \"{}\": user id {} has no entry in the user database, so its group is "
                                    "unknown; name the group too ({}:<group>) or {}",
                                    posix_user, *uid, *uid, kFixSetting));
    }
    out.uid = *uid;
  } else {
    const std::string name(user_part);
    auto entry = user_by_name(name);
    if (!entry) return std::move(entry).error();
    if (!*entry)
      return make_error(errc::not_found,
                        fmt::format("posixUser \"{}\": user \"{}\" does not exist on this device; create it (useradd "
                                    "--system --user-group {}) or {}",
                                    posix_user, name, name, kFixSetting));
    out.user = (*entry)->name;
    out.uid = (*entry)->uid;
    out.gid = (*entry)->gid;
    out.home = (*entry)->home;
  }

  if (!group_part) {
    out.group = group_name_or_id(out.gid);
  } else if (const auto gid = parse_id(*group_part)) {
    out.gid = *gid;
    out.group = group_name_or_id(*gid);
  } else {
    const std::string name(*group_part);
    auto entry = group_by_name(name);
    if (!entry) return std::move(entry).error();
    if (!*entry)
      return make_error(errc::not_found,
                        fmt::format("posixUser \"{}\": group \"{}\" does not exist on this device; create it (groupadd "
                                    "--system {}) or {}",
                                    posix_user, name, name, kFixSetting));
    out.gid = (*entry)->gid;
    out.group = (*entry)->name;
  }
  return out;
}

RunAs current_user() {
  RunAs out;
  out.uid = ::geteuid();
  out.gid = ::getegid();
  out.user = std::to_string(out.uid);
  out.home = "/";
  if (auto entry = user_by_id(out.uid); entry && *entry) {
    out.user = (*entry)->name;
    out.home = (*entry)->home;
  }
  out.group = group_name_or_id(out.gid);
  return out;
}

struct Launcher::Impl {
  std::shared_ptr<Reaper> reaper;
};

Launcher::Launcher(boost::asio::any_io_executor executor) : impl_(std::make_unique<Impl>()) {
  // Grandchildren whose parent exits are re-parented to us, so their exits reach reap().
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
    log::get("lifecycle")->warn("prctl PR_SET_CHILD_SUBREAPER: {}; processes components leave behind become "
                                "children of init",
                                std::strerror(errno));
  impl_->reaper = std::make_shared<Reaper>(std::move(executor));
  impl_->reaper->start();
}

Launcher::~Launcher() { impl_->reaper->stop(); }

std::size_t Launcher::running() const { return impl_->reaper->running(); }

void Launcher::signal_group(pid_t pgid, int sig) {
  // pgid 1 would be kill(-1): every process we may signal. 0 would be our own group.
  if (pgid <= 1) return;
  ::kill(-pgid, sig);  // ESRCH: already gone
}

bool Launcher::group_alive(pid_t pgid) {
  if (pgid <= 1) return false;
  return ::kill(-pgid, 0) == 0 || errno == EPERM;
}

result<pid_t> Launcher::spawn(const ProcessSpec& spec, std::shared_ptr<ComponentLog> log, OnExit on_exit) {
  const auto fail = [&](const Error& e) {
    return make_error(e.code, fmt::format("cannot start {} of {}: {}", spec.step, spec.component, e.message));
  };
  // Everything the child uses is built here, before fork.
  ChildPlan plan;
  std::vector<std::string> argv_strings = {"sh", "-c", spec.script};
  std::vector<std::string> env_strings;
  env_strings.reserve(spec.env.size());
  for (const auto& [k, v] : spec.env) env_strings.push_back(k + "=" + v);
  for (auto& s : argv_strings) plan.argv.push_back(s.data());
  plan.argv.push_back(nullptr);
  for (auto& s : env_strings) plan.envp.push_back(s.data());
  plan.envp.push_back(nullptr);
  plan.cwd = spec.cwd.string();
  plan.msg_chdir = "chdir " + plan.cwd;
  if (!spec.cgroup.empty()) {
    plan.procs_path = (spec.cgroup / "cgroup.procs").string();
    plan.msg_cgroup = "cgroup " + plan.procs_path;
  }
  if (spec.run_as) {
    const RunAs& who = *spec.run_as;
    plan.switch_user = true;
    plan.uid = who.uid;
    plan.gid = who.gid;
    int count = 32;
    for (;;) {
      plan.groups.resize(static_cast<std::size_t>(count));
      const int wanted = count;
      if (::getgrouplist(who.user.c_str(), who.gid, plan.groups.data(), &count) >= 0) {
        plan.groups.resize(static_cast<std::size_t>(count));
        break;
      }
      if (count <= wanted) count = wanted * 2;  // defensive: always grow
    }
    for (gid_t g : who.extra_groups) {
      if (std::find(plan.groups.begin(), plan.groups.end(), g) == plan.groups.end()) plan.groups.push_back(g);
    }
    plan.msg_setgroups = "setgroups " + who.user;
    plan.msg_setgid = fmt::format("setgid {}", who.gid);
    plan.msg_setuid = fmt::format("setuid {}", who.uid);
  }
  const long open_max = ::sysconf(_SC_OPEN_MAX);
  plan.max_fd = open_max > 0 && open_max < INT_MAX ? static_cast<int>(open_max) : 65536;

  Fd devnull(::open("/dev/null", O_RDWR | O_CLOEXEC));
  if (devnull.get() < 0) return fail(errno_error("open /dev/null", errno));
  if (auto r = lift(devnull); !r) return fail(r.error());
  Fd out_r, out_w, err_r, err_w, report_r, report_w;
  for (auto [r, w] : {std::pair{&out_r, &out_w}, std::pair{&err_r, &err_w}, std::pair{&report_r, &report_w}}) {
    if (auto made = make_pipe(*r, *w); !made) return fail(made.error());
  }
  plan.devnull = devnull.get();
  plan.out_w = out_w.get();
  plan.err_w = err_w.get();
  plan.report_w = report_w.get();

  // Blocked around fork so that no handler of canopyd runs in the child before run_child
  // resets the dispositions.
  sigset_t all, old;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid = ::fork();
  const int fork_errno = errno;
  if (pid == 0) run_child(plan);
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return fail(errno_error("fork", fork_errno));

  devnull.reset();
  out_w.reset();
  err_w.reset();
  report_w.reset();

  // EOF without data: exec succeeded (the pipe is close-on-exec). Otherwise errno + message.
  std::string report;
  std::array<char, 512> buf{};
  for (;;) {
    const ssize_t n = ::read(report_r.get(), buf.data(), buf.size());
    if (n > 0) {
      report.append(buf.data(), static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  if (!report.empty()) {
    int st = 0;
    while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    int err = EIO;
    std::string what = "exec";
    if (report.size() >= sizeof err) {
      std::memcpy(&err, report.data(), sizeof err);
      what = report.substr(sizeof err);
    }
    const errc code = (err == EPERM || err == EACCES) ? errc::unauthorized : errc::io;
    return make_error(code, fmt::format("cannot start {} of {}: {}: {}", spec.step, spec.component, what,
                                        std::strerror(err)));
  }

  auto child = std::make_shared<Child>(impl_->reaper, std::move(log), std::move(on_exit));
  impl_->reaper->add(pid, child);
  child->start(std::move(out_r), std::move(err_r));
  return pid;
}

}  // namespace canopy::lifecycle
