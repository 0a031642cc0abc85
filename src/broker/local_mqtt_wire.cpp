// The local MQTT client's wire format (local_mqtt.hpp, namespace wire): a library of its own,
// without Asio, so its fuzz target builds with clang's libFuzzer.
#include <algorithm>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "canopy/broker/local_mqtt.hpp"

namespace canopy::broker {

// ------------------------------------------------------------------------------- wire format

namespace wire {

namespace {
void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}
void put_u32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
void put_str(std::string& out, std::string_view s) {
  put_u16(out, static_cast<std::uint16_t>(s.size()));
  out.append(s);
}
std::string packet(std::uint8_t first, const std::string& body) {
  std::string out(1, static_cast<char>(first));
  put_varint(out, static_cast<std::uint32_t>(body.size()));
  out += body;
  return out;
}

// A cursor over a packet's body; every read checks the bounds.
struct Reader {
  std::string_view b;
  std::size_t at = 0;
  bool ok = true;
  std::size_t left() const { return b.size() - at; }
  std::uint8_t u8() {
    if (left() < 1) return fail(), 0;
    return static_cast<std::uint8_t>(b[at++]);
  }
  std::uint16_t u16() {
    if (left() < 2) return fail(), 0;
    const auto v = static_cast<std::uint16_t>((static_cast<std::uint8_t>(b[at]) << 8) | static_cast<std::uint8_t>(b[at + 1]));
    at += 2;
    return v;
  }
  std::string_view bytes(std::size_t n) {
    if (left() < n) return fail(), std::string_view();
    auto s = b.substr(at, n);
    at += n;
    return s;
  }
  std::uint32_t varint() {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const auto c = u8();
      if (!ok) return 0;
      v |= static_cast<std::uint32_t>(c & 0x7f) << (7 * i);
      if ((c & 0x80) == 0) return v;
    }
    fail();
    return 0;
  }
  void skip_properties() {
    const auto n = varint();
    if (ok) bytes(n);
  }
  void fail() { ok = false; }
};
}  // namespace

void put_varint(std::string& out, std::uint32_t v) {
  do {
    std::uint8_t byte = v & 0x7f;
    v >>= 7;
    if (v > 0) byte |= 0x80;
    out.push_back(static_cast<char>(byte));
  } while (v > 0);
}

std::string connect(const LocalMqttOptions& o, bool clean_start) {
  std::string body;
  put_str(body, "MQTT");
  body.push_back(5);                                          // protocol level: MQTT 5
  body.push_back(static_cast<char>(clean_start ? 0x02 : 0));  // no username/password/will
  put_u16(body, static_cast<std::uint16_t>(std::min<std::int64_t>(o.keep_alive.count(), 65535)));
  std::string props;
  props.push_back(0x11);  // Session Expiry Interval
  put_u32(props, o.session_expiry_seconds);
  props.push_back(0x21);  // Receive Maximum
  put_u16(props, o.receive_maximum);
  put_varint(body, static_cast<std::uint32_t>(props.size()));
  body += props;
  put_str(body, o.client_id);
  return packet(0x10, body);
}

std::string subscribe(std::uint16_t packet_id, const std::vector<std::string>& filters) {
  std::string body;
  put_u16(body, packet_id);
  body.push_back(0);  // no properties
  for (const auto& f : filters) {
    put_str(body, f);
    body.push_back(0x01 | 0x04 | 0x08);  // QoS 1, No Local, Retain As Published
  }
  return packet(0x82, body);
}

std::string unsubscribe(std::uint16_t packet_id, const std::vector<std::string>& filters) {
  std::string body;
  put_u16(body, packet_id);
  body.push_back(0);
  for (const auto& f : filters) put_str(body, f);
  return packet(0xa2, body);
}

std::string publish(std::uint16_t packet_id, std::string_view topic, std::string_view payload, int qos, bool retain) {
  std::string body;
  put_str(body, topic);
  if (qos > 0) put_u16(body, packet_id);
  body.push_back(0);  // no properties
  body.append(payload);
  return packet(static_cast<std::uint8_t>(0x30 | (qos > 0 ? 0x02 : 0) | (retain ? 0x01 : 0)), body);
}

std::string puback(std::uint16_t packet_id) {
  std::string body;
  put_u16(body, packet_id);
  return packet(0x40, body);
}

std::string pingreq() { return std::string("\xc0\x00", 2); }
std::string disconnect() { return std::string("\xe0\x00", 2); }

result<std::pair<std::size_t, std::optional<Packet>>> parse(std::string_view buf, std::size_t max_packet) {
  using R = std::pair<std::size_t, std::optional<Packet>>;
  if (buf.size() < 2) return R{0, std::nullopt};
  std::uint32_t len = 0;
  std::size_t i = 1;
  for (int n = 0;; ++n) {
    if (i >= buf.size()) return R{0, std::nullopt};
    if (n == 4) return make_error(errc::parse, "a packet length longer than 4 bytes");
    const auto c = static_cast<std::uint8_t>(buf[i++]);
    len |= static_cast<std::uint32_t>(c & 0x7f) << (7 * n);
    if ((c & 0x80) == 0) break;
  }
  if (len > max_packet) return make_error(errc::parse, fmt::format("a packet of {} bytes, more than {}", len, max_packet));
  if (buf.size() < i + len) return R{0, std::nullopt};
  Packet p;
  const auto first = static_cast<std::uint8_t>(buf[0]);
  p.type = first >> 4;
  p.flags = first & 0x0f;
  Reader r{buf.substr(i, len)};
  switch (p.type) {
    case 2:  // CONNACK
      p.session_present = (r.u8() & 1) != 0;
      p.reason = r.u8();
      break;
    case 3: {  // PUBLISH
      const int qos = (p.flags >> 1) & 3;
      if (qos > 2) return make_error(errc::parse, "a PUBLISH with QoS 3");
      p.message.qos = qos;
      p.message.retain = (p.flags & 1) != 0;
      p.message.dup = (p.flags & 8) != 0;
      const auto tlen = r.u16();
      p.message.topic = std::string(r.bytes(tlen));
      if (qos > 0) p.packet_id = r.u16();
      r.skip_properties();
      if (r.ok) p.message.payload = std::string(r.bytes(r.left()));
      break;
    }
    case 4:  // PUBACK
      p.packet_id = r.u16();
      if (r.ok && r.left() > 0) p.reason = r.u8();
      break;
    case 9:  // SUBACK
    case 11:  // UNSUBACK
      p.packet_id = r.u16();
      r.skip_properties();
      while (r.ok && r.left() > 0) p.suback_codes.push_back(r.u8());
      if (!p.suback_codes.empty()) p.reason = p.suback_codes.front();
      break;
    case 13:  // PINGRESP
      break;
    case 14:  // DISCONNECT
      if (r.left() > 0) p.reason = r.u8();
      break;
    default:
      return make_error(errc::parse, fmt::format("an unexpected packet of type {} from the broker", p.type));
  }
  if (!r.ok) return make_error(errc::parse, fmt::format("a truncated packet of type {}", p.type));
  return R{i + len, std::move(p)};
}

}  // namespace wire

}  // namespace canopy::broker
