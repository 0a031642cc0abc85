// Validation of services.canopy.LocalBroker.configuration and the generated Mosquitto files.
#include "canopy/broker/settings.hpp"

#include <arpa/inet.h>

#include <fmt/format.h>

namespace canopy::broker {
namespace {

constexpr const char* kPrefix = "services.canopy.LocalBroker.configuration.";

Error bad(std::string_view key, std::string_view what, const nlohmann::json& v) {
  return make_error(errc::config, fmt::format("{}{} must be {}, not {}", kPrefix, key, what, v.dump()));
}

const nlohmann::json* member(const nlohmann::json& c, const char* key) {
  const auto it = c.find(key);
  if (it == c.end() || it->is_null()) return nullptr;
  return &*it;
}

// An unsigned integer, also written as a string of digits (YAML and `canopy config set`).
result<std::uint64_t> as_uint(const nlohmann::json& v, std::string_view key, std::uint64_t max, std::uint64_t min,
                              std::string_view what) {
  std::uint64_t n = 0;
  if (v.is_number_unsigned()) {
    n = v.get<std::uint64_t>();
  } else if (v.is_number_integer()) {
    if (v.get<std::int64_t>() < 0) return bad(key, what, v);
    n = static_cast<std::uint64_t>(v.get<std::int64_t>());
  } else if (v.is_string() && !v.get_ref<const std::string&>().empty() &&
             v.get_ref<const std::string&>().size() <= 19 &&
             v.get_ref<const std::string&>().find_first_not_of("0123456789") == std::string::npos) {
    n = std::stoull(v.get<std::string>());
  } else {
    return bad(key, what, v);
  }
  if (n < min || n > max) return bad(key, what, v);
  return n;
}

result<bool> as_bool(const nlohmann::json& v, std::string_view key) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_string()) {
    if (v == "true") return true;
    if (v == "false") return false;
  }
  return bad(key, "true or false", v);
}

result<std::vector<std::string>> filters(const nlohmann::json& v, const std::string& where) {
  std::vector<std::string> out;
  if (v.is_null()) return out;
  if (!v.is_array()) return bad(where, "a list of topic filters", v);
  for (std::size_t i = 0; i < v.size(); ++i) {
    const std::string at = fmt::format("{}[{}]", where, i);
    if (!v[i].is_string()) return bad(at, "a topic filter (a string)", v[i]);
    if (auto r = check_acl_filter(v[i].get_ref<const std::string&>(), at); !r) return r.error();
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

}  // namespace

bool valid_device_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

result<void> check_acl_filter(std::string_view filter, std::string_view where) {
  const auto fail = [&](std::string_view why) {
    return make_error(errc::config, fmt::format("{}{} is not a valid topic filter ({}): \"{}\"", kPrefix, where, why,
                                                std::string(filter)));
  };
  if (filter.empty()) return fail("it is empty");
  if (filter.size() > 65535) return fail("it is longer than 65535 bytes");
  if (filter.find_first_of(std::string_view("\0\r\n", 3)) != std::string_view::npos)
    return fail("it contains a NUL, CR or LF character");
  std::size_t start = 0;
  for (;;) {
    const auto slash = filter.find('/', start);
    const auto level = filter.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (level.find('#') != std::string_view::npos && (level != "#" || slash != std::string_view::npos))
      return fail("'#' must be the whole last level");
    if (level.find('+') != std::string_view::npos && level != "+") return fail("'+' must be a whole level");
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return ok();
}

result<Settings> parse_settings(const nlohmann::json& c) {
  Settings s;
  if (c.is_null()) return s;
  if (!c.is_object())
    return make_error(errc::config, fmt::format("services.canopy.LocalBroker.configuration must be a mapping, not {}",
                                                c.dump()));
  if (const auto* v = member(c, "enabled")) {
    auto b = as_bool(*v, "enabled");
    if (!b) return b.error();
    s.enabled = *b;
  }
  constexpr const char* kPort = "an integer from 0 (disabled) to 65535";
  if (const auto* v = member(c, "localPort")) {
    auto n = as_uint(*v, "localPort", 65535, 0, kPort);
    if (!n) return n.error();
    s.local_port = static_cast<int>(*n);
  }
  if (const auto* v = member(c, "tlsPort")) {
    auto n = as_uint(*v, "tlsPort", 65535, 0, kPort);
    if (!n) return n.error();
    s.tls_port = static_cast<int>(*n);
  }
  if (const auto* v = member(c, "tlsBindAddress")) {
    unsigned char buf[16];
    if (!v->is_string() || (::inet_pton(AF_INET, v->get_ref<const std::string&>().c_str(), buf) != 1 &&
                            ::inet_pton(AF_INET6, v->get_ref<const std::string&>().c_str(), buf) != 1))
      return bad("tlsBindAddress", "an IPv4 or IPv6 address such as 0.0.0.0, 192.168.1.10 or ::", *v);
    s.tls_bind_address = v->get<std::string>();
  }
  // Mosquitto 2.0.11 mishandles 0 ("unlimited") for both limits (fixed in 2.0.17 and 2.0.22):
  // require a real bound.
  if (const auto* v = member(c, "maxQueuedMessages")) {
    auto n = as_uint(*v, "maxQueuedMessages", 100'000'000, 1, "an integer from 1 to 100000000");
    if (!n) return n.error();
    s.max_queued_messages = *n;
  }
  if (const auto* v = member(c, "maxQueuedBytes")) {
    auto n = as_uint(*v, "maxQueuedBytes", 1ull << 40, 0, "an integer of bytes from 0 (no byte cap) to 2^40");
    if (!n) return n.error();
    s.max_queued_bytes = *n;
  }
  if (const auto* v = member(c, "maxInflightMessages")) {
    auto n = as_uint(*v, "maxInflightMessages", 65535, 1, "an integer from 1 to 65535");
    if (!n) return n.error();
    s.max_inflight_messages = *n;
  }
  if (const auto* v = member(c, "persistence")) {
    auto b = as_bool(*v, "persistence");
    if (!b) return b.error();
    s.persistence = *b;
  }
  if (const auto* v = member(c, "caKey")) {
    if (!v->is_string()) return bad("caKey", "a TPM key: handle:0x81000000-0x81ffffff or the path of a TSS2 PEM key file", *v);
    s.ca_key = v->get<std::string>();
  }
  if (const auto* v = member(c, "clientDevices")) {
    if (!v->is_object())
      return bad("clientDevices", "a mapping of device names to {publish: [filters], subscribe: [filters]}", *v);
    for (const auto& [name, dev] : v->items()) {
      if (!valid_device_name(name))
        return make_error(errc::config,
                          fmt::format("{}clientDevices has an invalid device name \"{}\": a name is 1 to 64 letters, "
                                      "digits, '.', '_' or '-' (the certificate's CN)",
                                      kPrefix, name));
      const std::string where = "clientDevices." + name;
      ClientDevice d;
      if (!dev.is_null()) {
        if (!dev.is_object()) return bad(where, "a mapping with publish and subscribe lists", dev);
        auto p = filters(dev.value("publish", nlohmann::json()), where + ".publish");
        if (!p) return p.error();
        auto sub = filters(dev.value("subscribe", nlohmann::json()), where + ".subscribe");
        if (!sub) return sub.error();
        d.publish = std::move(*p);
        d.subscribe = std::move(*sub);
      }
      s.client_devices[name] = std::move(d);
    }
  }
  if (s.enabled && s.local_port == 0 && s.tls_port == 0)
    return make_error(errc::config, fmt::format("{}localPort and {}tlsPort are both 0: set {}enabled to false to turn "
                                                "the local broker off",
                                                kPrefix, kPrefix, kPrefix));
  if (s.local_port != 0 && s.local_port == s.tls_port)
    return make_error(errc::config, fmt::format("{}localPort and {}tlsPort are both {}: the two listeners need "
                                                "different ports",
                                                kPrefix, kPrefix, s.local_port));
  return s;
}

BrokerFiles BrokerFiles::under(const std::filesystem::path& root) {
  BrokerFiles f;
  f.dir = root / "broker";
  f.conf = f.dir / "mosquitto.conf";
  f.acl = f.dir / "acl";
  f.ca_dir = f.dir / "ca";
  f.ca_cert = f.ca_dir / "ca.crt";
  f.server_cert = f.dir / "server.crt";
  f.server_key = f.dir / "server.key";
  f.data_dir = f.dir / "data" / "";
  return f;
}

std::string render_mosquitto_conf(const Settings& s, const BrokerFiles& f, const std::string& user) {
  std::string c;
  c += "# Generated by canopyd from services.canopy.LocalBroker.configuration: edits are overwritten.\n";
  c += "# General options come before the listeners (Mosquitto 2.0 requires it).\n";
  c += "per_listener_settings true\n";
  if (!user.empty()) c += "user " + user + "\n";
  c += "log_dest stdout\n";
  c += "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n";
  c += "log_timestamp true\nlog_timestamp_format %Y-%m-%dT%H:%M:%S\n";
  c += "connection_messages true\n";
  c += "set_tcp_nodelay true\n";
  c += fmt::format("max_queued_messages {}\n", s.max_queued_messages);
  c += fmt::format("max_queued_bytes {}\n", s.max_queued_bytes);
  c += fmt::format("max_inflight_messages {}\n", s.max_inflight_messages);
  if (s.persistence) {
    c += "persistence true\n";
    c += "persistence_location " + f.data_dir.string() + "\n";
    c += "autosave_interval 60\n";
  } else {
    c += "persistence false\n";
  }
  if (s.local_port != 0) {
    c += "\n# Local components: loopback only, no authentication.\n";
    c += fmt::format("listener {} 127.0.0.1\n", s.local_port);
    c += "allow_anonymous true\n";
  }
  if (s.tls_port != 0) {
    c += "\n# Client devices: mutual TLS with certificates of the local CA; the CN is the user name.\n";
    c += fmt::format("listener {} {}\n", s.tls_port, s.tls_bind_address);
    c += "cafile " + f.ca_cert.string() + "\n";
    c += "certfile " + f.server_cert.string() + "\n";
    c += "keyfile " + f.server_key.string() + "\n";
    c += "tls_version tlsv1.2\n";
    c += "require_certificate true\n";
    c += "use_identity_as_username true\n";
    c += "allow_anonymous false\n";
    c += "acl_file " + f.acl.string() + "\n";
  }
  return c;
}

std::string render_acl(const Settings& s) {
  std::string a = "# Generated by canopyd from services.canopy.LocalBroker.configuration.clientDevices.\n"
                  "# A device without a section here has no access.\n";
  for (const auto& [name, d] : s.client_devices) {
    a += "\nuser " + name + "\n";
    for (const auto& t : d.publish) a += "topic write " + t + "\n";
    for (const auto& t : d.subscribe) a += "topic read " + t + "\n";
  }
  return a;
}

}  // namespace canopy::broker
