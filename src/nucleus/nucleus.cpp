#include "canopy/nucleus/nucleus.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <systemd/sd-daemon.h>

#include "canopy/config/nucleus_config.hpp"
#include "canopy/core/log.hpp"
#include "canopy/core/paths.hpp"
#include "canopy/core/version.hpp"

namespace canopy::nucleus {
namespace net = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

// systemd (Type=notify) wants canopyd in the foreground and its stderr goes to the journal.
bool under_systemd() { return env_set("NOTIFY_SOCKET") || env_set("INVOCATION_ID"); }

// Reports the start-up outcome of a detached daemon to the parent waiting in the foreground.
// Without detaching, every call is a no-op.
class StartupPipe {
 public:
  StartupPipe() = default;
  explicit StartupPipe(int fd) : fd_(fd) {}
  void ready() { send("R"); }
  void failed(int code, const std::string& message) { send(fmt::format("{}{}", code, message)); }

 private:
  void send(const std::string& s) {
    if (fd_ < 0) return;
    [[maybe_unused]] auto n = ::write(fd_, s.data(), s.size());
    ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

// Forks; the parent waits for the child's report and returns its exit code, the child
// becomes a session leader with stdio on /dev/null and gets the pipe's write end.
// Returns -1 in the child.
int detach(StartupPipe& pipe_out) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;  // cannot detach: stay attached
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid > 0) {
    ::close(fds[1]);
    std::string msg;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    if (msg == "R") {
      std::printf("canopyd started in the background (pid %d)\n", pid);
      return kExitOk;
    }
    if (msg.empty()) {
      std::fprintf(stderr, "canopyd: the daemon exited during start-up; see its log file\n");
      return kExitFailure;
    }
    std::fprintf(stderr, "canopyd: %s\n", msg.c_str() + 1);
    return msg[0] - '0';
  }
  ::close(fds[0]);
  ::setsid();
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::close(null);
  }
  pipe_out = StartupPipe(fds[1]);
  return -1;
}

// The running daemon: owns the event loop, the signal handling and (later issues) every module.
class Daemon {
 public:
  Daemon(config::NucleusConfig config, Options options, RootLayout layout)
      : config_(std::move(config)), options_(std::move(options)), layout_(std::move(layout)),
        log_(log::get("nucleus")) {}

  int run(StartupPipe& startup) {
    started_ = std::chrono::steady_clock::now();
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) { on_signal(ec, sig); });
    start_watchdog();

    log_->info("canopyd {} (git {}) ready root={} pid={} config={}", kVersion, kGitHash, layout_.root.string(),
               ::getpid(), options_.config_file ? options_.config_file->string() : std::string("(built-in defaults)"));
    sd_notifyf(0, "READY=1\nSTATUS=running\nMAINPID=%d", ::getpid());
    startup.ready();

    io_.run();
    log_->info("canopyd stopped");
    log::flush();
    return exit_code_;
  }

 private:
  void on_signal(const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      reload_logging();
      signals_.async_wait([this](const boost::system::error_code& e, int s) { on_signal(e, s); });
      return;
    }
    shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
  }

  // Graceful stop: tell systemd, stop every module in reverse order within the deadline,
  // then leave the loop. A second signal during shutdown is ignored (the deadline rules).
  void shutdown(const char* why) {
    if (stopping_) return;
    stopping_ = true;
    log_->info("stopping on {} (deadline {}s)", why, config_.shutdown_timeout.count());
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    watchdog_.cancel();
    signals_.cancel();
    shutdown_deadline_.expires_after(config_.shutdown_timeout);
    shutdown_deadline_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      log_->error("shutdown did not finish within {}s; exiting anyway", config_.shutdown_timeout.count());
      exit_code_ = kExitFailure;
      io_.stop();
    });
    // No module needs stopping yet; later issues stop IPC, components, spool and cloud here.
    shutdown_deadline_.cancel();
  }

  void reload_logging() {
    if (!options_.config_file) {
      log_->info("SIGHUP: no configuration file to re-read (running on built-in defaults)");
      return;
    }
    auto loaded = config::load_file(*options_.config_file);
    if (!loaded) {
      log_->error("SIGHUP: keeping the current logging settings because the configuration file is invalid:\n{}",
                  loaded.error().message);
      return;
    }
    config_.logging = loaded->config.logging;
    if (auto r = log::configure(logging_settings(config_, options_, layout_)); !r) {
      log_->error("SIGHUP: {}", r.error().message);
      return;
    }
    log_->info("SIGHUP: logging settings re-read from {} (level={})", options_.config_file->string(),
               spdlog::level::to_string_view(log_->level()));
  }

  void start_watchdog() {
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0) return;
    // Ping at half the interval from the event loop itself, so a stuck loop stops the pings.
    watchdog_interval_ = std::chrono::microseconds(usec / 2);
    log_->info("systemd watchdog enabled: pinging every {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_interval_).count());
    ping_watchdog();
  }

  void ping_watchdog() {
    sd_notify(0, "WATCHDOG=1");
    watchdog_.expires_after(watchdog_interval_);
    watchdog_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) ping_watchdog();
    });
  }

 public:
  static log::Settings logging_settings(const config::NucleusConfig& c, const Options& o, const RootLayout& layout) {
    log::Settings s;
    s.level = o.log_level.value_or(c.logging.level);
    s.format = c.logging.format;
    s.console = o.foreground || under_systemd();
    const fs::path dir = c.logging.output_directory.empty() ? layout.logs_dir() : c.logging.output_directory;
    s.file = dir / "canopyd.log";
    s.max_file_bytes = c.logging.file_size_kb * 1024;
    s.max_files = c.logging.max_files;
    return s;
  }

 private:
  config::NucleusConfig config_;
  Options options_;
  RootLayout layout_;
  std::shared_ptr<spdlog::logger> log_;
  net::io_context io_{1};
  net::signal_set signals_{io_, SIGTERM, SIGINT, SIGHUP};
  net::steady_timer watchdog_{io_};
  net::steady_timer shutdown_deadline_{io_};
  std::chrono::microseconds watchdog_interval_{0};
  std::chrono::steady_clock::time_point started_;
  bool stopping_ = false;
  int exit_code_ = kExitOk;
};

}  // namespace

int run(const Options& options) {
  // 1. Configuration: file (if any) over defaults, then the command line over both.
  config::NucleusConfig cfg;
  std::vector<std::string> warnings;
  if (options.config_file) {
    auto loaded = config::load_file(*options.config_file);
    if (!loaded) {
      std::fprintf(stderr, "canopyd: invalid configuration, nothing was started:\n%s\n",
                   loaded.error().message.c_str());
      return kExitConfig;
    }
    cfg = std::move(loaded->config);
    warnings = std::move(loaded->warnings);
  }
  if (options.root) cfg.root_path = fs::absolute(*options.root).lexically_normal();

  // 2. Detach unless asked not to (or systemd is the parent, which wants us in the foreground).
  StartupPipe startup;
  if (!options.foreground && !under_systemd()) {
    if (const int parent_exit = detach(startup); parent_exit >= 0) return parent_exit;
  }
  const auto fail = [&](int code, const std::string& message) {
    std::fprintf(stderr, "canopyd: %s\n", message.c_str());
    startup.failed(code, message);
    return code;
  };

  // 3. Root layout and the one-daemon-per-root lock.
  ::umask(0027);
  const RootLayout layout{cfg.root_path};
  if (auto r = create_root_layout(layout); !r) return fail(kExitFailure, r.error().message);
  auto lock = RootLock::acquire(layout);
  if (!lock) return fail(kExitFailure, lock.error().message);

  // 4. Logging.
  if (auto r = log::configure(Daemon::logging_settings(cfg, options, layout)); !r)
    return fail(kExitFailure, r.error().message);
  auto log = log::get("nucleus");
  for (const auto& w : warnings) log->warn("configuration: {}", w);

  // 5. Modules, then the loop.
  try {
    Daemon daemon(std::move(cfg), options, layout);
    return daemon.run(startup);
  } catch (const std::exception& e) {
    log->critical("canopyd failed: {}", e.what());
    log::flush();
    return fail(kExitFailure, e.what());
  }
}

}  // namespace canopy::nucleus
