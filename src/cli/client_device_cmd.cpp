// canopy client-device issue|list: certificates of the local broker's CA for client devices.
#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>

#include "common.hpp"

namespace canopy::cli {
namespace {
namespace fs = std::filesystem;

struct IssueArgs {
  std::string name;
  int days = 365;
  std::string out = ".";
  bool force = false;
};

// Writes `text` to `file` created with `mode` (an existing file is replaced only with --force,
// checked by the caller).
bool write_private(const fs::path& file, const std::string& text, mode_t mode, std::string& error) {
  const fs::path tmp = file.string() + ".tmp";
  ::umask(0077);
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << text;
    f.flush();
    if (!f) {
      error = fmt::format("cannot write {}", tmp.string());
      return false;
    }
  }
  ::chmod(tmp.c_str(), mode);
  std::error_code ec;
  fs::rename(tmp, file, ec);
  if (ec) {
    error = fmt::format("cannot write {}: {}", file.string(), ec.message());
    fs::remove(tmp, ec);
    return false;
  }
  return true;
}

bool valid_name(const std::string& n) {
  if (n.empty() || n.size() > 64) return false;
  for (char c : n)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  return true;
}

int cmd_issue(const Globals& g, const IssueArgs& a) {
  // The same rule canopyd applies (it is also the file name, so check before touching files).
  if (!valid_name(a.name))
    return fail(fmt::format("\"{}\" is not a valid client device name: use 1 to 64 letters, digits, '.', '_' or '-'",
                            a.name));
  const fs::path dir = a.out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return fail(fmt::format("--out {}: no such folder", dir.string()));
  const fs::path crt = dir / (a.name + ".crt"), key = dir / (a.name + ".key"), ca = dir / "ca.crt";
  if (!a.force)
    for (const auto& f : {crt, key, ca})
      if (fs::exists(f, ec))
        return fail(fmt::format("{} already exists; use --force to overwrite it, or --out to write elsewhere", f.string()));
  auto r = call(g, "canopy#IssueClientDeviceCertificate", {{"name", a.name}, {"days", a.days}});
  if (!r) return fail(r.error().message);
  std::string error;
  if (!write_private(key, r->value("privateKeyPem", ""), 0600, error) ||
      !write_private(crt, r->value("certificatePem", ""), 0644, error) ||
      !write_private(ca, r->value("caPem", ""), 0644, error))
    return fail(error);
  const int port = r->value("tlsPort", 8883);
  if (g.json)
    return print_json({{"name", a.name}, {"certificate", crt.string()}, {"privateKey", key.string()},
                       {"ca", ca.string()}, {"days", a.days}, {"tlsPort", port}});
  std::cout << fmt::format("client device {}: certificate valid {} days\n", a.name, a.days);
  std::cout << fmt::format("  wrote {} (certificate, CN={})\n  wrote {} (private key, mode 0600)\n  wrote {} (the local "
                           "CA)\n",
                           crt.string(), a.name, key.string(), ca.string());
  if (!r->value("configured", false))
    std::cout << fmt::format("note: {} is not in services.canopy.LocalBroker.configuration.clientDevices yet, so it may "
                             "connect but neither publish nor subscribe; for example:\n  canopy config set "
                             "canopy.LocalBroker clientDevices '{{\"{}\": {{\"publish\": [\"devices/{}/#\"], "
                             "\"subscribe\": [\"commands/{}/#\"]}}}}'\n",
                             a.name, a.name, a.name, a.name);
  if (port == 0) {
    std::cout << "note: the broker's TLS listener is off (tlsPort is 0)\n";
    return kExitOk;
  }
  std::cout << fmt::format("test it (the server certificate is valid for localhost, 127.0.0.1 and this host's name):\n"
                           "  mosquitto_pub -h localhost -p {} --cafile {} --cert {} --key {} -t devices/{}/test -m "
                           "hello -q 1 -d\n",
                           port, ca.string(), crt.string(), key.string(), a.name);
  return kExitOk;
}

int cmd_list(const Globals& g) {
  auto r = call(g, "aws.greengrass#GetConfiguration",
                {{"componentName", "canopy.LocalBroker"}, {"keyPath", nlohmann::json::array({"clientDevices"})}});
  nlohmann::json devices = nlohmann::json::object();
  if (r) {
    const auto v = r->value("value", nlohmann::json());
    if (v.is_object()) devices = v.contains("clientDevices") ? v["clientDevices"] : v;
  } else if (r.error().code != errc::not_found) {
    return fail(r.error().message);
  }
  if (g.json) return print_json({{"clientDevices", devices}});
  if (!devices.is_object() || devices.empty()) {
    std::cout << "no client devices are configured (services.canopy.LocalBroker.configuration.clientDevices)\n";
    return kExitOk;
  }
  for (const auto& [name, d] : devices.items()) {
    const auto list = [&](const char* k) {
      std::string s;
      if (d.is_object() && d.contains(k) && d[k].is_array())
        for (const auto& t : d[k]) s += (s.empty() ? "" : ", ") + (t.is_string() ? t.get<std::string>() : t.dump());
      return s.empty() ? std::string("(none)") : s;
    };
    std::cout << fmt::format("{}\n  publish:   {}\n  subscribe: {}\n", name, list("publish"), list("subscribe"));
  }
  return kExitOk;
}

}  // namespace

void add_client_device_commands(CLI::App& app, Globals& g, Action& action) {
  auto* cd = app.add_subcommand(
      "client-device",
      "Client devices of the local MQTT broker (canopy.LocalBroker): certificates of its local CA, configured access");
  cd->require_subcommand(1);
  auto args = std::make_shared<IssueArgs>();
  auto* issue = cd->add_subcommand(
      "issue",
      "Issue a certificate for a client device: a new EC P-256 key, CN = NAME, signed by the local CA. Writes NAME.crt, "
      "NAME.key (0600) and ca.crt into --out. What the device may do is set in "
      "services.canopy.LocalBroker.configuration.clientDevices.NAME (publish/subscribe topic filters)");
  issue->add_option("name", args->name, "Device name, the certificate's CN: 1 to 64 of A-Z a-z 0-9 . _ -")->required();
  issue->add_option("--days", args->days, "Validity in days (1 to 3650; default 365)")->check(CLI::Range(1, 3650));
  issue->add_option("--out", args->out, "Folder to write the files into (default: the current folder)");
  issue->add_flag("--force", args->force, "Overwrite NAME.crt, NAME.key or ca.crt if they exist");
  add_json_flag(issue, g);
  issue->footer("Example:\n  canopy client-device issue sensor-1 --days 730 --out /tmp/sensor-1");
  issue->callback([&, args] { action = [&g, args] { return cmd_issue(g, *args); }; });
  auto* list = cd->add_subcommand("list", "List the configured client devices and their topic filters");
  add_json_flag(list, g);
  list->callback([&] { action = [&g] { return cmd_list(g); }; });
}

}  // namespace canopy::cli
