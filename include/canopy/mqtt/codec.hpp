//! MQTT 3.1.1 and 5 control packets: encoding and parsing, without any I/O.
//!
//! canopyd speaks MQTT itself on both of its connections (the cloud link and the local
//! broker's bridge client) because no library offers what it needs on each: a PUBACK sent only
//! once the application has made a message safe, a client that runs on the daemon's own event
//! loop over its own TLS stream (a TPM key lives in an OpenSSL library context of its own), and
//! many PUBLISH packets coalesced into one TLS write. This codec is the whole wire format; the
//! connections (cloud/link.cpp, broker/local_mqtt.cpp) do the I/O.
//!
//! Scope: what a client sends and receives. CONNECT, PUBLISH (QoS 0/1; QoS 2 is parsed so a
//! broker that sends it is answered with a clear error, never sent), PUBACK, SUBSCRIBE,
//! UNSUBSCRIBE, PINGREQ, DISCONNECT out; CONNACK, PUBLISH, PUBACK, SUBACK, UNSUBACK, PINGRESP,
//! DISCONNECT in. PUBREC, PUBREL, PUBCOMP and (v5) AUTH are parsed too, so that a connection can
//! answer them with a clear error; AUTH (enhanced authentication) is not supported. Properties:
//! the ones listed in `Properties`; any other valid property is skipped, an unknown identifier is
//! an error.
//!
//! Parsing never trusts the input: every length is checked, a malformed packet is an
//! errc::parse error naming what is wrong, never a crash (a fuzz target covers parse()).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "canopy/core/error.hpp"

namespace canopy::mqtt {

/// The protocol level byte of CONNECT.
enum class Version : std::uint8_t { v311 = 4, v5 = 5 };

/// Control packet types (the high nibble of the first byte).
enum class Type : std::uint8_t {
  connect = 1,
  connack = 2,
  publish = 3,
  puback = 4,
  pubrec = 5,
  pubrel = 6,
  pubcomp = 7,
  subscribe = 8,
  suback = 9,
  unsubscribe = 10,
  unsuback = 11,
  pingreq = 12,
  pingresp = 13,
  disconnect = 14,
  auth = 15,
};

/// MQTT 5 properties Canopy reads or writes. Empty optionals / vectors are not encoded. With
/// Version::v311 no properties are encoded at all.
struct Properties {
  // PUBLISH
  std::optional<std::uint8_t> payload_format;      ///< 0x01: 0 bytes, 1 UTF-8
  std::optional<std::uint32_t> message_expiry;     ///< 0x02: seconds
  std::optional<std::string> content_type;         ///< 0x03
  std::optional<std::string> response_topic;       ///< 0x08
  std::optional<std::string> correlation_data;     ///< 0x09 (binary)
  std::vector<std::uint32_t> subscription_ids;     ///< 0x0B (received only)
  std::optional<std::uint16_t> topic_alias;        ///< 0x23 (received only; Canopy never allows aliases)
  // CONNECT / CONNACK
  std::optional<std::uint32_t> session_expiry;     ///< 0x11
  std::optional<std::string> assigned_client_id;   ///< 0x12
  std::optional<std::uint16_t> server_keep_alive;  ///< 0x13
  std::optional<std::uint16_t> receive_maximum;    ///< 0x21
  std::optional<std::uint16_t> topic_alias_maximum;  ///< 0x22
  std::optional<std::uint8_t> maximum_qos;         ///< 0x24
  std::optional<std::uint8_t> retain_available;    ///< 0x25
  std::optional<std::uint32_t> maximum_packet_size;  ///< 0x27
  // Any packet
  std::optional<std::string> reason_string;        ///< 0x1F
  std::vector<std::pair<std::string, std::string>> user_properties;  ///< 0x26, in order

  bool empty() const;
};

struct ConnectOptions {
  Version version = Version::v5;
  std::string client_id;
  bool clean_start = true;  ///< v3.1.1: Clean Session
  std::uint16_t keep_alive_seconds = 60;
  Properties properties;    ///< v5 only: session_expiry, receive_maximum, maximum_packet_size, ...
  std::optional<std::string> username;
  std::optional<std::string> password;
};

struct SubscribeRequest {
  std::string filter;
  std::uint8_t qos = 1;
  bool no_local = false;            ///< v5 only
  bool retain_as_published = false;  ///< v5 only
  std::uint8_t retain_handling = 0;  ///< v5 only: 0 send at subscribe, 1 only if new, 2 never
};

// --- Encoding: each appends one complete packet to `out` -----------------------------------
// The caller keeps to the protocol's limits (strings ≤ 65,535 bytes, a packet ≤ 268,435,455
// bytes); the encoders do not check them.

void put_varint(std::string& out, std::uint32_t v);
void encode_connect(std::string& out, const ConnectOptions& o);
/// `packet_id` is ignored (not written) for QoS 0. `properties` may be null.
void encode_publish(std::string& out, Version v, std::string_view topic, std::string_view payload, std::uint8_t qos,
                    bool retain, bool dup, std::uint16_t packet_id, const Properties* properties = nullptr);
/// v5: reason 0 is written in the short form (no reason code, no properties).
void encode_puback(std::string& out, Version v, std::uint16_t packet_id, std::uint8_t reason = 0);
void encode_subscribe(std::string& out, Version v, std::uint16_t packet_id, std::span<const SubscribeRequest> subs);
void encode_unsubscribe(std::string& out, Version v, std::uint16_t packet_id, std::span<const std::string> filters);
void encode_pingreq(std::string& out);
/// v5: reason 0 is written in the short form; v3.1.1 has no reason.
void encode_disconnect(std::string& out, Version v, std::uint8_t reason = 0);

// --- Parsing ---------------------------------------------------------------------------------

/// One packet received from a broker. Fields not carried by its type stay default.
struct Packet {
  Type type{};
  std::uint8_t flags = 0;           ///< the low nibble of the first byte
  std::uint16_t packet_id = 0;      ///< PUBLISH (QoS > 0), PUBACK, SUBACK, UNSUBACK, ...
  /// CONNACK: v5 reason code, or v3.1.1 return code (0 accepted, 1..5 refused);
  /// PUBACK, PUBREC, PUBREL, PUBCOMP, DISCONNECT, AUTH: reason code (0 when left out).
  std::uint8_t reason = 0;
  bool session_present = false;     ///< CONNACK
  std::vector<std::uint8_t> codes;  ///< SUBACK / UNSUBACK: one per filter (v3.1.1 UNSUBACK: none)
  // PUBLISH
  std::string topic;
  std::string payload;
  std::uint8_t qos = 0;
  bool retain = false;
  bool dup = false;
  Properties properties;            ///< v5: of any packet that carries them
};

struct Parsed {
  std::size_t used = 0;           ///< bytes of `buf` the packet took; 0 = incomplete, read more
  std::optional<Packet> packet;   ///< set when used > 0
};

/// Parses one packet from the front of `buf`, as sent by a broker to a client of protocol `v`.
/// Errors (errc::parse, with a sentence): a malformed remaining length, a packet larger than
/// `max_packet` bytes (known as soon as its fixed header is complete), a body that does not
/// match its type (truncated fields, a bad QoS, reserved flags set, a property that is malformed
/// or unknown), or a type a broker never sends to a client (CONNECT, SUBSCRIBE, ...).
result<Parsed> parse(std::string_view buf, Version v, std::size_t max_packet);

/// The bytes a connection has read so far, taken apart packet by packet: a read loop appends
/// what each read returned, then calls next() until it answers "need more". Parsed bytes are
/// dropped lazily (no copy per packet). After an error the stream is broken: close it.
class PacketReader {
 public:
  PacketReader(Version v, std::size_t max_packet) : version_(v), max_packet_(max_packet) {}
  void append(std::string_view bytes);
  /// The next complete packet, std::nullopt when more bytes are needed, or parse()'s error.
  result<std::optional<Packet>> next();

 private:
  Version version_;
  std::size_t max_packet_;
  std::string buf_;
  std::size_t at_ = 0;  // start of the bytes not parsed yet
};

/// "Not authorized (0x87)"-style text for a v5 reason code or, with v3.1.1, a CONNACK return
/// code ("bad user name or password (4)").
std::string reason_text(Version v, std::uint8_t code, Type in = Type::connack);

}  // namespace canopy::mqtt
