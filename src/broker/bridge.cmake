# canopy.MqttBridge: canopyd's own MQTT 5 client for the local broker (acknowledges only once
# a message is safe) and the topic mappings between LocalMqtt, Pubsub and IotCore.
# The wire format alone (no Asio): a thin layer over canopy::mqtt, whose fuzz target covers
# the parser.
canopy_add_module(broker_wire
  SOURCES local_mqtt_wire.cpp
  DEPS canopy::core canopy::mqtt nlohmann_json::nlohmann_json Boost::headers)

canopy_add_module(broker_bridge
  SOURCES local_mqtt.cpp bridge.cpp
  DEPS canopy::core canopy::broker_wire canopy::broker canopy::spool canopy::cloud canopy::pubsub Boost::headers nlohmann_json::nlohmann_json)

canopy_add_test(broker_bridge_test
  SOURCES local_mqtt_test.cpp bridge_test.cpp
  DEPS canopy::broker_bridge
  LABELS unit)
