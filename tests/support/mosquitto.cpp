#include "support/mosquitto.hpp"

#include <cstdio>
#include <stdexcept>

#include <gtest/gtest.h>

namespace canopy::test {
namespace fs = std::filesystem;

Mosquitto::Mosquitto(const fs::path& dir, Options options) : dir_(dir) {
  fs::create_directories(dir_);
  // A port can be taken between free_port() and the bind, and then Mosquitto exits:
  // try a few ports before giving up.
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = free_port();
    std::string conf;
    conf += "per_listener_settings true\n";
    conf += "persistence false\n";
    conf += "log_dest file " + (dir_ / "mosquitto.log").string() + "\n";
    conf += "log_type all\n";
    conf += "user root\n";  // tests run as root; keep read access to the test PKI
    conf += "listener " + std::to_string(port_) + " 127.0.0.1\n";
    conf += std::string("allow_anonymous ") + (options.allow_anonymous ? "true" : "false") + "\n";
    conf += options.listener_config;
    write_file(dir_ / "mosquitto.conf", conf);
    process_ = std::make_unique<Process>(
        Process::Spec{{"/usr/sbin/mosquitto", "-c", (dir_ / "mosquitto.conf").string()}, {}, dir_ / "mosquitto.out", true});
    if (wait_for_port(port_, std::chrono::seconds(20)) && process_->running()) return;
    process_.reset();
  }
  throw std::runtime_error("mosquitto did not start:\n" + log());
}

Mosquitto::~Mosquitto() {
  if (::testing::Test::HasFailure())
    std::fprintf(stderr, "----- mosquitto log (port %d) -----\n%s\n-----\n", port_, log().c_str());
  process_.reset();
}

std::string Mosquitto::log() const { return read_file(dir_ / "mosquitto.out") + read_file(dir_ / "mosquitto.log"); }

}  // namespace canopy::test
