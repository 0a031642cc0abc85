#include "canopy/nucleus/nucleus.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <ctime>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <optional>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <acl/libacl.h>
#include <sys/acl.h>
#include <systemd/sd-daemon.h>

#include "canopy/broker/local_broker.hpp"
#include "canopy/broker/bridge.hpp"
#include "canopy/cloud/link.hpp"
#include "canopy/config/nucleus_config.hpp"
#include "canopy/config/store.hpp"
#include "canopy/deploy/deployer.hpp"
#include "canopy/lifecycle/manager.hpp"
#include "canopy/lifecycle/process.hpp"
#include "canopy/spool/spool.hpp"
#include "canopy/trust/signature.hpp"
#include "canopy/trust/tls_identity.hpp"
#include "canopy/ipc/policy.hpp"
#include "canopy/ipc/server.hpp"
#include "canopy/ipc/services.hpp"
#include "canopy/pubsub/router.hpp"
#include "canopy/core/file.hpp"
#include "canopy/core/log.hpp"
#include "canopy/core/paths.hpp"
#include "canopy/core/version.hpp"

namespace canopy::nucleus {
namespace net = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

bool env_set(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0';
}

// systemd (Type=notify) wants canopyd in the foreground and its stderr goes to the journal.
bool under_systemd() { return env_set("NOTIFY_SOCKET") || env_set("INVOCATION_ID"); }

// Reports the start-up outcome of a detached daemon to the parent waiting in the foreground.
// Without detaching, every call is a no-op.
class StartupPipe {
 public:
  StartupPipe() = default;
  explicit StartupPipe(int fd) : fd_(fd) {}
  void ready() { send("R"); }
  void failed(int code, const std::string& message) { send(fmt::format("{}{}", code, message)); }

 private:
  void send(const std::string& s) {
    if (fd_ < 0) return;
    [[maybe_unused]] auto n = ::write(fd_, s.data(), s.size());
    ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
};

// Forks; the parent waits for the child's report and returns its exit code, the child
// becomes a session leader with stdio on /dev/null and gets the pipe's write end.
// Returns -1 in the child.
int detach(StartupPipe& pipe_out) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return -1;  // cannot detach: stay attached
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid > 0) {
    ::close(fds[1]);
    std::string msg;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fds[0], buf, sizeof buf)) > 0) msg.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    if (msg == "R") {
      std::printf("canopyd started in the background (pid %d)\n", pid);
      return kExitOk;
    }
    if (msg.empty()) {
      std::fprintf(stderr, "canopyd: the daemon exited during start-up; see its log file\n");
      return kExitFailure;
    }
    std::fprintf(stderr, "canopyd: %s\n", msg.c_str() + 1);
    return msg[0] - '0';
  }
  ::close(fds[0]);
  ::setsid();
  const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);
    ::close(null);
  }
  pipe_out = StartupPipe(fds[1]);
  return -1;
}

// The running daemon: owns the event loop, the signal handling and (later issues) every module.
class Daemon {
 public:
  Daemon(config::NucleusConfig config, Options options, RootLayout layout)
      : config_(std::move(config)), options_(std::move(options)), layout_(std::move(layout)),
        log_(log::get("nucleus")) {}

  // The cloud loop stops first (its handlers use the spool), then the spool (its last
  // completions may still post to the stopped cloud loop, which never runs them).
  ~Daemon() {
    stop_cloud_thread();
    spool_.reset();
  }

  void stop_cloud_thread() {
    cloud_work_.reset();
    cloud_io_.stop();
    if (cloud_thread_.joinable()) cloud_thread_.join();
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  /// Builds every module in order. Errors name what failed; nothing is left running.
  result<void> build() {
    // Configuration store (the runtime tree of every component's configuration).
    auto store = config::ConfigStore::open(layout_.config_dir());
    if (!store) {
      std::string msg = "configuration store: " + store.error().message;
      if (store.error().code == errc::corrupt)
        msg += ". The damaged files are kept for inspection; the next start begins with an empty configuration "
               "unless you restore one of them as store.json";
      return make_error(store.error().code, msg);
    }
    store_ = std::move(*store);
    for (const auto& w : store_->open_warnings()) log_->warn("configuration store: {}", w);
    // The file's services.<name> sections seed the tree at timestamp 1, so anything set at
    // run time (IPC, deployments) wins over them, as Greengrass does with its initial config.
    for (const auto& [name, section] : config_.other_services.items()) {
      if (!section.is_object()) continue;
      if (auto r = store_->merge({"services", name}, section, 1); !r)
        return make_error(errc::config, fmt::format("services.{}: {}", name, r.error().message));
    }

    // IPC: identities, policies, operations, the server.
    for (const auto& [name, token] : config_.ipc.static_identities)
      if (auto r = tokens_.add(ipc::Identity{ipc::Identity::Kind::component, name, std::nullopt, std::nullopt}, token); !r)
        return r;
    ctx_ = std::make_unique<ipc::ServiceContext>(router_, *store_, tokens_, authorizer_);
    ctx_->status = [this] { return status(); };
    ctx_->run_after = [this](std::chrono::milliseconds delay, std::function<void()> fn) {
      auto timer = std::make_shared<net::steady_timer>(services_, delay);
      timer->async_wait([timer, fn = std::move(fn)](const boost::system::error_code& ec) {
        if (!ec) fn();
      });
    };
    if (auto services = store_->get({"services"}); services && services->is_object())
      for (const auto& [name, unused] : services->items()) reload_policies(name);
    policy_subscription_ = store_->subscribe({"services"}, [this](const config::KeyPath& changed) {
      on_services_changed(changed);
    });
    if (auto r = build_cloud(); !r) return r;
    ipc::register_operations(operations_, *ctx_);

    ipc::ServerConfig sc;
    sc.socket_path = config_.ipc_socket_path.empty() ? layout_.ipc_socket() : config_.ipc_socket_path;
    sc.socket_group = config_.ipc.socket_group;
    sc.max_connections = config_.ipc.max_connections;
    sc.max_streams_per_connection = config_.ipc.max_streams_per_connection;
    sc.max_frame_payload_bytes = config_.ipc.max_frame_payload_bytes;
    sc.max_queued_bytes = config_.ipc.max_queued_bytes_per_connection;
    sc.slow_reader = config_.ipc.slow_reader_policy == "disconnect" ? ipc::SlowReaderPolicy::disconnect
                                                                    : ipc::SlowReaderPolicy::drop_oldest;
    sc.handshake_timeout = std::chrono::seconds(config_.ipc.handshake_timeout_seconds);
    if (auto r = ipc::write_cli_tokens(layout_.cli_ipc_info_dir(), sc.socket_path, config_.ipc.socket_group, tokens_); !r)
      return r;
    server_ = std::make_unique<ipc::Server>(io_, services_, sc, operations_, tokens_, authorizer_);
    if (auto r = server_->start(); !r) return r;
    if (auto r = build_lifecycle(sc.socket_path); !r) return r;
    return ok();
  }

  // The spool (always: messages for the cloud wait there while there is no link) and, when an
  // endpoint is configured, the device identity and the cloud link. An identity that cannot be
  // used stops the start: the operator learns it now, not at the first reconnect.
  result<void> build_cloud() {
    spool::Options so;
    so.path = layout_.spool_dir() / "spool.db";
    so.max_bytes = config_.spooler.max_size_bytes;
    so.max_messages = config_.spooler.max_messages;
    so.when_full = config_.spooler.when_full == config::WhenFull::drop_oldest      ? spool::WhenFull::drop_oldest
                   : config_.spooler.when_full == config::WhenFull::drop_qos0_first ? spool::WhenFull::drop_qos0_first
                                                                                    : spool::WhenFull::reject_new;
    so.durability = config_.spooler.durability == config::Durability::normal ? spool::Durability::normal
                                                                             : spool::Durability::full;
    so.ttl = std::chrono::seconds(config_.spooler.ttl_seconds);
    so.group_commit_messages = config_.spooler.group_commit_messages;
    so.group_commit_interval = std::chrono::milliseconds(config_.spooler.group_commit_interval_ms);
    auto sp = spool::Spool::open(so);
    if (!sp) return make_error(sp.error().code, "spool: " + sp.error().message);
    spool_ = std::move(*sp);
    const auto c = spool_->counters();
    log_->info("spool {} open: {} message(s), {} bytes waiting (durability {}, whenFull {})", so.path.string(),
               c.queued, c.bytes, spool::to_string(so.durability), spool::to_string(so.when_full));

    cloud::LinkOptions lo;
    lo.endpoint = config_.iot_data_endpoint;
    lo.port = config_.mqtt.port;
    lo.mqtt_version = config_.mqtt.version == "3.1.1" ? 4 : 5;
    lo.client_id = thing_name();
    lo.keep_alive = std::chrono::seconds(config_.mqtt.keep_alive_seconds);
    lo.connect_timeout = std::chrono::seconds(config_.mqtt.connect_timeout_seconds);
    lo.backoff_base = std::chrono::milliseconds(config_.mqtt.reconnect_base_ms);
    lo.backoff_max = std::chrono::milliseconds(config_.mqtt.reconnect_max_ms);
    lo.stable = std::chrono::seconds(config_.mqtt.reconnect_stable_seconds);
    lo.max_inflight = config_.mqtt.max_inflight;
    lo.max_publish_rate = config_.mqtt.max_publish_rate;
    lo.live_share_percent = config_.spooler.live_share_percent;
    if (!lo.endpoint.empty()) {
      trust::TlsIdentityOptions io;
      io.certificate_path = config_.certificate_file_path;
      io.private_key = config_.private_key_path.string();
      io.root_ca_path = config_.root_ca_path;
      io.tpm_tcti = config_.mqtt.tpm_tcti;
      if (config_.mqtt.alpn) io.alpn = "x-amzn-mqtt-ca";
      auto id = trust::TlsIdentity::load(io);
      if (!id) return make_error(id.error().code, "cloud identity: " + id.error().message);
      lo.identity = *id;
      const auto not_after = lo.identity->certificate_not_after();
      const auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
      if (not_after > 0 && not_after < now)
        log_->error("the device certificate {} ({}) has expired: the cloud will refuse every connection until it "
                    "is renewed; messages wait in the spool",
                    config_.certificate_file_path.string(), lo.identity->certificate_subject());
      log_->info("cloud endpoint {}:{} as {} (certificate {}, key {})", lo.endpoint, lo.port, lo.client_id,
                 lo.identity->certificate_subject(), lo.identity->key_description());
    }
    // The cloud link (TLS, its MQTT client, the drain) has a loop and a thread of its own:
    // measured, it kept canopyd's one loop thread at 95 % CPU while a backlog drained. It talks
    // to the rest only through posts and thread-safe calls (spool, IPC streams, the bridge).
    link_ = std::make_unique<cloud::Link>(cloud_io_.get_executor(), lo, *spool_);
    cloud_work_.emplace(cloud_io_.get_executor());
    cloud_thread_ = std::thread([this] {
      log::name_this_thread("cloud-link");
      cloud_io_.run();
    });
    const bool bypass0 = config_.spooler.qos0_bypass;
    auto spool_it = [this](spool::Message m, std::function<void(result<void>)> done) {
      spool_->enqueue(std::move(m), [this, done = std::move(done)](result<std::int64_t> id) {
        if (!id) {
          done(id.error());
          return;
        }
        done(ok());  // (the link gets the row from the spool's commit feed)
      });
    };
    ctx_->iot_core.publish = [this, bypass0, spool_it](spool::Message m, std::function<void(result<void>)> done) {
      if (!bypass0 || m.qos != 0) return spool_it(std::move(m), std::move(done));
      // spooler.qos0BypassSpool: QoS 0 goes straight out while connected, and into the spool
      // (never lost) while not.
      auto copy = m;
      link_->publish_direct(std::move(copy), [spool_it, m = std::move(m), done = std::move(done)](bool sent) mutable {
        if (sent) done(ok());
        else spool_it(std::move(m), std::move(done));
      });
    };
    ctx_->iot_core.subscribe = [this](const std::string& filter, int qos,
                                      std::function<void(const ipc::IotCoreMessage&)> on_message,
                                      std::function<void(const std::string&)> on_refused) -> result<std::uint64_t> {
      return link_->subscribe(
          filter, qos,
          [on_message = std::move(on_message)](const cloud::IncomingMessage& in) {
            on_message(ipc::IotCoreMessage{in.topic, in.payload, in.qos, in.retain, in.properties});
          },
          std::move(on_refused));
    };
    ctx_->iot_core.unsubscribe = [this](std::uint64_t id) { link_->unsubscribe(id); };
    ctx_->iot_core.release_held = [this](std::function<void(std::size_t)> done) {
      link_->release_held(std::move(done));
    };
    link_->start();
    return ok();
  }

  // canopy.MqttBridge: mappings from services.canopy.MqttBridge.configuration, re-read when
  // they change; the local broker's address from brokerUri or canopy.LocalBroker's localPort.
  // A bad mapping is left out and reported (log and status): the rest keeps working.
  void build_bridge() {
    const auto get = [this](const std::string& name) {
      auto j = store_->get({"services", name, "configuration"});
      return j ? *j : nlohmann::json();
    };
    auto settings = broker::read_bridge_settings(get("canopy.MqttBridge"), get("canopy.LocalBroker"));
    broker::BridgeOptions bo;
    bo.local.host = settings.local_host;
    bo.local.port = settings.local_port;
    bridge_ = std::make_unique<broker::Bridge>(services_, bo, router_, *spool_, *link_);
    bridge_->configure(std::move(settings.mappings), std::move(settings.error));
    bridge_subscription_ = store_->subscribe({"services", "canopy.MqttBridge"}, [this, get](const config::KeyPath&) {
      auto s = broker::read_bridge_settings(get("canopy.MqttBridge"), get("canopy.LocalBroker"));
      bridge_->configure(std::move(s.mappings), std::move(s.error));
    });
    net::post(services_, [this] { bridge_->start(); });
  }

  // Components: stop what a previous canopyd left running, then the lifecycle manager and the
  // deployment queue, which starts every deployed component.
  result<void> build_lifecycle(const fs::path& socket_path) {
    processes_ = std::make_unique<lifecycle::ProcessTable>(layout_.deployments_dir() / "processes.json");
    const auto cleanup = processes_->stop_leftovers(std::chrono::seconds(config_.lifecycle.stop_grace_seconds) + 1s);
    for (const auto& w : cleanup.warnings) log_->warn("leftover processes: {}", w);
    for (const auto& rec : cleanup.stopped)
      log_->warn("component={} step={} was still running from a previous canopyd (process group {}); stopped it",
                 rec.component, rec.step, rec.pgid);
    for (pid_t g : lifecycle::ProcessTable::stop_marked("CANOPYD_SUPERVISED_ROOT=" + layout_.root.string(),
                                                        std::chrono::seconds(config_.lifecycle.stop_grace_seconds) + 1s))
      log_->warn("process group {} of a previous canopyd on this root was running unrecorded; stopped it", g);
    launcher_ = std::make_unique<lifecycle::Launcher>(services_);
    build_local_broker();
    build_bridge();
    cgroups_ = std::make_unique<lifecycle::Cgroups>(lifecycle::Cgroups::detect());
    if (!cgroups_->available()) log_->info("component resource limits are not applied: {}", cgroups_->reason());

    lifecycle::ManagerSettings ms;
    ms.layout = layout_;
    ms.thing_name = thing_name();
    ms.region = config_.aws_region;
    ms.ggc_version = std::string(kVersion);
    ms.socket_path = socket_path;
    ms.root_ca_path = config_.root_ca_path;
    ms.default_posix_user = config_.run_with_default.posix_user;
    ms.log_file_bytes = config_.logging.file_size_kb * 1024;
    ms.log_files = config_.logging.max_files;
    ms.broken_after_errors = config_.lifecycle.broken_after_errors;
    ms.error_window = std::chrono::seconds(config_.lifecycle.error_reset_seconds);
    ms.backoff_initial = std::chrono::milliseconds(config_.lifecycle.backoff_initial_ms);
    ms.backoff_max = std::chrono::milliseconds(config_.lifecycle.backoff_max_ms);
    ms.stop_grace = std::chrono::seconds(config_.lifecycle.stop_grace_seconds);
    ms.cgroups = cgroups_.get();
    lifecycle::ManagerHooks mh;
    mh.issue_token = [this](const std::string& name, uid_t uid) {
      return tokens_.issue(ipc::Identity{ipc::Identity::Kind::component, name, uid, std::nullopt});
    };
    mh.revoke_token = [this](const std::string& name) { tokens_.revoke(name); };
    mh.on_state = [this](const std::string& name, lifecycle::State st) {
      if (deployer_) deployer_->on_component_state(name, st);
    };
    mh.allow_socket_group = [this, socket_path](gid_t gid) { allow_socket_group(socket_path, gid); };
    mh.on_bootstrap_restart = [this](const std::string& name, int code) {
      log_->warn("component={} Bootstrap asked for {} (exit code {}); canopyd restarts itself once the deployment "
                 "finishes{}",
                 name, code == 101 ? "a device reboot" : "a canopyd restart", code,
                 code == 101 ? " (Canopy never reboots the device; reboot it yourself if the component needs it)" : "");
      restart_requested_ = true;
      wait_for_restart();
    };
    manager_ = std::make_unique<lifecycle::Manager>(services_, ms, *store_, *launcher_, *processes_, mh);

    deploy::Settings ds;
    auto trust = load_trust_policy();
    if (!trust) return trust.error();
    ds.trust = std::move(*trust);
    if (ds.trust.require_signatures && ds.trust.signers.size() < ds.trust.threshold)
      log_->warn("deployment.requireSignatures is true but {} trusted signer(s) are configured for a "
                 "signatureThreshold of {}: every deployment will be rejected until deployment.trustedSigners lists "
                 "enough keys (make one with `canopy keygen`)",
                 ds.trust.signers.size(), ds.trust.threshold);
    if (!ds.trust.require_signatures)
      log_->warn("deployments are not signature-checked (deployment.requireSignatures is false): any recipe an "
                 "operator or component with deployment rights hands over is installed");
    else
      log_->info("deployments require {} valid signature(s) from {} trusted signer(s)", ds.trust.threshold,
                 ds.trust.signers.size());
    ds.download_ca_file = config_.deployment.download_ca_file;
    ds.max_download_bytes = config_.deployment.max_download_bytes;
    ds.store_max_bytes = config_.deployment.component_store_max_bytes;
    ds.layout = layout_;
    ds.platform = deploy::detect_platform();
    ds.default_posix_user = config_.run_with_default.posix_user;
    ds.deployment_timeout = std::chrono::seconds(config_.lifecycle.deployment_timeout_seconds);
    deploy::Hooks dh;
    dh.pre_update = [this](const std::string& id, std::chrono::seconds timeout, std::function<void(std::int64_t)> done) {
      ipc::notify_component_update(*ctx_, id, timeout, std::move(done));
    };
    dh.post_update = [this](const std::string& id) { ipc::notify_component_updated(*ctx_, id); };
    dh.validate = [this](const std::string& component, const nlohmann::json& cfg, const std::string& id,
                         std::function<void(bool, std::string)> done) {
      ipc::validate_configuration(*ctx_, component, cfg, id, std::move(done));
    };
    deployer_ = std::make_unique<deploy::Deployer>(services_, ds, *store_, *manager_, dh);
    ctx_->manager = manager_.get();
    ctx_->deployer = deployer_.get();
    ctx_->on_state_reported = [this](const std::string& name, const std::string& st) { manager_->report_state(name, st); };
    return deployer_->start();
  }

  // The local broker (built-in component canopy.LocalBroker): built after the leftovers of a
  // killed predecessor (its mosquitto included) were stopped, started on the services strand.
  // Its problems (a taken port, a bad setting) are its state, never a failed start.
  void build_local_broker() {
    broker::LocalBrokerOptions bo;
    bo.layout = layout_;
    bo.version = std::string(kVersion);
    bo.log_file_bytes = config_.logging.file_size_kb * 1024;
    bo.log_files = config_.logging.max_files;
    bo.stop_grace = std::chrono::seconds(config_.lifecycle.stop_grace_seconds);
    bo.tpm_tcti = config_.mqtt.tpm_tcti;
    local_broker_ = std::make_unique<broker::LocalBroker>(services_, bo, *store_, *launcher_, *processes_);
    ctx_->builtin_components = [this] { return std::vector<lifecycle::ComponentInfo>{local_broker_->info()}; };
    ctx_->builtin_component_action = [this](const std::string& name, const std::string& action) -> result<void> {
      if (name != broker::kComponentName) return make_error(errc::not_found, name + " is not built in");
      if (action == "RestartComponent") {
        local_broker_->restart();
        return ok();
      }
      return make_error(errc::unsupported,
                        fmt::format("{} is built into canopyd and cannot be stopped, paused or resumed on its own; "
                                    "set services.{}.configuration.enabled to false to turn it off",
                                    name, name));
    };
    ctx_->issue_client_device_certificate = [this](const std::string& name, int days) {
      return local_broker_->issue_client_certificate(name, days);
    };
    net::post(services_, [this] { local_broker_->start(); });
  }

  // deployment.* of the configuration file as a trust policy: key files read (relative to the
  // configuration file's folder), key ids computed, expiry dates parsed. Any error stops the
  // start: running with a half-read trust list would be worse than not running.
  result<trust::TrustPolicy> load_trust_policy() const {
    const auto& d = config_.deployment;
    trust::TrustPolicy p;
    p.require_signatures = d.require_signatures;
    p.threshold = d.signature_threshold;
    p.revoked_keyids = d.revoked_key_ids;
    const fs::path base = options_.config_file ? options_.config_file->parent_path() : fs::current_path();
    for (std::size_t i = 0; i < d.trusted_signers.size(); ++i) {
      const auto& t = d.trusted_signers[i];
      const std::string where = fmt::format("deployment.trustedSigners[{}]", i);
      std::string pem = t.public_key_pem;
      std::string what = where + ".publicKey";
      if (!t.public_key_path.empty()) {
        const fs::path file = t.public_key_path.is_absolute() ? t.public_key_path : base / t.public_key_path;
        auto text = read_file(file);
        if (!text) return make_error(errc::config, fmt::format("{}.publicKeyPath: {}", where, text.error().message));
        pem = std::move(*text);
        what = file.string();
      }
      auto key = trust::parse_public_key(pem, what);
      if (!key) return make_error(errc::config, fmt::format("{}: {}", where, key.error().message));
      trust::TrustedSigner signer{std::move(*key), std::nullopt, what};
      if (!t.not_after.empty()) {
        auto when = trust::parse_rfc3339(t.not_after, where + ".notAfter");
        if (!when) return make_error(errc::config, when.error().message);
        signer.not_after = *when;
      }
      p.signers.push_back(std::move(signer));
    }
    return p;
  }

  std::string thing_name() const {
    if (!config_.thing_name.empty()) return config_.thing_name;
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    return host;
  }

  // Components run as their own users, never in the operators' group (whose members can read
  // the CLI token); a POSIX ACL entry lets their group connect to the 0660 socket instead.
  void allow_socket_group(const fs::path& socket, gid_t gid) {
    if (allowed_groups_.count(gid)) return;
    acl_t acl = acl_get_file(socket.c_str(), ACL_TYPE_ACCESS);
    bool done = false;
    if (acl) {
      acl_entry_t entry;
      acl_permset_t perms;
      if (acl_create_entry(&acl, &entry) == 0 && acl_set_tag_type(entry, ACL_GROUP) == 0 &&
          acl_set_qualifier(entry, &gid) == 0 && acl_get_permset(entry, &perms) == 0 && acl_clear_perms(perms) == 0 &&
          acl_add_perm(perms, ACL_READ) == 0 && acl_add_perm(perms, ACL_WRITE) == 0 && acl_calc_mask(&acl) == 0 &&
          acl_set_file(socket.c_str(), ACL_TYPE_ACCESS, acl) == 0)
        done = true;
      acl_free(acl);
    }
    if (!done) {
      log_->error("cannot let group {} connect to the IPC socket {} (POSIX ACL: {}); components running in that group "
                  "cannot use IPC. Add their user to the socket's group or mount the file system with ACL support",
                  gid, socket.string(), std::strerror(errno));
      return;
    }
    allowed_groups_.insert(gid);
    log_->info("IPC socket {}: group {} may connect (POSIX ACL)", socket.string(), gid);
  }

  // A Bootstrap step asked for a restart: wait until no deployment runs, then stop and re-exec.
  void wait_for_restart() {
    auto t = std::make_shared<net::steady_timer>(services_, 200ms);
    t->async_wait([this, t](const boost::system::error_code& ec) {
      if (ec || stopping_) return;
      if (deployer_ && deployer_->busy()) return wait_for_restart();
      shutdown("a Bootstrap step's restart request");
    });
  }

 public:
  bool restart_requested() const { return restart_requested_; }


  int run(StartupPipe& startup) {
    started_ = std::chrono::steady_clock::now();
    signals_.async_wait([this](const boost::system::error_code& ec, int sig) { on_signal(ec, sig); });
    start_watchdog();

    log_->info("canopyd {} (git {}) ready root={} pid={} config={}", kVersion, kGitHash, layout_.root.string(),
               ::getpid(), options_.config_file ? options_.config_file->string() : std::string("(built-in defaults)"));
    sd_notifyf(0, "READY=1\nSTATUS=running\nMAINPID=%d", ::getpid());
    startup.ready();

    io_.run();
    stop_cloud_thread();
    log_->info("canopyd stopped");
    log::flush();
    return exit_code_;
  }

 private:
  void on_signal(const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      reload_logging();
      signals_.async_wait([this](const boost::system::error_code& e, int s) { on_signal(e, s); });
      return;
    }
    shutdown(sig == SIGTERM ? "SIGTERM" : "SIGINT");
  }

  // Graceful stop: tell systemd, stop every module in reverse order within the deadline,
  // then leave the loop. A second signal during shutdown is ignored (the deadline rules).
  void shutdown(const char* why) {
    if (stopping_) return;
    stopping_ = true;
    log_->info("stopping on {} (deadline {}s)", why, config_.shutdown_timeout.count());
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    watchdog_.cancel();
    signals_.cancel();
    shutdown_deadline_.expires_after(config_.shutdown_timeout);
    shutdown_deadline_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      log_->error("shutdown did not finish within {}s; exiting anyway", config_.shutdown_timeout.count());
      exit_code_ = kExitFailure;
      io_.stop();
    });
    // Stop the components in reverse dependency order (their Shutdown steps may still use
    // IPC), then stop accepting IPC and close the connections, then leave the loop once the
    // closes have run. Later issues flush the spool and close the cloud link here.
    auto finish = [this] {
      net::post(services_, [this] {
        final_.expires_after(std::chrono::milliseconds(20));
        final_.async_wait([this](const boost::system::error_code&) {
          shutdown_deadline_.cancel();
          io_.stop();
        });
      });
    };
    // After the components: no more IPC, then the cloud link (a clean DISCONNECT; what is in
    // flight stays in the spool), then everything the spool still holds in memory is committed.
    auto after_components = [this, finish] {
      log_->info("components stopped");
      // The bridge first: what the local broker sent it but it did not acknowledge stays in
      // the broker's session for the next start.
      if (bridge_) bridge_->stop();
      // The local broker goes after the components (they may publish until the end) and
      // before IPC; the rest of the sequence continues once mosquitto is gone.
      if (local_broker_ && !broker_stopped_) {
        broker_stopped_ = true;
        return local_broker_->stop([this, finish] { net::post(services_, [this, finish] { continue_shutdown(finish); }); });
      }
      continue_shutdown(finish);
    };
    if (manager_) net::post(services_, [this, after_components] { manager_->stop_all(after_components); });
    else after_components();
  }

  // The shutdown after the components and the local broker stopped.
  void continue_shutdown(const std::function<void()>& finish) {
    {
      if (server_) server_->stop();
      auto flush_spool = [this, finish] {
        if (!spool_) return finish();
        spool_->flush([this, finish](result<void> r) {
          if (!r) log_->error("spool: the last messages could not be committed at shutdown: {}", r.error().message);
          net::post(services_, finish);
        });
      };
      if (link_) link_->stop(std::chrono::milliseconds(5000), [this, flush_spool] { net::post(services_, flush_spool); });
      else flush_spool();
    }
  }

  void reload_policies(const std::string& component) {
    if (auto r = ipc::reload_policies(*ctx_, component); !r)
      log_->error("component={} has an invalid accessControl policy; all its IPC calls are denied until it is "
                  "fixed: {}",
                  component, r.error().message);
  }

  // Policies reload whenever an accessControl subtree (or anything above it) changes.
  void on_services_changed(const config::KeyPath& changed) {
    if (changed.size() < 2) {
      if (auto services = store_->get({"services"}); services && services->is_object())
        for (const auto& [name, unused] : services->items()) reload_policies(name);
      return;
    }
    const bool affects = changed.size() < 4 || changed[3] == "accessControl";
    if (affects) reload_policies(changed[1]);
  }

  nlohmann::json status() const {
    const auto& st = server_->stats();
    nlohmann::json states = nlohmann::json::object();
    for (const auto& [name, s] : ctx_->reported_states) states[name] = s.state;
    return {
        {"version", kVersion},
        {"gitHash", kGitHash},
        {"pid", ::getpid()},
        {"root", layout_.root.string()},
        {"uptimeSeconds",
         std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count()},
        {"ipc",
         {{"socket", server_->config().socket_path.string()},
          {"connections", st.connections.load()},
          {"authenticatedConnections", st.authenticated.load()},
          {"acceptedTotal", st.accepted_total.load()},
          {"refusedTotal", st.refused_total.load()},
          {"protocolErrors", st.protocol_errors.load()},
          {"operations", st.operations.load()},
          {"unauthorized", st.unauthorized.load()},
          {"eventsDropped", st.events_dropped.load()},
          {"slowReaderDisconnects", st.slow_disconnects.load()}}},
        {"pubsub",
         {{"subscriptions", router_.subscription_count()},
          {"published", router_.stats().published},
          {"deliveries", router_.stats().deliveries}}},
        {"reportedStates", states},
        {"cloud", link_ ? link_->status() : nlohmann::json(nullptr)},
        {"spool", spool_status()},
        {"broker", local_broker_ ? local_broker_->status() : nlohmann::json(nullptr)},
        {"bridge", bridge_ ? bridge_->status() : nlohmann::json(nullptr)},
        {"components", components_summary()},
    };
  }

  nlohmann::json spool_status() const {
    if (!spool_) return nullptr;
    const auto c = spool_->counters();
    const auto& o = spool_->options();
    nlohmann::json j = {{"path", o.path.string()},
                        {"queued", c.queued},
                        {"bytes", c.bytes},
                        {"maxMessages", o.max_messages},
                        {"maxBytes", o.max_bytes},
                        {"whenFull", spool::to_string(o.when_full)},
                        {"durability", spool::to_string(o.durability)},
                        {"accepted", c.accepted},
                        {"delivered", c.delivered},
                        {"dropped_full", c.dropped_full},
                        {"rejected_full", c.rejected_full},
                        {"expired", c.expired},
                        {"resent", c.resent},
                        {"duplicates_suspected", c.duplicates_suspected}};
    if (auto q = spool_->quarantined()) j["quarantined"] = q->string();
    return j;
  }

  nlohmann::json components_summary() const {
    nlohmann::json byState = nlohmann::json::object();
    std::size_t total = 0;
    if (manager_)
      for (const auto& i : manager_->list()) {
        ++total;
        const std::string st(lifecycle::to_string(i.state));
        byState[st] = byState.value(st, 0) + 1;
      }
    return {{"total", total}, {"byState", byState}, {"deploymentInProgress", deployer_ && deployer_->busy()}};
  }

  void reload_logging() {
    if (!options_.config_file) {
      log_->info("SIGHUP: no configuration file to re-read (running on built-in defaults)");
      return;
    }
    auto loaded = config::load_file(*options_.config_file);
    if (!loaded) {
      log_->error("SIGHUP: keeping the current logging settings because the configuration file is invalid:\n{}",
                  loaded.error().message);
      return;
    }
    config_.logging = loaded->config.logging;
    if (auto r = log::configure(logging_settings(config_, options_, layout_)); !r) {
      log_->error("SIGHUP: {}", r.error().message);
      return;
    }
    log_->info("SIGHUP: logging settings re-read from {} (level={})", options_.config_file->string(),
               spdlog::level::to_string_view(log_->level()));
  }

  void start_watchdog() {
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0) return;
    // Ping at half the interval from the event loop itself, so a stuck loop stops the pings.
    watchdog_interval_ = std::chrono::microseconds(usec / 2);
    log_->info("systemd watchdog enabled: pinging every {} ms",
               std::chrono::duration_cast<std::chrono::milliseconds>(watchdog_interval_).count());
    ping_watchdog();
  }

  void ping_watchdog() {
    sd_notify(0, "WATCHDOG=1");
    watchdog_.expires_after(watchdog_interval_);
    watchdog_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) ping_watchdog();
    });
  }

 public:
  static log::Settings logging_settings(const config::NucleusConfig& c, const Options& o, const RootLayout& layout) {
    log::Settings s;
    s.level = o.log_level.value_or(c.logging.level);
    s.format = c.logging.format;
    s.console = o.foreground || under_systemd();
    const fs::path dir = c.logging.output_directory.empty() ? layout.logs_dir() : c.logging.output_directory;
    s.file = dir / "canopyd.log";
    s.max_file_bytes = c.logging.file_size_kb * 1024;
    s.max_files = c.logging.max_files;
    return s;
  }

 private:
  config::NucleusConfig config_;
  Options options_;
  RootLayout layout_;
  std::shared_ptr<spdlog::logger> log_;
  net::io_context io_{1};
  // The cloud link's own loop and thread (declared before link_, so it outlives the link).
  net::io_context cloud_io_{1};
  std::optional<net::executor_work_guard<net::io_context::executor_type>> cloud_work_;
  std::thread cloud_thread_;
  // The strand of shared state: configuration store, router, tokens, policies, handlers.
  ipc::Server::Strand services_{net::make_strand(io_)};
  std::unique_ptr<config::ConfigStore> store_;
  pubsub::Router router_;
  ipc::TokenRegistry tokens_;
  ipc::Authorizer authorizer_;
  ipc::OperationTable operations_;
  std::unique_ptr<ipc::ServiceContext> ctx_;
  std::unique_ptr<spool::Spool> spool_;
  std::unique_ptr<cloud::Link> link_;
  std::unique_ptr<broker::Bridge> bridge_;
  config::SubscriptionId bridge_subscription_ = 0;
  config::SubscriptionId policy_subscription_ = 0;
  std::unique_ptr<ipc::Server> server_;
  std::unique_ptr<lifecycle::ProcessTable> processes_;
  std::unique_ptr<lifecycle::Launcher> launcher_;
  std::unique_ptr<lifecycle::Cgroups> cgroups_;
  std::unique_ptr<lifecycle::Manager> manager_;
  std::unique_ptr<deploy::Deployer> deployer_;
  // After the launcher, process table and store it uses: destroyed before them.
  std::unique_ptr<broker::LocalBroker> local_broker_;
  bool broker_stopped_ = false;
  std::set<gid_t> allowed_groups_;
  bool restart_requested_ = false;
  net::steady_timer final_{io_};
  net::signal_set signals_{io_, SIGTERM, SIGINT, SIGHUP};
  net::steady_timer watchdog_{io_};
  net::steady_timer shutdown_deadline_{io_};
  std::chrono::microseconds watchdog_interval_{0};
  std::chrono::steady_clock::time_point started_;
  bool stopping_ = false;
  int exit_code_ = kExitOk;
};

// Replaces this process with a fresh canopyd with the same command line (a Bootstrap step's
// restart request). The lock is released by exec (its descriptor is close-on-exec).
void reexec(const std::shared_ptr<spdlog::logger>& log) {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string a; std::getline(in, a, '\0');) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  log->info("restarting canopyd");
  log::flush();
  ::execv("/proc/self/exe", argv.data());
  log->error("cannot restart canopyd: {}", std::strerror(errno));
}

}  // namespace

int run(const Options& options) {
  // 1. Configuration: file (if any) over defaults, then the command line over both.
  config::NucleusConfig cfg;
  std::vector<std::string> warnings;
  if (options.config_file) {
    auto loaded = config::load_file(*options.config_file);
    if (!loaded) {
      std::fprintf(stderr, "canopyd: invalid configuration, nothing was started:\n%s\n",
                   loaded.error().message.c_str());
      return kExitConfig;
    }
    cfg = std::move(loaded->config);
    warnings = std::move(loaded->warnings);
  }
  if (options.root) cfg.root_path = fs::absolute(*options.root).lexically_normal();

  // 2. Detach unless asked not to (or systemd is the parent, which wants us in the foreground).
  StartupPipe startup;
  if (!options.foreground && !under_systemd()) {
    if (const int parent_exit = detach(startup); parent_exit >= 0) return parent_exit;
  }
  const auto fail = [&](int code, const std::string& message) {
    std::fprintf(stderr, "canopyd: %s\n", message.c_str());
    startup.failed(code, message);
    return code;
  };

  // 3. Root layout and the one-daemon-per-root lock.
  ::umask(0027);
  const RootLayout layout{cfg.root_path};
  if (auto r = create_root_layout(layout); !r) return fail(kExitFailure, r.error().message);
  auto lock = RootLock::acquire(layout);
  if (!lock) return fail(kExitFailure, lock.error().message);

  // 4. Logging.
  if (auto r = log::configure(Daemon::logging_settings(cfg, options, layout)); !r)
    return fail(kExitFailure, r.error().message);
  auto log = log::get("nucleus");
  for (const auto& w : warnings) log->warn("configuration: {}", w);

  // 5. Modules, then the loop.
  try {
    Daemon daemon(std::move(cfg), options, layout);
    if (auto r = daemon.build(); !r) {
      log->critical("canopyd cannot start: {}", r.error().message);
      log::flush();
      return fail(r.error().code == errc::config ? kExitConfig : kExitFailure, r.error().message);
    }
    const int code = daemon.run(startup);
    if (code == kExitOk && daemon.restart_requested()) reexec(log);
    return code;
  } catch (const std::exception& e) {
    log->critical("canopyd failed: {}", e.what());
    log::flush();
    return fail(kExitFailure, e.what());
  }
}

}  // namespace canopy::nucleus
