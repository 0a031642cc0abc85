// The cloud link (see link.hpp for the contract): canopyd's own MQTT client (canopy::mqtt codec)
// over the identity's TLS stream, on the link's strand.
#include "canopy/cloud/link.hpp"

#include <algorithm>
#include <atomic>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <unordered_map>
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
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "canopy/core/base64.hpp"
#include "canopy/core/log.hpp"
#include "canopy/mqtt/codec.hpp"
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

bool is_ip_literal(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

// The largest packet canopyd accepts from the cloud: a 128 KiB payload (AWS IoT Core's limit)
// plus a topic and properties, with room to spare for other brokers.
constexpr std::size_t kMaxIncomingPacket = 1024 * 1024;

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
nlohmann::json properties_json(const mqtt::Properties& p) {
  nlohmann::json j = nlohmann::json::object();
  if (p.content_type) j["contentType"] = *p.content_type;
  if (p.response_topic) j["responseTopic"] = *p.response_topic;
  if (p.correlation_data)
    j["correlationData"] = base64_encode(std::span(
        reinterpret_cast<const std::uint8_t*>(p.correlation_data->data()), p.correlation_data->size()));
  if (p.payload_format) j["payloadFormat"] = *p.payload_format ? "UTF8" : "BYTES";
  if (p.message_expiry) j["messageExpiryIntervalSeconds"] = *p.message_expiry;
  if (!p.user_properties.empty()) {
    nlohmann::json ups = nlohmann::json::array();
    for (const auto& [k, v] : p.user_properties) ups.push_back({{"key", k}, {"value", v}});
    j["userProperties"] = std::move(ups);
  }
  return j;
}

// The spool's JSON properties (as PublishToIoTCore gave them) as MQTT 5 properties.
mqtt::Properties to_mqtt_properties(const std::string& json_text, std::uint32_t expiry_left) {
  mqtt::Properties props;
  if (expiry_left > 0) props.message_expiry = expiry_left;
  if (json_text.empty()) return props;
  const auto j = nlohmann::json::parse(json_text, nullptr, false);
  if (!j.is_object()) return props;
  // Properties were validated when the message was accepted; anything odd is skipped.
  if (auto it = j.find("contentType"); it != j.end() && it->is_string()) props.content_type = it->get<std::string>();
  if (auto it = j.find("responseTopic"); it != j.end() && it->is_string())
    props.response_topic = it->get<std::string>();
  if (auto it = j.find("correlationData"); it != j.end() && it->is_string()) {
    auto raw = base64_decode(it->get<std::string>());
    if (raw) props.correlation_data = std::string(raw->begin(), raw->end());
  }
  if (auto it = j.find("payloadFormat"); it != j.end() && it->is_string())
    props.payload_format = static_cast<std::uint8_t>(*it == "UTF8" ? 1 : 0);
  if (auto it = j.find("userProperties"); it != j.end() && it->is_array())
    for (const auto& kv : *it)
      if (kv.is_object() && kv.contains("key") && kv.contains("value") && kv["key"].is_string() &&
          kv["value"].is_string())
        props.user_properties.emplace_back(kv["key"].get<std::string>(), kv["value"].get<std::string>());
  return props;
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

// One connection attempt: the TLS stream and the MQTT session state that lives as long as it.
struct Connection {
  Connection(const net::any_io_executor& ex, net::ssl::context& ctx)
      : tls(ex, ctx), connack(ex), down(ex), write_wake(ex), ping_timer(ex) {}
  std::uint64_t gen = 0;
  beast::ssl_stream<beast::tcp_stream> tls;
  Signal connack;  // fired with connected_ok set (or at failure)
  Signal down;     // fired when the connection is gone
  bool connected_ok = false;  // the CONNACK accepted the connection
  bool session_ready = false;  // ... and on_connected() has set up the uplink: sending may start
  bool closed = false;
  std::string failure;  // why it went down / failed, for the operator

  // Writing: packets are appended to `out` on the strand; the writer sends all that has
  // gathered in one TLS write while the previous write is in progress, so a burst of PUBLISH
  // packets costs a few large writes, not one each.
  std::string out;
  std::string sending;
  net::steady_timer write_wake;
  Clock::time_point last_write = Clock::now();

  // Keep-alive.
  net::steady_timer ping_timer;
  std::chrono::seconds keep_alive{60};
  bool ping_outstanding = false;
  Clock::time_point ping_sent;

  // MQTT session: packet ids of unacknowledged publishes (-> spool row id) and subscriptions.
  std::uint16_t next_packet_id = 1;
  std::unordered_map<std::uint16_t, std::int64_t> publishes;
  std::unordered_map<std::uint16_t, std::string> subscribes;  // -> filter
  std::size_t max_packet = 268'435'455;  // the cloud's Maximum Packet Size
  bool retain_ok = true;                 // the CONNACK did not say Retain Available 0
  bool qos1_ok = true;                   // ... nor Maximum QoS 0
  bool retain_warned = false, qos_warned = false;  // one line per connection for each
  std::optional<std::uint8_t> disconnect_reason;   // from the cloud's DISCONNECT (MQTT 5)
  bool went_silent = false;                        // ended by the keep-alive: not a refusal
  bool released = false;                           // closed by release_held(): not a refusal
};

struct Link::Impl : std::enable_shared_from_this<Impl> {
  Impl(net::any_io_executor ex, LinkOptions o, spool::Spool& s)
      : strand(net::make_strand(ex)), options(std::move(o)), spool(s), backoff_timer(strand), rate_timer(strand),
        probe_timer(strand), refill_timer(strand), log(log::get("cloud")), rng(std::random_device{}()) {
    version = options.mqtt_version == 5 ? mqtt::Version::v5 : mqtt::Version::v311;
  }

  net::strand<net::any_io_executor> strand;
  LinkOptions options;
  mqtt::Version version;
  spool::Spool& spool;
  std::unique_ptr<net::ssl::context> ssl_ctx;
  net::steady_timer backoff_timer;
  net::steady_timer rate_timer;
  net::steady_timer probe_timer;
  net::steady_timer refill_timer;
  static constexpr auto kRefillWait = std::chrono::milliseconds(1);
  bool refill_armed = false;  // refill_timer is pending
  bool refill_now = false;    // it fired: send into whatever room there is
  std::shared_ptr<spdlog::logger> log;
  std::mt19937_64 rng;

  bool stopping = false;
  std::function<void()> stop_done;
  std::shared_ptr<Connection> conn;  // the current attempt, if any
  std::uint64_t gen = 0;

  // Uplink. Rows are fetched ahead (so a PUBACK never waits for the database before the next
  // send) into two lanes and written while fewer than `window` are unacknowledged:
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
    bool drained = false;  // the last fetch came back short: wait for new rows
    bool woken = false;    // new rows were committed during a fetch
    std::uint64_t sends = 0;
    void reset() { *this = Lane{}; }
  };
  Lane backlog, live;
  bool live_active = false;
  std::int64_t backlog_end = 0;        // newest id of the backlog at connect
  bool backlog_blocked = false;        // the backlog lane waits for the live lane to look further
  std::int64_t backlog_sent_upto = 0;  // newest id the backlog lane sent
  std::map<std::string, std::int64_t> backlog_last;  // topic -> newest id of the backlog at connect
  std::set<std::string> deferred;      // topics the live lane leaves to the backlog lane
  std::set<std::int64_t> sent_live;    // ids the live lane sent, for the backlog lane to skip
  std::set<std::int64_t> inflight;     // ids awaiting their PUBACK
  std::vector<std::int64_t> to_ack;    // delivered, not yet passed to spool.ack
  std::size_t window = 1;              // in-flight limit of this connection

  // A message the cloud will not take without dropping the connection (MQTT 3.1.1 has no
  // other way to refuse one; AWS IoT does this for a topic the policy does not allow) would
  // otherwise be sent again after every reconnect, forever, with everything behind it
  // waiting. After kDropsBeforeProbing short connections in a row that the cloud ended with
  // publishes in flight, the link sends one publish at a time ("probing", after a quiet
  // second with nothing in flight); the row in flight at kProbeDropsToHold such drops in a
  // row is held: it stays in the spool but is not sent again until canopyd restarts.
  static constexpr std::uint32_t kDropsBeforeProbing = 3;
  static constexpr std::uint32_t kProbeDropsToHold = 2;
  static constexpr auto kProbeQuiet = std::chrono::seconds(1);
  std::uint32_t short_drops = 0;
  bool probing = false;
  Clock::time_point probe_from;  // no probe is sent before (the quiet second after CONNACK)
  std::int64_t probe_suspect = 0;
  std::uint32_t probe_suspect_drops = 0;
  std::size_t probe_acks = 0;
  std::string probe_what;  // the row in flight while probing, for the log
  Clock::time_point probe_sent;
  static constexpr auto kProbeAnswer = std::chrono::seconds(5);  // a refusal comes at once
  std::map<std::int64_t, std::string> held;  // id -> what it was, for the status
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
  std::vector<std::int64_t> held_ids;

  void set_state(LinkState s, const std::string& error = {}) {
    std::lock_guard lock(status_mutex);
    if (s != state_value) state_since_ms = unix_ms();
    state_value = s;
    if (!error.empty()) last_error = error;
  }

  std::string where() const { return fmt::format("{}:{}", options.endpoint, options.port); }

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
      if (conn && conn->connected_ok) after_drop(*conn, was_stable);
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
      log->info("endpoint={} next connection attempt in {} ms (attempt {} since the last stable connection)", where(),
                delay.count(), failures);
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
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
      return fmt::format("TLS to {} failed: the server's certificate is not for the host name {} (check "
                         "iotDataEndpoint)",
                         where(), options.endpoint);
    if (verify != X509_V_OK)
      return fmt::format("TLS to {} failed: the server's certificate is not trusted: {} (check system.rootCaPath)",
                         where(), X509_verify_cert_error_string(verify));
    if (ec == beast::error::timeout) return fmt::format("TLS to {} failed: the handshake timed out", where());
    std::string detail = ec.message();
    if (ec.category() == net::error::get_ssl_category()) {
      const std::string queue = trust::last_tls_error("");
      if (!queue.empty()) detail = queue;
    }
    if (detail.find("protocol version") != std::string::npos || detail.find("unsupported protocol") != std::string::npos)
      return fmt::format("TLS to {} failed: the server does not offer TLS 1.2 or later ({})", where(), detail);
    return fmt::format("TLS to {} failed: {}", where(), detail);
  }

  net::awaitable<void> attempt() {
    auto self = shared_from_this();
    auto c = std::make_shared<Connection>(strand, *ssl_ctx);
    c->gen = ++gen;
    conn = c;
    const auto deadline = Clock::now() + options.connect_timeout;

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
      fail_attempt(c, cec == beast::error::timeout ? fmt::format("connecting to {} timed out", where())
                                                   : fmt::format("cannot connect to {}: {}", where(), cec.message()));
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
    log->debug("endpoint={} TLS {} established in {:.1f} ms ({})", where(), SSL_get_version(ssl), tls_ms,
               options.identity->key_description());

    // 2. MQTT CONNECT. A clean session: the spool, not the broker, holds what is still to be
    // delivered, and every cloud subscription is made again after each connect.
    mqtt::ConnectOptions co;
    co.version = version;
    co.client_id = options.client_id;
    co.clean_start = true;
    co.keep_alive_seconds = static_cast<std::uint16_t>(std::clamp<std::int64_t>(options.keep_alive.count(), 0, 65535));
    if (version == mqtt::Version::v5) {
      co.properties.maximum_packet_size = static_cast<std::uint32_t>(kMaxIncomingPacket);
      co.properties.receive_maximum = 1000;  // QoS 1 messages the cloud may have unacknowledged to us
    }
    c->keep_alive = options.keep_alive;
    mqtt::encode_connect(c->out, co);
    net::co_spawn(strand, reader(c), net::detached);
    net::co_spawn(strand, writer(c), net::detached);

    // 3. CONNACK.
    const bool answered = co_await c->connack.wait(deadline - Clock::now());
    if (!answered || !c->connected_ok) {
      if (!answered)
        fail_attempt(c, fmt::format("no CONNACK from {} within {} s", where(), options.connect_timeout.count()));
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
    log->info("endpoint={} connected as {} (MQTT {}, {}, key: {})", where(), options.client_id,
              version == mqtt::Version::v5 ? "5" : "3.1.1", SSL_get_version(ssl), options.identity->key_description());
    if (c->keep_alive.count() > 0) net::co_spawn(strand, keep_alive(c), net::detached);
    on_connected(c);

    // 4. Until it goes down (also when stopping: stop() lets the DISCONNECT go out first).
    while (!c->down.fired()) co_await c->down.wait(std::chrono::hours(24));
    {
      std::lock_guard lock(status_mutex);
      ++disconnects;
    }
    log->warn("endpoint={} disconnected after {} s: {}; {} message(s) in flight stay in the spool", where(),
              std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - connected_at).count(),
              c->failure.empty() ? "stopping" : c->failure, inflight.size());
  }

  // ------------------------------------------------------------------------------ the wire

  // Queues bytes already appended to c->out for the writer.
  void flush(const std::shared_ptr<Connection>& c) {
    if (!c->out.empty()) c->write_wake.cancel();
  }

  net::awaitable<void> writer(std::shared_ptr<Connection> c) {
    while (!c->closed) {
      if (c->out.empty()) {
        c->write_wake.expires_at(Clock::time_point::max());
        co_await c->write_wake.async_wait(kTuple);
        continue;
      }
      c->sending.swap(c->out);
      c->out.clear();
      auto [ec, n] = co_await net::async_write(c->tls, net::buffer(c->sending), kTuple);
      c->sending.clear();
      if (ec) {
        if (ec != net::error::operation_aborted) fail_attempt(c, "writing to the cloud failed: " + ec.message());
        break;
      }
      c->last_write = Clock::now();
    }
    close_connection(c);
  }

  std::string read_failure(const error_code& ec) {
    if (ec.category() == net::error::get_ssl_category()) {
      const std::string q = trust::last_tls_error("");
      std::string detail = q.empty() ? ec.message() : q;
      if (detail.find("alert") != std::string::npos)
        return fmt::format("the cloud ended the TLS session: {} (if this follows the connect, the cloud refused the "
                           "device certificate {})",
                           detail, options.identity->certificate_subject());
      if (detail.find("stream truncated") != std::string::npos) return "the cloud closed the connection";
      return "TLS error: " + detail;
    }
    if (ec == net::error::eof) return "the cloud closed the connection";
    return "the connection to the cloud failed: " + ec.message();
  }

  net::awaitable<void> reader(std::shared_ptr<Connection> c) {
    mqtt::PacketReader packets(version, kMaxIncomingPacket);
    std::vector<char> buf(64 * 1024);
    while (!c->closed) {
      auto [ec, n] = co_await c->tls.async_read_some(net::buffer(buf), kTuple);
      if (ec) {
        if (ec != net::error::operation_aborted) fail_attempt(c, read_failure(ec));
        break;
      }
      packets.append(std::string_view(buf.data(), n));
      bool any = false;
      while (!c->closed) {
        auto packet = packets.next();
        if (!packet) {
          fail_attempt(c, fmt::format("the cloud sent a malformed MQTT packet ({}); reconnecting",
                                      packet.error().message));
          close_connection(c);
          break;
        }
        if (!*packet) break;
        any = true;
        handle(c, std::move(**packet));
      }
      // Everything this read brought is handled: send what it freed room for, in one write.
      if (any && c == conn && !c->closed) {
        pump();     // (updates the in-flight count for the status)
        flush(c);   // PUBACKs for incoming messages, when pump() had nothing to send
      }
    }
    close_connection(c);
  }

  void protocol_error(const std::shared_ptr<Connection>& c, std::string why) {
    fail_attempt(c, "the cloud broke the MQTT protocol: " + why);
    if (version == mqtt::Version::v5) {
      // Tell the cloud why (0x82 protocol error) before closing, best effort.
      mqtt::encode_disconnect(c->out, version, 0x82);
      flush(c);
    }
    close_connection(c);
  }

  void handle(const std::shared_ptr<Connection>& c, mqtt::Packet p) {
    if (!c->connected_ok && p.type != mqtt::Type::connack && p.type != mqtt::Type::disconnect)
      return protocol_error(c, fmt::format("its first packet was of type {}, not a CONNACK", static_cast<int>(p.type)));
    switch (p.type) {
      case mqtt::Type::connack: return on_connack(c, p);
      case mqtt::Type::puback: {
        const auto it = c->publishes.find(p.packet_id);
        if (it == c->publishes.end()) return;  // a publish_direct QoS 0 never has one; a stale id
        const std::int64_t id = it->second;
        c->publishes.erase(it);
        const bool ok = p.reason < 0x80;  // 0x10 "no matching subscribers" is a success
        publish_result(c->gen, id, ok, ok ? std::string() : mqtt::reason_text(version, p.reason, p.type));
        return;
      }
      case mqtt::Type::publish: return on_publish(c, std::move(p));
      case mqtt::Type::suback: {
        const auto it = c->subscribes.find(p.packet_id);
        if (it == c->subscribes.end()) return;
        const std::string filter = std::move(it->second);
        c->subscribes.erase(it);
        const std::uint8_t code = p.codes.empty() ? 0x80 : p.codes.front();
        if (code >= 0x80) subscribe_refused(c->gen, filter, mqtt::reason_text(version, code, p.type));
        return;
      }
      case mqtt::Type::unsuback: return;
      case mqtt::Type::pingresp: c->ping_outstanding = false; return;
      case mqtt::Type::disconnect: {
        c->disconnect_reason = p.reason;
        std::string why = fmt::format("the cloud closed the connection: {}", mqtt::reason_text(version, p.reason, p.type));
        if (p.reason == 0x8E)
          why = fmt::format("another client connected with the client id {} and took the session over; check that "
                            "no other device uses this thing name",
                            options.client_id);
        if (p.properties.reason_string) why += " (" + *p.properties.reason_string + ")";
        fail_attempt(c, why);
        close_connection(c);
        return;
      }
      default:
        return protocol_error(c, fmt::format("it sent a packet of type {}, which Canopy never asks for",
                                             static_cast<int>(p.type)));
    }
  }

  void on_connack(const std::shared_ptr<Connection>& c, const mqtt::Packet& p) {
    if (c->connected_ok) return protocol_error(c, "a second CONNACK");
    if (p.reason != 0) {
      std::string why = mqtt::reason_text(version, p.reason, p.type);
      if (p.properties.reason_string) why += " (" + *p.properties.reason_string + ")";
      fail_attempt(c, fmt::format("the cloud refused the MQTT connection as {}: {}", options.client_id, why));
      close_connection(c);
      return;
    }
    // MQTT 5: the broker's Receive Maximum caps unacknowledged publishes (Mosquitto: 20 by
    // default, AWS IoT Core: 100); exceeding it makes the broker disconnect.
    window = std::max<std::size_t>(options.max_inflight, 1);
    if (const auto rm = p.properties.receive_maximum; rm && *rm > 0 && *rm < window) {
      window = *rm;
      log->info("the cloud accepts at most {} unacknowledged publishes (Receive Maximum); mqtt.maxInflight is {}", *rm,
                options.max_inflight);
    }
    if (p.properties.maximum_packet_size) c->max_packet = *p.properties.maximum_packet_size;
    if (p.properties.server_keep_alive) c->keep_alive = std::chrono::seconds(*p.properties.server_keep_alive);
    c->qos1_ok = !(p.properties.maximum_qos && *p.properties.maximum_qos == 0);
    c->retain_ok = !(p.properties.retain_available && *p.properties.retain_available == 0);
    if (!c->qos1_ok)
      log->warn("the cloud accepts only QoS 0 (Maximum QoS 0 in its CONNACK): QoS 1 messages wait in the spool until "
                "it accepts QoS 1; QoS 0 messages are sent");
    if (!c->retain_ok)
      log->info("the cloud does not keep retained messages (Retain Available 0 in its CONNACK): retained messages "
                "are sent without the retain flag");
    {
      std::lock_guard lock(status_mutex);
      inflight_limit = window;
    }
    c->connected_ok = true;
    c->connack.fire();
  }

  void on_publish(const std::shared_ptr<Connection>& c, mqtt::Packet p) {
    if (p.qos > 1) return protocol_error(c, "a QoS 2 message, though Canopy subscribes with QoS 1 at most");
    // Acknowledged at once: handlers take the message in memory (IPC subscribers, the bridge's
    // direct targets); a message the cloud must not lose is the cloud's to resend before this.
    if (p.qos == 1) mqtt::encode_puback(c->out, version, p.packet_id);
    IncomingMessage m;
    m.topic = std::move(p.topic);
    m.payload = std::move(p.payload);
    m.qos = p.qos;
    m.retain = p.retain;
    m.properties = properties_json(p.properties);
    deliver(c->gen, m);
  }

  net::awaitable<void> keep_alive(std::shared_ptr<Connection> c) {
    // MQTT: the client must send something within each keep-alive interval; a PINGREQ not
    // answered within one more interval means the connection is dead (half-open TCP).
    const auto tick = std::max<Clock::duration>(std::chrono::seconds(1), c->keep_alive / 4);
    while (!c->closed) {
      c->ping_timer.expires_after(tick);
      co_await c->ping_timer.async_wait(kTuple);
      if (c->closed) break;
      const auto now = Clock::now();
      if (c->ping_outstanding && now - c->ping_sent >= c->keep_alive) {
        c->went_silent = true;
        fail_attempt(c, fmt::format("the cloud did not answer a keep-alive ping within {} s",
                                    c->keep_alive.count()));
        close_connection(c);
        break;
      }
      if (!c->ping_outstanding && now - c->last_write >= c->keep_alive / 2) {
        mqtt::encode_pingreq(c->out);
        c->ping_outstanding = true;
        c->ping_sent = now;
        flush(c);
      }
    }
  }

  std::uint16_t next_packet_id(const std::shared_ptr<Connection>& c) {
    for (;;) {
      const std::uint16_t id = c->next_packet_id++;
      if (c->next_packet_id == 0) c->next_packet_id = 1;
      if (id != 0 && !c->publishes.count(id) && !c->subscribes.count(id)) return id;
    }
  }

  void close_connection(const std::shared_ptr<Connection>& c) {
    if (!c->closed) {
      c->closed = true;
      error_code ignored;
      beast::get_lowest_layer(c->tls).socket().close(ignored);
      c->write_wake.cancel();
      c->ping_timer.cancel();
    }
    if (!c->connack.fired()) c->connack.fire();
    c->down.fire();
  }

  void teardown() {
    if (!conn) return;
    close_connection(conn);
    reset_uplink();
    {
      std::lock_guard lock(status_mutex);
      inflight_count = 0;
      connected_since_ms = 0;
    }
    if (!to_ack.empty()) spool.ack(std::exchange(to_ack, {}));
  }

  // Reasons a cloud gives in DISCONNECT that say nothing about the messages sent.
  static bool about_the_connection(std::uint8_t reason) {
    switch (reason) {
      case 0x00: case 0x89: case 0x8B: case 0x8D: case 0x8E: case 0x98: case 0x9C: case 0x9D: case 0x9F: case 0xA0:
        return true;
      default: return false;
    }
  }

  void end_probing() {
    probing = false;
    short_drops = 0;
    probe_suspect = 0;
    probe_suspect_drops = 0;
    probe_acks = 0;
    probe_timer.cancel();
  }

  // A connection the cloud accepted has ended: was a message the cause? (kDropsBeforeProbing)
  void after_drop(const Connection& c, bool was_stable) {
    const bool suspect = !stopping && !was_stable && !inflight.empty() && !c.went_silent && !c.released &&
                         !(c.disconnect_reason && about_the_connection(*c.disconnect_reason)) &&
                         (!probing || Clock::now() - probe_sent < kProbeAnswer);
    if (!suspect) {
      if (probing)
        log->info("the last connection ended for a reason that is not about a message ({}); no message is suspected, "
                  "sending up to {} at a time again",
                  c.failure.empty() ? "it stayed up" : c.failure, window);
      end_probing();
      return;
    }
    if (!probing) {
      if (++short_drops < kDropsBeforeProbing) return;
      probing = true;
      probe_suspect = 0;
      probe_suspect_drops = 0;
      probe_acks = 0;
      log->warn("the cloud closed the connection {} times in a row soon after messages were sent ({}); sending one "
                "message at a time to find one it refuses",
                short_drops, c.failure);
      return;
    }
    const std::int64_t id = *inflight.begin();  // probing: the one in flight
    if (id != probe_suspect) {
      probe_suspect = id;
      probe_suspect_drops = 0;
    }
    if (++probe_suspect_drops < kProbeDropsToHold) return;
    held.emplace(id, probe_what);
    {
      std::lock_guard lock(status_mutex);
      held_ids.push_back(id);
    }
    log->error("message {} was in flight alone each of the {} times the cloud closed the connection ({}); the cloud "
               "does not take it. It is held: kept in the spool, not sent again until canopyd restarts or an operator runs "
               "canopy cloud release-held, so that the messages after it flow. Check the cloud's policy and limits "
               "for it",
               probe_what, kProbeDropsToHold, c.failure);
    end_probing();
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
    c->session_ready = true;
    if (probing) {
      probe_from = Clock::now() + kProbeQuiet;
      probe_timer.expires_at(probe_from);
      probe_timer.async_wait([self = shared_from_this()](error_code ec) {
        if (!ec) self->pump();
      });
    }
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
    mqtt::SubscribeRequest req;
    req.filter = filter;
    req.qos = static_cast<std::uint8_t>(qos);
    req.no_local = no_local;
    const std::uint16_t pid = next_packet_id(c);
    c->subscribes[pid] = filter;
    mqtt::encode_subscribe(c->out, version, pid, std::span(&req, 1));
    flush(c);
  }

  bool connected() const { return conn && conn->session_ready && !conn->closed; }

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

  // Writes rows from the lanes within the in-flight window and the publish rate.
  void send_ready() {
    const std::size_t limit = probing ? 1 : window;
    if (inflight.size() >= limit) return;
    if (probing && Clock::now() < probe_from) return;  // the probe timer pumps again
    // While more rows wait than the window has room for, refill it a batch at a time (a
    // quarter of the window, at most 32) rather than a row or two per PUBACK read: one TLS
    // write per batch, about half the system calls on this thread (bench/bridge_compare.sh).
    // Never wait for PUBACKs alone, though: a proxy without TCP_NODELAY holds them back (Nagle)
    // until our delayed ACK, which would wait for our next send: 40 ms a window, seen through
    // socat in bench/bridge_outage.sh. After kRefillWait the room there is is used anyway.
    const std::size_t room = limit - inflight.size();
    const std::size_t waiting = backlog.ready.size() + (live_active ? live.ready.size() : 0);
    if (room < std::clamp<std::size_t>(limit / 4, 1, 32) && waiting > room) {
      if (!refill_armed) {
        refill_armed = true;
        refill_timer.expires_after(kRefillWait);
        refill_timer.async_wait([self = shared_from_this()](error_code) {
          self->refill_armed = false;
          self->refill_now = true;
          self->pump();
          self->refill_now = false;
        });
      }
      if (!refill_now) return;
    }
    if (options.max_publish_rate > 0) {
      const auto now = Clock::now();
      tokens = std::min(options.max_publish_rate,
                        tokens + std::chrono::duration<double>(now - tokens_at).count() * options.max_publish_rate);
      tokens_at = now;
    }
    std::vector<std::int64_t> sent;
    const auto now_ms = unix_ms();
    while (inflight.size() < limit) {
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
      const bool is_held = held.count(row.id) > 0;
      if (is_held || (m.qos > 0 && !conn->qos1_ok)) {
        // Held (see kDropsBeforeProbing), or QoS 1 to a cloud that takes only QoS 0: it stays
        // in the spool and is not sent on this connection.
        if (!is_held && !conn->qos_warned) {
          conn->qos_warned = true;
          log->warn("topic={} id={} not sent: the cloud accepts only QoS 0; this and the other QoS 1 messages stay in "
                    "the spool",
                    m.topic, row.id);
        }
        if (lane == &backlog) backlog_sent_upto = row.id;
        lane->ready.pop_front();
        continue;
      }
      const bool retain = m.retain && conn->retain_ok;
      if (m.retain && !retain && !conn->retain_warned) {
        conn->retain_warned = true;
        log->warn("topic={} id={} sent without the retain flag: the cloud does not keep retained messages (logged "
                  "once per connection)",
                  m.topic, row.id);
      }
      const std::size_t before = conn->out.size();
      const auto qos = static_cast<std::uint8_t>(m.qos > 0 ? 1 : 0);
      const std::uint16_t pid = qos > 0 ? next_packet_id(conn) : 0;
      if (version == mqtt::Version::v5 && (row.expires_unix_ms > 0 || !m.properties_json.empty())) {
        std::uint32_t left = 0;
        if (row.expires_unix_ms > 0)
          left = static_cast<std::uint32_t>(std::max<std::int64_t>(1, (row.expires_unix_ms - now_ms + 999) / 1000));
        const auto props = to_mqtt_properties(m.properties_json, left);
        mqtt::encode_publish(conn->out, version, m.topic, m.payload, qos, retain, false, pid, &props);
      } else {
        mqtt::encode_publish(conn->out, version, m.topic, m.payload, qos, retain, false, pid);
      }
      if (const std::size_t size = conn->out.size() - before; size > conn->max_packet) {
        // The cloud announced a smaller Maximum Packet Size; sending it would end the
        // connection. It stays in the spool (tried again after the next connect).
        conn->out.resize(before);
        log->warn("topic={} id={} not sent: its {} bytes exceed the cloud's Maximum Packet Size of {}; it stays in "
                  "the spool",
                  m.topic, row.id, size, conn->max_packet);
        if (lane == &backlog) backlog_sent_upto = row.id;
        lane->ready.pop_front();
        continue;
      }
      if (qos == 0) {
        // Written is delivered for QoS 0.
        to_ack.push_back(row.id);
      } else {
        conn->publishes[pid] = row.id;
        inflight.insert(row.id);
        if (probing) {
          probe_sent = Clock::now();
          probe_what = fmt::format("topic={} id={} ({} bytes{})", m.topic, row.id, m.payload.size(),
                                   m.retain ? ", retained" : "");
        }
      }
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
    if (!to_ack.empty() && inflight.empty()) spool.ack(std::exchange(to_ack, {}));
    flush(conn);
  }

  // A commit's rows from the spool's commit feed. While one lane walks the spool and has read
  // everything before these rows, it takes them as they are: no wake-up of the spool's thread
  // and no read of rows just written. Otherwise a lane that had found the end looks again.
  void committed(std::int64_t newest_before, std::vector<spool::StoredMessage> rows) {
    const bool take = connected() && !stopping && !live_active && !backlog_blocked && !backlog.fetching &&
                      backlog.cursor == newest_before && backlog.ready.size() + rows.size() <= 2 * kPrefetch;
    if (take) {
      backlog.cursor = rows.back().id;
      for (auto& row : rows) backlog.ready.push_back(std::move(row));
    } else {
      woken();
    }
    pump();
  }

  // New rows may be in the spool: a lane that found the end looks again.
  void woken() {
    for (auto* lane : {&backlog, &live}) {
      if (lane->fetching) lane->woken = true;
      else lane->drained = false;
    }
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

  void publish_result(std::uint64_t g, std::int64_t id, bool ok, const std::string& why) {
    if (!conn || conn->gen != g) return;  // an old connection: the row is sent again anyway
    if (inflight.erase(id) == 0) return;
    if (ok) {
      if (probing && ++probe_acks >= std::max<std::size_t>(2 * window, 20)) {
        log->info("the cloud took {} messages one at a time without closing the connection; sending up to {} at a "
                  "time again",
                  probe_acks, window);
        end_probing();
      }
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
  // The spool's commit feed is left in place: it holds the link only weakly, and the spool
  // may already be gone (canopyd closes it before the link).
  // The strand's handlers hold their own references; make sure nothing reconnects.
  auto impl = impl_;
  net::post(impl->strand, [impl] {
    impl->stopping = true;
    impl->backoff_timer.cancel();
    impl->teardown();
  });
}

void Link::start() {
  auto impl = impl_;
  // Committed rows come straight from the spool (see committed()).
  std::weak_ptr<Impl> weak = impl;
  impl->spool.set_commit_feed([weak](std::int64_t newest_before, std::vector<spool::StoredMessage> rows) {
    if (auto s = weak.lock())
      net::post(s->strand, [s, newest_before, rows = std::move(rows)]() mutable {
        s->committed(newest_before, std::move(rows));
      });
  });
  net::post(impl->strand, [impl] {
    if (impl->options.endpoint.empty() || !impl->options.identity) {
      impl->set_state(LinkState::disabled);
      impl->log->info("no cloud endpoint configured (iotDataEndpoint): messages for the cloud wait in the spool");
      return;
    }
    SSL_CTX* native = impl->options.identity->ssl_context();
    SSL_CTX_up_ref(native);
    impl->ssl_ctx = std::make_unique<net::ssl::context>(native);
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
    if (!impl->conn || impl->state_value == LinkState::disabled || impl->state_value == LinkState::stopped) {
      impl->set_state(impl->state_value == LinkState::disabled ? LinkState::disabled : LinkState::stopped);
      net::post(impl->strand, std::move(done));
      return;
    }
    // run() ends once the connection is down and calls stop_done after its teardown.
    impl->stop_done = std::move(done);
    auto c = impl->conn;
    c->failure = "canopyd is stopping";
    if (impl->connected()) {
      // A clean DISCONNECT, at once: in-flight rows stay in the spool and go out again after
      // the restart. The cloud closes the connection on it; closed by force at the deadline.
      mqtt::encode_disconnect(c->out, impl->version);
      impl->flush(c);
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
    auto& c = impl->conn;
    const std::size_t before = c->out.size();
    if (impl->version == mqtt::Version::v5 && (message.expiry_seconds > 0 || !message.properties_json.empty())) {
      const auto props = to_mqtt_properties(message.properties_json, message.expiry_seconds);
      mqtt::encode_publish(c->out, impl->version, message.topic, message.payload, 0, message.retain && c->retain_ok,
                           false, 0, &props);
    } else {
      mqtt::encode_publish(c->out, impl->version, message.topic, message.payload, 0, message.retain && c->retain_ok,
                           false, 0);
    }
    if (c->out.size() - before > c->max_packet) {
      // Over the cloud's Maximum Packet Size: not sent (the cloud would drop the connection);
      // the caller spools it, where the drain reports it.
      c->out.resize(before);
      return done(false);
    }
    impl->flush(c);
    done(true);
  });
}

void Link::release_held(std::function<void(std::size_t)> done) {
  auto impl = impl_;
  net::post(impl->strand, [impl, done = std::move(done)] {
    const std::size_t n = impl->held.size();
    if (n == 0) return done(0);
    std::string what;
    for (const auto& [id, row] : impl->held) what += (what.empty() ? "" : "; ") + row;
    impl->held.clear();
    {
      std::lock_guard lock(impl->status_mutex);
      impl->held_ids.clear();
    }
    impl->end_probing();
    impl->log->info("released {} held message(s) ({}) on an operator's request; reconnecting so that the spool is "
                    "sent again from its oldest message",
                    n, what);
    if (auto& c = impl->conn; c && !c->closed) {
      c->released = true;
      impl->fail_attempt(c, "reconnecting to send released messages again");
      impl->close_connection(c);
    }
    done(n);
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
      const std::string filters[] = {filter};
      mqtt::encode_unsubscribe(impl->conn->out, impl->version, impl->next_packet_id(impl->conn), filters);
      impl->flush(impl->conn);
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
      {"held", i.held_ids},
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
