// The supervisor of the local Mosquitto (built-in component canopy.LocalBroker).
#include "canopy/broker/local_broker.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <optional>
#include <vector>

#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "canopy/config/store.hpp"
#include "canopy/core/file.hpp"
#include "canopy/core/log.hpp"
#include "canopy/lifecycle/process.hpp"
#include "canopy/trust/tls_identity.hpp"

namespace canopy::broker {
namespace fs = std::filesystem;
namespace net = boost::asio;
using namespace std::chrono_literals;
using lifecycle::State;

namespace {

constexpr const char* kKeyPrefix = "services.canopy.LocalBroker.configuration.";

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// A socket address for an IP literal and a port (IPv4 or IPv6).
struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;
  int family = AF_INET;
};

std::optional<SockAddr> make_addr(const std::string& address, int port) {
  SockAddr a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (::inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<std::uint16_t>(port));
    a.len = sizeof(sockaddr_in);
    a.family = AF_INET;
    return a;
  }
  a.storage = {};
  if (::inet_pton(AF_INET6, address.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<std::uint16_t>(port));
    a.len = sizeof(sockaddr_in6);
    a.family = AF_INET6;
    return a;
  }
  return std::nullopt;
}

// A connect to a local listener returns at once (accepted or refused), so this is called on
// the loop: it never waits on the network.
bool accepts(const std::string& address, int port) {
  auto a = make_addr(address, port);
  if (!a) return false;
  const int fd = ::socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a->storage), a->len) == 0;
  ::close(fd);
  return ok;
}

// Where to probe a listener bound to `bind`: the wildcard addresses are reached on loopback.
std::string probe_address(const std::string& bind) {
  if (bind == "0.0.0.0") return "127.0.0.1";
  if (bind == "::") return "::1";
  return bind;
}

std::string host_name() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

}  // namespace

result<void> LocalBroker::check_port(const std::string& address, int port) {
  auto a = make_addr(address, port);
  if (!a) return make_error(errc::config, fmt::format("\"{}\" is not an IP address", address));
  const int fd = ::socket(a->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_error("cannot create a socket to test the broker's ports", errno);
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (a->family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  const int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&a->storage), a->len);
  const int err = errno;
  ::close(fd);
  if (rc == 0) return ok();
  if (err == EADDRINUSE)
    return make_error(errc::busy,
                      fmt::format("port {} on {} is already in use (another MQTT broker? Debian's mosquitto.service is "
                                  "enabled by the mosquitto package: systemctl disable --now mosquitto)",
                                  port, address));
  if (err == EADDRNOTAVAIL)
    return make_error(errc::config, fmt::format("cannot listen on {} port {}: {} is not an address of this device",
                                                address, port, address));
  if (err == EACCES)
    return make_error(errc::unauthorized, fmt::format("cannot listen on {} port {}: ports below 1024 need root", address,
                                                      port));
  return errno_error(fmt::format("cannot listen on {} port {}", address, port), err);
}

struct LocalBroker::Impl {
  Impl(net::any_io_executor ex, LocalBrokerOptions o, config::ConfigStore& s, lifecycle::Launcher& l,
       lifecycle::ProcessTable& p)
      : executor(ex), options(std::move(o)), store(s), launcher(l), processes(p), log(log::get("broker")),
        files(BrokerFiles::under(options.layout.root)), probe_timer(ex), restart_timer(ex), kill_timer(ex),
        debounce_timer(ex), backoff(options.backoff_initial) {}

  net::any_io_executor executor;
  LocalBrokerOptions options;
  config::ConfigStore& store;
  lifecycle::Launcher& launcher;
  lifecycle::ProcessTable& processes;
  std::shared_ptr<spdlog::logger> log;
  BrokerFiles files;
  std::shared_ptr<lifecycle::ComponentLog> clog;
  std::optional<LocalCa> ca;
  Settings settings;
  State state = State::new_;
  std::string status_code;
  std::string reason;
  std::string last_error;
  pid_t pid = 0;
  std::uint32_t restarts = 0;
  std::uint64_t generation = 0;
  bool final_stop = false;
  bool restart_requested = false;
  bool subscribed = false;
  config::SubscriptionId subscription = 0;
  std::vector<std::function<void()>> stop_done;
  net::steady_timer probe_timer, restart_timer, kill_timer, debounce_timer;
  std::chrono::steady_clock::time_point spawned_at{}, probe_deadline{};
  std::chrono::milliseconds backoff;
  std::shared_ptr<int> alive = std::make_shared<int>(0);

  void note(lifecycle::ComponentLog::Level level, const std::string& text) {
    if (clog) clog->line(level, "canopy", text);
  }

  void set_state(State s, std::string code, std::string why) {
    if (s != state || why != reason)
      log->info("component={} state {} -> {}{}{}", kComponentName, lifecycle::to_string(state), lifecycle::to_string(s),
                why.empty() ? "" : ": ", why);
    state = s;
    status_code = std::move(code);
    reason = std::move(why);
  }

  void broken(std::string code, const std::string& why) {
    last_error = why;
    log->error("component={} cannot run the local broker: {}", kComponentName, why);
    note(lifecycle::ComponentLog::Level::error, why);
    set_state(State::broken, std::move(code), why);
  }

  // The files Mosquitto reads after dropping to its user: the folder and the server key in its
  // group, the persistence folder its own. The CA key stays 0600 root.
  result<void> prepare_files(const Settings& s, std::string& user) {
    std::optional<std::pair<uid_t, gid_t>> mosq;
    if (::geteuid() == 0) {
      const passwd* pw = ::getpwnam("mosquitto");
      if (pw == nullptr)
        return make_error(errc::config, "the user mosquitto does not exist (the mosquitto package creates it): "
                                        "Mosquitto started by root drops to that user");
      mosq = std::make_pair(pw->pw_uid, pw->pw_gid);
      user = "mosquitto";
    }
    const auto share = [&](const fs::path& p, mode_t mode) -> result<void> {
      if (mosq && ::chown(p.c_str(), 0, mosq->second) != 0)
        return errno_error(fmt::format("cannot give {} to the group mosquitto", p.string()), errno);
      if (::chmod(p.c_str(), mode) != 0) return errno_error(fmt::format("cannot set the mode of {}", p.string()), errno);
      return ok();
    };
    std::error_code ec;
    fs::create_directories(files.dir, ec);
    if (ec) return make_error(errc::io, fmt::format("cannot create {}: {}", files.dir.string(), ec.message()));
    if (auto r = share(files.dir, 0750); !r) return r;
    if (auto r = ensure_ca(s); !r) return r;
    std::vector<std::string> ips = {"127.0.0.1", "::1"};
    if (s.tls_bind_address != "0.0.0.0" && s.tls_bind_address != "::" &&
        std::find(ips.begin(), ips.end(), s.tls_bind_address) == ips.end())
      ips.push_back(s.tls_bind_address);
    std::vector<std::string> dns = {"localhost"};
    if (const auto h = host_name(); !h.empty() && h != "localhost") dns.push_back(h);
    auto renewed = ca->ensure_server_certificate(files.server_cert, files.server_key, dns, ips, 825, 24h * 30);
    if (!renewed) return renewed.error();
    if (*renewed) log->info("component={} issued a new broker server certificate {}", kComponentName, files.server_cert.string());
    if (auto r = share(files.server_key, 0640); !r) return r;
    if (auto r = write_file_atomically(files.acl, render_acl(s), 0640); !r) return r;
    if (auto r = share(files.acl, 0640); !r) return r;
    if (auto r = write_file_atomically(files.conf, render_mosquitto_conf(s, files, user), 0640); !r) return r;
    if (auto r = share(files.conf, 0640); !r) return r;
    if (s.persistence) {
      fs::create_directories(files.data_dir, ec);
      if (ec) return make_error(errc::io, fmt::format("cannot create {}: {}", files.data_dir.string(), ec.message()));
      if (mosq && ::chown(files.data_dir.c_str(), mosq->first, mosq->second) != 0)
        return errno_error(fmt::format("cannot give {} to the user mosquitto", files.data_dir.string()), errno);
      if (::chmod(files.data_dir.c_str(), 0700) != 0)
        return errno_error(fmt::format("cannot set the mode of {}", files.data_dir.string()), errno);
    }
    return ok();
  }

  fs::path find_mosquitto() const {
    if (!options.mosquitto.empty()) return options.mosquitto;
    for (const char* p : {"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"})
      if (::access(p, X_OK) == 0) return p;
    return {};
  }

  // The local CA, once: its key from a file made at the first start, or from the TPM (caKey).
  // A caKey change takes effect at the next start of canopyd.
  result<void> ensure_ca(const Settings& s) {
    if (ca) return ok();
    std::shared_ptr<trust::PrivateKey> key;
    if (!s.ca_key.empty()) {
      auto k = trust::PrivateKey::load(s.ca_key, options.tpm_tcti, std::string(kKeyPrefix) + "caKey");
      if (!k) return k.error();
      key = std::move(*k);
      log->info("component={} the local CA's key is {}", kComponentName, key->description());
    }
    auto c = LocalCa::open_or_create(files.ca_dir, std::move(key));
    if (!c) return c.error();
    ca = std::move(*c);
    return ok();
  }

  void start_now() {
    if (final_stop) return;
    ++generation;
    restart_timer.cancel();
    probe_timer.cancel();
    auto s = parse_settings(store.get(config::component_config_path(kComponentName)).value_or(nlohmann::json()));
    if (s && !s->enabled) {
      // Nothing runs, so no component log is created for it.
      settings = *s;
      if (clog) note(lifecycle::ComponentLog::Level::info, "disabled by configuration (enabled: false)");
      else log->info("component={} disabled by configuration (enabled: false)", kComponentName);
      return set_state(State::finished, "", fmt::format("disabled: {}enabled is false", kKeyPrefix));
    }
    if (!clog) {
      auto l = lifecycle::ComponentLog::open(options.layout.logs_dir() / (std::string(kComponentName) + ".log"),
                                             options.log_file_bytes, options.log_files);
      if (l) clog = *l;
      else log->warn("component={} no component log: {}", kComponentName, l.error().message);
    }
    if (!s) return broken("INVALID_CONFIGURATION", s.error().message);
    settings = *s;
    std::string user;
    if (auto r = prepare_files(settings, user); !r) return broken("FILES", r.error().message);
    const auto check = [&](const std::string& addr, int port, const char* key) -> bool {
      if (port == 0) return true;
      if (auto r = LocalBroker::check_port(addr, port); !r) {
        broken(r.error().code == errc::busy ? "PORT_IN_USE" : "LISTEN_ERROR",
               fmt::format("{}; or choose another port with {}{}", r.error().message, kKeyPrefix, key));
        return false;
      }
      return true;
    };
    if (!check("127.0.0.1", settings.local_port, "localPort")) return;
    if (!check(settings.tls_bind_address, settings.tls_port, "tlsPort")) return;
    const fs::path bin = find_mosquitto();
    if (bin.empty())
      return broken("NO_BROKER", "mosquitto is not installed (looked for /usr/sbin/mosquitto, /usr/local/sbin/mosquitto "
                                 "and /usr/bin/mosquitto): apt-get install mosquitto");
    lifecycle::ProcessSpec spec;
    spec.component = kComponentName;
    spec.step = "run";
    // Mosquitto writes its log with stdio and does not flush a pipe per line: stdbuf makes
    // stdout line-buffered so the component log follows live (stdbuf execs mosquitto: the
    // pid stays the broker's).
    const char* stdbuf = ::access("/usr/bin/stdbuf", X_OK) == 0 ? "/usr/bin/stdbuf -oL " : "";
    spec.script = "exec " + std::string(stdbuf) + shell_quote(bin.string()) + " -c " + shell_quote(files.conf.string());
    spec.cwd = files.dir;
    spec.env = {{"PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                {"CANOPYD_SUPERVISED_ROOT", options.layout.root.string()}};
    const auto gen = generation;
    std::weak_ptr<int> alive_w = alive;
    auto spawned = launcher.spawn(spec, clog, [this, alive_w, gen](lifecycle::ExitStatus st) {
      if (alive_w.expired()) return;
      on_exit(gen, st);
    });
    if (!spawned) return broken("STARTUP_ERROR", spawned.error().message);
    pid = *spawned;
    processes.add(pid, kComponentName, "run");
    spawned_at = std::chrono::steady_clock::now();
    probe_deadline = spawned_at + options.ready_timeout;
    log->info("component={} started mosquitto pid={} conf={} localPort={} tlsPort={} tlsBindAddress={}", kComponentName,
              pid, files.conf.string(), settings.local_port, settings.tls_port, settings.tls_bind_address);
    note(lifecycle::ComponentLog::Level::info, fmt::format("started mosquitto (pid {})", pid));
    set_state(State::starting, "", "");
    probe(gen);
  }

  // Polls every 100 ms until each enabled listener accepts connections (RUNNING) or the
  // deadline passes (stopped, and restarted like a crash).
  void probe(std::uint64_t gen) {
    if (gen != generation || pid == 0) return;
    const bool local_ok = settings.local_port == 0 || accepts("127.0.0.1", settings.local_port);
    const bool tls_ok = settings.tls_port == 0 || accepts(probe_address(settings.tls_bind_address), settings.tls_port);
    if (local_ok && tls_ok) {
      last_error.clear();
      set_state(State::running, "", "");
      return;
    }
    if (std::chrono::steady_clock::now() >= probe_deadline) {
      last_error = fmt::format("mosquitto (pid {}) did not accept connections within {} s", pid,
                               std::chrono::duration_cast<std::chrono::seconds>(options.ready_timeout).count());
      log->error("component={} {}; stopping it", kComponentName, last_error);
      note(lifecycle::ComponentLog::Level::error, last_error);
      terminate();
      return;
    }
    probe_timer.expires_after(100ms);
    probe_timer.async_wait([this, gen](const boost::system::error_code& ec) {
      if (!ec) probe(gen);
    });
  }

  void terminate() {
    if (pid == 0) return;
    const pid_t target = pid;
    lifecycle::Launcher::signal_group(target, SIGTERM);
    kill_timer.expires_after(options.stop_grace);
    kill_timer.async_wait([this, target](const boost::system::error_code& ec) {
      if (ec || pid != target) return;
      log->warn("component={} mosquitto pid={} did not stop within {} ms of SIGTERM; sending SIGKILL", kComponentName,
                target, options.stop_grace.count());
      lifecycle::Launcher::signal_group(target, SIGKILL);
    });
  }

  void on_exit(std::uint64_t gen, lifecycle::ExitStatus st) {
    if (gen != generation) return;
    kill_timer.cancel();
    probe_timer.cancel();
    if (pid != 0) processes.remove(pid);
    const pid_t was = pid;
    pid = 0;
    if (final_stop) {
      log->info("component={} mosquitto pid={} stopped ({})", kComponentName, was, st.describe());
      note(lifecycle::ComponentLog::Level::info, fmt::format("mosquitto stopped ({})", st.describe()));
      set_state(State::finished, "", "stopped with canopyd");
      auto done = std::move(stop_done);
      stop_done.clear();
      for (auto& d : done) d();
      return;
    }
    if (restart_requested) {
      restart_requested = false;
      log->info("component={} mosquitto pid={} stopped for a restart ({})", kComponentName, was, st.describe());
      start_now();
      return;
    }
    // An unexpected exit: restart with backoff; a run that lasted `stable` starts it over.
    if (std::chrono::steady_clock::now() - spawned_at >= options.stable) backoff = options.backoff_initial;
    ++restarts;
    const auto delay = backoff;
    backoff = std::min(backoff * 2, options.backoff_max);
    last_error = last_error.empty() || state == State::running
                     ? fmt::format("mosquitto (pid {}) exited unexpectedly ({})", was, st.describe())
                     : last_error;
    const std::string why = fmt::format("{}; restart {} in {} ms", last_error, restarts, delay.count());
    log->warn("component={} {}", kComponentName, why);
    note(lifecycle::ComponentLog::Level::warn, why);
    set_state(State::errored, "EXITED", why);
    restart_timer.expires_after(delay);
    restart_timer.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) start_now();
    });
  }

  void restart_now(const char* why) {
    if (final_stop) return;
    backoff = options.backoff_initial;
    restart_timer.cancel();
    if (pid != 0) {
      log->info("component={} restarting mosquitto pid={}: {}", kComponentName, pid, why);
      restart_requested = true;
      terminate();
      return;
    }
    start_now();
  }

  // Several keys change in one write (one callback each): act once, shortly after the last.
  void on_config_changed() {
    debounce_timer.expires_after(300ms);
    debounce_timer.async_wait([this](const boost::system::error_code& ec) {
      if (ec || final_stop) return;
      auto s = parse_settings(store.get(config::component_config_path(kComponentName)).value_or(nlohmann::json()));
      if (s && *s == settings && (state == State::running || state == State::starting)) return;
      restart_now("its configuration changed");
    });
  }
};

LocalBroker::LocalBroker(net::any_io_executor executor, LocalBrokerOptions options, config::ConfigStore& store,
                         lifecycle::Launcher& launcher, lifecycle::ProcessTable& processes)
    : impl_(std::make_unique<Impl>(executor, std::move(options), store, launcher, processes)) {}

LocalBroker::~LocalBroker() {
  if (impl_->subscribed) impl_->store.unsubscribe(impl_->subscription);
}

void LocalBroker::start() {
  if (!impl_->subscribed) {
    impl_->subscription = impl_->store.subscribe(config::component_config_path(kComponentName),
                                                 [this](const config::KeyPath&) { impl_->on_config_changed(); });
    impl_->subscribed = true;
  }
  impl_->start_now();
}

void LocalBroker::stop(std::function<void()> done) {
  auto& i = *impl_;
  i.final_stop = true;
  i.restart_timer.cancel();
  i.probe_timer.cancel();
  i.debounce_timer.cancel();
  if (i.pid == 0) {
    if (i.state == State::running || i.state == State::starting || i.state == State::errored)
      i.set_state(State::finished, "", "stopped with canopyd");
    if (done) done();
    return;
  }
  if (done) i.stop_done.push_back(std::move(done));
  log::get("broker")->info("component={} stopping mosquitto pid={}", kComponentName, i.pid);
  i.terminate();
}

void LocalBroker::restart() {
  impl_->restart_now("the operator asked for a restart");
}

lifecycle::ComponentInfo LocalBroker::info() const {
  const auto& i = *impl_;
  lifecycle::ComponentInfo c;
  c.name = kComponentName;
  c.version = i.options.version;
  c.state = i.state;
  c.status_code = i.status_code;
  c.status_reason = i.reason;
  c.pid = i.pid;
  c.restart_count = i.restarts;
  c.desired_running = i.settings.enabled && !i.final_stop;
  return c;
}

nlohmann::json LocalBroker::status() const {
  const auto& i = *impl_;
  nlohmann::json j = {{"state", lifecycle::to_string(i.state)},
                      {"enabled", i.settings.enabled},
                      {"localPort", i.settings.local_port},
                      {"tlsPort", i.settings.tls_port},
                      {"tlsBindAddress", i.settings.tls_bind_address},
                      {"pid", i.pid},
                      {"restarts", i.restarts},
                      {"clientDevices", i.settings.client_devices.size()},
                      {"config", i.files.conf.string()}};
  if (!i.last_error.empty()) j["lastError"] = i.last_error;
  if (!i.reason.empty()) j["reason"] = i.reason;
  return j;
}

result<nlohmann::json> LocalBroker::issue_client_certificate(const std::string& name, int days) {
  auto& i = *impl_;
  if (!i.ca) {
    std::error_code ec;
    fs::create_directories(i.files.dir, ec);
    auto s = parse_settings(i.store.get(config::component_config_path(kComponentName)).value_or(nlohmann::json()));
    if (!s) return s.error();
    if (auto r = i.ensure_ca(*s); !r) return r.error();
  }
  auto cert = i.ca->issue_client(name, days);
  if (!cert) return cert.error();
  i.log->info("component={} issued a client device certificate for {} valid {} days", kComponentName, name, days);
  return nlohmann::json{{"certificatePem", cert->certificate_pem},
                        {"privateKeyPem", cert->private_key_pem},
                        {"caPem", i.ca->certificate_pem()},
                        {"tlsPort", i.settings.tls_port},
                        {"configured", i.settings.client_devices.count(name) > 0}};
}

}  // namespace canopy::broker
