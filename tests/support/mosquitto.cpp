#include "support/mosquitto.hpp"

#include <csignal>
#include <cstdio>
#include <stdexcept>
#include <thread>

#include <gtest/gtest.h>

namespace canopy::test {
namespace fs = std::filesystem;

namespace {

std::string tls_lines(const Mosquitto::Tls& tls) {
  std::string c;
  if (!tls.cafile.empty()) c += "cafile " + tls.cafile.string() + "\n";
  if (!tls.certfile.empty()) c += "certfile " + tls.certfile.string() + "\n";
  if (!tls.keyfile.empty()) c += "keyfile " + tls.keyfile.string() + "\n";
  if (!tls.crlfile.empty()) c += "crlfile " + tls.crlfile.string() + "\n";
  c += std::string("require_certificate ") + (tls.require_certificate ? "true" : "false") + "\n";
  if (tls.use_identity_as_username) c += "use_identity_as_username true\n";
  if (!tls.tls_version.empty()) c += "tls_version " + tls.tls_version + "\n";
  return c;
}

enum class Startup { up, port_taken, failed };

}  // namespace

Mosquitto::Mosquitto(const fs::path& dir, Options options) : dir_(dir), tls_(options.tls.has_value()) {
  fs::create_directories(dir_);
  const fs::path conf_path = dir_ / "mosquitto.conf";
  const fs::path log_path = dir_ / "mosquitto.log";
  // A port can be taken between free_port() and the bind, and then Mosquitto exits with
  // "Address already in use": try a few ports before giving up.
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = free_port();
    std::string conf;
    conf += "per_listener_settings true\n";
    conf += "persistence false\n";
    conf += "log_dest file " + log_path.string() + "\n";
    conf += "log_type all\n";
    conf += "user root\n";  // tests run as root; keep read access to the test PKI (keys are 0600)
    conf += "listener " + std::to_string(port_) + " 127.0.0.1\n";
    conf += std::string("allow_anonymous ") + (options.allow_anonymous ? "true" : "false") + "\n";
    if (options.tls) conf += tls_lines(*options.tls);
    conf += options.listener_config;
    if (!conf.empty() && conf.back() != '\n') conf += '\n';
    write_file(conf_path, conf);
    std::error_code ec;
    fs::remove(log_path, ec);  // each attempt's log on its own, so "running" below is this one's

    process_ = std::make_unique<Process>(
        Process::Spec{{"/usr/sbin/mosquitto", "-c", conf_path.string()}, {}, dir_ / "mosquitto.out", true});

    // Up = our PID still runs, its log says it opened every listener ("... running"), and
    // the port accepts a connection.
    Startup state = Startup::failed;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until) {
      if (!process_->running()) {
        state = read_file(log_path).find("Address already in use") != std::string::npos ? Startup::port_taken
                                                                                          : Startup::failed;
        break;
      }
      if (read_file(log_path).find(" running") != std::string::npos &&
          wait_for_port(port_, std::chrono::milliseconds(100))) {
        state = Startup::up;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (state == Startup::up) return;
    const std::string text = log();
    process_.reset();  // kills our PID (and its own process group) if it still runs
    if (state != Startup::port_taken) throw std::runtime_error("mosquitto did not start:\n" + conf + "\n" + text);
  }
  throw std::runtime_error("mosquitto did not start (no free port after 5 attempts):\n" + log());
}

Mosquitto::~Mosquitto() {
  if (::testing::Test::HasFailure())
    std::fprintf(stderr, "----- mosquitto log (port %d%s) -----\n%s\n-----\n", port_, tls_ ? ", TLS" : "",
                 log().c_str());
  if (process_ && process_->running()) {
    process_->signal(SIGTERM);
    process_->wait(std::chrono::seconds(5));
  }
  process_.reset();  // SIGKILL by PID if it is still there
}

std::string Mosquitto::log() const { return read_file(dir_ / "mosquitto.out") + read_file(dir_ / "mosquitto.log"); }

}  // namespace canopy::test
