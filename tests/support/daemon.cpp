#include "support/daemon.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace canopy::test {
namespace fs = std::filesystem;

fs::path canopyd_path() { return fs::path(CANOPY_BINARY_DIR) / "src" / "main" / "canopyd"; }
fs::path canopy_cli_path() { return fs::path(CANOPY_BINARY_DIR) / "src" / "cli" / "canopy"; }

Canopyd::Canopyd(const fs::path& dir, Options options) : dir_(dir), root_(dir / "root"), output_(dir / "canopyd.out") {
  std::vector<std::string> argv = {canopyd_path().string(), "--root", root_.string()};
  if (options.foreground) argv.push_back("--foreground");
  // Without a configuration of its own, a test's canopyd still gets one that turns the local
  // broker off: tests run in parallel and must not compete for the default ports 1883/8883.
  if (!options.config_yaml && !options.no_config_file)
    options.config_yaml = "services:\n  canopy.LocalBroker:\n    configuration:\n      enabled: false\n";
  if (options.config_yaml) {
    // Tests run in parallel: a canopyd whose test does not configure the local broker gets it
    // disabled, so it never competes for the default ports 1883/8883.
    std::string yaml = *options.config_yaml;
    if (yaml.find("canopy.LocalBroker") == std::string::npos) {
      const std::string off = "  canopy.LocalBroker:\n    configuration:\n      enabled: false\n";
      // Added at the end of the services block, so the lines a test's error messages name
      // (file:line) keep their numbers.
      auto at = ("\n" + yaml).find("\nservices:\n");
      if (at != std::string::npos) {
        at += std::string("services:\n").size();
        while (at < yaml.size() && (yaml[at] == ' ' || yaml[at] == '#' || yaml[at] == '\n')) {
          const auto eol = yaml.find('\n', at);
          at = eol == std::string::npos ? yaml.size() : eol + 1;
        }
        if (at == yaml.size() && !yaml.empty() && yaml.back() != '\n') yaml += '\n', at = yaml.size();
        yaml.insert(at, off);
      } else {
        yaml += (yaml.empty() || yaml.back() == '\n' ? "" : "\n") + std::string("services:\n") + off;
      }
    }
    write_file(config_path(), yaml);
    argv.push_back("--config");
    argv.push_back(config_path().string());
  }
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());

  auto env = options.env;
  if (options.notify) {
    const fs::path sock = dir_ / "notify.sock";
    notify_fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
    fs::remove(sock);
    if (::bind(notify_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("cannot bind the notify socket " + sock.string());
    env["NOTIFY_SOCKET"] = sock.string();
  }
  process_ = std::make_unique<Process>(Process::Spec{argv, env, output_, true});
}

Canopyd::~Canopyd() {
  if (process_->running()) {
    process_->signal(SIGTERM);
    if (!process_->wait(std::chrono::seconds(20))) process_.reset();  // SIGKILLs the group
  }
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "----- canopyd output (%s) -----\n%s\n----- end of canopyd output -----\n",
                 root_.c_str(), logs().c_str());
  }
  if (notify_fd_ >= 0) ::close(notify_fd_);
}

std::vector<std::string> Canopyd::notifications(std::chrono::milliseconds wait) {
  const auto until = std::chrono::steady_clock::now() + wait;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    pollfd p{notify_fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::max<long>(0, left.count()))) <= 0) break;
    char buf[4096];
    const ssize_t n = ::recv(notify_fd_, buf, sizeof buf, 0);
    if (n > 0) received_.emplace_back(buf, static_cast<std::size_t>(n));
  }
  return received_;
}

bool Canopyd::wait_ready(std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    for (const auto& m : notifications(std::chrono::milliseconds(20)))
      if (m.find("READY=1") != std::string::npos) return true;
    if (!process_->running()) return false;
  }
  return false;
}

std::optional<int> Canopyd::stop(std::chrono::milliseconds deadline) {
  process_->signal(SIGTERM);
  return process_->wait(deadline);
}

std::string Canopyd::logs() const {
  std::string s = "[console]\n" + read_file(output_);
  const fs::path file = root_ / "logs" / "canopyd.log";
  if (fs::exists(file)) s += "[logs/canopyd.log]\n" + read_file(file);
  return s;
}

}  // namespace canopy::test
