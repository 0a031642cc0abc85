# canopy.MqttBridge: canopyd's own MQTT 5 client for the local broker (acknowledges only once
# a message is safe; the wire format is canopy::mqtt's) and the topic mappings between
# LocalMqtt, Pubsub and IotCore.
canopy_add_module(broker_bridge
  SOURCES local_mqtt.cpp bridge.cpp
  DEPS canopy::core canopy::mqtt canopy::broker canopy::spool canopy::cloud canopy::pubsub Boost::headers nlohmann_json::nlohmann_json)

canopy_add_test(broker_bridge_test
  SOURCES local_mqtt_test.cpp bridge_test.cpp
  DEPS canopy::broker_bridge
  LABELS unit)
