//! canopyd's own MQTT 5 client for the local broker (loopback TCP), written for one property no
//! library offers: a received QoS 1 message is acknowledged (PUBACK) only when the application
//! says it is safe, e.g. once the spool has committed it. libmosquitto, Paho C and Paho C++ all
//! send the PUBACK before the application sees the message (messaging.md §4), so a crash in
//! between loses it. With a persistent session (clean start off, a session expiry) the broker
//! keeps every message not yet acknowledged and sends it again after a reconnect.
//!
//! Deliberately small: CONNECT, SUBSCRIBE (QoS 1, No Local, Retain As Published), PUBLISH in
//! both directions at QoS 0/1, PUBACK, PINGREQ, DISCONNECT. Properties received are skipped.
//!
//! Threading: everything runs on the executor given (a strand); callbacks run there too. Ack
//! functions and publish() may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"
#include "canopy/mqtt/codec.hpp"

namespace canopy::broker {

struct LocalMqttOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 1883;
  std::string client_id = "canopy.MqttBridge";
  std::chrono::seconds keep_alive{30};
  /// How long the broker keeps the session (and the messages for it) while canopyd is away.
  std::uint32_t session_expiry_seconds = 7 * 24 * 3600;
  /// The most unacknowledged QoS 1 messages the broker may send us (MQTT 5 Receive Maximum).
  std::uint16_t receive_maximum = 1000;
  std::chrono::milliseconds reconnect_min{200};
  std::chrono::milliseconds reconnect_max{5000};
  std::chrono::seconds connect_timeout{5};
};

struct LocalMessage {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  bool dup = false;  ///< the broker sent it before (a redelivery after a reconnect)
};

// --- What the client asks of the broker, exposed for unit tests ------------------------------
// (The wire format itself is canopy::mqtt's, MQTT 5.)

/// CONNECT: never a clean start, the session expiry and Receive Maximum of `o`.
mqtt::ConnectOptions connect_options(const LocalMqttOptions& o);
/// SUBSCRIBE: each filter at QoS 1 with No Local and Retain As Published.
std::vector<mqtt::SubscribeRequest> subscribe_requests(const std::vector<std::string>& filters);

class LocalMqttClient {
 public:
  /// Call once when the message may be acknowledged; any thread, at most once.
  using Ack = std::function<void()>;
  using OnMessage = std::function<void(LocalMessage message, Ack ack)>;

  LocalMqttClient(boost::asio::any_io_executor executor, LocalMqttOptions options, OnMessage on_message);
  ~LocalMqttClient();
  LocalMqttClient(const LocalMqttClient&) = delete;
  LocalMqttClient& operator=(const LocalMqttClient&) = delete;

  /// The filters subscribed at QoS 1 after every connect (No Local: what this client publishes
  /// never comes back to it). Changing them while connected subscribes the new ones now;
  /// filters no longer wanted are unsubscribed.
  void set_subscriptions(std::vector<std::string> filters);
  void start();
  /// Sends DISCONNECT and closes; unacknowledged messages stay with the broker.
  void stop();

  /// Publishes at QoS 1 (or 0). `done(true)` on the broker's PUBACK (at once for QoS 0),
  /// `done(false)` when not connected or the connection drops first. Any thread.
  void publish(std::string topic, std::string payload, int qos, std::function<void(bool)> done);

  /// state, port, connects, received, acked, published, lastError. Thread-safe.
  nlohmann::json status() const;
  bool connected() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace canopy::broker
