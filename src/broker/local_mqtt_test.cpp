// The local MQTT client's wire format: what it sends, and what it accepts and refuses.
#include <gtest/gtest.h>

#include "canopy/broker/local_mqtt.hpp"

namespace canopy::broker {
namespace {

std::string hex(const std::string& s) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}

TEST(LocalMqttWire, ConnectAsksForAPersistentSessionAndAReceiveMaximum) {
  LocalMqttOptions o;
  o.client_id = "b";
  o.keep_alive = std::chrono::seconds(30);
  o.session_expiry_seconds = 60;
  o.receive_maximum = 1000;
  // 10 len | 00 04 MQTT | 05 | flags 00 (no clean start) | keepalive 00 1e |
  // props 08: 11 0000003c, 21 03e8 | client id 0001 'b'
  EXPECT_EQ(hex(wire::connect(o, false)), "1016" "00044d515454" "05" "00" "001e" "08" "110000003c" "2103e8" "000162");
  EXPECT_EQ(static_cast<unsigned char>(wire::connect(o, true)[9]), 0x02);
}

TEST(LocalMqttWire, SubscribeUsesQos1NoLocalAndRetainAsPublished) {
  EXPECT_EQ(hex(wire::subscribe(7, {"a/#"})), "8209" "0007" "00" "0003612f23" "0d");
}

TEST(LocalMqttWire, PublishAndPuback) {
  EXPECT_EQ(hex(wire::publish(5, "t", "hi", 1, false)), "3208" "000174" "0005" "00" "6869");
  EXPECT_EQ(hex(wire::publish(0, "t", "hi", 0, true)), "3106" "000174" "00" "6869");
  EXPECT_EQ(hex(wire::puback(258)), "40020102");
}

TEST(LocalMqttWire, VarintsUpToFourBytes) {
  std::string s;
  wire::put_varint(s, 268435455);
  EXPECT_EQ(hex(s), "ffffff7f");
}

TEST(LocalMqttWire, ParsesAPublishWithPropertiesAndWaitsForMoreBytes) {
  // PUBLISH QoS 1 dup: topic "a/b", id 9, properties (2 bytes: 01 01 = payload format), "xyz"
  const std::string pkt = std::string("\x3a\x0d\x00\x03" "a/b" "\x00\x09\x02\x01\x01" "xyz", 15);
  auto partial = wire::parse(pkt.substr(0, 7), 1 << 20);
  ASSERT_TRUE(partial);
  EXPECT_EQ(partial->first, 0u);
  auto r = wire::parse(pkt + "\xd0", 1 << 20);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->first, pkt.size());
  const auto& p = *r->second;
  EXPECT_EQ(p.type, 3);
  EXPECT_EQ(p.packet_id, 9);
  EXPECT_EQ(p.message.topic, "a/b");
  EXPECT_EQ(p.message.payload, "xyz");
  EXPECT_EQ(p.message.qos, 1);
  EXPECT_TRUE(p.message.dup);
}

TEST(LocalMqttWire, ParsesConnackPubackSuback) {
  auto c = wire::parse(std::string("\x20\x03\x01\x00\x00", 5), 100);
  ASSERT_TRUE(c);
  EXPECT_TRUE(c->second->session_present);
  EXPECT_EQ(c->second->reason, 0);
  auto a = wire::parse(std::string("\x40\x03\x00\x05\x87", 5), 100);
  ASSERT_TRUE(a);
  EXPECT_EQ(a->second->packet_id, 5);
  EXPECT_EQ(a->second->reason, 0x87);
  auto s = wire::parse(std::string("\x90\x05\x00\x07\x00\x01\x80", 7), 100);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->second->suback_codes, (std::vector<std::uint8_t>{0x01, 0x80}));
}

TEST(LocalMqttWire, RefusesMalformedPackets) {
  EXPECT_FALSE(wire::parse(std::string("\x30\xff\xff\xff\xff\x01", 6), 1 << 30));           // 5-byte length
  EXPECT_FALSE(wire::parse(std::string("\x30\x03\x00\x09" "a", 5), 1 << 20));               // topic past the end
  EXPECT_FALSE(wire::parse(std::string("\x36\x02\x00\x00", 4), 1 << 20));                   // QoS 3
  EXPECT_FALSE(wire::parse(std::string("\x10\x00", 2), 1 << 20));                           // CONNECT from a broker
  EXPECT_FALSE(wire::parse(std::string("\x30\x80\x80\x80\x01", 5), 1000));                  // bigger than the limit
}

}  // namespace
}  // namespace canopy::broker
