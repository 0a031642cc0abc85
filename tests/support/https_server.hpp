//! https_server.py (tests/support) run by a test: a local HTTPS server with the test PKI's
//! certificates, Range support and failure hooks (/drop/, /redirect/, /norange/, /stall/).
#pragma once

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "support/pki.hpp"
#include "support/process.hpp"

namespace canopy::test {

/// https_server.py on a free port, serving `root` with the pair `cert` of the test PKI.
class HttpsServer {
 public:
  HttpsServer(const TestPki& pki, const std::filesystem::path& root, const std::string& cert, const std::filesystem::path& log)
      : log_(log) {
    port_ = free_port();
    const auto pair = pki.pair(cert);
    Process::Spec spec;
    spec.argv = {"/usr/bin/python3", (std::filesystem::path(CANOPY_SOURCE_DIR) / "tests" / "support" / "https_server.py").string(),
                 "--root", root.string(), "--cert", pair.crt.string(), "--key", pair.key.string(),
                 "--port", std::to_string(port_)};
    spec.output_file = log;
    process_ = std::make_unique<Process>(spec);
    if (!wait_for_port(port_, std::chrono::seconds(20))) {
      throw std::runtime_error("https_server.py did not listen on port " + std::to_string(port_) + ": " +
                               process_->output());
    }
  }
  ~HttpsServer() { process_.reset(); }  // Process kills the server by PID
  HttpsServer(const HttpsServer&) = delete;
  HttpsServer& operator=(const HttpsServer&) = delete;

  int port() const { return port_; }
  std::string url(const std::string& path, const std::string& host = "127.0.0.1") const {
    return "https://" + host + ":" + std::to_string(port_) + path;
  }
  std::string log() const { return read_file(log_); }

 private:
  std::filesystem::path log_;
  int port_ = 0;
  std::unique_ptr<Process> process_;
};

}  // namespace canopy::test
