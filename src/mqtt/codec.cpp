// The MQTT 3.1.1 / 5 codec (codec.hpp). Section numbers refer to the MQTT 5.0 standard.
#include "canopy/mqtt/codec.hpp"

#include <algorithm>
#include <array>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace canopy::mqtt {

namespace {

// --- Encoding helpers ------------------------------------------------------------------------
// Every encoder computes its remaining length first and then appends straight to `out`: no
// temporary body string (encode_publish runs tens of thousands of times a second).

std::size_t varint_size(std::size_t v) {
  if (v < 128) return 1;
  if (v < 16384) return 2;
  if (v < 2097152) return 3;
  return 4;
}

void put_u8(std::string& out, std::uint8_t v) { out.push_back(static_cast<char>(v)); }

void put_u16(std::string& out, std::uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

void put_u32(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>((v >> 16) & 0xff));
  out.push_back(static_cast<char>((v >> 8) & 0xff));
  out.push_back(static_cast<char>(v & 0xff));
}

/// A UTF-8 string or binary data: two length bytes, then the bytes (§1.5.4, §1.5.6).
void put_str(std::string& out, std::string_view s) {
  put_u16(out, static_cast<std::uint16_t>(s.size()));
  out.append(s);
}

/// The fixed header, and room reserved for the whole packet. The capacity at least doubles when
/// it grows, so appending many packets to one buffer (a coalesced write) stays linear whatever
/// the standard library's reserve() does.
void put_fixed_header(std::string& out, std::uint8_t first, std::size_t remaining) {
  const std::size_t needed = out.size() + 1 + varint_size(remaining) + remaining;
  if (needed > out.capacity()) out.reserve(std::max(needed, 2 * out.capacity()));
  put_u8(out, first);
  put_varint(out, static_cast<std::uint32_t>(remaining));
}

// Property identifiers (§2.2.2.2).
enum : std::uint8_t {
  p_payload_format = 0x01,
  p_message_expiry = 0x02,
  p_content_type = 0x03,
  p_response_topic = 0x08,
  p_correlation_data = 0x09,
  p_subscription_id = 0x0B,
  p_session_expiry = 0x11,
  p_assigned_client_id = 0x12,
  p_server_keep_alive = 0x13,
  p_auth_method = 0x15,
  p_auth_data = 0x16,
  p_request_problem_info = 0x17,
  p_will_delay = 0x18,
  p_request_response_info = 0x19,
  p_response_info = 0x1A,
  p_server_reference = 0x1C,
  p_reason_string = 0x1F,
  p_receive_maximum = 0x21,
  p_topic_alias_maximum = 0x22,
  p_topic_alias = 0x23,
  p_maximum_qos = 0x24,
  p_retain_available = 0x25,
  p_user_property = 0x26,
  p_maximum_packet_size = 0x27,
  p_wildcard_sub_available = 0x28,
  p_sub_id_available = 0x29,
  p_shared_sub_available = 0x2A,
};

/// The bytes of the properties themselves, without their length prefix.
std::size_t properties_size(const Properties& p) {
  std::size_t n = 0;
  if (p.payload_format) n += 2;
  if (p.message_expiry) n += 5;
  if (p.content_type) n += 3 + p.content_type->size();
  if (p.response_topic) n += 3 + p.response_topic->size();
  if (p.correlation_data) n += 3 + p.correlation_data->size();
  for (auto id : p.subscription_ids) n += 1 + varint_size(id);
  if (p.session_expiry) n += 5;
  if (p.assigned_client_id) n += 3 + p.assigned_client_id->size();
  if (p.server_keep_alive) n += 3;
  if (p.reason_string) n += 3 + p.reason_string->size();
  if (p.receive_maximum) n += 3;
  if (p.topic_alias_maximum) n += 3;
  if (p.topic_alias) n += 3;
  if (p.maximum_qos) n += 2;
  if (p.retain_available) n += 2;
  for (const auto& [k, v] : p.user_properties) n += 5 + k.size() + v.size();
  if (p.maximum_packet_size) n += 5;
  return n;
}

/// Writes the properties in ascending identifier order (user properties in their given order).
void put_properties(std::string& out, const Properties& p) {
  if (p.payload_format) put_u8(out, p_payload_format), put_u8(out, *p.payload_format);
  if (p.message_expiry) put_u8(out, p_message_expiry), put_u32(out, *p.message_expiry);
  if (p.content_type) put_u8(out, p_content_type), put_str(out, *p.content_type);
  if (p.response_topic) put_u8(out, p_response_topic), put_str(out, *p.response_topic);
  if (p.correlation_data) put_u8(out, p_correlation_data), put_str(out, *p.correlation_data);
  for (auto id : p.subscription_ids) put_u8(out, p_subscription_id), put_varint(out, id);
  if (p.session_expiry) put_u8(out, p_session_expiry), put_u32(out, *p.session_expiry);
  if (p.assigned_client_id) put_u8(out, p_assigned_client_id), put_str(out, *p.assigned_client_id);
  if (p.server_keep_alive) put_u8(out, p_server_keep_alive), put_u16(out, *p.server_keep_alive);
  if (p.reason_string) put_u8(out, p_reason_string), put_str(out, *p.reason_string);
  if (p.receive_maximum) put_u8(out, p_receive_maximum), put_u16(out, *p.receive_maximum);
  if (p.topic_alias_maximum) put_u8(out, p_topic_alias_maximum), put_u16(out, *p.topic_alias_maximum);
  if (p.topic_alias) put_u8(out, p_topic_alias), put_u16(out, *p.topic_alias);
  if (p.maximum_qos) put_u8(out, p_maximum_qos), put_u8(out, *p.maximum_qos);
  if (p.retain_available) put_u8(out, p_retain_available), put_u8(out, *p.retain_available);
  for (const auto& [k, v] : p.user_properties) put_u8(out, p_user_property), put_str(out, k), put_str(out, v);
  if (p.maximum_packet_size) put_u8(out, p_maximum_packet_size), put_u32(out, *p.maximum_packet_size);
}

// --- Parsing helpers -------------------------------------------------------------------------

const char* type_name(Type t) {
  static constexpr std::array<const char*, 16> names = {
      "packet of type 0", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
      "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"};
  return names[static_cast<std::size_t>(t) & 0x0f];
}

/// "a PUBLISH", "an AUTH": the packet's name as the start of a sentence's noun phrase.
std::string a_type(Type t) {
  const char* name = type_name(t);
  return fmt::format("{} {}", name[0] == 'A' || name[0] == 'U' ? "an" : "a", name);
}

std::string bytes_text(std::size_t n) { return n == 1 ? "1 byte" : fmt::format("{} bytes", n); }

/// A cursor over one packet's body. Every read checks the bounds; the first failure is kept as
/// a sentence and later reads return zeroes, so a parser reads on and checks `error` once.
class Reader {
 public:
  /// `packet_size`: the remaining length of the whole packet, for messages (a reader over a
  /// property block names the packet's size, not the block's).
  Reader(std::string_view body, Type type, std::size_t packet_size) : b_(body), type_(type), size_(packet_size) {}

  std::size_t left() const { return b_.size() - at_; }
  bool ok() const { return error_.empty(); }
  const std::string& error() const { return error_; }

  void fail(std::string sentence) {
    if (error_.empty()) error_ = std::move(sentence);
  }

  std::uint8_t u8(const char* what) {
    if (!need(1, what)) return 0;
    return static_cast<std::uint8_t>(b_[at_++]);
  }
  std::uint16_t u16(const char* what) {
    if (!need(2, what)) return 0;
    const auto v = static_cast<std::uint16_t>((byte(at_) << 8) | byte(at_ + 1));
    at_ += 2;
    return v;
  }
  std::uint32_t u32(const char* what) {
    if (!need(4, what)) return 0;
    const auto v = (std::uint32_t{byte(at_)} << 24) | (std::uint32_t{byte(at_ + 1)} << 16) |
                   (std::uint32_t{byte(at_ + 2)} << 8) | std::uint32_t{byte(at_ + 3)};
    at_ += 4;
    return v;
  }
  /// A variable byte integer (§1.5.5): at most 4 bytes.
  std::uint32_t varint(const char* what) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const auto c = u8(what);
      if (!ok()) return 0;
      v |= static_cast<std::uint32_t>(c & 0x7f) << (7 * i);
      if ((c & 0x80) == 0) return v;
    }
    fail(fmt::format("{} whose {} is a variable byte integer longer than 4 bytes", a_type(type_), what));
    return 0;
  }
  /// Two length bytes, then that many bytes (a UTF-8 string or binary data; UTF-8 is not checked).
  std::string_view str(const char* what) {
    const auto n = u16(what);
    if (!ok() || !need(n, what)) return {};
    return take(n);
  }
  std::string_view take(std::size_t n) {
    auto s = b_.substr(at_, n);
    at_ += n;
    return s;
  }
  std::string_view rest() { return take(left()); }

  /// A reader over the next `n` bytes (a property block), which this one skips.
  Reader sub(std::size_t n, const char* what) {
    if (!need(n, what)) return Reader({}, type_, size_);
    return Reader(take(n), type_, size_);
  }

 private:
  std::uint8_t byte(std::size_t i) const { return static_cast<std::uint8_t>(b_[i]); }
  bool need(std::size_t n, const char* what) {
    if (!ok()) return false;
    if (left() >= n) return true;
    fail(fmt::format("{} of {} that ends inside its {}", a_type(type_), bytes_text(size_), what));
    return false;
  }

  std::string_view b_;
  std::size_t at_ = 0;
  Type type_;
  std::size_t size_;
  std::string error_;
};

/// A property block (§2.2.2): its length, then identifier/value pairs. Properties of the header
/// struct land in `out`; every other MQTT 5 property is checked and skipped.
void read_properties(Reader& r, Properties& out) {
  const auto length = r.varint("property length");
  Reader p = r.sub(length, "properties");
  if (!r.ok()) return;
  std::array<bool, 128> seen{};
  while (p.ok() && p.left() > 0) {
    const auto id = p.u8("property identifier");
    // Identifiers are variable byte integers, but all defined ones are below 0x80.
    if (id != p_user_property && id != p_subscription_id && id < seen.size()) {
      if (seen[id]) return r.fail(fmt::format("property 0x{:02X} appears twice", id));
      seen[id] = true;
    }
    const auto nonzero = [&](std::uint32_t v, const char* name) {
      if (p.ok() && v == 0) p.fail(fmt::format("property 0x{:02X} ({}) is 0, which MQTT 5 forbids", id, name));
      return v;
    };
    const auto boolean = [&](std::uint8_t v, const char* name) {
      if (p.ok() && v > 1) p.fail(fmt::format("property 0x{:02X} ({}) is {}; it must be 0 or 1", id, name, v));
      return v;
    };
    switch (id) {
      case p_payload_format: out.payload_format = boolean(p.u8("payload format indicator"), "payload format indicator"); break;
      case p_message_expiry: out.message_expiry = p.u32("message expiry interval"); break;
      case p_content_type: out.content_type = std::string(p.str("content type")); break;
      case p_response_topic: out.response_topic = std::string(p.str("response topic")); break;
      case p_correlation_data: out.correlation_data = std::string(p.str("correlation data")); break;
      case p_subscription_id:
        out.subscription_ids.push_back(nonzero(p.varint("subscription identifier"), "subscription identifier"));
        break;
      case p_session_expiry: out.session_expiry = p.u32("session expiry interval"); break;
      case p_assigned_client_id: out.assigned_client_id = std::string(p.str("assigned client identifier")); break;
      case p_server_keep_alive: out.server_keep_alive = p.u16("server keep alive"); break;
      case p_reason_string: out.reason_string = std::string(p.str("reason string")); break;
      case p_receive_maximum:
        out.receive_maximum = static_cast<std::uint16_t>(nonzero(p.u16("receive maximum"), "receive maximum"));
        break;
      case p_topic_alias_maximum: out.topic_alias_maximum = p.u16("topic alias maximum"); break;
      case p_topic_alias: out.topic_alias = static_cast<std::uint16_t>(nonzero(p.u16("topic alias"), "topic alias")); break;
      case p_maximum_qos: out.maximum_qos = boolean(p.u8("maximum QoS"), "maximum QoS"); break;
      case p_retain_available: out.retain_available = boolean(p.u8("retain available"), "retain available"); break;
      case p_user_property: {
        auto key = p.str("user property name");
        auto value = p.str("user property value");
        if (p.ok()) out.user_properties.emplace_back(key, value);
        break;
      }
      case p_maximum_packet_size:
        out.maximum_packet_size = nonzero(p.u32("maximum packet size"), "maximum packet size");
        break;
      // Valid MQTT 5 properties Canopy does not use: checked for length, then skipped.
      case p_auth_method: p.str("authentication method"); break;
      case p_auth_data: p.str("authentication data"); break;
      case p_response_info: p.str("response information"); break;
      case p_server_reference: p.str("server reference"); break;
      case p_will_delay: p.u32("will delay interval"); break;
      case p_request_problem_info:
      case p_request_response_info:
      case p_wildcard_sub_available:
      case p_sub_id_available:
      case p_shared_sub_available: p.u8("property value"); break;
      default:
        if (p.ok()) return r.fail(fmt::format("property 0x{:02X} is not a known MQTT 5 property", id));
    }
  }
  if (!p.ok()) r.fail(p.error());
}

/// The end of a packet whose fields are all read: anything left over is an error.
void expect_end(Reader& r, Type t) {
  if (r.ok() && r.left() > 0)
    r.fail(fmt::format("{} with {} more than its fields", a_type(t), bytes_text(r.left())));
}

/// The reserved low nibble of the first byte (§2.1.3), or -1 when it carries flags (PUBLISH).
int required_flags(Type t) {
  switch (t) {
    case Type::publish: return -1;
    case Type::pubrel:
    case Type::subscribe:
    case Type::unsubscribe: return 0x2;
    default: return 0;
  }
}

}  // namespace

bool Properties::empty() const {
  return !payload_format && !message_expiry && !content_type && !response_topic && !correlation_data &&
         subscription_ids.empty() && !topic_alias && !session_expiry && !assigned_client_id &&
         !server_keep_alive && !receive_maximum && !topic_alias_maximum && !maximum_qos &&
         !retain_available && !maximum_packet_size && !reason_string && user_properties.empty();
}

// --- Encoding --------------------------------------------------------------------------------

void put_varint(std::string& out, std::uint32_t v) {
  do {
    auto byte = static_cast<std::uint8_t>(v & 0x7f);
    v >>= 7;
    if (v > 0) byte |= 0x80;
    put_u8(out, byte);
  } while (v > 0);
}

void encode_connect(std::string& out, const ConnectOptions& o) {
  const bool v5 = o.version == Version::v5;
  const std::size_t props = v5 ? properties_size(o.properties) : 0;
  // Protocol name (6), level, flags, keep alive (2); the payload: client id, user name, password.
  std::size_t remaining = 10 + 2 + o.client_id.size();
  if (v5) remaining += varint_size(props) + props;
  if (o.username) remaining += 2 + o.username->size();
  if (o.password) remaining += 2 + o.password->size();
  std::uint8_t flags = o.clean_start ? 0x02 : 0x00;  // §3.1.2.3: no will, bit 0 reserved
  if (o.username) flags |= 0x80;
  if (o.password) flags |= 0x40;

  put_fixed_header(out, 0x10, remaining);
  put_str(out, "MQTT");
  put_u8(out, static_cast<std::uint8_t>(o.version));
  put_u8(out, flags);
  put_u16(out, o.keep_alive_seconds);
  if (v5) {
    put_varint(out, static_cast<std::uint32_t>(props));
    put_properties(out, o.properties);
  }
  put_str(out, o.client_id);
  if (o.username) put_str(out, *o.username);
  if (o.password) put_str(out, *o.password);
}

void encode_publish(std::string& out, Version v, std::string_view topic, std::string_view payload, std::uint8_t qos,
                    bool retain, bool dup, std::uint16_t packet_id, const Properties* properties) {
  const bool v5 = v == Version::v5;
  const std::size_t props = v5 && properties != nullptr ? properties_size(*properties) : 0;
  std::size_t remaining = 2 + topic.size() + payload.size();
  if (qos > 0) remaining += 2;
  if (v5) remaining += varint_size(props) + props;

  put_fixed_header(out, static_cast<std::uint8_t>(0x30 | (dup ? 0x08 : 0) | ((qos & 3) << 1) | (retain ? 1 : 0)),
                   remaining);
  put_str(out, topic);
  if (qos > 0) put_u16(out, packet_id);
  if (v5) {
    put_varint(out, static_cast<std::uint32_t>(props));
    if (props > 0) put_properties(out, *properties);
  }
  out.append(payload);
}

void encode_puback(std::string& out, Version v, std::uint16_t packet_id, std::uint8_t reason) {
  // §3.4.2.1: the reason code may be left out when it is 0 and there are no properties.
  const bool with_reason = v == Version::v5 && reason != 0;
  put_fixed_header(out, 0x40, with_reason ? 3 : 2);
  put_u16(out, packet_id);
  if (with_reason) put_u8(out, reason);
}

void encode_subscribe(std::string& out, Version v, std::uint16_t packet_id, std::span<const SubscribeRequest> subs) {
  const bool v5 = v == Version::v5;
  std::size_t remaining = 2 + (v5 ? 1 : 0);
  for (const auto& s : subs) remaining += 3 + s.filter.size();

  put_fixed_header(out, 0x82, remaining);
  put_u16(out, packet_id);
  if (v5) put_u8(out, 0);  // no properties
  for (const auto& s : subs) {
    put_str(out, s.filter);
    auto options = static_cast<std::uint8_t>(s.qos & 3);
    if (v5) {
      // §3.8.3.1: QoS, No Local, Retain As Published, Retain Handling; bits 6-7 reserved.
      options = static_cast<std::uint8_t>(options | (s.no_local ? 0x04 : 0) | (s.retain_as_published ? 0x08 : 0) |
                                          ((s.retain_handling & 3) << 4));
    }
    put_u8(out, options);
  }
}

void encode_unsubscribe(std::string& out, Version v, std::uint16_t packet_id, std::span<const std::string> filters) {
  const bool v5 = v == Version::v5;
  std::size_t remaining = 2 + (v5 ? 1 : 0);
  for (const auto& f : filters) remaining += 2 + f.size();

  put_fixed_header(out, 0xA2, remaining);
  put_u16(out, packet_id);
  if (v5) put_u8(out, 0);  // no properties
  for (const auto& f : filters) put_str(out, f);
}

void encode_pingreq(std::string& out) {
  put_u8(out, 0xC0);
  put_u8(out, 0x00);
}

void encode_disconnect(std::string& out, Version v, std::uint8_t reason) {
  // §3.14.2.1: a remaining length of 0 means reason 0x00 (normal disconnection).
  const bool with_reason = v == Version::v5 && reason != 0;
  put_fixed_header(out, 0xE0, with_reason ? 1 : 0);
  if (with_reason) put_u8(out, reason);
}

// --- Parsing ---------------------------------------------------------------------------------

result<Parsed> parse(std::string_view buf, Version v, std::size_t max_packet) {
  if (buf.empty()) return Parsed{};
  const auto first = static_cast<std::uint8_t>(buf[0]);
  const auto type = static_cast<Type>(first >> 4);
  const std::uint8_t flags = first & 0x0f;
  const bool v5 = v == Version::v5;

  // The first byte alone says whether a broker may send this packet: refuse it without waiting
  // for the rest.
  switch (type) {
    case Type::connect:
    case Type::subscribe:
    case Type::unsubscribe:
    case Type::pingreq:
      return make_error(errc::parse, fmt::format("{} packet, which a broker never sends to a client", a_type(type)));
    case Type::auth:
      if (!v5) return make_error(errc::parse, "an AUTH packet, which MQTT 3.1.1 does not have");
      break;
    default:
      if (static_cast<int>(type) == 0) return make_error(errc::parse, "a packet of type 0, which MQTT reserves");
  }
  if (const int want = required_flags(type); want >= 0 && flags != want)
    return make_error(errc::parse, fmt::format("{} with flags 0x{:X}; they must be 0x{:X}", a_type(type), flags, want));
  if (type == Type::publish && ((flags >> 1) & 3) == 3) return make_error(errc::parse, "a PUBLISH with QoS 3");

  // The remaining length (§2.1.4): a variable byte integer of at most 4 bytes.
  std::size_t len = 0;
  std::size_t header = 1;
  for (int i = 0;; ++i) {
    if (i == 4) return make_error(errc::parse, "a remaining length longer than 4 bytes");
    if (header >= buf.size()) return Parsed{};
    const auto c = static_cast<std::uint8_t>(buf[header++]);
    len |= static_cast<std::size_t>(c & 0x7f) << (7 * i);
    if ((c & 0x80) == 0) break;
  }
  if (header + len > max_packet)
    return make_error(errc::parse, fmt::format("a packet of {} bytes, more than the limit of {}", header + len, max_packet));
  if (buf.size() < header + len) return Parsed{};

  Packet p;
  p.type = type;
  p.flags = flags;
  Reader r(buf.substr(header, len), type, len);
  const auto at_least = [&](std::size_t n) {
    if (len < n) r.fail(fmt::format("{} of {}; it needs at least {}", a_type(type), bytes_text(len), n));
    return r.ok();
  };

  switch (type) {
    case Type::connack: {  // §3.2
      if (!at_least(2)) break;
      const auto ack_flags = r.u8("acknowledge flags");
      if ((ack_flags & 0xfe) != 0) {
        r.fail(fmt::format("a CONNACK with acknowledge flags 0x{:02X}; bits 1-7 are reserved", ack_flags));
        break;
      }
      p.session_present = ack_flags != 0;
      p.reason = r.u8("reason code");
      if (v5) {
        if (!at_least(3)) break;
        read_properties(r, p.properties);
      }
      break;
    }
    case Type::publish: {  // §3.3
      p.qos = static_cast<std::uint8_t>((flags >> 1) & 3);
      p.retain = (flags & 0x01) != 0;
      p.dup = (flags & 0x08) != 0;
      p.topic = std::string(r.str("topic name"));
      if (p.qos > 0) {
        p.packet_id = r.u16("packet identifier");
        if (r.ok() && p.packet_id == 0) r.fail(fmt::format("a PUBLISH with QoS {} and packet identifier 0", p.qos));
      }
      if (v5) read_properties(r, p.properties);
      // Canopy never allows topic aliases (§3.3.2.3.4), so a PUBLISH must name its topic.
      if (r.ok() && p.topic.empty() && !p.properties.topic_alias)
        r.fail("a PUBLISH with an empty topic name and no topic alias");
      if (r.ok()) p.payload = std::string(r.rest());
      break;
    }
    case Type::puback:
    case Type::pubrec:
    case Type::pubrel:
    case Type::pubcomp:  // §3.4-3.7: packet id, then (v5) an optional reason and optional properties
      if (!at_least(2)) break;
      p.packet_id = r.u16("packet identifier");
      if (v5 && r.left() > 0) p.reason = r.u8("reason code");
      if (v5 && r.left() > 0) read_properties(r, p.properties);
      break;
    case Type::suback:  // §3.9
    case Type::unsuback:  // §3.11 (v3.1.1: the packet id alone)
      if (!at_least(2)) break;
      p.packet_id = r.u16("packet identifier");
      if (v5) read_properties(r, p.properties);
      if (!r.ok() || (!v5 && type == Type::unsuback)) break;
      if (r.left() == 0) {
        r.fail(fmt::format("{} without any reason code", a_type(type)));
        break;
      }
      for (auto c : r.rest()) p.codes.push_back(static_cast<std::uint8_t>(c));
      if (!v5) {
        for (auto c : p.codes)
          if (c > 2 && c != 0x80) {
            r.fail(fmt::format("a SUBACK with return code 0x{:02X}; MQTT 3.1.1 allows 0, 1, 2 and 0x80", c));
            break;
          }
      }
      break;
    case Type::pingresp:  // §3.13
      break;
    case Type::disconnect:  // §3.14: (v5) an optional reason and optional properties
    case Type::auth:  // §3.15: likewise
      if (v5 && r.left() > 0) p.reason = r.u8("reason code");
      if (v5 && r.left() > 0) read_properties(r, p.properties);
      break;
    default:
      break;  // refused above
  }
  expect_end(r, type);
  if (!r.ok()) return make_error(errc::parse, r.error());
  return Parsed{header + len, std::move(p)};
}

// --- Reason codes ----------------------------------------------------------------------------

void PacketReader::append(std::string_view bytes) {
  // Drop what was parsed before growing the buffer: usually all of it (reads end on a packet
  // boundary), else a partial packet at the end, which moves to the front.
  if (at_ == buf_.size()) {
    buf_.clear();
    at_ = 0;
  } else if (at_ > 0 && at_ >= buf_.size() / 2) {
    buf_.erase(0, at_);
    at_ = 0;
  }
  buf_.append(bytes);
}

result<std::optional<Packet>> PacketReader::next() {
  auto parsed = parse(std::string_view(buf_).substr(at_), version_, max_packet_);
  if (!parsed) return std::move(parsed).error();
  if (parsed->used == 0) return std::optional<Packet>();
  at_ += parsed->used;
  return std::move(parsed->packet);
}

std::string reason_text(Version v, std::uint8_t code, Type in) {
  if (v == Version::v311) {
    if (in == Type::suback) {
      if (code <= 2) return fmt::format("granted QoS {} (0x{:02X})", code, code);
      if (code == 0x80) return "failure (0x80)";
      return fmt::format("unknown return code (0x{:02X})", code);
    }
    // CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
    static constexpr std::array<const char*, 6> connack = {
        "connection accepted", "unacceptable protocol version", "identifier rejected",
        "server unavailable", "bad user name or password", "not authorized"};
    if (code < connack.size()) return fmt::format("{} ({})", connack[code], code);
    return fmt::format("unknown return code ({})", code);
  }

  const char* text = nullptr;
  switch (code) {  // MQTT 5 §2.4
    case 0x00:
      text = in == Type::suback ? "granted QoS 0" : in == Type::disconnect ? "normal disconnection" : "success";
      break;
    case 0x01: text = in == Type::suback ? "granted QoS 1" : nullptr; break;
    case 0x02: text = in == Type::suback ? "granted QoS 2" : nullptr; break;
    case 0x04: text = "disconnect with will message"; break;
    case 0x10: text = "no matching subscribers"; break;
    case 0x11: text = "no subscription existed"; break;
    case 0x18: text = "continue authentication"; break;
    case 0x19: text = "re-authenticate"; break;
    case 0x80: text = "unspecified error"; break;
    case 0x81: text = "malformed packet"; break;
    case 0x82: text = "protocol error"; break;
    case 0x83: text = "implementation specific error"; break;
    case 0x84: text = "unsupported protocol version"; break;
    case 0x85: text = "client identifier not valid"; break;
    case 0x86: text = "bad user name or password"; break;
    case 0x87: text = "not authorized"; break;
    case 0x88: text = "server unavailable"; break;
    case 0x89: text = "server busy"; break;
    case 0x8A: text = "banned"; break;
    case 0x8B: text = "server shutting down"; break;
    case 0x8C: text = "bad authentication method"; break;
    case 0x8D: text = "keep alive timeout"; break;
    case 0x8E: text = "session taken over"; break;
    case 0x8F: text = "topic filter invalid"; break;
    case 0x90: text = "topic name invalid"; break;
    case 0x91: text = "packet identifier in use"; break;
    case 0x92: text = "packet identifier not found"; break;
    case 0x93: text = "receive maximum exceeded"; break;
    case 0x94: text = "topic alias invalid"; break;
    case 0x95: text = "packet too large"; break;
    case 0x96: text = "message rate too high"; break;
    case 0x97: text = "quota exceeded"; break;
    case 0x98: text = "administrative action"; break;
    case 0x99: text = "payload format invalid"; break;
    case 0x9A: text = "retain not supported"; break;
    case 0x9B: text = "QoS not supported"; break;
    case 0x9C: text = "use another server"; break;
    case 0x9D: text = "server moved"; break;
    case 0x9E: text = "shared subscriptions not supported"; break;
    case 0x9F: text = "connection rate exceeded"; break;
    case 0xA0: text = "maximum connect time"; break;
    case 0xA1: text = "subscription identifiers not supported"; break;
    case 0xA2: text = "wildcard subscriptions not supported"; break;
    default: break;
  }
  if (text == nullptr) return fmt::format("unknown reason code (0x{:02X})", code);
  return fmt::format("{} (0x{:02X})", text, code);
}

}  // namespace canopy::mqtt
