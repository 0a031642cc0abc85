#include "common.hpp"

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "canopy/ipc/auth.hpp"

namespace canopy::cli {
namespace {

volatile std::sig_atomic_t g_stop = 0;

void on_stop_signal(int) { g_stop = 1; }

}  // namespace

std::string default_root() {
  const char* env = std::getenv("CANOPY_ROOT");
  return env != nullptr && *env != '\0' ? env : "/var/lib/canopy";
}

int fail(std::string_view message) {
  std::cerr << "canopy: " << message << "\n";
  return kExitError;
}

int usage(std::string_view message) {
  std::cerr << "canopy: " << message << "\n";
  return kExitUsage;
}

result<std::unique_ptr<ipc::Client>> connect(const Globals& g) {
  auto info = ipc::read_cli_token(std::filesystem::path(g.root) / "cli_ipc_info");
  if (!info) return std::move(info).error();
  ipc::Client::Options o;
  o.socket_path = info->socket_path;
  o.token = info->token;
  return ipc::Client::connect(o);
}

result<nlohmann::json> call(const Globals& g, std::string_view operation, const nlohmann::json& request,
                            std::chrono::milliseconds timeout) {
  auto client = connect(g);
  if (!client) return std::move(client).error();
  return (*client)->call(operation, request, timeout);
}

int print_json(const nlohmann::json& value) {
  std::cout << value.dump(2) << "\n";
  return kExitOk;
}

void catch_stop_signals() {
  struct sigaction action {};
  action.sa_handler = on_stop_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: a sleep ends early on a signal
  ::sigaction(SIGINT, &action, nullptr);
  ::sigaction(SIGTERM, &action, nullptr);
}

bool stop_requested() { return g_stop != 0; }

bool sleep_unless_stopped(std::chrono::milliseconds duration) {
  // Short slices so a signal that lands between the check and the sleep costs at most 20 ms.
  const auto until = std::chrono::steady_clock::now() + duration;
  while (!stop_requested()) {
    const auto left = until - std::chrono::steady_clock::now();
    if (left <= std::chrono::steady_clock::duration::zero()) return true;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(20)));
  }
  return false;
}

void add_json_flag(CLI::App* command, Globals& g) {
  command->add_flag("--json", g.json, "Print the response from canopyd as JSON instead of text");
}

}  // namespace canopy::cli
