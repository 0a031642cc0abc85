// canopy: the operator's command line. Talks to canopyd over its IPC socket, with the token
// canopyd leaves for the calling user in <root>/cli_ipc_info/.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "canopy/config/store.hpp"
#include "canopy/core/version.hpp"
#include "canopy/ipc/auth.hpp"
#include "canopy/ipc/client.hpp"

namespace {

using canopy::result;

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

struct Globals {
  std::string root;
  bool json = false;
};

std::string default_root() {
  const char* env = std::getenv("CANOPY_ROOT");
  return env != nullptr && *env != '\0' ? env : "/var/lib/canopy";
}

int fail(const std::string& message) {
  std::cerr << "canopy: " << message << "\n";
  return kExitError;
}

result<std::unique_ptr<canopy::ipc::Client>> connect(const Globals& g) {
  auto info = canopy::ipc::read_cli_token(std::filesystem::path(g.root) / "cli_ipc_info");
  if (!info) return info.error();
  canopy::ipc::Client::Options o;
  o.socket_path = info->socket_path;
  o.token = info->token;
  return canopy::ipc::Client::connect(o);
}

std::string human_duration(std::int64_t s) {
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m {}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h {}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d {}h", s / 86400, (s % 86400) / 3600);
}

int cmd_status(const Globals& g) {
  auto client = connect(g);
  if (!client) return fail(client.error().message);
  auto r = (*client)->call("canopy#GetStatus", nlohmann::json::object());
  if (!r) return fail(r.error().message);
  const auto& s = *r;
  if (g.json) {
    std::cout << s.dump(2) << "\n";
    return kExitOk;
  }
  const auto& ipc = s.value("ipc", nlohmann::json::object());
  const auto& pubsub = s.value("pubsub", nlohmann::json::object());
  std::cout << fmt::format("canopyd {} (git {}), pid {}, up {}\n", s.value("version", "?"), s.value("gitHash", "?"),
                           s.value("pid", 0), human_duration(s.value("uptimeSeconds", 0)));
  std::cout << fmt::format("root            {}\n", s.value("root", "?"));
  std::cout << fmt::format("IPC socket      {}\n", ipc.value("socket", "?"));
  std::cout << fmt::format("IPC clients     {} connected ({} authenticated), {} accepted in total, {} refused\n",
                           ipc.value("connections", 0), ipc.value("authenticatedConnections", 0),
                           ipc.value("acceptedTotal", 0), ipc.value("refusedTotal", 0));
  std::cout << fmt::format("IPC problems    {} protocol errors, {} unauthorized calls, {} events dropped for slow "
                           "readers\n",
                           ipc.value("protocolErrors", 0), ipc.value("unauthorized", 0), ipc.value("eventsDropped", 0));
  std::cout << fmt::format("local pub/sub   {} subscriptions, {} messages published, {} delivered\n",
                           pubsub.value("subscriptions", 0), pubsub.value("published", 0),
                           pubsub.value("deliveries", 0));
  return kExitOk;
}

result<canopy::config::KeyPath> parse_key(const std::string& key) {
  if (key.empty() || key == "/") return canopy::config::KeyPath{};
  // A JSON pointer ("/a/b"), or a dotted path ("a.b") for convenience.
  if (key.front() == '/') return canopy::config::parse_pointer(key);
  canopy::config::KeyPath path;
  std::size_t start = 0;
  for (;;) {
    const auto dot = key.find('.', start);
    path.push_back(key.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return path;
}

int cmd_config_get(const Globals& g, const std::string& component, const std::string& key) {
  auto path = parse_key(key);
  if (!path) return fail(path.error().message);
  auto client = connect(g);
  if (!client) return fail(client.error().message);
  auto r = (*client)->call("aws.greengrass#GetConfiguration", {{"componentName", component}, {"keyPath", *path}});
  if (!r) return fail(r.error().message);
  if (g.json) {
    std::cout << r->dump(2) << "\n";
    return kExitOk;
  }
  // A leaf comes back wrapped as {"<key>": value}; show just the value.
  nlohmann::json value = r->value("value", nlohmann::json());
  if (!path->empty() && value.is_object() && value.size() == 1 && value.contains(path->back()) &&
      !value[path->back()].is_object())
    value = value[path->back()];
  std::cout << (value.is_string() ? value.get<std::string>() : value.dump(2)) << "\n";
  return kExitOk;
}

int cmd_config_set(const Globals& g, const std::string& component, const std::string& key, const std::string& text) {
  auto path = parse_key(key);
  if (!path) return fail(path.error().message);
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception&) {
    value = text;  // not JSON: a plain string
  }
  auto client = connect(g);
  if (!client) return fail(client.error().message);
  auto r = (*client)->call("canopy#UpdateConfiguration",
                           {{"componentName", component}, {"keyPath", *path}, {"valueToMerge", value}},
                           std::chrono::seconds(60));
  if (!r) return fail(r.error().message);
  if (g.json)
    std::cout << nlohmann::json{{"componentName", component}, {"keyPath", *path}, {"updated", true}}.dump(2) << "\n";
  else
    std::cout << fmt::format("{}: {} updated\n", component, key.empty() ? "/" : key);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "canopy - operate a Canopy gateway. Talks to canopyd on this machine over its IPC socket, using the token\n"
      "canopyd leaves for root and for the canopy group in <root>/cli_ipc_info/.\n\n"
      "Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad command line.",
      "canopy"};
  Globals g;
  g.root = default_root();
  bool version = false;
  app.add_flag("--version", version, "Print the version and git hash, then exit");
  app.add_option("--root", g.root, "canopyd's root folder (default: $CANOPY_ROOT, else /var/lib/canopy)");
  app.require_subcommand(0, 1);

  auto* status = app.add_subcommand("status", "Show canopyd's version, uptime and IPC and pub/sub counters");
  status->add_flag("--json", g.json, "Print JSON instead of a table");

  auto* config = app.add_subcommand("config", "Read or change a component's configuration");
  config->require_subcommand(1);
  std::string component, key, value;
  auto* get = config->add_subcommand("get", "Print a component's configuration, or one key of it");
  get->add_option("component", component, "Component name, e.g. com.example.Hello")->required();
  get->add_option("key", key, "Key path: a JSON pointer (/a/b) or dotted (a.b); default: all");
  get->add_flag("--json", g.json, "Print the full answer as JSON");
  auto* set = config->add_subcommand(
      "set", "Merge a value into a component's configuration (components that validate their configuration are "
             "asked first)");
  set->add_option("component", component, "Component name")->required();
  set->add_option("key", key, "Key path: a JSON pointer (/a/b) or dotted (a.b)")->required();
  set->add_option("value", value, "JSON value (text that is not JSON is taken as a string)")->required();
  set->add_flag("--json", g.json, "Print the result as JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (version) {
    std::printf("canopy %s (git %s)\n", canopy::kVersion, canopy::kGitHash);
    return kExitOk;
  }
  if (status->parsed()) return cmd_status(g);
  if (get->parsed()) return cmd_config_get(g, component, key);
  if (set->parsed()) return cmd_config_set(g, component, key, value);
  std::fputs(app.help().c_str(), stdout);
  return kExitOk;
}
