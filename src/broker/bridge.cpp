// canopy.MqttBridge (see bridge.hpp for the delivery contract).
#include "canopy/broker/bridge.hpp"

#include <functional>
#include <mutex>
#include <vector>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "canopy/broker/settings.hpp"
#include "canopy/cloud/link.hpp"
#include "canopy/core/log.hpp"
#include "canopy/pubsub/router.hpp"
#include "canopy/pubsub/topic_filter.hpp"
#include "canopy/spool/spool.hpp"

namespace canopy::broker {

namespace net = boost::asio;

namespace {
constexpr const char* kBridge = "canopy.MqttBridge";

std::optional<Endpoint> endpoint_from(const std::string& s) {
  if (s == "LocalMqtt") return Endpoint::local_mqtt;
  if (s == "Pubsub") return Endpoint::pubsub;
  if (s == "IotCore") return Endpoint::iot_core;
  return std::nullopt;
}
}  // namespace

const char* to_string(Endpoint e) {
  switch (e) {
    case Endpoint::local_mqtt: return "LocalMqtt";
    case Endpoint::pubsub: return "Pubsub";
    case Endpoint::iot_core: return "IotCore";
  }
  return "?";
}

result<std::vector<Mapping>> parse_mappings(const nlohmann::json& j) {
  std::vector<Mapping> out;
  if (j.is_null()) return out;
  if (!j.is_object())
    return make_error(errc::invalid, "mqttTopicMapping: expected a map of named mappings {topic, source, target}");
  std::vector<std::string> problems;
  for (const auto& [name, m] : j.items()) {
    const std::string at = "mqttTopicMapping." + name;
    if (!m.is_object()) {
      problems.push_back(at + ": expected {topic, source, target, targetTopicPrefix}");
      continue;
    }
    Mapping map;
    map.name = name;
    bool ok = true;
    for (const auto& [key, v] : m.items())
      if (key != "topic" && key != "source" && key != "target" && key != "targetTopicPrefix") {
        problems.push_back(fmt::format("{}.{}: unknown key (expected topic, source, target, targetTopicPrefix)", at, key));
        ok = false;
      }
    const auto str = [&](const char* key, bool required) -> std::string {
      const auto it = m.find(key);
      if (it == m.end() || it->is_null()) {
        if (required) {
          problems.push_back(fmt::format("{}.{}: required", at, key));
          ok = false;
        }
        return {};
      }
      if (!it->is_string()) {
        problems.push_back(fmt::format("{}.{}: expected a string", at, key));
        ok = false;
        return {};
      }
      return it->get<std::string>();
    };
    map.topic = str("topic", true);
    const std::string source = str("source", true), target = str("target", true);
    map.target_topic_prefix = str("targetTopicPrefix", false);
    if (!map.topic.empty())
      if (auto v = pubsub::validate_filter(map.topic); !v) {
        problems.push_back(fmt::format("{}.topic: \"{}\" is not a valid MQTT topic filter: {}", at, map.topic,
                                       v.error().message));
        ok = false;
      }
    const auto src = endpoint_from(source), dst = endpoint_from(target);
    if (!source.empty() && !src) {
      problems.push_back(fmt::format("{}.source: expected LocalMqtt, Pubsub or IotCore, got \"{}\"", at, source));
      ok = false;
    }
    if (!target.empty() && !dst) {
      problems.push_back(fmt::format("{}.target: expected LocalMqtt, Pubsub or IotCore, got \"{}\"", at, target));
      ok = false;
    }
    if (src && dst && *src == *dst) {
      problems.push_back(fmt::format("{}: source and target are both {}", at, source));
      ok = false;
    }
    if (!ok) continue;
    map.source = *src;
    map.target = *dst;
    out.push_back(std::move(map));
  }
  if (!problems.empty()) {
    std::string msg;
    for (const auto& p : problems) msg += (msg.empty() ? "" : "\n") + p;
    return make_error(errc::invalid, msg);
  }
  return out;
}

BridgeSettings read_bridge_settings(const nlohmann::json& bridge, const nlohmann::json& local_broker) {
  BridgeSettings out;
  std::vector<std::string> errors;
  // The managed broker's own reading of its settings, so both agree on the port.
  if (auto lb = parse_settings(local_broker)) out.local_port = lb->enabled ? static_cast<std::uint16_t>(lb->local_port) : 0;
  if (bridge.is_object()) {
    if (const auto it = bridge.find("brokerUri"); it != bridge.end() && !it->is_null()) {
      const std::string uri = it->is_string() ? it->get<std::string>() : std::string();
      const auto scheme = uri.find("://");
      const auto colon = uri.rfind(':');
      bool ok = scheme != std::string::npos && colon > scheme + 3 &&
                (uri.compare(0, scheme, "mqtt") == 0 || uri.compare(0, scheme, "tcp") == 0);
      unsigned long port = 0;
      if (ok) {
        try {
          port = std::stoul(uri.substr(colon + 1));
        } catch (const std::exception&) {
          ok = false;
        }
      }
      if (ok && port > 0 && port <= 65535) {
        out.local_host = uri.substr(scheme + 3, colon - scheme - 3);
        out.local_port = static_cast<std::uint16_t>(port);
      } else {
        errors.push_back(fmt::format("brokerUri: expected mqtt://host:port (the local broker over plain TCP, e.g. "
                                     "mqtt://127.0.0.1:1883), got {}",
                                     it->dump()));
      }
    }
    auto maps = parse_mappings(bridge.value("mqttTopicMapping", nlohmann::json()));
    if (maps) out.mappings = std::move(*maps);
    else errors.push_back(maps.error().message);
  }
  for (const auto& e : errors) out.error += (out.error.empty() ? "" : "\n") + e;
  return out;
}

struct Counters {
  std::uint64_t received = 0, forwarded = 0, failed = 0;
};

struct Bridge::Impl : std::enable_shared_from_this<Impl> {
  Impl(net::any_io_executor ex, BridgeOptions o, pubsub::Router& r, spool::Spool& s, cloud::Link& l)
      : services(std::move(ex)), options(std::move(o)), router(r), spool(s), link(l), log(log::get("broker")) {}

  net::any_io_executor services;
  BridgeOptions options;
  pubsub::Router& router;
  spool::Spool& spool;
  cloud::Link& link;
  std::shared_ptr<spdlog::logger> log;
  std::unique_ptr<LocalMqttClient> local;

  std::vector<Mapping> mappings;
  std::vector<Counters> counters;  // per mapping, same index
  std::vector<pubsub::SubscriptionId> pubsub_subs;
  std::vector<std::uint64_t> cloud_subs;
  std::uint64_t config_gen = 0;
  std::string config_error;
  bool started = false;

  // Delivers one message from `source` on `topic` to every mapping that takes it; `done` runs
  // (on the services strand) once every target has it, whatever the outcome.
  void route(Endpoint source, const std::string& topic, std::string payload, int qos, std::function<void()> done) {
    std::vector<std::size_t> hits;
    for (std::size_t i = 0; i < mappings.size(); ++i)
      if (mappings[i].source == source && pubsub::matches(mappings[i].topic, topic)) hits.push_back(i);
    if (hits.empty()) {
      if (done) done();
      return;
    }
    auto left = std::make_shared<std::size_t>(hits.size());
    auto self = shared_from_this();
    const std::uint64_t g = config_gen;
    auto finish = [self, left, done](std::uint64_t gen, std::size_t i, bool ok, const std::string& why) {
      if (gen == self->config_gen && i < self->counters.size()) {
        auto& c = self->counters[i];
        if (ok) ++c.forwarded;
        else {
          ++c.failed;
          self->log->warn("component={} mapping={} a message could not be forwarded to {}: {}", kBridge,
                          self->mappings[i].name, to_string(self->mappings[i].target), why);
        }
      }
      if (--*left == 0 && done) done();
    };
    for (std::size_t i : hits) {
      ++counters[i].received;
      const auto& m = mappings[i];
      const std::string out_topic = m.target_topic_prefix + topic;
      switch (m.target) {
        case Endpoint::pubsub: {
          auto r = router.publish(out_topic, pubsub::Payload::binary(std::string_view(payload)), kBridge);
          finish(g, i, static_cast<bool>(r), r ? std::string() : r.error().message);
          break;
        }
        case Endpoint::iot_core: {
          spool::Message sm;
          sm.topic = out_topic;
          sm.payload = payload;
          sm.qos = qos > 0 ? 1 : 0;
          spool.enqueue(std::move(sm), [self, g, i, finish](result<std::int64_t> id) {
            // (the cloud link gets the row from the spool's commit feed)
            self->complete_later([g, i, finish, ok = static_cast<bool>(id),
                                  why = id ? std::string() : id.error().message] {
              finish(g, i, ok, why);
            });
          });
          break;
        }
        case Endpoint::local_mqtt: {
          if (!local) {
            finish(g, i, false, "no local broker is configured");
            break;
          }
          local->publish(out_topic, payload, qos > 0 ? 1 : 0, [self, g, i, finish](bool ok) {
            net::post(self->services, [g, i, finish, ok] {
              finish(g, i, ok, ok ? std::string() : "the local broker is not connected or refused it");
            });
          });
          break;
        }
      }
    }
  }

  // Spool completions arrive on the spool's thread, a commit's worth at a time. They are run on
  // the services strand in one posted batch, not one post (and one wake-up of the loop) each.
  std::mutex completions_mutex;
  std::vector<std::function<void()>> completions;

  void complete_later(std::function<void()> fn) {
    bool first = false;
    {
      std::lock_guard lock(completions_mutex);
      first = completions.empty();
      completions.push_back(std::move(fn));
    }
    if (first) net::post(services, [self = shared_from_this()] { self->run_completions(); });
  }

  void run_completions() {
    std::vector<std::function<void()>> batch;
    {
      std::lock_guard lock(completions_mutex);
      batch.swap(completions);
    }
    for (auto& fn : batch) fn();
  }

  bool uses_local() const {
    for (const auto& m : mappings)
      if (m.source == Endpoint::local_mqtt || m.target == Endpoint::local_mqtt) return true;
    return false;
  }

  void subscribe_all() {
    // Pub/sub: as the bridge, never receiving what the bridge itself published (no loops).
    for (auto id : std::exchange(pubsub_subs, {})) router.unsubscribe(id);
    for (auto id : std::exchange(cloud_subs, {})) link.unsubscribe(id);
    std::vector<std::string> local_filters;
    std::weak_ptr<Impl> weak = shared_from_this();
    for (const auto& m : mappings) {
      if (m.source == Endpoint::pubsub) {
        auto id = router.subscribe(
            m.topic, pubsub::Subscriber{kBridge, pubsub::ReceiveMode::receive_messages_from_others,
                                        [weak](const pubsub::Delivery& d) {
                                          auto s = weak.lock();
                                          if (!s) return;
                                          std::string bytes;
                                          if (d.payload.is_binary())
                                            bytes.assign(d.payload.binary_message().begin(), d.payload.binary_message().end());
                                          else
                                            bytes = d.payload.json_string();
                                          // Delivery runs inside publish(): route after it returns.
                                          net::post(s->services, [s, topic = std::string(d.topic), bytes = std::move(bytes)]() mutable {
                                            s->route(Endpoint::pubsub, topic, std::move(bytes), 1, nullptr);
                                          });
                                        }});
        if (id) pubsub_subs.push_back(*id);
        else log->error("component={} mapping={} cannot subscribe to {} on local pub/sub: {}", kBridge, m.name, m.topic,
                        id.error().message);
      } else if (m.source == Endpoint::iot_core) {
        auto id = link.subscribe(
            m.topic, 1,
            [weak](const cloud::IncomingMessage& in) {
              if (auto s = weak.lock())
                net::post(s->services, [s, topic = in.topic, payload = in.payload, qos = in.qos]() mutable {
                  s->route(Endpoint::iot_core, topic, std::move(payload), qos, nullptr);
                });
            },
            [weak, name = m.name](const std::string& why) {
              if (auto s = weak.lock())
                s->log->error("component={} mapping={} {}", kBridge, name, why);
            },
            /*no_local=*/true);
        if (id) cloud_subs.push_back(*id);
        else log->error("component={} mapping={} cannot subscribe to {} in the cloud: {}", kBridge, m.name, m.topic,
                        id.error().message);
      } else if (std::find(local_filters.begin(), local_filters.end(), m.topic) == local_filters.end()) {
        local_filters.push_back(m.topic);
      }
    }
    if (local) local->set_subscriptions(std::move(local_filters));
  }
};

Bridge::Bridge(net::any_io_executor services, BridgeOptions options, pubsub::Router& router, spool::Spool& spool,
               cloud::Link& link)
    : impl_(std::make_shared<Impl>(std::move(services), std::move(options), router, spool, link)) {
  if (impl_->options.local.port != 0) {
    std::weak_ptr<Impl> weak = impl_;
    impl_->local = std::make_unique<LocalMqttClient>(
        impl_->services, impl_->options.local, [weak](LocalMessage m, LocalMqttClient::Ack ack) {
          auto s = weak.lock();
          if (!s) return;
          // The PUBACK goes to the local broker only once every target has the message (for
          // IotCore: once the spool committed it).
          s->route(Endpoint::local_mqtt, m.topic, std::move(m.payload), m.qos, std::move(ack));
        });
  }
}

Bridge::~Bridge() = default;

void Bridge::configure(std::vector<Mapping> mappings, std::string error) {
  auto& i = *impl_;
  ++i.config_gen;
  i.config_error = std::move(error);
  if (!i.config_error.empty())
    i.log->error("component={} the configuration has problems; the mappings named are left out:\n{}", kBridge,
                 i.config_error);
  i.mappings = std::move(mappings);
  i.counters.assign(i.mappings.size(), Counters{});
  i.log->info("component={} {} topic mapping(s)", kBridge, i.mappings.size());
  for (const auto& m : i.mappings)
    i.log->info("component={} mapping={} {} {} -> {}{}", kBridge, m.name, to_string(m.source), m.topic,
                to_string(m.target), m.target_topic_prefix.empty() ? "" : " (prefix " + m.target_topic_prefix + ")");
  if (i.started) {
    i.subscribe_all();
    if (i.local && i.uses_local()) i.local->start();
  }
}

void Bridge::start() {
  auto& i = *impl_;
  i.started = true;
  i.subscribe_all();
  // The local broker only when a mapping needs it.
  if (i.local && i.uses_local()) i.local->start();
}

void Bridge::stop() {
  auto& i = *impl_;
  i.started = false;
  for (auto id : std::exchange(i.pubsub_subs, {})) i.router.unsubscribe(id);
  for (auto id : std::exchange(i.cloud_subs, {})) i.link.unsubscribe(id);
  if (i.local) i.local->stop();
}

nlohmann::json Bridge::status() const {
  const auto& i = *impl_;
  nlohmann::json maps = nlohmann::json::array();
  for (std::size_t k = 0; k < i.mappings.size(); ++k) {
    const auto& m = i.mappings[k];
    const auto& c = i.counters[k];
    maps.push_back({{"name", m.name},
                    {"topic", m.topic},
                    {"source", to_string(m.source)},
                    {"target", to_string(m.target)},
                    {"targetTopicPrefix", m.target_topic_prefix},
                    {"received", c.received},
                    {"forwarded", c.forwarded},
                    {"failed", c.failed}});
  }
  nlohmann::json j = {{"mappings", maps}, {"localBroker", i.local ? i.local->status() : nlohmann::json(nullptr)}};
  if (!i.config_error.empty()) j["configurationError"] = i.config_error;
  return j;
}

}  // namespace canopy::broker
