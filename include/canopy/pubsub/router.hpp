//! The local pub/sub router: MQTT-style subscriptions, synchronous in-order delivery.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"
#include "canopy/pubsub/topic_filter.hpp"

namespace canopy::pubsub {

/// Identifies one subscription. Allocated from 1 upwards by one Router and never reused, so a
/// stale id (of a closed IPC stream, say) is a harmless lookup miss, never someone else's
/// subscription. 0 is never a valid id.
using SubscriptionId = std::uint64_t;

/// Whether a subscriber receives what its own component publishes (Greengrass `receiveMode`).
enum class ReceiveMode {
  receive_all_messages,          ///< RECEIVE_ALL_MESSAGES: own publishes are delivered too
  receive_messages_from_others,  ///< RECEIVE_MESSAGES_FROM_OTHERS: no echo to the publisher
};

/// The mode Greengrass uses when SubscribeToTopic carries no `receiveMode`: it depends on the
/// filter. A filter with a wildcard (`+` or `#`) gets receive_messages_from_others, any other
/// filter receive_all_messages (Java nucleus, PubSubIPCEventStreamAgent.validateReceiveMode;
/// also the SubscribeToTopic documentation). The IPC layer calls this when the field is absent.
ReceiveMode default_receive_mode(std::string_view filter) noexcept;

/// The wire name: "RECEIVE_ALL_MESSAGES" or "RECEIVE_MESSAGES_FROM_OTHERS".
std::string_view to_string(ReceiveMode mode) noexcept;

/// Parses a wire name (exact, case-sensitive, as the SDKs send it).
/// Errors: errc::invalid naming the value and the accepted ones.
result<ReceiveMode> parse_receive_mode(std::string_view name);

/// A published message: JSON (Greengrass `jsonMessage.message`) or raw bytes
/// (`binaryMessage.message`, already base64-decoded). JSON comes in two forms: a document
/// (json()) or its text (json_text(), what the IPC layer uses: it forwards the publisher's text
/// without building a document). The topic is not part of the payload; each Delivery carries it
/// as the message context. Immutable once made; shared by reference with every subscriber of
/// one publish.
class Payload {
 public:
  /// A JSON payload. Any JSON value is stored; the IPC layer decides what it accepts
  /// (Greengrass models jsonMessage.message as an object).
  static Payload json(nlohmann::json message);
  /// A JSON payload held as text. Precondition: `text` is exactly one valid JSON value (the
  /// caller validated it; it is not checked here). Subscribers get it as it is.
  static Payload json_text(std::string text);
  /// A binary payload.
  static Payload binary(std::vector<std::uint8_t> bytes);
  /// A binary payload copied from `bytes`.
  static Payload binary(std::string_view bytes);
  /// A binary payload that also keeps the base64 text it was decoded from, so subscribers
  /// receive that text without encoding the bytes again. Precondition: `base64` is plain
  /// base64 (alphabet and padding only) that decodes to `bytes`.
  static Payload binary(std::vector<std::uint8_t> bytes, std::string base64);

  /// True for a JSON payload, in either form (document or text).
  bool is_json() const noexcept { return message_.index() != 1; }
  /// True for a binary payload.
  bool is_binary() const noexcept { return message_.index() == 1; }
  /// True for a JSON payload made by json_text().
  bool is_json_text() const noexcept { return message_.index() == 2; }
  /// The JSON document: a copy of a json() payload's, or parsed from a json_text() payload's
  /// text (each call parses again). Precondition: is_json(); otherwise throws
  /// std::bad_variant_access.
  nlohmann::json json_message() const;
  /// The JSON as compact text: a json_text() payload's text as given, or a json() payload's
  /// document serialized (invalid UTF-8 replaced by U+FFFD). Precondition: is_json(); otherwise
  /// throws std::bad_variant_access.
  std::string json_string() const;
  /// The text of a json_text() payload, without a copy. Precondition: is_json_text();
  /// otherwise throws std::bad_variant_access.
  const std::string& json_text() const { return std::get<2>(message_).text; }
  /// The bytes. Precondition: is_binary(); otherwise throws std::bad_variant_access.
  const std::vector<std::uint8_t>& binary_message() const { return std::get<1>(message_); }
  /// The base64 text a binary payload was made from, or empty when it was made from bytes.
  const std::string& binary_base64() const noexcept { return base64_; }

 private:
  struct JsonText {
    std::string text;
  };
  using Message = std::variant<nlohmann::json, std::vector<std::uint8_t>, JsonText>;
  explicit Payload(Message message) : message_(std::move(message)) {}
  Message message_;
  std::string base64_;
};

/// One message handed to one subscriber: what the IPC layer turns into Greengrass's
/// SubscriptionResponseMessage `{jsonMessage|binaryMessage: {message, context: {topic}}}`.
/// Every view and reference is valid only during the sink call; copy what must outlive it.
struct Delivery {
  SubscriptionId subscription;        ///< the subscription being served
  std::string_view topic;             ///< the concrete topic published to (context.topic)
  const Payload& payload;             ///< the message, shared by all subscribers of this publish
  std::string_view source_component;  ///< who published it
};

/// Who subscribes and where its messages go.
struct Subscriber {
  /// The subscribing component's name; compared with publish()'s source_component for
  /// receive_messages_from_others. May be empty for internal subscribers (then it only
  /// suppresses publishes whose source is empty too).
  std::string component;
  /// Use default_receive_mode(filter) when the request carried none.
  ReceiveMode mode = ReceiveMode::receive_all_messages;
  /// Called synchronously, on the router's strand, once per matching publish. It should be
  /// quick (an IPC session posts the message to its own strand). It may subscribe, unsubscribe
  /// (itself included) and publish; see Router. If it throws, the router catches the
  /// exception, counts it in RouterStats::sink_failures, logs it and goes on with the next
  /// subscriber. Must not destroy the Router.
  std::function<void(const Delivery&)> sink;
};

/// Bounds that keep a misbehaving client from exhausting the daemon.
struct RouterLimits {
  /// Live subscriptions across all components; subscribe() beyond it fails with errc::busy.
  std::size_t max_subscriptions = 100'000;
  /// How deeply publish() may be re-entered from sinks (a sink publishing from a delivery that
  /// a sink publishing ... ). Beyond it publish() fails with errc::busy, which stops
  /// publish loops between components instead of overflowing the stack. Counts the outermost
  /// publish: 1 forbids publishing from sinks; 0 is treated as 1.
  std::size_t max_nesting = 8;
};

/// Counters since construction. Monotonic; read them on the router's strand.
struct RouterStats {
  std::uint64_t published = 0;       ///< publish() calls accepted (valid topic)
  std::uint64_t rejected = 0;        ///< publish() calls refused (invalid topic, nested too deep)
  std::uint64_t deliveries = 0;      ///< sink calls that returned normally
  std::uint64_t unmatched = 0;       ///< accepted publishes that reached no subscriber
  std::uint64_t suppressed_own = 0;  ///< deliveries skipped by receive_messages_from_others
  std::uint64_t sink_failures = 0;   ///< sink calls that threw
};

/// The local topic router behind PublishToTopic / SubscribeToTopic, also usable by internal
/// services (the bridge, the nucleus).
///
/// Delivery is synchronous: publish() calls each matching subscriber's sink before it returns,
/// in subscription order (older subscriptions first). So every subscriber sees the publishes
/// it matches in the order they were made, per topic and across topics.
///
/// Changes made from inside a sink, during a publish:
/// - subscribe(): the new subscription receives the *next* publish, not the one in progress;
/// - unsubscribe(): takes effect at once; a subscription removed before its turn in the
///   current publish is skipped, and after unsubscribe() returns its sink is never called
///   again (a sink that removes itself stays alive until its call returns);
/// - publish(): delivered immediately, depth-first (nested inside the current publish), up
///   to RouterLimits::max_nesting deep. Subscribers later in the outer publish's order then see
///   the nested message before the outer one; sinks that need strict order should queue.
///
/// @par Thread Safety
/// Not thread-safe. Its owner calls it from one strand only (DESIGN.md: the pub/sub router
/// has its own strand); sinks run on that strand. Not copyable or movable (sinks may hold its
/// address).
class Router {
 public:
  /// An empty router.
  explicit Router(RouterLimits limits = {});
  ~Router();
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;
  Router(Router&&) = delete;
  Router& operator=(Router&&) = delete;

  /// Adds a subscription for `filter` (MQTT wildcards allowed) and returns its id. The same
  /// component may subscribe to the same filter several times; each subscription is separate
  /// and gets its own copy of each message.
  /// Errors: errc::invalid for a filter validate_filter() rejects (its message) or an empty
  /// sink; errc::busy when RouterLimits::max_subscriptions are live.
  result<SubscriptionId> subscribe(std::string_view filter, Subscriber subscriber);

  /// Removes a subscription. Returns false, changing nothing, for an unknown or already
  /// removed id. Safe from inside a sink (see the class comment).
  bool unsubscribe(SubscriptionId id);

  /// Removes every subscription of `component` (its IPC connection closed); returns how many.
  std::size_t unsubscribe_component(std::string_view component);

  /// Publishes `payload` on `topic` on behalf of `source_component` and delivers it to every
  /// matching subscription (minus the publisher's own receive_messages_from_others ones).
  /// Returns the number of sinks that received it (0 when nobody subscribed: still a success,
  /// as in Greengrass).
  /// Errors: errc::invalid for a topic validate_topic() rejects (its message, e.g. a
  /// wildcard); errc::busy when called from sinks more than RouterLimits::max_nesting deep.
  result<std::size_t> publish(std::string_view topic, const Payload& payload,
                              std::string_view source_component);

  /// Live subscriptions.
  std::size_t subscription_count() const noexcept { return entries_.size(); }

  /// The filter of a live subscription, or nullptr for an unknown id. The pointer is valid
  /// until that subscription is removed.
  const std::string* filter_of(SubscriptionId id) const noexcept;

  /// Counters since construction.
  const RouterStats& stats() const noexcept { return stats_; }

 private:
  struct Entry {
    std::string filter;
    Subscriber subscriber;
  };
  void retire(std::unordered_map<SubscriptionId, std::unique_ptr<Entry>>::iterator it);

  RouterLimits limits_;
  TopicTrie trie_;
  std::unordered_map<SubscriptionId, std::unique_ptr<Entry>> entries_;
  SubscriptionId next_id_ = 1;
  std::size_t depth_ = 0;  ///< publish() calls in progress on the stack
  /// Entries unsubscribed while a publish was delivering: kept alive (a sink may be running
  /// inside one) until the outermost publish returns.
  std::vector<std::unique_ptr<Entry>> retired_;
  /// One matched-id buffer per nesting depth, reused across publishes (no allocation in the
  /// steady state). Sized max_nesting at construction and never resized.
  std::vector<std::vector<SubscriptionId>> scratch_;
  RouterStats stats_;
};

}  // namespace canopy::pubsub
