// The local MQTT client's wire format (local_mqtt.hpp, namespace wire): a thin layer over the
// MQTT codec (canopy/mqtt/codec.hpp), always MQTT 5. A library of its own, without Asio.
#include <algorithm>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "canopy/broker/local_mqtt.hpp"
#include "canopy/mqtt/codec.hpp"

namespace canopy::broker::wire {

namespace {
constexpr auto v5 = mqtt::Version::v5;
}  // namespace

void put_varint(std::string& out, std::uint32_t v) { mqtt::put_varint(out, v); }

std::string connect(const LocalMqttOptions& o, bool clean_start) {
  mqtt::ConnectOptions c;
  c.version = v5;
  c.client_id = o.client_id;
  c.clean_start = clean_start;
  c.keep_alive_seconds = static_cast<std::uint16_t>(std::clamp<std::int64_t>(o.keep_alive.count(), 0, 65535));
  c.properties.session_expiry = o.session_expiry_seconds;
  c.properties.receive_maximum = o.receive_maximum;
  std::string out;
  mqtt::encode_connect(out, c);
  return out;
}

std::string subscribe(std::uint16_t packet_id, const std::vector<std::string>& filters) {
  // QoS 1; No Local, so what this client publishes never comes back to it; Retain As Published,
  // so a retained message stays retained when it is forwarded.
  std::vector<mqtt::SubscribeRequest> subs;
  subs.reserve(filters.size());
  for (const auto& f : filters)
    subs.push_back({.filter = f, .qos = 1, .no_local = true, .retain_as_published = true, .retain_handling = 0});
  std::string out;
  mqtt::encode_subscribe(out, v5, packet_id, subs);
  return out;
}

std::string unsubscribe(std::uint16_t packet_id, const std::vector<std::string>& filters) {
  std::string out;
  mqtt::encode_unsubscribe(out, v5, packet_id, filters);
  return out;
}

std::string publish(std::uint16_t packet_id, std::string_view topic, std::string_view payload, int qos, bool retain) {
  // This client publishes at QoS 0 or 1 only: any qos > 0 is sent as 1.
  std::string out;
  mqtt::encode_publish(out, v5, topic, payload, qos > 0 ? 1 : 0, retain, false, packet_id);
  return out;
}

std::string puback(std::uint16_t packet_id) {
  std::string out;
  mqtt::encode_puback(out, v5, packet_id);
  return out;
}

std::string pingreq() {
  std::string out;
  mqtt::encode_pingreq(out);
  return out;
}

std::string disconnect() {
  std::string out;
  mqtt::encode_disconnect(out, v5);
  return out;
}

result<std::pair<std::size_t, std::optional<Packet>>> parse(std::string_view buf, std::size_t max_packet) {
  using R = std::pair<std::size_t, std::optional<Packet>>;
  auto parsed = mqtt::parse(buf, v5, max_packet);
  if (!parsed) return std::move(parsed).error();
  if (parsed->used == 0) return R{0, std::nullopt};
  auto& in = *parsed->packet;
  // The QoS 2 flow and AUTH are valid MQTT 5 but never part of this client's session (it
  // publishes and subscribes at QoS 1, without an authentication method); the read loop would
  // ignore them silently, so refuse them here as the client always has.
  switch (in.type) {
    case mqtt::Type::pubrec:
    case mqtt::Type::pubrel:
    case mqtt::Type::pubcomp:
    case mqtt::Type::auth:
      return make_error(errc::parse, fmt::format("an unexpected packet of type {} from the broker",
                                                 static_cast<int>(in.type)));
    default:
      break;
  }
  Packet p;
  p.type = static_cast<std::uint8_t>(in.type);
  p.flags = in.flags;
  p.packet_id = in.packet_id;
  p.reason = in.reason;
  p.session_present = in.session_present;
  if (in.type == mqtt::Type::suback || in.type == mqtt::Type::unsuback) {
    p.suback_codes = std::move(in.codes);
    if (!p.suback_codes.empty()) p.reason = p.suback_codes.front();
  }
  p.message.topic = std::move(in.topic);
  p.message.payload = std::move(in.payload);
  p.message.qos = in.qos;
  p.message.retain = in.retain;
  p.message.dup = in.dup;
  return R{parsed->used, std::move(p)};
}

}  // namespace canopy::broker::wire
