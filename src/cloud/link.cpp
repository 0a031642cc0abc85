// The cloud link (see link.hpp for the contract and why TLS is piped under Paho).
#include "canopy/cloud/link.hpp"

#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <fmt/format.h>
#include <mqtt/async_client.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "canopy/core/base64.hpp"
#include "canopy/core/log.hpp"
#include "canopy/pubsub/topic_filter.hpp"
#include "canopy/spool/spool.hpp"
#include "canopy/trust/tls_identity.hpp"

namespace canopy::cloud {

namespace net = boost::asio;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);

const char* to_string(LinkState s) {
  switch (s) {
    case LinkState::disabled: return "disabled";
    case LinkState::connecting: return "connecting";
    case LinkState::connected: return "connected";
    case LinkState::waiting: return "waiting";
    case LinkState::stopped: return "stopped";
  }
  return "unknown";
}

namespace {

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The descriptor, in this process, of the TCP connection from 127.0.0.1:peer_port to
// 127.0.0.1:local_port (its socket inode from /proc/self/net/tcp is one of our open
// descriptors), or -1 when that connection belongs to another process.
int peer_fd_in_this_process(unsigned peer_port, unsigned local_port) {
  std::ifstream in("/proc/self/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  const std::string want_local = fmt::format("0100007F:{:04X}", peer_port);
  const std::string want_remote = fmt::format("0100007F:{:04X}", local_port);
  std::string inode;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string sl, local, remote, st, queues, timer, retr, uid, timeout, ino;
    fields >> sl >> local >> remote >> st >> queues >> timer >> retr >> uid >> timeout >> ino;
    if (local == want_local && remote == want_remote) {
      inode = ino;
      break;
    }
  }
  if (inode.empty() || inode == "0") return -1;
  const std::string target = "socket:[" + inode + "]";
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  int found = -1;
  while (dirent* e = ::readdir(d)) {
    char buf[64];
    const std::string p = std::string("/proc/self/fd/") + e->d_name;
    const ssize_t n = ::readlink(p.c_str(), buf, sizeof buf - 1);
    if (n <= 0) continue;
    if (std::string_view(buf, static_cast<std::size_t>(n)) == target) {
      found = std::atoi(e->d_name);
      break;
    }
  }
  ::closedir(d);
  return found;
}

// Paho C 1.3 waits up to a second whenever a write to its socket is partial (its send thread
// sleeps until a timeout; fixed upstream only in 1.4). Large loopback buffers on both ends of
// the pipe make partial writes rare.
void enlarge_buffers(int fd) {
  const int size = 4 * 1024 * 1024;
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

// A one-shot signal a coroutine can wait for with a deadline.
class Signal {
 public:
  explicit Signal(const net::any_io_executor& ex) : timer_(ex) {}
  void fire() {
    fired_ = true;
    timer_.cancel();
  }
  bool fired() const { return fired_; }
  net::awaitable<bool> wait(Clock::duration d) {
    if (fired_) co_return true;
    timer_.expires_after(d);
    co_await timer_.async_wait(kTuple);
    co_return fired_;
  }

 private:
  net::steady_timer timer_;
  bool fired_ = false;
};

// MQTT 5 properties of an incoming message, named as IoTCoreMessage names them.
nlohmann::json properties_json(const mqtt::properties& props) {
  nlohmann::json j = nlohmann::json::object();
  try {
    if (props.contains(mqtt::property::CONTENT_TYPE))
      j["contentType"] = mqtt::get<std::string>(props, mqtt::property::CONTENT_TYPE);
    if (props.contains(mqtt::property::RESPONSE_TOPIC))
      j["responseTopic"] = mqtt::get<std::string>(props, mqtt::property::RESPONSE_TOPIC);
    if (props.contains(mqtt::property::CORRELATION_DATA)) {
      const std::string cd = mqtt::get<std::string>(props, mqtt::property::CORRELATION_DATA);
      j["correlationData"] = base64_encode(std::span(reinterpret_cast<const std::uint8_t*>(cd.data()), cd.size()));
    }
    if (props.contains(mqtt::property::PAYLOAD_FORMAT_INDICATOR))
      j["payloadFormat"] = mqtt::get<std::uint8_t>(props, mqtt::property::PAYLOAD_FORMAT_INDICATOR) ? "UTF8" : "BYTES";
    if (props.contains(mqtt::property::MESSAGE_EXPIRY_INTERVAL))
      j["messageExpiryIntervalSeconds"] = mqtt::get<std::uint32_t>(props, mqtt::property::MESSAGE_EXPIRY_INTERVAL);
    const auto n = props.count(mqtt::property::USER_PROPERTY);
    if (n > 0) {
      nlohmann::json ups = nlohmann::json::array();
      for (std::size_t i = 0; i < n; ++i) {
        auto kv = mqtt::get<mqtt::string_pair>(props, mqtt::property::USER_PROPERTY, i);
        ups.push_back({{"key", std::get<0>(kv)}, {"value", std::get<1>(kv)}});
      }
      j["userProperties"] = std::move(ups);
    }
  } catch (const std::exception&) {
    // A property of an unexpected type: deliver the message without it.
  }
  return j;
}

// The spool's JSON properties (as PublishToIoTCore gave them) as MQTT 5 properties.
mqtt::properties to_mqtt_properties(const std::string& json_text, std::uint32_t expiry_left) {
  mqtt::properties props;
  if (expiry_left > 0) props.add({mqtt::property::MESSAGE_EXPIRY_INTERVAL, static_cast<int32_t>(expiry_left)});
  if (json_text.empty()) return props;
  const auto j = nlohmann::json::parse(json_text, nullptr, false);
  if (!j.is_object()) return props;
  try {
    if (auto it = j.find("contentType"); it != j.end() && it->is_string())
      props.add({mqtt::property::CONTENT_TYPE, it->get<std::string>()});
    if (auto it = j.find("responseTopic"); it != j.end() && it->is_string())
      props.add({mqtt::property::RESPONSE_TOPIC, it->get<std::string>()});
    if (auto it = j.find("correlationData"); it != j.end() && it->is_string()) {
      auto raw = base64_decode(it->get<std::string>());
      if (raw) props.add({mqtt::property::CORRELATION_DATA, std::string(raw->begin(), raw->end())});
    }
    if (auto it = j.find("payloadFormat"); it != j.end() && it->is_string())
      props.add({mqtt::property::PAYLOAD_FORMAT_INDICATOR, static_cast<std::uint8_t>(*it == "UTF8" ? 1 : 0)});
    if (auto it = j.find("userProperties"); it != j.end() && it->is_array())
      for (const auto& kv : *it)
        if (kv.is_object() && kv.contains("key") && kv.contains("value") && kv["key"].is_string() &&
            kv["value"].is_string())
          props.add({mqtt::property::USER_PROPERTY, kv["key"].get<std::string>(), kv["value"].get<std::string>()});
  } catch (const std::exception&) {
    // Properties were validated when the message was accepted; skip anything odd.
  }
  return props;
}

// Paho's action listener: forwards to a function (which only posts to the strand).
class Listener final : public mqtt::iaction_listener {
 public:
  using Fn = std::function<void(bool ok, const mqtt::token& tok)>;
  explicit Listener(Fn fn) : fn_(std::move(fn)) {}
  void on_success(const mqtt::token& tok) override { fn_(true, tok); }
  void on_failure(const mqtt::token& tok) override { fn_(false, tok); }

 private:
  Fn fn_;
};

std::string reason_text(const mqtt::token& tok) {
  const int rc = tok.get_return_code();
  const auto reason = tok.get_reason_code();
  if (reason != mqtt::ReasonCode::SUCCESS)
    return fmt::format("{} (reason code {:#04x})", mqtt::exception::reason_code_str(static_cast<int>(reason)),
                       static_cast<int>(reason));
  if (rc != 0) return fmt::format("{} (return code {})", mqtt::exception::error_str(rc), rc);
  return "no reason given";
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct Subscription {
  std::string filter;
  int qos = 0;
  bool no_local = false;
  Link::MessageHandler on_message;
  Link::RefusedHandler on_refused;
};

// One connection attempt: the TLS stream, the loopback socket Paho uses, and the Paho client.
struct Connection {
  explicit Connection(const net::any_io_executor& ex, net::ssl::context& ctx)
      : tls(ex, ctx), plain(ex), connack(ex), down(ex) {}
  std::uint64_t gen = 0;
  beast::ssl_stream<beast::tcp_stream> tls;
  tcp::socket plain;
  std::unique_ptr<mqtt::async_client> paho;
  std::unique_ptr<Listener> connect_listener;
  std::unique_ptr<Listener> publish_listener;
  std::unique_ptr<Listener> subscribe_listener;
  std::unique_ptr<Listener> disconnect_listener;
  Signal connack;  // fired with connected_ok set
  Signal down;     // fired when the connection is gone
  bool connected_ok = false;
  std::string failure;  // why it went down / failed, for the operator
  int pipes = 0;
};

struct Link::Impl : std::enable_shared_from_this<Impl> {
  Impl(net::any_io_executor ex, LinkOptions o, spool::Spool& s)
      : strand(net::make_strand(ex)), options(std::move(o)), spool(s), acceptor(strand), backoff_timer(strand),
        rate_timer(strand), log(log::get("cloud")), rng(std::random_device{}()) {}

  net::strand<net::any_io_executor> strand;
  LinkOptions options;
  spool::Spool& spool;
  std::unique_ptr<net::ssl::context> ssl_ctx;
  tcp::acceptor acceptor;
  unsigned shim_port = 0;
  net::steady_timer backoff_timer;
  net::steady_timer rate_timer;
  std::shared_ptr<spdlog::logger> log;
  std::mt19937_64 rng;

  bool stopping = false;
  std::function<void()> stop_done;
  std::shared_ptr<Connection> conn;  // the current attempt, if any
  std::uint64_t gen = 0;

  // Uplink.
  // Uplink. Rows are fetched ahead (so a PUBACK never waits for the database before the next
  // send) into two lanes and handed to Paho while fewer than `window` are unacknowledged:
  // - the backlog lane walks the whole spool in id order (with live_share 0, the only lane);
  // - the live lane, when the spool held a backlog at connect, walks only rows newer than that
  //   backlog, and sends a row only if its topic has nothing older left to send (per-topic FIFO
  //   holds). A topic whose live row had to wait is left to the backlog lane ("deferred") for
  //   the rest of the connection. The lanes share the window by live_share_percent and merge
  //   once the backlog lane reaches the live lane.
  struct Lane {
    std::int64_t cursor = 0;  // last spool id fetched
    std::deque<spool::StoredMessage> ready;
    bool fetching = false;
    bool drained = false;  // the last fetch came back short: wait for wake()
    bool woken = false;    // wake() arrived during a fetch
    std::uint64_t sends = 0;
    void reset() { *this = Lane{}; }
  };
  Lane backlog, live;
  bool live_active = false;
  std::int64_t backlog_end = 0;        // newest id of the backlog at connect
  bool backlog_blocked = false;        // the backlog lane waits for the live lane to look further
  std::int64_t backlog_sent_upto = 0;  // newest id the backlog lane handed to Paho
  std::map<std::string, std::int64_t> backlog_last;  // topic -> newest id of the backlog at connect
  std::set<std::string> deferred;      // topics the live lane leaves to the backlog lane
  std::set<std::int64_t> sent_live;    // ids the live lane sent, for the backlog lane to skip
  std::set<std::int64_t> inflight;     // ids awaiting their PUBACK
  std::vector<std::int64_t> to_ack;    // delivered, not yet passed to spool.ack
  std::size_t window = 1;              // in-flight limit of this connection
  double tokens = 0;
  Clock::time_point tokens_at = Clock::now();
  bool rate_armed = false;

  // Downlink.
  std::map<std::uint64_t, Subscription> subs;
  std::atomic<std::uint64_t> next_sub{1};

  // Status, read from any thread.
  mutable std::mutex status_mutex;
  LinkState state_value = LinkState::disabled;
  std::string last_error;
  std::int64_t state_since_ms = unix_ms();
  std::int64_t connected_since_ms = 0;
  std::uint64_t connects = 0;
  std::uint64_t disconnects = 0;
  std::size_t inflight_count = 0;
  std::size_t inflight_limit = 0;
  std::uint64_t backlog_sends = 0;
  std::uint64_t live_sends = 0;
  std::int64_t next_attempt_ms = 0;

  void set_state(LinkState s, const std::string& error = {}) {
    std::lock_guard lock(status_mutex);
    if (s != state_value) state_since_ms = unix_ms();
    state_value = s;
    if (!error.empty()) last_error = error;
  }

  // ------------------------------------------------------------------------------ connecting

  net::awaitable<void> run() {
    auto self = shared_from_this();
    std::uint32_t failures = 0;
    while (!stopping) {
      set_state(LinkState::connecting);
      const auto started = Clock::now();
      co_await attempt();
      if (stopping) break;
      const bool was_stable = conn && conn->connected_ok && Clock::now() - started >= options.stable;
      if (was_stable) failures = 0;
      const std::string why = conn ? conn->failure : std::string("unknown");
      teardown();
      // Full jitter: uniform in [0, min(cap, base * 2^failures)].
      const auto cap = std::min<std::int64_t>(options.backoff_max.count(),
                                              options.backoff_base.count() << std::min<std::uint32_t>(failures, 20));
      ++failures;
      std::uniform_int_distribution<std::int64_t> dist(0, std::max<std::int64_t>(cap, 0));
      const auto delay = std::chrono::milliseconds(dist(rng));
      {
        std::lock_guard lock(status_mutex);
        next_attempt_ms = unix_ms() + delay.count();
      }
      set_state(LinkState::waiting, why);
      log->info("endpoint={}:{} next connection attempt in {} ms (attempt {} since the last stable connection)",
                options.endpoint, options.port, delay.count(), failures);
      backoff_timer.expires_after(delay);
      co_await backoff_timer.async_wait(kTuple);
    }
    teardown();
    set_state(LinkState::stopped);
    if (stop_done) std::exchange(stop_done, nullptr)();
  }

  void fail_attempt(const std::shared_ptr<Connection>& c, std::string why) {
    if (c->failure.empty()) c->failure = std::move(why);
  }

  // A readable sentence for a failed TLS handshake.
  std::string handshake_failure(const error_code& ec, SSL* ssl) {
    const long verify = SSL_get_verify_result(ssl);
    const std::string where = fmt::format("{}:{}", options.endpoint, options.port);
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
      return fmt::format("TLS to {} failed: the server's certificate is not for the host name {} (check "
                         "iotDataEndpoint)",
                         where, options.endpoint);
    if (verify != X509_V_OK)
      return fmt::format("TLS to {} failed: the server's certificate is not trusted: {} (check system.rootCaPath)",
                         where, X509_verify_cert_error_string(verify));
    if (ec == beast::error::timeout) return fmt::format("TLS to {} failed: the handshake timed out", where);
    std::string detail = ec.message();
    if (ec.category() == net::error::get_ssl_category()) {
      const std::string queue = trust::last_tls_error("");
      if (!queue.empty()) detail = queue;
    }
    if (detail.find("protocol version") != std::string::npos || detail.find("unsupported protocol") != std::string::npos)
      return fmt::format("TLS to {} failed: the server does not offer TLS 1.2 or later ({})", where, detail);
    return fmt::format("TLS to {} failed: {}", where, detail);
  }

  net::awaitable<void> attempt() {
    auto self = shared_from_this();
    auto c = std::make_shared<Connection>(strand, *ssl_ctx);
    c->gen = ++gen;
    conn = c;
    const auto deadline = Clock::now() + options.connect_timeout;
    const std::string where = fmt::format("{}:{}", options.endpoint, options.port);

    // 1. TCP and TLS, with the identity's context.
    tcp::resolver resolver(strand);
    auto [rec, endpoints] = co_await resolver.async_resolve(options.endpoint, std::to_string(options.port), kTuple);
    if (rec) {
      fail_attempt(c, fmt::format("cannot resolve the cloud endpoint {}: {}", options.endpoint, rec.message()));
      co_return;
    }
    SSL* ssl = c->tls.native_handle();
    if (!is_ip_literal(options.endpoint))
      SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(options.endpoint.c_str()));
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if ((is_ip_literal(options.endpoint) ? X509_VERIFY_PARAM_set1_ip_asc(param, options.endpoint.c_str())
                                         : X509_VERIFY_PARAM_set1_host(param, options.endpoint.c_str(), 0)) != 1) {
      fail_attempt(c, "cannot set the host name to verify: " + options.endpoint);
      co_return;
    }
    beast::get_lowest_layer(c->tls).expires_at(deadline);
    auto [cec, ep] = co_await beast::get_lowest_layer(c->tls).async_connect(endpoints, kTuple);
    if (cec) {
      fail_attempt(c, cec == beast::error::timeout ? fmt::format("connecting to {} timed out", where)
                                                   : fmt::format("cannot connect to {}: {}", where, cec.message()));
      co_return;
    }
    beast::get_lowest_layer(c->tls).socket().set_option(tcp::no_delay(true));
    const auto tls_started = Clock::now();
    ERR_clear_error();
    auto [hec] = co_await c->tls.async_handshake(net::ssl::stream_base::client, kTuple);
    if (hec) {
      fail_attempt(c, handshake_failure(hec, ssl));
      co_return;
    }
    beast::get_lowest_layer(c->tls).expires_never();
    const auto tls_ms = std::chrono::duration<double, std::milli>(Clock::now() - tls_started).count();
    log->debug("endpoint={} TLS {} established in {:.1f} ms ({})", where, SSL_get_version(ssl), tls_ms,
               options.identity->key_description());

    // 2. Paho, connecting to our loopback port.
    mqtt::create_options create(options.mqtt_version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1);
    try {
      c->paho = std::make_unique<mqtt::async_client>(fmt::format("tcp://127.0.0.1:{}", shim_port), options.client_id,
                                                     create, nullptr);
    } catch (const std::exception& e) {
      fail_attempt(c, std::string("cannot create the MQTT client: ") + e.what());
      co_return;
    }
    std::weak_ptr<Impl> weak = self;
    const std::uint64_t g = c->gen;
    auto on_strand = [weak](auto fn) {
      if (auto s = weak.lock()) net::post(s->strand, [s, fn = std::move(fn)]() mutable { fn(*s); });
    };
    c->paho->set_connection_lost_handler([on_strand, g](const std::string& cause) {
      on_strand([g, cause](Impl& s) { s.connection_gone(g, cause.empty() ? "the connection was lost" : cause); });
    });
    c->paho->set_disconnected_handler([on_strand, g](const mqtt::properties&, mqtt::ReasonCode rc) {
      on_strand([g, rc](Impl& s) {
        std::string why = fmt::format("the cloud closed the connection: {} (reason code {:#04x})",
                                      mqtt::exception::reason_code_str(static_cast<int>(rc)), static_cast<int>(rc));
        if (rc == mqtt::ReasonCode::SESSION_TAKEN_OVER)
          why = fmt::format("another client connected with the client id {} and took the session over; check that "
                            "no other device uses this thing name",
                            s.options.client_id);
        s.connection_gone(g, why);
      });
    });
    c->paho->set_message_callback([on_strand, g](mqtt::const_message_ptr msg) {
      IncomingMessage m;
      m.topic = msg->get_topic();
      m.payload = msg->get_payload_str();
      m.qos = msg->get_qos();
      m.retain = msg->is_retained();
      m.properties = properties_json(msg->get_properties());
      on_strand([g, m = std::move(m)](Impl& s) { s.deliver(g, m); });
    });
    c->connect_listener = std::make_unique<Listener>([on_strand, g](bool ok, const mqtt::token& tok) {
      std::string why = ok ? std::string() : reason_text(tok);
      // MQTT 5: the broker's Receive Maximum caps unacknowledged publishes (Mosquitto: 20,
      // AWS IoT Core: 100). Paho obeys it and stalls for a second whenever more are queued.
      std::size_t receive_maximum = 0;
      if (ok) {
        try {
          const auto rsp = tok.get_connect_response();  // by value: keep it while reading its properties
          const auto& props = rsp.get_properties();
          if (props.contains(mqtt::property::RECEIVE_MAXIMUM))
            receive_maximum = mqtt::get<std::uint16_t>(props, mqtt::property::RECEIVE_MAXIMUM);
        } catch (const std::exception&) {
        }
      }
      on_strand([g, ok, why, receive_maximum](Impl& s) { s.connect_result(g, ok, why, receive_maximum); });
    });
    // Delivery results are queued and handled in batches: one wake-up of the link's thread per
    // batch instead of per message (thread hand-offs, not TLS, limited the drain).
    c->publish_listener = std::make_unique<Listener>([weak, g](bool ok, const mqtt::token& tok) {
      const auto id = static_cast<std::int64_t>(reinterpret_cast<std::intptr_t>(tok.get_user_context()));
      auto s = weak.lock();
      if (!s) return;
      bool first = false;
      {
        std::lock_guard lock(s->results_mutex);
        first = s->results.empty();
        s->results.push_back({g, id, ok, ok ? std::string() : reason_text(tok)});
      }
      if (first) net::post(s->strand, [s] { s->drain_results(); });
    });
    c->subscribe_listener = std::make_unique<Listener>([on_strand, g](bool ok, const mqtt::token& tok) {
      if (ok) return;
      std::string filter = tok.get_topics() && !tok.get_topics()->empty() ? (*tok.get_topics())[0] : std::string();
      std::string why = reason_text(tok);
      on_strand([g, filter, why](Impl& s) { s.subscribe_refused(g, filter, why); });
    });

    auto opts = mqtt::connect_options_builder()
                    .keep_alive_interval(options.keep_alive)
                    .connect_timeout(options.connect_timeout)
                    .automatic_reconnect(false)
                    .finalize();
    opts.set_mqtt_version(options.mqtt_version == 5 ? MQTTVERSION_5 : MQTTVERSION_3_1_1);
    // A clean session: the spool, not the broker, holds what is still to be delivered, and every
    // cloud subscription is made again after each connect.
    if (options.mqtt_version == 5)
      opts.set_clean_start(true);
    else
      opts.set_clean_session(true);
    opts.set_max_inflight(static_cast<int>(std::max<std::size_t>(options.max_inflight, 1) + 10));
    try {
      c->paho->connect(opts, nullptr, *c->connect_listener);
    } catch (const std::exception& e) {
      fail_attempt(c, std::string("the MQTT client could not start connecting: ") + e.what());
      co_return;
    }

    // 3. Take Paho's connection on the loopback port (ours only) and pipe it into TLS.
    net::steady_timer accept_deadline(strand);
    accept_deadline.expires_at(deadline);
    accept_deadline.async_wait([this](error_code ec) {
      if (!ec) acceptor.cancel();
    });
    for (;;) {
      auto [aec, sock] = co_await acceptor.async_accept(kTuple);
      if (aec) {
        fail_attempt(c, fmt::format("the MQTT client did not connect within {} s",
                                    options.connect_timeout.count()));
        co_return;
      }
      error_code pe;
      const auto peer = sock.remote_endpoint(pe);
      const int paho_fd = pe ? -1 : peer_fd_in_this_process(peer.port(), shim_port);
      if (paho_fd >= 0) {
        enlarge_buffers(paho_fd);
        enlarge_buffers(sock.native_handle());
        c->plain = std::move(sock);
        break;
      }
      log->warn("a process other than canopyd connected to the cloud link's internal port 127.0.0.1:{}; "
                "connection closed",
                shim_port);
    }
    accept_deadline.cancel();
    c->plain.set_option(tcp::no_delay(true));
    net::co_spawn(strand, pipe_tls_to_plain(c), net::detached);
    net::co_spawn(strand, pipe_plain_to_tls(c), net::detached);

    // 4. CONNACK.
    const bool answered = co_await c->connack.wait(deadline - Clock::now());
    if (!answered || !c->connected_ok) {
      if (!answered) fail_attempt(c, fmt::format("no CONNACK from {} within {} s", where, options.connect_timeout.count()));
      co_return;
    }
    const auto connected_at = Clock::now();
    {
      std::lock_guard lock(status_mutex);
      ++connects;
      connected_since_ms = unix_ms();
      last_error.clear();
    }
    set_state(LinkState::connected);
    log->info("endpoint={} connected as {} (MQTT {}, {}, key: {})", where, options.client_id,
              options.mqtt_version == 5 ? "5" : "3.1.1", SSL_get_version(ssl), options.identity->key_description());
    on_connected(c);

    // 5. Until it goes down (also when stopping: stop() lets the DISCONNECT go out first).
    while (!c->down.fired()) co_await c->down.wait(std::chrono::hours(24));
    {
      std::lock_guard lock(status_mutex);
      ++disconnects;
    }
    log->warn("endpoint={} disconnected after {} s: {}; {} message(s) in flight stay in the spool", where,
              std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - connected_at).count(),
              c->failure.empty() ? "stopping" : c->failure, inflight.size());
  }

  net::awaitable<void> pipe_tls_to_plain(std::shared_ptr<Connection> c) {
    ++c->pipes;
    std::vector<char> buf(16 * 1024);
    for (;;) {
      auto [ec, n] = co_await c->tls.async_read_some(net::buffer(buf), kTuple);
      if (ec) {
        std::string why = "the cloud closed the connection";
        if (ec.category() == net::error::get_ssl_category()) {
          const std::string q = trust::last_tls_error("");
          std::string detail = q.empty() ? ec.message() : q;
          if (detail.find("alert") != std::string::npos)
            why = fmt::format("the cloud ended the TLS session: {} (if this follows the connect, the cloud refused "
                              "the device certificate {})",
                              detail, options.identity->certificate_subject());
          else
            why = "TLS error: " + detail;
        } else if (ec != net::error::eof && ec != net::error::operation_aborted) {
          why = "the connection to the cloud failed: " + ec.message();
        }
        if (ec != net::error::operation_aborted) fail_attempt(c, why);
        break;
      }
      auto [wec, w] = co_await net::async_write(c->plain, net::buffer(buf.data(), n), kTuple);
      if (wec) break;
    }
    close_connection(c);
    --c->pipes;
  }

  net::awaitable<void> pipe_plain_to_tls(std::shared_ptr<Connection> c) {
    ++c->pipes;
    std::vector<char> buf(16 * 1024);
    for (;;) {
      auto [ec, n] = co_await c->plain.async_read_some(net::buffer(buf), kTuple);
      if (ec) break;
      auto [wec, w] = co_await net::async_write(c->tls, net::buffer(buf.data(), n), kTuple);
      if (wec) {
        fail_attempt(c, "writing to the cloud failed: " + wec.message());
        break;
      }
    }
    close_connection(c);
    --c->pipes;
  }

  void close_connection(const std::shared_ptr<Connection>& c) {
    error_code ignored;
    c->plain.close(ignored);
    beast::get_lowest_layer(c->tls).socket().close(ignored);
    if (!c->connack.fired()) c->connack.fire();
    c->down.fire();
  }

  void connection_gone(std::uint64_t g, const std::string& why) {
    if (!conn || conn->gen != g) return;
    fail_attempt(conn, why);
    close_connection(conn);
  }

  void connect_result(std::uint64_t g, bool ok, const std::string& why, std::size_t receive_maximum) {
    if (!conn || conn->gen != g) return;
    if (ok) {
      // One below the broker's limit: Paho calls the delivery callback before it frees the
      // slot, so a publish made from that callback could find Paho's window still full, and
      // Paho C 1.3 then sleeps a second before it looks again.
      window = std::max<std::size_t>(options.max_inflight, 1);
      if (receive_maximum > 0 && receive_maximum - 1 < window) {
        window = std::max<std::size_t>(receive_maximum - 1, 1);
        log->info("the cloud accepts at most {} unacknowledged publishes (Receive Maximum); {} are kept in flight on "
                  "this connection (mqtt.maxInflight is {})",
                  receive_maximum, window, options.max_inflight);
      }
      {
        std::lock_guard lock(status_mutex);
        inflight_limit = window;
      }
      conn->connected_ok = true;
      conn->connack.fire();
      return;
    }
    fail_attempt(conn, fmt::format("the cloud refused the MQTT connection as {}: {}", options.client_id, why));
    close_connection(conn);
  }

  void teardown() {
    if (!conn) return;
    auto c = conn;
    close_connection(c);
    if (c->paho) {
      try {
        if (c->paho->is_connected()) c->paho->disconnect(0);
      } catch (const std::exception&) {
      }
    }
    // Paho's client is destroyed off its own callback thread, here on the strand.
    c->paho.reset();
    reset_uplink();
    {
      std::lock_guard lock(status_mutex);
      inflight_count = 0;
      connected_since_ms = 0;
    }
    if (!to_ack.empty()) spool.ack(std::exchange(to_ack, {}));
  }

  // ------------------------------------------------------------------------------ uplink

  void reset_uplink() {
    backlog.reset();
    live.reset();
    live_active = false;
    backlog_end = 0;
    backlog_blocked = false;
    backlog_sent_upto = 0;
    backlog_last.clear();
    deferred.clear();
    sent_live.clear();
    inflight.clear();
  }

  void on_connected(const std::shared_ptr<Connection>& c) {
    reset_uplink();
    if (options.live_share_percent > 0) {
      // What is stored now is the backlog; anything newer may take the live lane. The backlog
      // lane waits for the answer, so that it does not run past the backlog's end meanwhile.
      backlog_blocked = true;
      const std::uint64_t g = c->gen;
      std::weak_ptr<Impl> weak = shared_from_this();
      spool.snapshot([weak, g](result<spool::BacklogSnapshot> snap) {
        if (auto s = weak.lock())
          net::post(s->strand, [s, g, snap = std::move(snap)]() mutable { s->backlog_known(g, std::move(snap)); });
      });
    }
    tokens = options.max_publish_rate > 0 ? std::min(options.max_publish_rate, 10.0) : 0;
    tokens_at = Clock::now();
    // The cloud subscriptions, once per filter with the highest QoS asked for.
    std::set<std::string> filters;
    for (const auto& [id, s] : subs) filters.insert(s.filter);
    for (const auto& f : filters) cloud_subscribe(c, f);
    pump();
  }

  // Subscribes `filter` with the highest QoS its subscribers ask for, and No Local only if all
  // of them want it.
  void cloud_subscribe(const std::shared_ptr<Connection>& c, const std::string& filter) {
    int qos = 0;
    bool no_local = true;
    for (const auto& [id, s] : subs)
      if (s.filter == filter) {
        qos = std::max(qos, s.qos);
        no_local = no_local && s.no_local;
      }
    try {
      if (options.mqtt_version == 5)
        c->paho->subscribe(filter, qos, nullptr, *c->subscribe_listener, mqtt::subscribe_options(no_local));
      else
        c->paho->subscribe(filter, qos, nullptr, *c->subscribe_listener);
    } catch (const std::exception& e) {
      log->warn("topic={} cannot subscribe in the cloud now: {}; retried after the next connect", filter, e.what());
    }
  }

  bool connected() const { return conn && conn->connected_ok && !conn->down.fired() && conn->paho; }

  static constexpr std::size_t kPrefetch = 1000;

  void backlog_known(std::uint64_t g, result<spool::BacklogSnapshot> snap) {
    if (!conn || conn->gen != g || !connected()) return;
    backlog_blocked = false;
    if (!snap || snap->last_id == 0) {
      if (!snap) log->warn("cannot read the spool's backlog ({}); draining strictly in order", snap.error().message);
      return pump();
    }
    backlog_last = std::move(snap->last_id_by_topic);
    backlog_end = snap->last_id;
    live.cursor = snap->last_id;
    live_active = true;
    log->info("draining a backlog of {} topic(s) up to id {}; newer messages on other topics are interleaved "
              "({}% of the window)",
              backlog_last.size(), snap->last_id, options.live_share_percent);
    pump();
  }

  // Once the backlog lane has sent everything up to the live lane's position, and the live lane
  // holds nothing unsent, there is no backlog left: one lane again, in id order.
  void maybe_merge() {
    if (!live_active || backlog.cursor < live.cursor || !backlog.ready.empty() || !live.ready.empty() ||
        live.fetching || backlog.fetching)
      return;
    live_active = false;
    backlog_blocked = false;
    log->info("the backlog is drained ({} sent in order, {} interleaved); sending in order again", backlog.sends,
              live.sends);
  }

  void pump() {
    if (!connected() || stopping) return;
    send_ready();
    maybe_merge();
    if (!backlog_blocked) maybe_fetch(backlog, false);
    if (live_active) maybe_fetch(live, true);
  }

  void maybe_fetch(Lane& lane, bool is_live) {
    if (lane.fetching || lane.drained || lane.ready.size() >= kPrefetch / 2) return;
    lane.fetching = true;
    const std::uint64_t g = conn->gen;
    const std::size_t want = kPrefetch - lane.ready.size();
    std::weak_ptr<Impl> weak = shared_from_this();
    spool.fetch(lane.cursor, want, [weak, g, want, is_live](result<std::vector<spool::StoredMessage>> rows) {
      if (auto s = weak.lock())
        net::post(s->strand, [s, g, want, is_live, rows = std::move(rows)]() mutable {
          s->fetched(g, is_live, want, std::move(rows));
        });
    });
  }

  bool live_eligible(const std::string& topic) const {
    if (deferred.count(topic)) return false;
    const auto it = backlog_last.find(topic);
    return it == backlog_last.end() || it->second <= backlog_sent_upto;
  }

  // Hands rows from the lanes to Paho within the in-flight window and the publish rate.
  void send_ready() {
    if (inflight.size() >= window) return;
    if (options.max_publish_rate > 0) {
      const auto now = Clock::now();
      tokens = std::min(options.max_publish_rate,
                        tokens + std::chrono::duration<double>(now - tokens_at).count() * options.max_publish_rate);
      tokens_at = now;
    }
    std::vector<std::int64_t> sent;
    const auto now_ms = unix_ms();
    while (inflight.size() < window) {
      const bool b = !backlog.ready.empty();
      const bool l = live_active && !live.ready.empty();
      Lane* lane = nullptr;
      if (b && l)
        lane = live.sends * 100 <= options.live_share_percent * (live.sends + backlog.sends) ? &live : &backlog;
      else if (b)
        lane = &backlog;
      else if (l)
        lane = &live;
      if (lane == nullptr) break;
      if (options.max_publish_rate > 0 && tokens < 1) {
        if (!rate_armed) {
          rate_armed = true;
          rate_timer.expires_after(std::chrono::duration_cast<Clock::duration>(
              std::chrono::duration<double>((1 - tokens) / options.max_publish_rate)));
          rate_timer.async_wait([self = shared_from_this()](error_code) {
            self->rate_armed = false;
            self->pump();
          });
        }
        break;
      }
      auto& row = lane->ready.front();
      auto& m = row.message;
      auto msg = mqtt::make_message(m.topic, m.payload, m.qos, m.retain);
      if (options.mqtt_version == 5) {
        std::uint32_t left = 0;
        if (row.expires_unix_ms > 0)
          left = static_cast<std::uint32_t>(std::max<std::int64_t>(1, (row.expires_unix_ms - now_ms + 999) / 1000));
        auto props = to_mqtt_properties(m.properties_json, left);
        if (!props.empty()) msg->set_properties(std::move(props));
      }
      try {
        conn->paho->publish(msg, reinterpret_cast<void*>(static_cast<std::intptr_t>(row.id)), *conn->publish_listener);
      } catch (const std::exception& e) {
        log->warn("topic={} id={} not sent now: {}; it stays in the spool", m.topic, row.id, e.what());
        break;
      }
      inflight.insert(row.id);
      sent.push_back(row.id);
      ++lane->sends;
      if (lane == &backlog) backlog_sent_upto = row.id;
      else sent_live.insert(row.id);
      lane->ready.pop_front();
      if (options.max_publish_rate > 0) tokens -= 1;
    }
    {
      std::lock_guard lock(status_mutex);
      inflight_count = inflight.size();
      backlog_sends = backlog.sends;
      live_sends = live.sends;
    }
    if (!sent.empty()) spool.mark_sent(std::move(sent));
  }

  void fetched(std::uint64_t g, bool is_live, std::size_t asked, result<std::vector<spool::StoredMessage>> rows) {
    if (!conn || conn->gen != g) return;
    Lane& lane = is_live ? live : backlog;
    lane.fetching = false;
    if (!rows) {
      log->error("cannot read the spool: {}; retrying in 1 s", rows.error().message);
      rate_timer.expires_after(std::chrono::seconds(1));
      rate_timer.async_wait([self = shared_from_this()](error_code) { self->pump(); });
      return;
    }
    if (!connected()) return;
    if (rows->size() < asked) lane.drained = !lane.woken;
    lane.woken = false;
    if (is_live && !rows->empty()) backlog_blocked = false;  // the live lane looked further
    for (auto& row : *rows) {
      if (is_live) {
        lane.cursor = row.id;
        if (!live_active) continue;
        if (live_eligible(row.message.topic)) live.ready.push_back(std::move(row));
        else deferred.insert(row.message.topic);
        continue;
      }
      if (!live_active || row.id <= backlog_end) {
        lane.cursor = row.id;
        backlog.ready.push_back(std::move(row));
        continue;
      }
      // Past the backlog: the live lane has the say. Rows it has not looked at yet wait; of those
      // it has, the backlog lane takes only the deferred topics' rows (in order).
      if (row.id > live.cursor) {
        lane.drained = false;
        backlog_blocked = true;
        break;
      }
      lane.cursor = row.id;
      if (deferred.count(row.message.topic)) backlog.ready.push_back(std::move(row));
    }
    pump();
  }

  struct PublishResult {
    std::uint64_t gen = 0;
    std::int64_t id = 0;
    bool ok = false;
    std::string why;
  };
  std::mutex results_mutex;
  std::vector<PublishResult> results;  // from Paho's thread, handled on the strand in batches

  void drain_results() {
    std::vector<PublishResult> batch;
    {
      std::lock_guard lock(results_mutex);
      batch.swap(results);
    }
    for (const auto& r : batch) publish_result(r.gen, r.id, r.ok, r.why);
    {
      std::lock_guard lock(status_mutex);
      inflight_count = inflight.size();
    }
    pump();
  }

  void publish_result(std::uint64_t g, std::int64_t id, bool ok, const std::string& why) {
    if (!conn || conn->gen != g) return;  // an old connection: the row is sent again anyway
    if (id == 0) return;                  // publish_direct: nothing to delete
    if (inflight.erase(id) == 0) return;
    if (ok) {
      to_ack.push_back(id);
      if (to_ack.size() >= 64 || inflight.empty()) spool.ack(std::exchange(to_ack, {}));
    } else if (connected()) {
      // The cloud refused this one message (e.g. not authorized for the topic). It stays in the
      // spool and is tried again after the next reconnect; the drain goes on with the others.
      log->warn("id={} the cloud refused a message: {}; it stays in the spool", id, why);
    }
  }

  // ------------------------------------------------------------------------------ downlink

  void deliver(std::uint64_t g, const IncomingMessage& m) {
    if (!conn || conn->gen != g) return;
    for (const auto& [id, s] : subs)
      if (pubsub::matches(s.filter, m.topic) && s.on_message) s.on_message(m);
  }

  void subscribe_refused(std::uint64_t g, const std::string& filter, const std::string& why) {
    if (!conn || conn->gen != g) return;
    const std::string sentence = fmt::format("the cloud refused the subscription to {}: {}", filter, why);
    log->warn("topic={} {}", filter, sentence);
    std::vector<std::uint64_t> refused;
    for (const auto& [id, s] : subs)
      if (s.filter == filter) refused.push_back(id);
    for (auto id : refused) {
      auto node = subs.extract(id);
      if (node && node.mapped().on_refused) node.mapped().on_refused(sentence);
    }
  }
};

// ---------------------------------------------------------------------------------------------

Link::Link(net::any_io_executor executor, LinkOptions options, spool::Spool& spool)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(options), spool)) {}

Link::~Link() {
  // The strand's handlers hold their own references; make sure nothing reconnects.
  auto impl = impl_;
  net::post(impl->strand, [impl] {
    impl->stopping = true;
    impl->backoff_timer.cancel();
    impl->teardown();
    error_code ignored;
    impl->acceptor.close(ignored);
  });
}

void Link::start() {
  auto impl = impl_;
  net::post(impl->strand, [impl] {
    if (impl->options.endpoint.empty() || !impl->options.identity) {
      impl->set_state(LinkState::disabled);
      impl->log->info("no cloud endpoint configured (iotDataEndpoint): messages for the cloud wait in the spool");
      return;
    }
    SSL_CTX* native = impl->options.identity->ssl_context();
    SSL_CTX_up_ref(native);
    impl->ssl_ctx = std::make_unique<net::ssl::context>(native);
    error_code ec;
    impl->acceptor.open(tcp::v4(), ec);
    if (!ec) impl->acceptor.bind(tcp::endpoint(net::ip::make_address("127.0.0.1"), 0), ec);
    if (!ec) impl->acceptor.listen(4, ec);
    if (ec) {
      impl->set_state(LinkState::stopped, "cannot open the cloud link's loopback port: " + ec.message());
      impl->log->error("cannot open the cloud link's loopback port: {}", ec.message());
      return;
    }
    impl->shim_port = impl->acceptor.local_endpoint().port();
    net::co_spawn(impl->strand, impl->run(), [impl](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        impl->log->critical("the cloud link stopped on an unexpected error: {}", ex.what());
        impl->set_state(LinkState::stopped, std::string("internal error: ") + ex.what());
      }
    });
  });
}

void Link::stop(std::chrono::milliseconds deadline, std::function<void()> done) {
  auto impl = impl_;
  net::post(impl->strand, [impl, deadline, done = std::move(done)]() mutable {
    impl->stopping = true;
    impl->backoff_timer.cancel();
    impl->rate_timer.cancel();
    error_code ignored;
    impl->acceptor.cancel(ignored);
    if (!impl->conn || impl->state_value == LinkState::disabled || impl->state_value == LinkState::stopped) {
      impl->set_state(impl->state_value == LinkState::disabled ? LinkState::disabled : LinkState::stopped);
      impl->acceptor.close(ignored);
      net::post(impl->strand, std::move(done));
      return;
    }
    // run() ends once the connection is down and calls stop_done after its teardown.
    impl->stop_done = [impl, done = std::move(done)]() mutable {
      error_code ignored2;
      impl->acceptor.close(ignored2);
      done();
    };
    auto c = impl->conn;
    c->failure = "canopyd is stopping";
    if (impl->connected()) {
      // A clean DISCONNECT: Paho writes it and closes its socket; the pipe forwards every byte
      // to the cloud before it sees that close, then closes the TLS side. So the connection is
      // left to go down by itself, and closed by force only at the deadline.
      try {
        // 0: DISCONNECT at once. Paho would otherwise wait for in-flight publishes first, which
        // is pointless here: their rows stay in the spool and go out again after the restart.
        c->paho->disconnect(0);
      } catch (const std::exception&) {
        impl->close_connection(c);
      }
    } else {
      impl->close_connection(c);  // still connecting: abandon the attempt
    }
    auto timer = std::make_shared<net::steady_timer>(impl->strand);
    timer->expires_after(deadline);
    timer->async_wait([impl, c, timer](error_code ec) {
      if (!ec && !c->down.fired()) {
        impl->log->warn("the cloud connection did not close within the shutdown deadline; closing it");
        impl->close_connection(c);
      }
    });
  });
}

void Link::publish_direct(spool::Message message, std::function<void(bool)> done) {
  auto impl = impl_;
  net::post(impl->strand, [impl, message = std::move(message), done = std::move(done)]() mutable {
    if (!impl->connected()) return done(false);
    try {
      auto msg = mqtt::make_message(message.topic, message.payload, 0, message.retain);
      if (impl->options.mqtt_version == 5) {
        auto props = to_mqtt_properties(message.properties_json, message.expiry_seconds);
        if (!props.empty()) msg->set_properties(std::move(props));
      }
      // User context 0: no spool row behind it (publish_result ignores it).
      impl->conn->paho->publish(msg, nullptr, *impl->conn->publish_listener);
    } catch (const std::exception&) {
      return done(false);
    }
    done(true);
  });
}

void Link::wake() {
  auto impl = impl_;
  net::post(impl->strand, [impl] {
    for (auto* lane : {&impl->backlog, &impl->live}) {
      if (lane->fetching) lane->woken = true;
      else lane->drained = false;
    }
    impl->pump();
  });
}

result<std::uint64_t> Link::subscribe(const std::string& filter, int qos, MessageHandler on_message,
                                      RefusedHandler on_refused, bool no_local) {
  if (auto v = pubsub::validate_filter(filter); !v)
    return make_error(errc::invalid, fmt::format("\"{}\" is not a valid MQTT topic filter: {}", filter, v.error().message));
  if (qos < 0 || qos > 1) return make_error(errc::invalid, fmt::format("QoS {} is not supported; use 0 or 1", qos));
  const std::uint64_t id = impl_->next_sub++;
  auto impl = impl_;
  net::post(impl->strand, [impl, id, filter, qos, no_local, on_message = std::move(on_message),
                           on_refused = std::move(on_refused)]() mutable {
    impl->subs.emplace(id, Subscription{filter, qos, no_local, std::move(on_message), std::move(on_refused)});
    // (Re)subscribing an existing filter is harmless and updates its QoS and No Local.
    if (impl->connected()) impl->cloud_subscribe(impl->conn, filter);
  });
  return id;
}

void Link::unsubscribe(std::uint64_t id) {
  auto impl = impl_;
  net::post(impl->strand, [impl, id] {
    auto it = impl->subs.find(id);
    if (it == impl->subs.end()) return;
    const std::string filter = it->second.filter;
    impl->subs.erase(it);
    for (const auto& [other, s] : impl->subs)
      if (s.filter == filter) return;  // still wanted by another subscriber
    if (impl->connected()) {
      try {
        impl->conn->paho->unsubscribe(filter);
      } catch (const std::exception&) {
      }
    }
  });
}

LinkState Link::state() const {
  std::lock_guard lock(impl_->status_mutex);
  return impl_->state_value;
}

nlohmann::json Link::status() const {
  const auto& i = *impl_;
  std::lock_guard lock(i.status_mutex);
  nlohmann::json j = {
      {"state", to_string(i.state_value)},
      {"endpoint", i.options.endpoint.empty() ? "" : fmt::format("{}:{}", i.options.endpoint, i.options.port)},
      {"clientId", i.options.client_id},
      {"mqttVersion", i.options.mqtt_version == 5 ? "5" : "3.1.1"},
      {"sinceUnixMs", i.state_since_ms},
      {"connects", i.connects},
      {"disconnects", i.disconnects},
      {"inflight", i.inflight_count},
      {"inflightLimit", i.inflight_limit},
      {"sentInOrder", i.backlog_sends},
      {"sentInterleaved", i.live_sends},
  };
  if (!i.last_error.empty()) j["lastError"] = i.last_error;
  if (i.state_value == LinkState::waiting) j["nextAttemptUnixMs"] = i.next_attempt_ms;
  if (i.options.identity) {
    j["key"] = i.options.identity->key_description();
    j["certificate"] = i.options.identity->certificate_subject();
    j["certificateNotAfterUnix"] = i.options.identity->certificate_not_after();
  }
  return j;
}

}  // namespace canopy::cloud
