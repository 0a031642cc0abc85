// startup_bench — how fast canopyd gets to READY=1, and what it weighs once idle.
//
//   startup_bench [--canopyd PATH] [--runs N] [--idle-ms MS] [--keep-output]
//
// Each run: a fresh temporary root, a private NOTIFY_SOCKET (AF_UNIX datagram, what systemd
// gives a Type=notify service), fork + exec `canopyd --foreground --root DIR`. The child reads
// CLOCK_MONOTONIC just before execve and hands it to us through a pipe; "ready" is the
// CLOCK_MONOTONIC time at which READY=1 arrives, minus that. After READY the daemon idles for
// --idle-ms, then VmRSS/VmHWM (/proc/PID/status) and Pss (/proc/PID/smaps_rollup) are read.
// Then SIGTERM and "stop" = time until it has exited. Every process is stopped by its PID and
// every temporary folder removed. Prints a table per run and median/min/max. Asserts nothing.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace {
namespace fs = std::filesystem;

double now_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

struct Options {
  std::string canopyd = "build/src/main/canopyd";
  int runs = 10;
  int idle_ms = 1000;
  bool keep_output = false;
};

struct Run {
  bool ok = false;
  double ready_ms = 0;
  double stop_ms = 0;
  long rss_kb = -1;
  long hwm_kb = -1;
  long pss_kb = -1;
  int exit_code = -1;
  std::string error;
};

/// "Key:   123 kB" from a /proc file, or -1.
long proc_kb(const std::string& file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::strtol(line.c_str() + key.size() + 1, nullptr, 10);
  }
  return -1;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// waitpid with a deadline; the exit status (128+signal when killed), or nullopt.
std::optional<int> wait_exit(pid_t pid, double deadline_ms) {
  const double until = now_ms() + deadline_ms;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    if (r < 0) return std::nullopt;
    if (now_ms() >= until) return std::nullopt;
    ::usleep(1000);
  }
}

Run one_run(const Options& opt, int index) {
  Run run;
  char tmpl[] = "/tmp/canopy-bench-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    run.error = std::string("mkdtemp: ") + std::strerror(errno);
    return run;
  }
  const fs::path dir = tmpl;
  const fs::path root = dir / "root";
  const fs::path sock_path = dir / "notify.sock";
  const fs::path out_path = dir / "canopyd.out";

  const int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock_path.c_str(), sizeof addr.sun_path - 1);
  int pipefd[2] = {-1, -1};
  if (sock < 0 || ::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::pipe2(pipefd, O_CLOEXEC) != 0) {
    run.error = std::string("notify socket: ") + std::strerror(errno);
    if (sock >= 0) ::close(sock);
    fs::remove_all(dir);
    return run;
  }

  const std::string notify_env = "NOTIFY_SOCKET=" + sock_path.string();
  std::vector<std::string> args = {opt.canopyd, "--foreground", "--root", root.string()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    const int fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      ::close(fd);
    }
    ::putenv(const_cast<char*>(notify_env.c_str()));
    const double t0 = now_ms();
    if (::write(pipefd[1], &t0, sizeof t0) != sizeof t0) ::_exit(126);
    ::execv(argv[0], argv.data());
    std::fprintf(stderr, "exec %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(pipefd[1]);
  double t_exec = 0;
  const bool got_t0 = pid > 0 && ::read(pipefd[0], &t_exec, sizeof t_exec) == sizeof t_exec;
  ::close(pipefd[0]);

  std::optional<int> reaped;  // set once waitpid has collected it: never signal that PID again
  if (got_t0) {
    // Wait for READY=1 (30 s at most), noticing an early exit.
    const double until = t_exec + 30000;
    while (!run.ok && now_ms() < until) {
      pollfd p{sock, POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) {
        char buf[4096];
        const ssize_t n = ::recv(sock, buf, sizeof buf, 0);
        const double t = now_ms();
        if (n > 0 && std::string(buf, static_cast<std::size_t>(n)).find("READY=1") != std::string::npos) {
          run.ok = true;
          run.ready_ms = t - t_exec;
        }
        continue;
      }
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        reaped = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        run.error = "canopyd exited (status " + std::to_string(*reaped) + ") before READY=1";
        break;
      }
    }
    if (!run.ok && run.error.empty()) run.error = "no READY=1 within 30 s";
  } else {
    run.error = "fork failed";
  }

  if (run.ok) {
    ::usleep(static_cast<useconds_t>(opt.idle_ms) * 1000);
    const std::string proc = "/proc/" + std::to_string(pid);
    run.rss_kb = proc_kb(proc + "/status", "VmRSS");
    run.hwm_kb = proc_kb(proc + "/status", "VmHWM");
    run.pss_kb = proc_kb(proc + "/smaps_rollup", "Pss");
  }
  if (reaped) {
    run.exit_code = *reaped;
  } else if (pid > 0) {
    const double t_term = now_ms();
    ::kill(pid, SIGTERM);
    auto code = wait_exit(pid, 20000);
    run.stop_ms = now_ms() - t_term;
    if (!code) {
      ::kill(-pid, SIGKILL);  // its own process group (setpgid above), then the PID itself
      ::kill(pid, SIGKILL);
      code = wait_exit(pid, 10000);
      if (run.ok) run.error = "did not stop within 20 s of SIGTERM";
      run.ok = false;
    }
    run.exit_code = code.value_or(-1);
  }
  ::close(sock);
  if (!run.ok) {
    std::fprintf(stderr, "run %d failed: %s\n--- canopyd output ---\n%s\n---\n", index, run.error.c_str(),
                 slurp(out_path).c_str());
  } else if (opt.keep_output) {
    std::fprintf(stderr, "--- run %d canopyd output ---\n%s", index, slurp(out_path).c_str());
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return run;
}

template <typename T>
T median(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void usage() {
  std::fprintf(stderr, "usage: startup_bench [--canopyd PATH] [--runs N] [--idle-ms MS] [--keep-output]\n");
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--canopyd" && has_value) {
      opt.canopyd = argv[++i];
    } else if (a == "--runs" && has_value) {
      opt.runs = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--idle-ms" && has_value) {
      opt.idle_ms = std::max(0, std::atoi(argv[++i]));
    } else if (a == "--keep-output") {
      opt.keep_output = true;
    } else {
      usage();
      return 2;
    }
  }
  if (::access(opt.canopyd.c_str(), X_OK) != 0) {
    std::fprintf(stderr, "startup_bench: %s is not an executable (build canopyd first)\n", opt.canopyd.c_str());
    return 2;
  }
  opt.canopyd = fs::absolute(opt.canopyd).string();

  std::printf("canopyd startup: %s, %d runs, %d ms idle before reading memory\n\n", opt.canopyd.c_str(), opt.runs,
              opt.idle_ms);
  std::printf("%4s  %12s  %10s  %10s  %10s  %10s  %5s\n", "run", "ready (ms)", "RSS (kB)", "HWM (kB)", "PSS (kB)",
              "stop (ms)", "exit");
  std::vector<double> ready, stop;
  std::vector<long> rss, hwm, pss;
  int failed = 0;
  for (int i = 1; i <= opt.runs; ++i) {
    const Run r = one_run(opt, i);
    if (!r.ok) {
      ++failed;
      std::printf("%4d  %12s\n", i, "FAILED");
      continue;
    }
    std::printf("%4d  %12.2f  %10ld  %10ld  %10ld  %10.2f  %5d\n", i, r.ready_ms, r.rss_kb, r.hwm_kb, r.pss_kb,
                r.stop_ms, r.exit_code);
    std::fflush(stdout);
    ready.push_back(r.ready_ms);
    stop.push_back(r.stop_ms);
    rss.push_back(r.rss_kb);
    hwm.push_back(r.hwm_kb);
    pss.push_back(r.pss_kb);
  }
  if (ready.empty()) {
    std::printf("\nall runs failed\n");
    return 1;
  }
  std::printf("\n%-22s  %10s  %10s  %10s\n", "summary", "median", "min", "max");
  std::printf("%-22s  %10.2f  %10.2f  %10.2f\n", "exec -> READY=1 (ms)", median(ready),
              *std::min_element(ready.begin(), ready.end()), *std::max_element(ready.begin(), ready.end()));
  std::printf("%-22s  %10.2f  %10.2f  %10.2f\n", "SIGTERM -> exit (ms)", median(stop),
              *std::min_element(stop.begin(), stop.end()), *std::max_element(stop.begin(), stop.end()));
  std::printf("%-22s  %10ld  %10ld  %10ld\n", "RSS idle (kB)", median(rss), *std::min_element(rss.begin(), rss.end()),
              *std::max_element(rss.begin(), rss.end()));
  std::printf("%-22s  %10ld  %10ld  %10ld\n", "RSS peak/VmHWM (kB)", median(hwm),
              *std::min_element(hwm.begin(), hwm.end()), *std::max_element(hwm.begin(), hwm.end()));
  std::printf("%-22s  %10ld  %10ld  %10ld\n", "PSS idle (kB)", median(pss), *std::min_element(pss.begin(), pss.end()),
              *std::max_element(pss.begin(), pss.end()));
  if (failed) std::printf("\n%d of %d runs failed (see stderr)\n", failed, opt.runs);
  return failed ? 1 : 0;
}
