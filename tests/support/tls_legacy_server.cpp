#include "support/tls_legacy_server.hpp"

#include <csignal>
#include <stdexcept>
#include <thread>

namespace canopy::test {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

LegacyTlsServer::LegacyTlsServer(const TestPki& pki, const fs::path& dir, const std::string& cert) : dir_(dir) {
  fs::create_directories(dir_);
  const auto pair = pki.pair(cert);
  const fs::path out = dir_ / "s_server.log";
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = free_port();
    std::error_code ec;
    fs::remove(out, ec);
    process_ = std::make_unique<Process>(Process::Spec{
        {"/usr/bin/openssl", "s_server", "-accept", "127.0.0.1:" + std::to_string(port_), "-tls1_1", "-cipher",
         "DEFAULT:@SECLEVEL=0", "-cert", pair.crt.string(), "-key", pair.key.string(), "-www"},
        {},
        out,
        true});
    // s_server prints "ACCEPT" once it listens; only then probe the port (a probe is one
    // failed handshake in its log, which it survives).
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < until && process_->running()) {
      if (read_file(out).find("ACCEPT") != std::string::npos && wait_for_port(port_, 100ms)) return;
      std::this_thread::sleep_for(10ms);
    }
    const std::string text = read_file(out);
    const bool port_taken = !process_->running() && text.find("in use") != std::string::npos;
    process_.reset();
    if (!port_taken) throw std::runtime_error("openssl s_server -tls1_1 did not start:\n" + text);
  }
  throw std::runtime_error("openssl s_server -tls1_1 did not start (ports taken 5 times)");
}

LegacyTlsServer::~LegacyTlsServer() {
  if (process_ && process_->running()) {
    process_->signal(SIGTERM);
    process_->wait(5s);
  }
  process_.reset();  // SIGKILL by PID if still running
}

std::string LegacyTlsServer::log() const { return read_file(dir_ / "s_server.log"); }

}  // namespace canopy::test
