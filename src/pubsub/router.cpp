#include "canopy/pubsub/router.hpp"

#include <algorithm>
#include <exception>

#include "canopy/core/log.hpp"

namespace canopy::pubsub {

ReceiveMode default_receive_mode(std::string_view filter) noexcept {
  return has_wildcard(filter) ? ReceiveMode::receive_messages_from_others : ReceiveMode::receive_all_messages;
}

std::string_view to_string(ReceiveMode mode) noexcept {
  switch (mode) {
    case ReceiveMode::receive_all_messages: return "RECEIVE_ALL_MESSAGES";
    case ReceiveMode::receive_messages_from_others: return "RECEIVE_MESSAGES_FROM_OTHERS";
  }
  return "RECEIVE_ALL_MESSAGES";
}

result<ReceiveMode> parse_receive_mode(std::string_view name) {
  if (name == "RECEIVE_ALL_MESSAGES") return ReceiveMode::receive_all_messages;
  if (name == "RECEIVE_MESSAGES_FROM_OTHERS") return ReceiveMode::receive_messages_from_others;
  return make_error(errc::invalid, "receiveMode \"" + std::string(name.substr(0, 64)) +
                                       "\" is not one of RECEIVE_ALL_MESSAGES, RECEIVE_MESSAGES_FROM_OTHERS");
}

Payload Payload::json(nlohmann::json message) {
  return Payload(Message(std::in_place_index<0>, std::move(message)));
}

Payload Payload::json_text(std::string text) {
  return Payload(Message(std::in_place_index<2>, JsonText{std::move(text)}));
}

Payload Payload::binary(std::vector<std::uint8_t> bytes) {
  return Payload(Message(std::in_place_index<1>, std::move(bytes)));
}

Payload Payload::binary(std::string_view bytes) {
  return binary(std::vector<std::uint8_t>(bytes.begin(), bytes.end()));
}

Payload Payload::binary(std::vector<std::uint8_t> bytes, std::string base64) {
  Payload p(Message(std::in_place_index<1>, std::move(bytes)));
  p.base64_ = std::move(base64);
  return p;
}

nlohmann::json Payload::json_message() const {
  if (const auto* text = std::get_if<2>(&message_)) return nlohmann::json::parse(text->text);
  return std::get<0>(message_);
}

std::string Payload::json_string() const {
  if (const auto* text = std::get_if<2>(&message_)) return text->text;
  return std::get<0>(message_).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Router::Router(RouterLimits limits) : limits_(limits) {
  limits_.max_nesting = std::max<std::size_t>(limits_.max_nesting, 1);
  // Fixed size so that a nested publish never reallocates the buffer an outer one is reading.
  scratch_.resize(limits_.max_nesting);
}

Router::~Router() = default;

result<SubscriptionId> Router::subscribe(std::string_view filter, Subscriber subscriber) {
  if (auto r = validate_filter(filter); !r) return std::move(r).error();
  if (!subscriber.sink)
    return make_error(errc::invalid, "subscription of component \"" + subscriber.component + "\" to topic filter \"" +
                                         std::string(filter.substr(0, 96)) + "\" has no sink");
  if (entries_.size() >= limits_.max_subscriptions)
    return make_error(errc::busy, "cannot subscribe component \"" + subscriber.component +
                                      "\": the router already holds " + std::to_string(entries_.size()) +
                                      " subscriptions, its limit");
  const SubscriptionId id = next_id_++;
  auto entry = std::make_unique<Entry>(Entry{std::string(filter), std::move(subscriber)});
  entries_.emplace(id, std::move(entry));
  // insert() cannot report a duplicate: the id is fresh.
  static_cast<void>(trie_.insert(filter, id));
  return id;
}

void Router::retire(std::unordered_map<SubscriptionId, std::unique_ptr<Entry>>::iterator it) {
  static_cast<void>(trie_.erase(it->second->filter, it->first));
  // While a publish is delivering, a sink may be running inside this very entry: keep the
  // entry (and its std::function) alive until the outermost publish returns.
  if (depth_ > 0) retired_.push_back(std::move(it->second));
  entries_.erase(it);
}

bool Router::unsubscribe(SubscriptionId id) {
  const auto it = entries_.find(id);
  if (it == entries_.end()) return false;
  retire(it);
  return true;
}

std::size_t Router::unsubscribe_component(std::string_view component) {
  std::vector<SubscriptionId> ids;
  for (const auto& [id, entry] : entries_)
    if (entry->subscriber.component == component) ids.push_back(id);
  for (const SubscriptionId id : ids) static_cast<void>(unsubscribe(id));
  return ids.size();
}

const std::string* Router::filter_of(SubscriptionId id) const noexcept {
  const auto it = entries_.find(id);
  return it == entries_.end() ? nullptr : &it->second->filter;
}

result<std::size_t> Router::publish(std::string_view topic, const Payload& payload,
                                    std::string_view source_component) {
  if (auto r = validate_topic(topic); !r) {
    ++stats_.rejected;
    return std::move(r).error();
  }
  if (depth_ >= limits_.max_nesting) {
    ++stats_.rejected;
    return make_error(errc::busy, "publish to topic \"" + std::string(topic.substr(0, 96)) +
                                      "\" from a subscriber callback is nested " + std::to_string(depth_) +
                                      " deep, the limit; is there a publish loop between components?");
  }
  ++stats_.published;

  // Snapshot the matching ids first, so that sinks may change subscriptions freely while we
  // deliver. Ids grow with every subscribe, so sorting them gives subscription order.
  const std::size_t level = depth_;
  scratch_[level].clear();
  trie_.match(topic, [this, level](std::uint64_t id) { scratch_[level].push_back(id); });
  std::sort(scratch_[level].begin(), scratch_[level].end());

  struct DepthGuard {
    Router& router;
    explicit DepthGuard(Router& r) : router(r) { ++router.depth_; }
    ~DepthGuard() {
      if (--router.depth_ == 0) router.retired_.clear();
    }
    DepthGuard(const DepthGuard&) = delete;
    DepthGuard& operator=(const DepthGuard&) = delete;
  } guard(*this);

  std::size_t delivered = 0;
  // Index, not iterator: nested publishes use other scratch_ slots, never this one, but
  // indexing keeps this loop obviously safe.
  for (std::size_t i = 0; i < scratch_[level].size(); ++i) {
    const SubscriptionId id = scratch_[level][i];
    const auto it = entries_.find(id);
    if (it == entries_.end()) continue;  // unsubscribed by an earlier sink of this publish
    Entry* entry = it->second.get();      // stays alive even if the sink unsubscribes it
    if (entry->subscriber.mode == ReceiveMode::receive_messages_from_others &&
        entry->subscriber.component == source_component) {
      ++stats_.suppressed_own;
      continue;
    }
    const Delivery delivery{id, topic, payload, source_component};
    try {
      entry->subscriber.sink(delivery);
      ++delivered;
      ++stats_.deliveries;
    } catch (const std::exception& e) {
      ++stats_.sink_failures;
      log::get("pubsub")->warn("subscriber callback threw: subscription={} component={} topic={} error={}", id,
                               entry->subscriber.component, topic, e.what());
    } catch (...) {
      ++stats_.sink_failures;
      log::get("pubsub")->warn("subscriber callback threw a non-standard exception: subscription={} component={} topic={}",
                               id, entry->subscriber.component, topic);
    }
  }
  if (delivered == 0) ++stats_.unmatched;
  return delivered;
}

}  // namespace canopy::pubsub
