//! `canopy.MqttBridge`: topic mappings between the local broker (LocalMqtt), local pub/sub
//! (Pubsub) and the cloud (IotCore), configured as Greengrass's MQTT bridge is:
//! `services.canopy.MqttBridge.configuration.mqttTopicMapping.<name>: {topic, source, target,
//! targetTopicPrefix}`.
//!
//! Delivery contract:
//! - LocalMqtt → IotCore: the message is acknowledged to the local broker only after the spool
//!   committed it (LocalMqttClient holds the PUBACK), so a crash of canopyd loses nothing: the
//!   broker sends unacknowledged messages again. What remains is the broker's own crash: a
//!   message the broker acknowledged to its publisher but had not yet handed to canopyd lives
//!   only in the broker's memory (and its periodic persistence snapshot).
//! - To Pubsub and LocalMqtt delivery is direct (at most once when the target is down), and a
//!   message from LocalMqtt is acknowledged once every target has it.
//! - No loops: what the bridge publishes to the local broker never comes back to it (MQTT 5
//!   No Local), what it publishes to pub/sub never reaches its own pub/sub subscriptions
//!   (RECEIVE_MESSAGES_FROM_OTHERS), and its cloud subscriptions use No Local (MQTT 5 links).
//!
//! Threading: the bridge lives on the services strand (with the pub/sub router).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include "canopy/broker/local_mqtt.hpp"
#include "canopy/core/error.hpp"

namespace canopy::pubsub {
class Router;
}
namespace canopy::spool {
class Spool;
}
namespace canopy::cloud {
class Link;
}

namespace canopy::broker {

enum class Endpoint { local_mqtt, pubsub, iot_core };
const char* to_string(Endpoint e);

struct Mapping {
  std::string name;
  std::string topic;  ///< an MQTT topic filter in the source
  Endpoint source = Endpoint::local_mqtt;
  Endpoint target = Endpoint::iot_core;
  std::string target_topic_prefix;
};

/// Parses `mqttTopicMapping` (null or absent: no mappings). Errors (errc::invalid) name the
/// mapping and the key, e.g. `mqttTopicMapping.toCloud.source: expected LocalMqtt, Pubsub or
/// IotCore, got "Local"`; all problems at once, one per line.
result<std::vector<Mapping>> parse_mappings(const nlohmann::json& mqtt_topic_mapping);

/// canopy.MqttBridge's settings as read from the configuration store.
struct BridgeSettings {
  std::vector<Mapping> mappings;
  std::string local_host = "127.0.0.1";
  std::uint16_t local_port = 1883;  ///< 0: no local broker
  std::string error;  ///< why the configuration was (partly) refused; empty when fine
};

/// Reads `services.canopy.MqttBridge.configuration` (`mqttTopicMapping`, and `brokerUri`:
/// `mqtt://host:port`, default the local broker's loopback listener, i.e.
/// `services.canopy.LocalBroker.configuration.localPort` on 127.0.0.1). Invalid mappings are
/// all left out and named in `error`.
BridgeSettings read_bridge_settings(const nlohmann::json& bridge_configuration,
                                    const nlohmann::json& local_broker_configuration);

struct BridgeOptions {
  LocalMqttOptions local;  ///< the local broker; port 0: no local broker
};

class Bridge {
 public:
  /// `router`, `spool` and `link` must outlive the bridge; `wake_link` is called after a row
  /// is committed for the cloud.
  Bridge(boost::asio::any_io_executor services, BridgeOptions options, pubsub::Router& router, spool::Spool& spool,
         cloud::Link& link);
  ~Bridge();
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  /// Replaces the mappings (on the services strand). Subscriptions follow. `error`: what was
  /// wrong with the configuration (shown in status as configurationError).
  void configure(std::vector<Mapping> mappings, std::string error = {});
  void start();
  void stop();

  /// Per mapping: {name, topic, source, target, received, forwarded, failed}; and the local
  /// client's state. Call on the services strand.
  nlohmann::json status() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace canopy::broker
