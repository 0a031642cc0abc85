//! The cloud link: one MQTT connection (v5, or 3.1.1) over mutual TLS to the configured
//! endpoint, draining the spool and carrying the cloud subscriptions.
//!
//! The MQTT client is canopyd's own (canopy::mqtt codec) on the link's strand, over a TLS stream
//! made with the identity's SSL_CTX. No MQTT library fits: Paho's and libmosquitto's TLS take
//! only key *files* in OpenSSL's default library context, which cannot hold a TPM key next to
//! file keys (tls_identity.hpp), and their own I/O threads cost more than the TLS itself (Paho
//! under a loopback pipe drained at 24,600 msg/s; see docs/PERFORMANCE.md). Here a burst of
//! PUBLISH packets is written in one TLS write, and PUBACKs are handled as they are read.
//! TLS failures are reported by name (the server's certificate, the host name, an alert from
//! the server).
//!
//! Delivery contract: a spool row is deleted only on the cloud's PUBACK (QoS 1) or once
//! written (QoS 0). After a reconnect every row still in the spool is sent again, in id
//! order, so per topic the first copy of each message arrives in order; duplicates are
//! possible and counted by the spool, losses are not.
//!
//! Threading: everything runs on the link's strand. Public methods may be called from any
//! thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>
#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"

namespace canopy::trust {
class TlsIdentity;
}
namespace canopy::spool {
class Spool;
struct Message;
}

namespace canopy::cloud {

struct LinkOptions {
  std::string endpoint;  ///< iotDataEndpoint: host name (or IP) of the cloud broker
  std::uint16_t port = 8883;
  int mqtt_version = 5;  ///< 5 or 4 (3.1.1)
  std::string client_id;  ///< the thing name
  std::shared_ptr<trust::TlsIdentity> identity;
  std::chrono::seconds keep_alive{60};
  std::chrono::seconds connect_timeout{10};  ///< TCP + TLS + CONNACK, each attempt
  /// Reconnect: delay = random(0, min(backoff_max, backoff_base * 2^failures)) ("full jitter");
  /// failures reset once a connection has stayed up for `stable`.
  std::chrono::milliseconds backoff_base{1000};
  std::chrono::milliseconds backoff_max{120'000};
  std::chrono::seconds stable{60};
  std::size_t max_inflight = 100;  ///< unacknowledged QoS 1 publishes (AWS IoT Core allows 100)
  double max_publish_rate = 100;   ///< publishes per second, 0 = unlimited (AWS: 100 per connection)
  /// While a backlog drains after a reconnect, the share (percent) of sends given to newer
  /// messages on topics that have no backlog left; 0 = strictly in id order.
  std::uint32_t live_share_percent = 50;
};

/// One message from a cloud subscription.
struct IncomingMessage {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  /// MQTT 5 properties as PublishToIoTCore/IoTCoreMessage name them (userProperties,
  /// contentType, correlationData (base64), responseTopic, payloadFormat,
  /// messageExpiryIntervalSeconds); empty object when none.
  nlohmann::json properties = nlohmann::json::object();
};

enum class LinkState {
  disabled,     ///< no endpoint configured: messages wait in the spool
  connecting,   ///< TCP, TLS and MQTT CONNECT in progress
  connected,
  waiting,      ///< backing off before the next attempt
  stopped,
};
const char* to_string(LinkState s);

class Link {
 public:
  /// Does not connect yet (start()). `spool` must outlive the link.
  Link(boost::asio::any_io_executor executor, LinkOptions options, spool::Spool& spool);
  ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  /// Starts the connect loop (or stays `disabled` without an endpoint) and takes the spool's
  /// commit feed (Spool::set_commit_feed) for new rows, holding itself only weakly there.
  void start();
  /// Disconnects cleanly (DISCONNECT, then closes), gives up on in-flight publishes (they stay
  /// in the spool), and calls `done` on the link's strand; within `deadline`.
  void stop(std::chrono::milliseconds deadline, std::function<void()> done);

  /// Forgets the messages the link held (see README, "A message the cloud will not take") and
  /// reconnects, so that everything in the spool is sent again from the oldest; `done(n)` gets
  /// how many were held (0: nothing to do, no reconnect), on the link's strand.
  void release_held(std::function<void(std::size_t released)> done);

  /// QoS 0 without the spool: hands the message to the MQTT client now if connected and calls
  /// `done(true)`; `done(false)` (on the link's strand) when not connected or the message is
  /// larger than the cloud's Maximum Packet Size, so the caller can spool it instead.
  void publish_direct(spool::Message message, std::function<void(bool sent)> done);

  using MessageHandler = std::function<void(const IncomingMessage&)>;
  /// Called when the cloud refuses the subscription (a SUBACK failure), with a sentence.
  using RefusedHandler = std::function<void(const std::string& why)>;
  /// Adds a local subscriber to a cloud topic filter. Subscribers share cloud subscriptions:
  /// the first for a filter subscribes in the cloud, the last to leave unsubscribes; all are
  /// subscribed again after each reconnect. Handlers run on the link's strand. `no_local`
  /// (MQTT 5 links only): the cloud does not send back what this device publishes on it; a
  /// filter is subscribed with No Local only if all its subscribers ask for it.
  /// Errors: errc::invalid for a malformed filter or QoS.
  result<std::uint64_t> subscribe(const std::string& filter, int qos, MessageHandler on_message,
                                  RefusedHandler on_refused, bool no_local = false);
  void unsubscribe(std::uint64_t id);

  /// A snapshot for `canopy status`: state, endpoint, since, lastError, reconnects, inflight,
  /// subscriptions, key storage. Thread-safe.
  nlohmann::json status() const;
  LinkState state() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace canopy::cloud
