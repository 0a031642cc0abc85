// The local MQTT client's requests: what makes it safe (a persistent session, a window, No
// Local). The bytes themselves are canopy::mqtt's, tested there.
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

TEST(LocalMqttClient, ConnectAsksForAPersistentSessionAndAReceiveMaximum) {
  LocalMqttOptions o;
  o.client_id = "b";
  o.keep_alive = std::chrono::seconds(30);
  o.session_expiry_seconds = 60;
  o.receive_maximum = 1000;
  std::string out;
  mqtt::encode_connect(out, connect_options(o));
  // 10 len | 00 04 MQTT | 05 | flags 00 (no clean start) | keepalive 00 1e |
  // props 08: 11 0000003c, 21 03e8 | client id 0001 'b'
  EXPECT_EQ(hex(out), "1016" "00044d515454" "05" "00" "001e" "08" "110000003c" "2103e8" "000162");
}

TEST(LocalMqttClient, SubscribesAtQos1WithNoLocalAndRetainAsPublished) {
  std::string out;
  mqtt::encode_subscribe(out, mqtt::Version::v5, 7, subscribe_requests({"a/#"}));
  EXPECT_EQ(hex(out), "8209" "0007" "00" "0003612f23" "0d");
}

}  // namespace
}  // namespace canopy::broker
