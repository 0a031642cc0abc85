// canopy status, canopy config get|set.
#include <chrono>
#include <iostream>

#include <fmt/format.h>

#include "canopy/config/store.hpp"
#include "common.hpp"

namespace canopy::cli {
namespace {

std::string human_duration(std::int64_t s) {
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m {}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h {}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d {}h", s / 86400, (s % 86400) / 3600);
}

std::string ago(std::int64_t unix_ms) {
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
                       .count();
  return human_duration(std::max<std::int64_t>(0, (now - unix_ms) / 1000));
}

// The cloud link and the spool, as an operator reads them: is the link up, since when, why not,
// and how much is waiting.
void print_cloud(const nlohmann::json& s) {
  if (const auto it = s.find("cloud"); it != s.end() && it->is_object()) {
    const auto& c = *it;
    const std::string state = c.value("state", "?");
    if (state == "disabled") {
      std::cout << "cloud link      disabled: no iotDataEndpoint is configured; messages for the cloud wait in the "
                   "spool\n";
    } else {
      std::string line = fmt::format("cloud link      {} to {} as {} (MQTT {}), for {}", state, c.value("endpoint", "?"),
                                     c.value("clientId", "?"), c.value("mqttVersion", "?"),
                                     ago(c.value("sinceUnixMs", std::int64_t{0})));
      if (state == "connected")
        line += fmt::format(", {} of {} publishes in flight", c.value("inflight", 0), c.value("inflightLimit", 0));
      std::cout << line << "\n";
      if (c.contains("lastError") && state != "connected")
        std::cout << fmt::format("                last error: {}\n", c.value("lastError", ""));
      if (const auto h = c.find("held"); h != c.end() && h->is_array() && !h->empty()) {
        std::string ids;
        for (const auto& id : *h) ids += (ids.empty() ? "" : ", ") + id.dump();
        std::cout << fmt::format("                held: {} message(s) the cloud closed the connection for (spool id "
                                 "{}); kept in the spool until canopyd restarts or canopy cloud release-held\n",
                                 h->size(), ids);
      }
      if (c.contains("key")) std::cout << fmt::format("device key      {}\n", c.value("key", ""));
    }
  }
  if (const auto it = s.find("spool"); it != s.end() && it->is_object()) {
    const auto& p = *it;
    std::cout << fmt::format("spool           {} messages ({} bytes) waiting of at most {} ({} bytes); durability {}, "
                             "when full: {}\n",
                             p.value("queued", 0), p.value("bytes", 0), p.value("maxMessages", 0),
                             p.value("maxBytes", 0), p.value("durability", "?"), p.value("whenFull", "?"));
    std::cout << fmt::format("spool counters  {} accepted, {} delivered, {} dropped when full, {} refused when full, {} "
                             "expired, {} resent ({} after a restart)\n",
                             p.value("accepted", 0), p.value("delivered", 0), p.value("dropped_full", 0),
                             p.value("rejected_full", 0), p.value("expired", 0), p.value("resent", 0),
                             p.value("duplicates_suspected", 0));
    if (p.contains("quarantined"))
      std::cout << fmt::format("                a damaged spool database was moved aside to {}\n",
                               p.value("quarantined", ""));
  }
}

// The local broker (canopy.LocalBroker): state, listeners, and why it is not running.
void print_broker(const nlohmann::json& s) {
  const auto it = s.find("broker");
  if (it == s.end() || !it->is_object()) return;
  const auto& b = *it;
  const std::string state = b.value("state", "?");
  if (!b.value("enabled", true)) {
    std::cout << "local broker    disabled (services.canopy.LocalBroker.configuration.enabled is false)\n";
    return;
  }
  const auto port = [](int p) { return p == 0 ? std::string("off") : std::to_string(p); };
  std::cout << fmt::format("local broker    {}, loopback port {}, TLS port {} on {}, pid {}, {} restart(s)\n", state,
                           port(b.value("localPort", 0)), port(b.value("tlsPort", 0)), b.value("tlsBindAddress", "?"),
                           b.value("pid", 0), b.value("restarts", 0));
  if (b.contains("lastError") && state != "RUNNING")
    std::cout << fmt::format("                {}\n", b.value("reason", b.value("lastError", "")));
}

// The bridge (canopy.MqttBridge): its local connection and totals over the mappings.
void print_bridge(const nlohmann::json& s) {
  const auto it = s.find("bridge");
  if (it == s.end() || !it->is_object()) return;
  const auto& b = *it;
  std::uint64_t received = 0, forwarded = 0, failed = 0;
  std::size_t n = 0;
  if (const auto m = b.find("mappings"); m != b.end() && m->is_array())
    for (const auto& x : *m) {
      ++n;
      received += x.value("received", std::uint64_t{0});
      forwarded += x.value("forwarded", std::uint64_t{0});
      failed += x.value("failed", std::uint64_t{0});
    }
  std::string local = "no local broker";
  if (const auto l = b.find("localBroker"); l != b.end() && l->is_object())
    local = fmt::format("local broker {} {}", l->value("broker", "?"), l->value("state", "?"));
  std::cout << fmt::format("MQTT bridge     {} mapping(s), {}; {} received, {} forwarded, {} failed\n", n, local, received,
                           forwarded, failed);
  if (b.contains("configurationError"))
    std::cout << fmt::format("                configuration problems: {}\n", b.value("configurationError", ""));
}

int cmd_status(const Globals& g) {
  auto r = call(g, "canopy#GetStatus", nlohmann::json::object());
  if (!r) return fail(r.error().message);
  const auto& s = *r;
  if (g.json) return print_json(s);
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
  const auto& comps = s.value("components", nlohmann::json::object());
  std::string by_state;
  if (const auto it = comps.find("byState"); it != comps.end() && it->is_object())
    for (auto e = it->begin(); e != it->end(); ++e)
      by_state += fmt::format("{}{} {}", by_state.empty() ? "" : ", ", e.value().get<int>(), e.key());
  std::cout << fmt::format("components      {}{}{}\n", comps.value("total", 0), by_state.empty() ? "" : " (" + by_state + ")",
                           comps.value("deploymentInProgress", false) ? ", a deployment is in progress" : "");
  print_cloud(s);
  print_broker(s);
  print_bridge(s);
  return kExitOk;
}

result<config::KeyPath> parse_key(const std::string& key) {
  if (key.empty() || key == "/") return config::KeyPath{};
  // A JSON pointer ("/a/b"), or a dotted path ("a.b") for convenience.
  if (key.front() == '/') return config::parse_pointer(key);
  config::KeyPath path;
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
  auto r = call(g, "aws.greengrass#GetConfiguration", {{"componentName", component}, {"keyPath", *path}});
  if (!r) return fail(r.error().message);
  if (g.json) return print_json(*r);
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
  auto r = call(g, "canopy#UpdateConfiguration",
                {{"componentName", component}, {"keyPath", *path}, {"valueToMerge", value}}, std::chrono::seconds(60));
  if (!r) return fail(r.error().message);
  if (g.json) return print_json(nlohmann::json{{"componentName", component}, {"keyPath", *path}, {"updated", true}});
  std::cout << fmt::format("{}: {} updated\n", component, key.empty() ? "/" : key);
  return kExitOk;
}

struct ConfigArgs {
  std::string component, key, value;
};

}  // namespace

namespace {

int cmd_cloud_release_held(const Globals& g) {
  auto r = call(g, "canopy#ReleaseHeldMessages", nlohmann::json::object());
  if (!r) return fail(r.error().message);
  if (g.json) return print_json(*r);
  const auto n = r->value("released", std::uint64_t{0});
  if (n == 0)
    std::cout << "No message is held; nothing was changed.\n";
  else
    std::cout << fmt::format("Released {} held message(s). The cloud link reconnects and sends the spool again from "
                             "its oldest message; if the cloud still refuses one, it is held again within seconds "
                             "(see canopy status).\n",
                             n);
  return kExitOk;
}

}  // namespace

void add_status_commands(CLI::App& app, Globals& g, Action& action) {
  auto* status = app.add_subcommand(
      "status", "Show canopyd's version and uptime, IPC and pub/sub counters, components, the cloud link and the spool");
  status->add_flag("--json", g.json, "Print JSON instead of a table");
  status->callback([&] { action = [&g] { return cmd_status(g); }; });

  auto* cloud = app.add_subcommand("cloud", "Act on the cloud link");
  cloud->require_subcommand(1);
  auto* release = cloud->add_subcommand(
      "release-held",
      "Send again the messages the cloud link held because the cloud closed the connection for them (canopy status "
      "lists them): the link reconnects and sends the spool from its oldest message. Use it once the cause (a policy, "
      "a limit) is fixed (a restart of canopyd releases them too)");
  release->add_flag("--json", g.json, "Print the answer as JSON");
  release->callback([&] { action = [&g] { return cmd_cloud_release_held(g); }; });

  auto* config = app.add_subcommand("config", "Read or change a component's configuration");
  config->require_subcommand(1);
  auto args = std::make_shared<ConfigArgs>();
  auto* get = config->add_subcommand("get", "Print a component's configuration, or one key of it");
  get->add_option("component", args->component, "Component name, e.g. com.example.Hello")->required();
  get->add_option("key", args->key, "Key path: a JSON pointer (/a/b) or dotted (a.b); default: all");
  get->add_flag("--json", g.json, "Print the full answer as JSON");
  get->callback([&, args] { action = [&g, args] { return cmd_config_get(g, args->component, args->key); }; });
  auto* set = config->add_subcommand(
      "set", "Merge a value into a component's configuration (components that validate their configuration are "
             "asked first)");
  set->add_option("component", args->component, "Component name")->required();
  set->add_option("key", args->key, "Key path: a JSON pointer (/a/b) or dotted (a.b)")->required();
  set->add_option("value", args->value, "JSON value (text that is not JSON is taken as a string)")->required();
  set->add_flag("--json", g.json, "Print the result as JSON");
  set->callback(
      [&, args] { action = [&g, args] { return cmd_config_set(g, args->component, args->key, args->value); }; });
}

}  // namespace canopy::cli
