// Mapping configuration of canopy.MqttBridge.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "canopy/broker/bridge.hpp"

namespace canopy::broker {
namespace {

using ::testing::HasSubstr;

TEST(BridgeMappings, ParsesGreengrassShapedMappings) {
  auto r = parse_mappings(nlohmann::json::parse(R"({
    "toCloud": {"topic": "clients/+/hello", "source": "LocalMqtt", "target": "IotCore", "targetTopicPrefix": "gw1/"},
    "toLocal": {"topic": "cmd/#", "source": "IotCore", "target": "LocalMqtt"},
    "toPubsub": {"topic": "sensors/#", "source": "LocalMqtt", "target": "Pubsub"}})"));
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 3u);
  const auto& to_cloud = (*r)[0].name == "toCloud" ? (*r)[0] : (*r)[1].name == "toCloud" ? (*r)[1] : (*r)[2];
  EXPECT_EQ(to_cloud.source, Endpoint::local_mqtt);
  EXPECT_EQ(to_cloud.target, Endpoint::iot_core);
  EXPECT_EQ(to_cloud.target_topic_prefix, "gw1/");
  EXPECT_TRUE(parse_mappings(nullptr));
}

TEST(BridgeMappings, ReportsEveryProblemWithItsPath) {
  auto r = parse_mappings(nlohmann::json::parse(R"({
    "a": {"topic": "x/#/y", "source": "LocalMqtt", "target": "IotCore"},
    "b": {"topic": "x", "source": "Local", "target": "IotCore"},
    "c": {"topic": "x", "source": "Pubsub", "target": "Pubsub"},
    "d": {"source": "Pubsub", "target": "IotCore", "qos": 1}})"));
  ASSERT_FALSE(r);
  EXPECT_THAT(r.error().message, HasSubstr("mqttTopicMapping.a.topic: \"x/#/y\" is not a valid MQTT topic filter"));
  EXPECT_THAT(r.error().message, HasSubstr("mqttTopicMapping.b.source: expected LocalMqtt, Pubsub or IotCore, got \"Local\""));
  EXPECT_THAT(r.error().message, HasSubstr("mqttTopicMapping.c: source and target are both Pubsub"));
  EXPECT_THAT(r.error().message, HasSubstr("mqttTopicMapping.d.topic: required"));
  EXPECT_THAT(r.error().message, HasSubstr("mqttTopicMapping.d.qos: unknown key"));
}

}  // namespace
}  // namespace canopy::broker
