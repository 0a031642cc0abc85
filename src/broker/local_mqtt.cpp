// canopyd's MQTT 5 client for the local broker (see local_mqtt.hpp for why it exists).
#include "canopy/broker/local_mqtt.hpp"

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include "canopy/core/log.hpp"

namespace canopy::broker {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;
constexpr auto kTuple = net::as_tuple(net::use_awaitable);
constexpr auto kVersion = mqtt::Version::v5;
constexpr std::size_t kMaxPacket = 16u << 20;  // what the local broker may send us

mqtt::ConnectOptions connect_options(const LocalMqttOptions& o) {
  mqtt::ConnectOptions c;
  c.version = kVersion;
  c.client_id = o.client_id;
  // Never a clean start: the broker's session holds what arrived while canopyd was away, and
  // every message it sent but we did not acknowledge.
  c.clean_start = false;
  c.keep_alive_seconds = static_cast<std::uint16_t>(std::clamp<std::int64_t>(o.keep_alive.count(), 0, 65535));
  c.properties.session_expiry = o.session_expiry_seconds;
  c.properties.receive_maximum = o.receive_maximum;
  return c;
}

std::vector<mqtt::SubscribeRequest> subscribe_requests(const std::vector<std::string>& filters) {
  // QoS 1; No Local, so what this client publishes never comes back to it; Retain As Published,
  // so a retained message stays retained when it is forwarded.
  std::vector<mqtt::SubscribeRequest> subs;
  subs.reserve(filters.size());
  for (const auto& f : filters)
    subs.push_back({.filter = f, .qos = 1, .no_local = true, .retain_as_published = true, .retain_handling = 0});
  return subs;
}

// ------------------------------------------------------------------------------- the client

struct LocalMqttClient::Impl : std::enable_shared_from_this<Impl> {
  Impl(net::any_io_executor ex, LocalMqttOptions o, OnMessage cb)
      : executor(std::move(ex)), options(std::move(o)), on_message(std::move(cb)), socket(executor), timer(executor),
        log(log::get("broker")) {}

  net::any_io_executor executor;
  LocalMqttOptions options;
  OnMessage on_message;
  tcp::socket socket;
  net::steady_timer timer;  // backoff, keepalive
  std::shared_ptr<spdlog::logger> log;
  std::minstd_rand rng{std::random_device{}()};

  bool stopping = false;
  bool running = false;
  std::uint64_t gen = 0;  // connection generation: acks and results of an old one are dropped
  bool up = false;
  std::vector<std::string> filters;
  // Packets gather in `out` while a write is in progress and go out together in the next one
  // (a burst of PUBACKs costs one write, not one each).
  std::string out;
  std::string sending;
  bool writing = false;
  std::uint16_t next_id = 1;
  std::map<std::uint16_t, std::function<void(bool)>> pending_publishes;
  std::set<std::uint16_t> subscribe_ids;
  Clock::time_point last_rx;

  mutable std::mutex status_mutex;
  std::string state = "stopped";
  std::string last_error;
  std::uint64_t connects = 0, received = 0, acked = 0, published = 0, publish_failed = 0;

  void set_state(const std::string& s, const std::string& err = {}) {
    std::lock_guard lock(status_mutex);
    state = s;
    if (!err.empty()) last_error = err;
  }

  std::uint16_t take_id() {
    for (int i = 0; i < 65535; ++i) {
      const std::uint16_t id = next_id;
      next_id = static_cast<std::uint16_t>(next_id == 65535 ? 1 : next_id + 1);
      if (!pending_publishes.count(id) && !subscribe_ids.count(id)) return id;
    }
    return 0;
  }

  // Packets are encoded straight into `out`; then kick(). The write starts from a posted
  // handler, so every packet queued by the handlers running now (e.g. the PUBACKs of one spool
  // commit) goes out in the same write.
  void kick() {
    if (writing || out.empty()) return;
    writing = true;
    net::post(executor, [self = shared_from_this(), g = gen] {
      if (g == self->gen) self->write_next();
    });
  }

  void write_next() {
    if (out.empty() || !socket.is_open()) {
      writing = false;
      return;
    }
    writing = true;
    sending.swap(out);
    out.clear();
    auto self = shared_from_this();
    net::async_write(socket, net::buffer(sending), [self, g = gen](error_code ec, std::size_t) {
      if (g != self->gen) return;
      self->sending.clear();
      if (ec) {
        self->writing = false;
        self->drop("writing to the local broker failed: " + ec.message());
        return;
      }
      self->write_next();
    });
  }

  // The connection is gone: fail what waited on it and let run() reconnect.
  void drop(const std::string& why) {
    if (!up && !socket.is_open()) return;
    up = false;
    error_code ignored;
    socket.close(ignored);
    out.clear();  // (`sending` may still be referenced by the cancelled write; it is replaced later)
    writing = false;
    for (auto& [id, done] : std::exchange(pending_publishes, {}))
      if (done) done(false);
    subscribe_ids.clear();
    ++gen;
    timer.cancel();
    if (!stopping) {
      set_state("reconnecting", why);
      log->warn("component=canopy.MqttBridge the connection to the local broker {}:{} ended: {}", options.host,
                options.port, why);
    }
  }

  void subscribe_all() {
    if (filters.empty()) return;
    const auto id = take_id();
    subscribe_ids.insert(id);
    mqtt::encode_subscribe(out, kVersion, id, subscribe_requests(filters));
    kick();
  }

  net::awaitable<void> run() {
    auto self = shared_from_this();
    auto delay = options.reconnect_min;
    bool first = true;
    while (!stopping) {
      if (!first) {
        std::uniform_int_distribution<std::int64_t> jitter(delay.count() / 2, delay.count());
        timer.expires_after(std::chrono::milliseconds(jitter(rng)));
        co_await timer.async_wait(kTuple);
        if (stopping) break;
        delay = std::min(options.reconnect_max, delay * 2);
      }
      first = false;
      set_state("connecting");
      const bool ok = co_await session();
      if (ok) delay = options.reconnect_min;  // it was up: start the backoff again
    }
    set_state("stopped");
    running = false;
  }

  // One connection: connect, CONNACK, subscribe, then read until it ends. True if it got up.
  net::awaitable<bool> session() {
    auto self = shared_from_this();
    const std::uint64_t g = ++gen;
    error_code ec;
    socket = tcp::socket(executor);
    const tcp::endpoint ep(net::ip::make_address(options.host, ec), options.port);
    if (ec) {
      set_state("reconnecting", "bad local broker address " + options.host);
      co_return false;
    }
    timer.expires_after(options.connect_timeout);
    timer.async_wait([self, g](error_code e) {
      if (!e && g == self->gen && !self->up) {
        error_code ignored;
        self->socket.close(ignored);
      }
    });
    auto [cec] = co_await socket.async_connect(ep, kTuple);
    if (cec) {
      set_state("reconnecting", fmt::format("cannot connect to the local broker {}:{}: {}", options.host,
                                            options.port, cec.message()));
      co_return false;
    }
    socket.set_option(tcp::no_delay(true), ec);
    mqtt::encode_connect(out, connect_options(options));
    kick();
    mqtt::PacketReader packets(kVersion, kMaxPacket);
    std::vector<char> chunk(64 * 1024);
    bool got_up = false;
    last_rx = Clock::now();
    for (;;) {
      auto [rec, n] = co_await socket.async_read_some(net::buffer(chunk), kTuple);
      if (g != gen) co_return got_up;  // dropped meanwhile
      if (rec) {
        drop(rec == net::error::eof ? "the local broker closed the connection" : rec.message());
        co_return got_up;
      }
      last_rx = Clock::now();
      packets.append(std::string_view(chunk.data(), n));
      for (;;) {
        auto packet = packets.next();
        if (!packet) {
          drop("a malformed packet from the local broker: " + packet.error().message);
          co_return got_up;
        }
        if (!*packet) break;
        auto& p = **packet;
        switch (p.type) {
          case mqtt::Type::connack:
            if (p.reason != 0) {
              drop("the local broker refused the connection: " + mqtt::reason_text(kVersion, p.reason, p.type));
              co_return got_up;
            }
            up = got_up = true;
            {
              std::lock_guard lock(status_mutex);
              ++connects;
              last_error.clear();
            }
            set_state("connected");
            log->info("component=canopy.MqttBridge connected to the local broker {}:{} as {} (session {})",
                      options.host, options.port, options.client_id, p.session_present ? "resumed" : "new");
            subscribe_all();
            keepalive(g);
            break;
          case mqtt::Type::publish: {
            LocalMessage m{std::move(p.topic), std::move(p.payload), p.qos, p.retain, p.dup};
            handle_publish(std::move(m), p.packet_id, g);
            break;
          }
          case mqtt::Type::puback:
            if (auto it = pending_publishes.find(p.packet_id); it != pending_publishes.end()) {
              auto done = std::move(it->second);
              pending_publishes.erase(it);
              const bool ok = p.reason < 0x80;
              {
                std::lock_guard lock(status_mutex);
                ok ? ++published : ++publish_failed;
              }
              if (done) done(ok);
            }
            break;
          case mqtt::Type::suback:
            subscribe_ids.erase(p.packet_id);
            for (std::size_t k = 0; k < p.codes.size() && k < filters.size(); ++k)
              if (p.codes[k] >= 0x80)
                log->error("component=canopy.MqttBridge the local broker refused the subscription to {}: {}",
                           filters[k], mqtt::reason_text(kVersion, p.codes[k], p.type));
            break;
          case mqtt::Type::unsuback:
          case mqtt::Type::pingresp:
            break;
          case mqtt::Type::disconnect:
            drop("the local broker disconnected us: " + mqtt::reason_text(kVersion, p.reason, p.type));
            co_return got_up;
          default:
            // The QoS 2 flow and AUTH are valid MQTT 5 but never part of this client's session
            // (QoS 1 at most, no authentication method).
            drop(fmt::format("an unexpected packet of type {} from the local broker", static_cast<int>(p.type)));
            co_return got_up;
        }
      }
    }
  }

  void handle_publish(LocalMessage m, std::uint16_t packet_id, std::uint64_t g) {
    {
      std::lock_guard lock(status_mutex);
      ++received;
    }
    if (m.qos == 0 || !on_message) {
      if (on_message) on_message(std::move(m), [] {});
      return;
    }
    std::weak_ptr<Impl> weak = shared_from_this();
    auto once = std::make_shared<std::atomic<bool>>(false);
    Ack ack = [weak, g, packet_id, once] {
      if (once->exchange(true)) return;
      auto s = weak.lock();
      if (!s) return;
      net::post(s->executor, [s, g, packet_id] {
        if (g != s->gen || !s->up) return;  // the broker sends it again on the next connection
        mqtt::encode_puback(s->out, kVersion, packet_id);
        s->kick();
        std::lock_guard lock(s->status_mutex);
        ++s->acked;
      });
    };
    if (m.qos == 2) {
      // Not subscribed at QoS 2, so the broker never sends it; refuse rather than mis-handle.
      drop("a QoS 2 message from the local broker, which this client does not subscribe to");
      return;
    }
    on_message(std::move(m), std::move(ack));
  }

  void keepalive(std::uint64_t g) {
    const auto every = std::chrono::milliseconds(options.keep_alive.count() * 750);
    timer.expires_after(every);
    timer.async_wait([self = shared_from_this(), g, every](error_code ec) {
      if (ec || g != self->gen || !self->up) return;
      if (Clock::now() - self->last_rx > every * 2) {
        self->drop("the local broker stopped answering (keepalive)");
        return;
      }
      mqtt::encode_pingreq(self->out);
      self->kick();
      self->keepalive(g);
    });
  }
};

LocalMqttClient::LocalMqttClient(net::any_io_executor executor, LocalMqttOptions options, OnMessage on_message)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(options), std::move(on_message))) {}

LocalMqttClient::~LocalMqttClient() {
  auto impl = impl_;
  net::post(impl->executor, [impl] {
    impl->stopping = true;
    impl->drop("stopping");
    impl->timer.cancel();
  });
}

void LocalMqttClient::set_subscriptions(std::vector<std::string> filters) {
  auto impl = impl_;
  net::post(impl->executor, [impl, filters = std::move(filters)]() mutable {
    std::vector<std::string> gone;
    for (const auto& f : impl->filters)
      if (std::find(filters.begin(), filters.end(), f) == filters.end()) gone.push_back(f);
    impl->filters = std::move(filters);
    if (!impl->up) return;
    if (!gone.empty()) {
      mqtt::encode_unsubscribe(impl->out, kVersion, impl->take_id(), gone);
      impl->kick();
    }
    impl->subscribe_all();
  });
}

void LocalMqttClient::start() {
  auto impl = impl_;
  net::post(impl->executor, [impl] {
    if (impl->running) return;
    impl->running = true;
    impl->stopping = false;
    net::co_spawn(impl->executor, impl->run(), [impl](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        impl->log->critical("component=canopy.MqttBridge the local broker client stopped on an unexpected error: {}",
                            ex.what());
        impl->set_state("stopped", std::string("internal error: ") + ex.what());
      }
    });
  });
}

void LocalMqttClient::stop() {
  auto impl = impl_;
  net::post(impl->executor, [impl] {
    impl->stopping = true;
    if (impl->up) {
      // Best effort: the DISCONNECT goes out if the socket takes it right away.
      error_code ignored;
      std::string bye;
      mqtt::encode_disconnect(bye, kVersion);
      impl->socket.write_some(net::buffer(bye), ignored);
    }
    impl->drop("stopping");
    impl->timer.cancel();
    impl->set_state("stopped");
  });
}

void LocalMqttClient::publish(std::string topic, std::string payload, int qos, std::function<void(bool)> done) {
  auto impl = impl_;
  net::post(impl->executor, [impl, topic = std::move(topic), payload = std::move(payload), qos,
                             done = std::move(done)]() mutable {
    if (!impl->up) {
      std::lock_guard lock(impl->status_mutex);
      ++impl->publish_failed;
      if (done) done(false);
      return;
    }
    if (qos == 0) {
      mqtt::encode_publish(impl->out, kVersion, topic, payload, 0, false, false, 0);
      impl->kick();
      {
        std::lock_guard lock(impl->status_mutex);
        ++impl->published;
      }
      if (done) done(true);
      return;
    }
    const auto id = impl->take_id();
    if (id == 0) {
      if (done) done(false);
      return;
    }
    impl->pending_publishes.emplace(id, std::move(done));
    mqtt::encode_publish(impl->out, kVersion, topic, payload, 1, false, false, id);
    impl->kick();
  });
}

bool LocalMqttClient::connected() const {
  std::lock_guard lock(impl_->status_mutex);
  return impl_->state == "connected";
}

nlohmann::json LocalMqttClient::status() const {
  const auto& i = *impl_;
  std::lock_guard lock(i.status_mutex);
  nlohmann::json j = {{"state", i.state},
                      {"broker", fmt::format("{}:{}", i.options.host, i.options.port)},
                      {"clientId", i.options.client_id},
                      {"connects", i.connects},
                      {"received", i.received},
                      {"acknowledged", i.acked},
                      {"published", i.published},
                      {"publishFailed", i.publish_failed}};
  if (!i.last_error.empty()) j["lastError"] = i.last_error;
  return j;
}

}  // namespace canopy::broker
