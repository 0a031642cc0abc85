// The MQTT codec: the exact bytes of each encoder (checked by hand against the MQTT 5.0 and
// 3.1.1 standards), every packet a broker sends parsed from hand-built bytes, incomplete input,
// and malformed input refused with a sentence naming the problem.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "canopy/mqtt/codec.hpp"

namespace canopy::mqtt {
namespace {

using ::testing::HasSubstr;

constexpr auto v5 = Version::v5;
constexpr auto v311 = Version::v311;

std::string hex(std::string_view s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

/// Bytes from hex digits; spaces are ignored so tests can group fields.
std::string bytes(std::string_view hexdigits) {
  std::string out;
  int high = -1;
  for (char c : hexdigits) {
    if (c == ' ') continue;
    const int d = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
    if (high < 0) {
      high = d;
    } else {
      out.push_back(static_cast<char>(high * 16 + d));
      high = -1;
    }
  }
  return out;
}

/// Parses one complete packet that must use all of the bytes.
Packet parse_one(std::string_view hexdigits, Version v) {
  const auto b = bytes(hexdigits);
  auto r = parse(b, v, 1 << 20);
  if (!r) {
    ADD_FAILURE() << hexdigits << ": " << r.error().message;
    return {};
  }
  EXPECT_EQ(r->used, b.size()) << hexdigits;
  if (!r->packet) {
    ADD_FAILURE() << hexdigits << ": no packet";
    return {};
  }
  return *r->packet;
}

/// The message of the errc::parse error that parsing must give.
std::string parse_error(std::string_view hexdigits, Version v, std::size_t max_packet = 1 << 20) {
  auto r = parse(bytes(hexdigits), v, max_packet);
  if (r) {
    ADD_FAILURE() << hexdigits << ": parsed, used " << r->used;
    return {};
  }
  EXPECT_EQ(r.error().code, errc::parse) << hexdigits;
  return r.error().message;
}

/// A Properties value with every field set.
Properties all_properties() {
  Properties p;
  p.payload_format = 1;
  p.message_expiry = 1;
  p.content_type = "c";
  p.response_topic = "r";
  p.correlation_data = "d";
  p.subscription_ids = {1, 200};
  p.topic_alias = 6;
  p.session_expiry = 2;
  p.assigned_client_id = "a";
  p.server_keep_alive = 3;
  p.receive_maximum = 4;
  p.topic_alias_maximum = 5;
  p.maximum_qos = 1;
  p.retain_available = 0;
  p.maximum_packet_size = 7;
  p.reason_string = "s";
  p.user_properties = {{"k1", "v1"}, {"k0", "v0"}};
  return p;
}

void expect_same(const Properties& a, const Properties& b) {
  EXPECT_EQ(a.payload_format, b.payload_format);
  EXPECT_EQ(a.message_expiry, b.message_expiry);
  EXPECT_EQ(a.content_type, b.content_type);
  EXPECT_EQ(a.response_topic, b.response_topic);
  EXPECT_EQ(a.correlation_data, b.correlation_data);
  EXPECT_EQ(a.subscription_ids, b.subscription_ids);
  EXPECT_EQ(a.topic_alias, b.topic_alias);
  EXPECT_EQ(a.session_expiry, b.session_expiry);
  EXPECT_EQ(a.assigned_client_id, b.assigned_client_id);
  EXPECT_EQ(a.server_keep_alive, b.server_keep_alive);
  EXPECT_EQ(a.receive_maximum, b.receive_maximum);
  EXPECT_EQ(a.topic_alias_maximum, b.topic_alias_maximum);
  EXPECT_EQ(a.maximum_qos, b.maximum_qos);
  EXPECT_EQ(a.retain_available, b.retain_available);
  EXPECT_EQ(a.maximum_packet_size, b.maximum_packet_size);
  EXPECT_EQ(a.reason_string, b.reason_string);
  EXPECT_EQ(a.user_properties, b.user_properties);
}

// The property block of all_properties(), in ascending identifier order, user properties in
// their given order: 76 (0x4c) bytes.
constexpr std::string_view all_properties_hex =
    "4c"
    "01 01"                           // payload format indicator 1
    "02 00000001"                     // message expiry 1
    "03 0001 63"                      // content type "c"
    "08 0001 72"                      // response topic "r"
    "09 0001 64"                      // correlation data "d"
    "0b 01 0b c801"                   // subscription ids 1 and 200
    "11 00000002"                     // session expiry 2
    "12 0001 61"                      // assigned client id "a"
    "13 0003"                         // server keep alive 3
    "1f 0001 73"                      // reason string "s"
    "21 0004"                         // receive maximum 4
    "22 0005"                         // topic alias maximum 5
    "23 0006"                         // topic alias 6
    "24 01"                           // maximum QoS 1
    "25 00"                           // retain available 0
    "26 0002 6b31 0002 7631"          // user property k1=v1
    "26 0002 6b30 0002 7630"          // user property k0=v0
    "27 00000007";                    // maximum packet size 7

// --- Encoding --------------------------------------------------------------------------------

TEST(MqttCodecEncode, VarintsUseOneToFourBytes) {
  const std::vector<std::pair<std::uint32_t, std::string>> cases = {
      {0, "00"},           {127, "7f"},         {128, "8001"},           {16383, "ff7f"},
      {16384, "808001"},   {2097151, "ffff7f"}, {2097152, "80808001"},   {268435455, "ffffff7f"}};
  for (const auto& [value, expected] : cases) {
    std::string out;
    put_varint(out, value);
    EXPECT_EQ(hex(out), expected) << value;
  }
}

TEST(MqttCodecEncode, V5ConnectCarriesFlagsKeepAlivePropertiesAndCredentials) {
  ConnectOptions o;
  o.version = v5;
  o.client_id = "c";
  o.clean_start = true;
  o.keep_alive_seconds = 60;
  o.properties.session_expiry = 120;
  o.properties.receive_maximum = 16;
  o.properties.maximum_packet_size = 1024;
  o.username = "u";
  o.password = "p";
  std::string out;
  encode_connect(out, o);
  // remaining 33 | "MQTT" | level 5 | flags: user name, password, clean start | keep alive 60 |
  // properties (13): session expiry, receive maximum, maximum packet size | "c" | "u" | "p"
  EXPECT_EQ(hex(out), "1021" "00044d515454" "05" "c2" "003c" "0d" "1100000078" "210010" "2700000400"
                      "000163" "000175" "000170");
}

TEST(MqttCodecEncode, V5ConnectWithoutPropertiesWritesAZeroPropertyLength) {
  ConnectOptions o;
  o.client_id = "c";
  o.clean_start = false;
  o.keep_alive_seconds = 30;
  std::string out;
  encode_connect(out, o);
  EXPECT_EQ(hex(out), "100e" "00044d515454" "05" "00" "001e" "00" "000163");
}

TEST(MqttCodecEncode, V311ConnectHasLevel4AndNoProperties) {
  ConnectOptions o;
  o.version = v311;
  o.client_id = "c";
  o.clean_start = false;
  o.keep_alive_seconds = 60;
  o.properties.session_expiry = 120;  // ignored: v3.1.1 has no properties
  std::string out;
  encode_connect(out, o);
  EXPECT_EQ(hex(out), "100d" "00044d515454" "04" "00" "003c" "000163");

  o.clean_start = true;
  o.username = "u";
  out.clear();
  encode_connect(out, o);
  EXPECT_EQ(hex(out), "1010" "00044d515454" "04" "82" "003c" "000163" "000175");

  o.password = "p";
  out.clear();
  encode_connect(out, o);
  EXPECT_EQ(hex(out), "1013" "00044d515454" "04" "c2" "003c" "000163" "000175" "000170");
}

TEST(MqttCodecEncode, PublishFlagsTopicPacketIdPropertiesAndPayload) {
  Properties props;
  props.payload_format = 1;
  props.message_expiry = 10;
  std::string out;
  encode_publish(out, v5, "a/b", "hi", 1, true, true, 0x1234, &props);
  // DUP | QoS 1 | RETAIN, remaining 17 | "a/b" | id | properties (7) | "hi"
  EXPECT_EQ(hex(out), "3b11" "0003612f62" "1234" "07" "0101" "020000000a" "6869");
}

TEST(MqttCodecEncode, PublishAtQos0HasNoPacketIdAndAnEmptyPropertyBlock) {
  std::string out;
  encode_publish(out, v5, "t", "hi", 0, false, false, 99);
  EXPECT_EQ(hex(out), "3006" "000174" "00" "6869");
  const Properties none;
  out.clear();
  encode_publish(out, v5, "t", "hi", 0, true, false, 99, &none);
  EXPECT_EQ(hex(out), "3106" "000174" "00" "6869");
  out.clear();
  encode_publish(out, v5, "t", "", 2, false, false, 1);
  EXPECT_EQ(hex(out), "3406" "000174" "0001" "00");
}

TEST(MqttCodecEncode, V311PublishHasNoProperties) {
  Properties props;
  props.payload_format = 1;
  std::string out;
  encode_publish(out, v311, "t", "hi", 1, false, false, 5, &props);
  EXPECT_EQ(hex(out), "3207" "000174" "0005" "6869");
  out.clear();
  encode_publish(out, v311, "t", "hi", 0, false, false, 5);
  EXPECT_EQ(hex(out), "3005" "000174" "6869");
}

TEST(MqttCodecEncode, PublishWritesEveryPropertyInAscendingIdentifierOrder) {
  const auto props = all_properties();
  std::string out;
  encode_publish(out, v5, "t", "x", 1, false, false, 1, &props);
  // remaining: topic 3 + id 2 + property length 1 + properties 76 + payload 1 = 83
  EXPECT_EQ(hex(out), hex(bytes(std::string("3253" "000174" "0001") + std::string(all_properties_hex) + "78")));
}

TEST(MqttCodecEncode, PublishWithALargePayloadUsesATwoByteRemainingLength) {
  std::string out;
  encode_publish(out, v5, "t", std::string(200, 'p'), 0, false, false, 0);
  // remaining 3 + 1 + 200 = 204 = 0x4c + 1 * 128
  EXPECT_EQ(hex(out.substr(0, 7)), "30cc01" "000174" "00");
  EXPECT_EQ(out.size(), 3u + 204u);
}

TEST(MqttCodecEncode, EncodersAppendToWhatIsAlreadyThere) {
  std::string out = "x";
  encode_pingreq(out);
  encode_puback(out, v5, 1);
  EXPECT_EQ(hex(out), "78" "c000" "40020001");
}

TEST(MqttCodecEncode, PubackUsesTheShortFormForSuccessAndAlwaysInV311) {
  std::string out;
  encode_puback(out, v5, 258);
  EXPECT_EQ(hex(out), "40020102");
  out.clear();
  encode_puback(out, v5, 258, 0x10);
  EXPECT_EQ(hex(out), "4003010210");
  out.clear();
  encode_puback(out, v311, 258, 0x10);
  EXPECT_EQ(hex(out), "40020102");
}

TEST(MqttCodecEncode, SubscribeWritesTheV5OptionsByte) {
  const std::vector<SubscribeRequest> subs = {
      {.filter = "a/#", .qos = 1, .no_local = true, .retain_as_published = true, .retain_handling = 2},
      {.filter = "b", .qos = 0},
  };
  std::string out;
  encode_subscribe(out, v5, 10, subs);
  // id 10 | no properties | "a/#" options 0x2d (QoS 1, No Local, RAP, retain handling 2) | "b" 0x00
  EXPECT_EQ(hex(out), "820d" "000a" "00" "0003612f23" "2d" "000162" "00");
}

TEST(MqttCodecEncode, V311SubscribeWritesOnlyTheQos) {
  const std::vector<SubscribeRequest> subs = {
      {.filter = "a/#", .qos = 1, .no_local = true, .retain_as_published = true, .retain_handling = 2},
      {.filter = "b", .qos = 2},
  };
  std::string out;
  encode_subscribe(out, v311, 10, subs);
  EXPECT_EQ(hex(out), "820c" "000a" "0003612f23" "01" "000162" "02");
}

TEST(MqttCodecEncode, UnsubscribeListsTheFilters) {
  const std::vector<std::string> filters = {"a", "bc"};
  std::string out;
  encode_unsubscribe(out, v5, 11, filters);
  EXPECT_EQ(hex(out), "a20a" "000b" "00" "000161" "00026263");
  out.clear();
  encode_unsubscribe(out, v311, 11, filters);
  EXPECT_EQ(hex(out), "a209" "000b" "000161" "00026263");
}

TEST(MqttCodecEncode, PingreqAndDisconnect) {
  std::string out;
  encode_pingreq(out);
  EXPECT_EQ(hex(out), "c000");
  out.clear();
  encode_disconnect(out, v5);
  EXPECT_EQ(hex(out), "e000");
  out.clear();
  encode_disconnect(out, v5, 0x04);
  EXPECT_EQ(hex(out), "e00104");
  out.clear();
  encode_disconnect(out, v311, 0x04);
  EXPECT_EQ(hex(out), "e000");
}

TEST(MqttCodecEncode, PropertiesAreEmptyOnlyWithNothingSet) {
  EXPECT_TRUE(Properties{}.empty());
  EXPECT_FALSE(all_properties().empty());
  Properties p;
  p.user_properties.emplace_back("k", "v");
  EXPECT_FALSE(p.empty());
  Properties q;
  q.retain_available = 0;
  EXPECT_FALSE(q.empty());
}

// --- Parsing packets a broker sends ----------------------------------------------------------

TEST(MqttCodecParse, V5ConnackWithPropertiesTheSkippedOnesIncluded) {
  const auto p = parse_one(
      "20 41 01 00 3e"
      "11 0000003c"           // session expiry 60
      "12 0002 6331"          // assigned client id "c1"
      "13 001e"               // server keep alive 30
      "1f 0002 6f6b"          // reason string "ok"
      "21 000a"               // receive maximum 10
      "22 0000"               // topic alias maximum 0
      "24 01"                 // maximum QoS 1
      "25 01"                 // retain available
      "26 0001 6b 0001 76"    // user property k=v
      "27 00100000"           // maximum packet size 1 MiB
      "15 0001 6d"            // authentication method "m" (skipped)
      "16 0001 64"            // authentication data "d" (skipped)
      "1a 0001 69"            // response information "i" (skipped)
      "1c 0001 73"            // server reference "s" (skipped)
      "28 01 29 00 2a 01",    // wildcard / subscription id / shared subscription available (skipped)
      v5);
  EXPECT_EQ(p.type, Type::connack);
  EXPECT_TRUE(p.session_present);
  EXPECT_EQ(p.reason, 0);
  EXPECT_EQ(p.properties.session_expiry, 60u);
  EXPECT_EQ(p.properties.assigned_client_id, "c1");
  EXPECT_EQ(p.properties.server_keep_alive, 30);
  EXPECT_EQ(p.properties.reason_string, "ok");
  EXPECT_EQ(p.properties.receive_maximum, 10);
  EXPECT_EQ(p.properties.topic_alias_maximum, 0);
  EXPECT_EQ(p.properties.maximum_qos, 1);
  EXPECT_EQ(p.properties.retain_available, 1);
  EXPECT_EQ(p.properties.user_properties, (std::vector<std::pair<std::string, std::string>>{{"k", "v"}}));
  EXPECT_EQ(p.properties.maximum_packet_size, 1048576u);
}

TEST(MqttCodecParse, V5ConnackSkipsTheClientOnlyPropertiesToo) {
  // request problem / response information, will delay: valid MQTT 5 properties, skipped.
  const auto p = parse_one("20 11 00 87 0e 17 01 19 01 18 0000000a 02 0000 0005", v5);
  EXPECT_EQ(p.reason, 0x87);
  EXPECT_EQ(p.properties.message_expiry, 5u);
}

TEST(MqttCodecParse, V311ConnackHasAReturnCodeOnly) {
  auto p = parse_one("20 02 00 05", v311);
  EXPECT_EQ(p.type, Type::connack);
  EXPECT_FALSE(p.session_present);
  EXPECT_EQ(p.reason, 5);
  p = parse_one("20 02 01 00", v311);
  EXPECT_TRUE(p.session_present);
  EXPECT_EQ(p.reason, 0);
}

TEST(MqttCodecParse, V5PublishWithEveryPropertyRoundTrips) {
  const auto p = parse_one(std::string("3b 53 000174 0001") + std::string(all_properties_hex) + "78", v5);
  EXPECT_EQ(p.type, Type::publish);
  EXPECT_EQ(p.flags, 0x0b);
  EXPECT_EQ(p.qos, 1);
  EXPECT_TRUE(p.dup);
  EXPECT_TRUE(p.retain);
  EXPECT_EQ(p.packet_id, 1);
  EXPECT_EQ(p.topic, "t");
  EXPECT_EQ(p.payload, "x");
  expect_same(p.properties, all_properties());
}

TEST(MqttCodecParse, PublishEncodedByTheCodecParsesBack) {
  const auto props = all_properties();
  std::string out;
  encode_publish(out, v5, "a/b", std::string(300, 'z'), 2, true, false, 77, &props);
  auto r = parse(out, v5, 1 << 20);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->used, out.size());
  EXPECT_EQ(r->packet->qos, 2);
  EXPECT_EQ(r->packet->packet_id, 77);
  EXPECT_EQ(r->packet->topic, "a/b");
  EXPECT_EQ(r->packet->payload, std::string(300, 'z'));
  expect_same(r->packet->properties, props);
}

TEST(MqttCodecParse, PublishAtQos0HasNoPacketId) {
  auto p = parse_one("31 06 000174 00 6869", v5);
  EXPECT_EQ(p.qos, 0);
  EXPECT_TRUE(p.retain);
  EXPECT_EQ(p.packet_id, 0);
  EXPECT_EQ(p.payload, "hi");
  p = parse_one("30 05 000174 6869", v311);
  EXPECT_EQ(p.topic, "t");
  EXPECT_EQ(p.payload, "hi");
}

TEST(MqttCodecParse, V311PublishAtQos2) {
  const auto p = parse_one("34 05 000174 0009", v311);
  EXPECT_EQ(p.qos, 2);
  EXPECT_EQ(p.packet_id, 9);
  EXPECT_EQ(p.payload, "");
}

TEST(MqttCodecParse, PublishWithAnEmptyTopicAndATopicAliasIsLeftToTheCaller) {
  const auto p = parse_one("30 06 0000 03 23 0001", v5);
  EXPECT_EQ(p.topic, "");
  EXPECT_EQ(p.properties.topic_alias, 1);
}

TEST(MqttCodecParse, PubackInItsShortAndLongForms) {
  auto p = parse_one("40 02 0005", v5);
  EXPECT_EQ(p.type, Type::puback);
  EXPECT_EQ(p.packet_id, 5);
  EXPECT_EQ(p.reason, 0);
  p = parse_one("40 03 0005 10", v5);
  EXPECT_EQ(p.reason, 0x10);
  p = parse_one("40 04 0005 00 00", v5);
  EXPECT_EQ(p.reason, 0);
  p = parse_one("40 09 0005 97 05 1f 0002 6e6f", v5);
  EXPECT_EQ(p.reason, 0x97);
  EXPECT_EQ(p.properties.reason_string, "no");
  p = parse_one("40 02 0102", v311);
  EXPECT_EQ(p.packet_id, 258);
}

TEST(MqttCodecParse, PubrecPubrelPubcompCarryAPacketIdAndAReason) {
  auto p = parse_one("50 02 0001", v5);
  EXPECT_EQ(p.type, Type::pubrec);
  EXPECT_EQ(p.packet_id, 1);
  p = parse_one("62 03 0002 92", v5);
  EXPECT_EQ(p.type, Type::pubrel);
  EXPECT_EQ(p.flags, 2);
  EXPECT_EQ(p.reason, 0x92);
  p = parse_one("70 08 0003 00 04 1f 0001 78", v5);
  EXPECT_EQ(p.type, Type::pubcomp);
  EXPECT_EQ(p.properties.reason_string, "x");
  EXPECT_EQ(parse_one("50 02 0004", v311).packet_id, 4);
  EXPECT_EQ(parse_one("62 02 0005", v311).packet_id, 5);
  EXPECT_EQ(parse_one("70 02 0006", v311).packet_id, 6);
}

TEST(MqttCodecParse, SubackHasOneCodePerFilter) {
  auto p = parse_one("90 0b 0007 05 1f 0002 6e6f 01 87 02", v5);
  EXPECT_EQ(p.type, Type::suback);
  EXPECT_EQ(p.packet_id, 7);
  EXPECT_EQ(p.properties.reason_string, "no");
  EXPECT_EQ(p.codes, (std::vector<std::uint8_t>{0x01, 0x87, 0x02}));
  p = parse_one("90 05 0007 00 01 80", v311);
  EXPECT_EQ(p.codes, (std::vector<std::uint8_t>{0x00, 0x01, 0x80}));
}

TEST(MqttCodecParse, UnsubackHasCodesInV5AndNoneInV311) {
  auto p = parse_one("b0 05 0009 00 00 11", v5);
  EXPECT_EQ(p.type, Type::unsuback);
  EXPECT_EQ(p.packet_id, 9);
  EXPECT_EQ(p.codes, (std::vector<std::uint8_t>{0x00, 0x11}));
  p = parse_one("b0 02 0009", v311);
  EXPECT_EQ(p.packet_id, 9);
  EXPECT_TRUE(p.codes.empty());
}

TEST(MqttCodecParse, Pingresp) {
  EXPECT_EQ(parse_one("d0 00", v5).type, Type::pingresp);
  EXPECT_EQ(parse_one("d0 00", v311).type, Type::pingresp);
}

TEST(MqttCodecParse, DisconnectWithAndWithoutAReason) {
  auto p = parse_one("e0 00", v5);
  EXPECT_EQ(p.type, Type::disconnect);
  EXPECT_EQ(p.reason, 0);
  p = parse_one("e0 01 8e", v5);
  EXPECT_EQ(p.reason, 0x8e);
  p = parse_one("e0 0f 9c 0d 1f 0003 627965 1c 0004 686f7374", v5);
  EXPECT_EQ(p.reason, 0x9c);
  EXPECT_EQ(p.properties.reason_string, "bye");
  EXPECT_EQ(parse_one("e0 00", v311).type, Type::disconnect);
}

TEST(MqttCodecParse, V5AuthWithAndWithoutAReason) {
  auto p = parse_one("f0 00", v5);
  EXPECT_EQ(p.type, Type::auth);
  EXPECT_EQ(p.reason, 0);
  p = parse_one("f0 0b 18 09 15 0001 6d 16 0002 0102", v5);
  EXPECT_EQ(p.reason, 0x18);
}

TEST(MqttCodecParse, ParsesOnePacketAtATimeFromTheFront) {
  const auto b = bytes("40 02 0001 d0 00 e0 00");
  auto r = parse(b, v5, 100);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->used, 4u);
  EXPECT_EQ(r->packet->type, Type::puback);
  r = parse(std::string_view(b).substr(4), v5, 100);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->used, 2u);
  EXPECT_EQ(r->packet->type, Type::pingresp);
}

TEST(MqttCodecParse, EveryPrefixOfAValidPacketIsIncompleteNotAnError) {
  std::string big;
  encode_publish(big, v5, "t", std::string(200, 'p'), 1, false, false, 3);  // 2-byte remaining length
  const std::vector<std::pair<std::string, Version>> packets = {
      {bytes(std::string("3b 53 000174 0001") + std::string(all_properties_hex) + "78"), v5},
      {bytes("20 11 00 87 0e 17 01 19 01 18 0000000a 02 0000 0005"), v5},
      {bytes("90 0b 0007 05 1f 0002 6e6f 01 87 02"), v5},
      {bytes("e0 0f 9c 0d 1f 0003 627965 1c 0004 686f7374"), v5},
      {bytes("40 09 0005 97 05 1f 0002 6e6f"), v5},
      {bytes("20 02 00 05"), v311},
      {bytes("32 07 000174 0005 6869"), v311},
      {big, v5},
  };
  for (const auto& [packet, version] : packets) {
    for (std::size_t n = 0; n < packet.size(); ++n) {
      auto r = parse(std::string_view(packet).substr(0, n), version, 1 << 20);
      ASSERT_TRUE(r) << hex(packet) << " cut at " << n << ": " << r.error().message;
      EXPECT_EQ(r->used, 0u) << hex(packet) << " cut at " << n;
      EXPECT_FALSE(r->packet);
    }
    auto whole = parse(packet, version, 1 << 20);
    ASSERT_TRUE(whole) << hex(packet) << ": " << whole.error().message;
    EXPECT_EQ(whole->used, packet.size());
  }
}

// --- Refusing malformed packets --------------------------------------------------------------

TEST(MqttCodecRefuse, APacketShorterThanItsFixedFields) {
  EXPECT_THAT(parse_error("40 01 00", v5), HasSubstr("a PUBACK of 1 byte; it needs at least 2"));
  EXPECT_THAT(parse_error("20 01 00", v311), HasSubstr("a CONNACK of 1 byte; it needs at least 2"));
  EXPECT_THAT(parse_error("20 02 00 00", v5), HasSubstr("a CONNACK of 2 bytes; it needs at least 3"));
  EXPECT_THAT(parse_error("90 00", v5), HasSubstr("a SUBACK of 0 bytes; it needs at least 2"));
}

TEST(MqttCodecRefuse, AFieldRunningPastTheEnd) {
  EXPECT_THAT(parse_error("30 03 0009 61", v5), HasSubstr("a PUBLISH of 3 bytes that ends inside its topic name"));
  EXPECT_THAT(parse_error("32 04 000174 00", v311), HasSubstr("ends inside its packet identifier"));
  EXPECT_THAT(parse_error("30 03 000174", v5), HasSubstr("ends inside its property length"));
  EXPECT_THAT(parse_error("30 05 000174 05 01", v5), HasSubstr("ends inside its properties"));
  EXPECT_THAT(parse_error("30 07 000174 03 02 0000", v5), HasSubstr("ends inside its message expiry interval"));
  EXPECT_THAT(parse_error("30 08 000174 04 26 0001 6b", v5), HasSubstr("ends inside its user property value"));
}

TEST(MqttCodecRefuse, AnUnknownProperty) {
  EXPECT_THAT(parse_error("30 06 000174 02 99 00", v5), HasSubstr("property 0x99 is not a known MQTT 5 property"));
  EXPECT_THAT(parse_error("20 04 00 00 01 14", v5), HasSubstr("property 0x14 is not a known MQTT 5 property"));
}

TEST(MqttCodecRefuse, APropertyGivenTwice) {
  EXPECT_THAT(parse_error("30 08 000174 04 01 01 01 01", v5), HasSubstr("property 0x01 appears twice"));
}

TEST(MqttCodecRefuse, APropertyWithAValueMqtt5Forbids) {
  EXPECT_THAT(parse_error("30 06 000174 02 01 02", v5), HasSubstr("property 0x01 (payload format indicator) is 2"));
  EXPECT_THAT(parse_error("20 06 00 00 03 21 0000", v5), HasSubstr("property 0x21 (receive maximum) is 0"));
  EXPECT_THAT(parse_error("30 06 000174 02 0b 00", v5), HasSubstr("property 0x0B (subscription identifier) is 0"));
}

TEST(MqttCodecRefuse, AVariableByteIntegerLongerThanFourBytes) {
  EXPECT_THAT(parse_error("30 ff ff ff ff 01", v5, std::size_t{1} << 30), HasSubstr("a remaining length longer than 4 bytes"));
  EXPECT_THAT(parse_error("30 0a 000174 06 0b ffffffff01", v5), HasSubstr("longer than 4 bytes"));
}

TEST(MqttCodecRefuse, APacketLargerThanTheLimitAsSoonAsItsHeaderIsComplete) {
  // remaining length 1,999,996 (fc 88 7a) + 4 header bytes; no body at all yet
  EXPECT_THAT(parse_error("30 fc 88 7a", v5, 1048576), HasSubstr("a packet of 2000000 bytes, more than the limit of 1048576"));
  EXPECT_THAT(parse_error("40 02 0001", v5, 3), HasSubstr("a packet of 4 bytes, more than the limit of 3"));
}

TEST(MqttCodecRefuse, APublishWithQos3) {
  EXPECT_THAT(parse_error("36 02 0000", v5), HasSubstr("a PUBLISH with QoS 3"));
  EXPECT_THAT(parse_error("36", v311), HasSubstr("a PUBLISH with QoS 3"));
}

TEST(MqttCodecRefuse, APublishWithoutATopic) {
  EXPECT_THAT(parse_error("30 03 0000 00", v5), HasSubstr("a PUBLISH with an empty topic name and no topic alias"));
  EXPECT_THAT(parse_error("30 02 0000", v311), HasSubstr("a PUBLISH with an empty topic name"));
}

TEST(MqttCodecRefuse, APublishAtQos1WithPacketIdZero) {
  EXPECT_THAT(parse_error("32 05 000174 0000", v311), HasSubstr("a PUBLISH with QoS 1 and packet identifier 0"));
}

TEST(MqttCodecRefuse, ReservedFlagsThatAreSet) {
  EXPECT_THAT(parse_error("21 02 00 00", v311), HasSubstr("a CONNACK with flags 0x1; they must be 0x0"));
  EXPECT_THAT(parse_error("42 02 0001", v5), HasSubstr("a PUBACK with flags 0x2; they must be 0x0"));
  EXPECT_THAT(parse_error("51 02 0001", v5), HasSubstr("a PUBREC with flags 0x1"));
  EXPECT_THAT(parse_error("60 02 0001", v5), HasSubstr("a PUBREL with flags 0x0; they must be 0x2"));
  EXPECT_THAT(parse_error("78 02 0001", v5), HasSubstr("a PUBCOMP with flags 0x8"));
  EXPECT_THAT(parse_error("98 03 0001 00", v311), HasSubstr("a SUBACK with flags 0x8"));
  EXPECT_THAT(parse_error("b4 02 0001", v311), HasSubstr("an UNSUBACK with flags 0x4"));
  EXPECT_THAT(parse_error("d1 00", v5), HasSubstr("a PINGRESP with flags 0x1"));
  EXPECT_THAT(parse_error("ef 00", v5), HasSubstr("a DISCONNECT with flags 0xF"));
  EXPECT_THAT(parse_error("f2 00", v5), HasSubstr("an AUTH with flags 0x2"));
  EXPECT_THAT(parse_error("20 03 02 00 00", v5), HasSubstr("a CONNACK with acknowledge flags 0x02"));
}

TEST(MqttCodecRefuse, PacketsABrokerNeverSends) {
  EXPECT_THAT(parse_error("10 00", v5), HasSubstr("a CONNECT packet, which a broker never sends"));
  EXPECT_THAT(parse_error("82 00", v5), HasSubstr("a SUBSCRIBE packet"));
  EXPECT_THAT(parse_error("a2 00", v311), HasSubstr("an UNSUBSCRIBE packet"));
  EXPECT_THAT(parse_error("c0 00", v5), HasSubstr("a PINGREQ packet"));
  EXPECT_THAT(parse_error("00 00", v5), HasSubstr("a packet of type 0"));
  EXPECT_THAT(parse_error("f0 00", v311), HasSubstr("an AUTH packet, which MQTT 3.1.1 does not have"));
}

TEST(MqttCodecRefuse, BytesAfterTheLastField) {
  EXPECT_THAT(parse_error("20 03 00 00 00", v311), HasSubstr("a CONNACK with 1 byte more than its fields"));
  EXPECT_THAT(parse_error("20 04 00 00 00 00", v5), HasSubstr("a CONNACK with 1 byte more than its fields"));
  EXPECT_THAT(parse_error("40 03 0001 00", v311), HasSubstr("a PUBACK with 1 byte more than its fields"));
  EXPECT_THAT(parse_error("40 05 0001 00 00 00", v5), HasSubstr("a PUBACK with 1 byte more than its fields"));
  EXPECT_THAT(parse_error("b0 03 0001 00", v311), HasSubstr("an UNSUBACK with 1 byte more than its fields"));
  EXPECT_THAT(parse_error("d0 02 0000", v5), HasSubstr("a PINGRESP with 2 bytes more than its fields"));
  EXPECT_THAT(parse_error("e0 01 00", v311), HasSubstr("a DISCONNECT with 1 byte more than its fields"));
}

TEST(MqttCodecRefuse, ASubackWithoutCodesOrWithAnInvalidV311Code) {
  EXPECT_THAT(parse_error("90 03 0001 00", v5), HasSubstr("a SUBACK without any reason code"));
  EXPECT_THAT(parse_error("b0 03 0001 00", v5), HasSubstr("an UNSUBACK without any reason code"));
  EXPECT_THAT(parse_error("90 02 0001", v311), HasSubstr("a SUBACK without any reason code"));
  EXPECT_THAT(parse_error("90 03 0001 03", v311), HasSubstr("a SUBACK with return code 0x03"));
}

// --- Reason codes ----------------------------------------------------------------------------

TEST(MqttCodecReasonText, V5CodesAreNamedWithTheirHexValue) {
  EXPECT_EQ(reason_text(v5, 0x87), "not authorized (0x87)");
  EXPECT_EQ(reason_text(v5, 0x8A), "banned (0x8A)");
  EXPECT_EQ(reason_text(v5, 0x00), "success (0x00)");
  EXPECT_EQ(reason_text(v5, 0x00, Type::disconnect), "normal disconnection (0x00)");
  EXPECT_EQ(reason_text(v5, 0x00, Type::suback), "granted QoS 0 (0x00)");
  EXPECT_EQ(reason_text(v5, 0x02, Type::suback), "granted QoS 2 (0x02)");
  EXPECT_EQ(reason_text(v5, 0x04, Type::disconnect), "disconnect with will message (0x04)");
  EXPECT_EQ(reason_text(v5, 0x10, Type::puback), "no matching subscribers (0x10)");
  EXPECT_EQ(reason_text(v5, 0x11, Type::unsuback), "no subscription existed (0x11)");
  EXPECT_EQ(reason_text(v5, 0x80), "unspecified error (0x80)");
  EXPECT_EQ(reason_text(v5, 0x9B), "QoS not supported (0x9B)");
  EXPECT_EQ(reason_text(v5, 0xA2), "wildcard subscriptions not supported (0xA2)");
  EXPECT_EQ(reason_text(v5, 0x7F), "unknown reason code (0x7F)");
}

TEST(MqttCodecPacketReader, ReturnsPacketsSplitAcrossReadsAndStopsAtAMalformedOne) {
  PacketReader r(v5, 1 << 20);
  // PUBACK 5, PINGRESP, then a PUBLISH split over three reads.
  const std::string publish = std::string("\x30\x06\x00\x01" "t" "\x00" "hi", 8);
  r.append(std::string("\x40\x02\x00\x05\xd0\x00", 6) + publish.substr(0, 3));
  auto a = r.next();
  ASSERT_TRUE(a && *a);
  EXPECT_EQ((*a)->type, Type::puback);
  EXPECT_EQ((*a)->packet_id, 5);
  auto b = r.next();
  ASSERT_TRUE(b && *b);
  EXPECT_EQ((*b)->type, Type::pingresp);
  auto c = r.next();
  ASSERT_TRUE(c);
  EXPECT_FALSE(*c) << "a partial packet needs more bytes";
  r.append(publish.substr(3, 3));
  auto still = r.next();
  ASSERT_TRUE(still);
  EXPECT_FALSE(*still);
  r.append(publish.substr(6));
  auto d = r.next();
  ASSERT_TRUE(d && *d);
  EXPECT_EQ((*d)->topic, "t");
  EXPECT_EQ((*d)->payload, "hi");
  r.append(std::string("\x10\x00", 2));  // a CONNECT, which a broker never sends
  auto e = r.next();
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, errc::parse);
}

TEST(MqttCodecReasonText, EveryV5ErrorCodeHasAName) {
  for (int code = 0x80; code <= 0xA2; ++code)
    EXPECT_THAT(reason_text(v5, static_cast<std::uint8_t>(code)), ::testing::Not(HasSubstr("unknown"))) << code;
}

TEST(MqttCodecReasonText, V311ConnackAndSubackReturnCodes) {
  EXPECT_EQ(reason_text(v311, 0), "connection accepted (0)");
  EXPECT_EQ(reason_text(v311, 1), "unacceptable protocol version (1)");
  EXPECT_EQ(reason_text(v311, 2), "identifier rejected (2)");
  EXPECT_EQ(reason_text(v311, 3), "server unavailable (3)");
  EXPECT_EQ(reason_text(v311, 4), "bad user name or password (4)");
  EXPECT_EQ(reason_text(v311, 5), "not authorized (5)");
  EXPECT_EQ(reason_text(v311, 6), "unknown return code (6)");
  EXPECT_EQ(reason_text(v311, 0x80, Type::suback), "failure (0x80)");
  EXPECT_EQ(reason_text(v311, 1, Type::suback), "granted QoS 1 (0x01)");
}

}  // namespace
}  // namespace canopy::mqtt
