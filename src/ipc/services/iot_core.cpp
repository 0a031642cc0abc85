// aws.greengrass#PublishToIoTCore and aws.greengrass#SubscribeToIoTCore (policy destination
// aws.greengrass.ipc.mqttproxy, whose resources understand MQTT wildcards).
//
// PublishToIoTCore is answered only after the message is committed to the spool, so an answered
// publish survives a crash of canopyd (and, with spooler.durability full, a power loss).
#include "canopy/core/base64.hpp"
#include "canopy/ipc/policy.hpp"
#include "canopy/pubsub/topic_filter.hpp"
#include "canopy/spool/spool.hpp"
#include "services/common.hpp"

namespace canopy::ipc::services {

namespace {

constexpr std::string_view kMessageShape = "aws.greengrass#IoTCoreMessage";
// AWS IoT Core closes the connection of a client that publishes more than 128 KiB; a message
// that large would stall the drain forever, so it is refused here, where the publisher learns it.
constexpr std::size_t kMaxPayloadBytes = 128 * 1024;

// "0"/"1" (the IPC model's QOS enum), also as a number; absent: QoS 0 as Greengrass does.
result<int> parse_qos(const nlohmann::json& request, std::string_view op) {
  const auto it = request.find("qos");
  if (it == request.end() || it->is_null()) return 0;
  int q = -1;
  if (it->is_string()) {
    const auto& s = it->get_ref<const std::string&>();
    if (s == "0" || s == "AT_MOST_ONCE") q = 0;
    else if (s == "1" || s == "AT_LEAST_ONCE") q = 1;
    else if (s == "2" || s == "EXACTLY_ONCE") q = 2;
  } else if (it->is_number_integer()) {
    q = it->get<int>();
  }
  if (q == 2) return make_error(errc::invalid, fmt::format("{}: QoS 2 is not supported for IoT Core; use 0 or 1", op));
  if (q != 0 && q != 1) return make_error(errc::invalid, fmt::format("{}: \"qos\" must be \"0\" or \"1\"", op));
  return q;
}

// The message's MQTT 5 members, checked, as the JSON the spool keeps.
result<std::string> properties_of(const nlohmann::json& r) {
  nlohmann::json p = nlohmann::json::object();
  if (auto it = r.find("userProperties"); it != r.end() && !it->is_null()) {
    if (!it->is_array())
      return make_error(errc::invalid, "PublishToIoTCore: \"userProperties\" must be a list of {key, value}");
    for (const auto& kv : *it)
      if (!kv.is_object() || !kv.contains("key") || !kv.contains("value") || !kv["key"].is_string() ||
          !kv["value"].is_string())
        return make_error(errc::invalid,
                          "PublishToIoTCore: each of \"userProperties\" must be {\"key\": string, \"value\": string}");
    if (!it->empty()) p["userProperties"] = *it;
  }
  for (const char* name : {"contentType", "responseTopic"}) {
    if (auto it = r.find(name); it != r.end() && !it->is_null()) {
      if (!it->is_string()) return make_error(errc::invalid, fmt::format("PublishToIoTCore: \"{}\" must be a string", name));
      p[name] = *it;
    }
  }
  if (auto it = r.find("responseTopic"); it != r.end() && it->is_string())
    if (auto v = pubsub::validate_topic(it->get<std::string>()); !v)
      return make_error(errc::invalid, "PublishToIoTCore: \"responseTopic\": " + v.error().message);
  if (auto it = r.find("correlationData"); it != r.end() && !it->is_null()) {
    if (!it->is_string() || !base64_decode(it->get<std::string>()))
      return make_error(errc::invalid, "PublishToIoTCore: \"correlationData\" must be base64");
    p["correlationData"] = *it;
  }
  if (auto it = r.find("payloadFormat"); it != r.end() && !it->is_null()) {
    if (!it->is_string() || (*it != "BYTES" && *it != "UTF8"))
      return make_error(errc::invalid, "PublishToIoTCore: \"payloadFormat\" must be BYTES or UTF8");
    p["payloadFormat"] = *it;
  }
  return p.empty() ? std::string() : p.dump();
}

std::string event_body(const IotCoreMessage& m) {
  nlohmann::json msg = m.properties.is_object() ? m.properties : nlohmann::json::object();
  msg["topicName"] = m.topic;
  msg["payload"] = base64_encode(std::string_view(m.payload));
  msg["qos"] = std::to_string(m.qos);
  msg["retain"] = m.retain;
  return nlohmann::json{{"message", std::move(msg)}}.dump();
}

}  // namespace

void add_iot_core_operations(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#PublishToIoTCore",
      .destination = std::string(kMqttProxyDestination),
      .resources = [](const Call& call) -> result<std::vector<std::string>> {
        auto topic = required_string(call.request, "PublishToIoTCore", "topicName");
        if (!topic) return topic.error();
        return std::vector<std::string>{std::move(*topic)};
      },
      .handle =
          [&ctx](Call& call) {
            const auto& r = call.request;
            spool::Message m;
            m.topic = r.at("topicName").get<std::string>();
            if (auto v = pubsub::validate_topic(m.topic); !v) {
              call.stream->fail(invalid(fmt::format("PublishToIoTCore: \"topicName\" {} is not a topic one can "
                                                    "publish to: {}",
                                                    nlohmann::json(m.topic).dump(), v.error().message)));
              return;
            }
            auto qos = parse_qos(r, "PublishToIoTCore");
            if (!qos) return call.stream->fail(invalid(qos.error().message));
            m.qos = *qos;
            if (auto it = r.find("payload"); it != r.end() && !it->is_null()) {
              auto raw = it->is_string() ? base64_decode(it->get<std::string>())
                                         : result<std::vector<std::uint8_t>>(make_error(errc::invalid, ""));
              if (!raw) return call.stream->fail(invalid("PublishToIoTCore: \"payload\" must be base64"));
              m.payload.assign(raw->begin(), raw->end());
            }
            if (m.payload.size() > kMaxPayloadBytes)
              return call.stream->fail(invalid(fmt::format(
                  "PublishToIoTCore: the payload is {} bytes; the cloud accepts at most {} bytes per message",
                  m.payload.size(), kMaxPayloadBytes)));
            if (auto it = r.find("retain"); it != r.end() && !it->is_null()) {
              if (!it->is_boolean()) return call.stream->fail(invalid("PublishToIoTCore: \"retain\" must be true or false"));
              m.retain = it->get<bool>();
            }
            if (auto it = r.find("messageExpiryIntervalSeconds"); it != r.end() && !it->is_null()) {
              if (!it->is_number_integer() || it->get<std::int64_t>() < 0 || it->get<std::int64_t>() > 0xffffffffLL)
                return call.stream->fail(
                    invalid("PublishToIoTCore: \"messageExpiryIntervalSeconds\" must be a whole number of seconds"));
              m.expiry_seconds = static_cast<std::uint32_t>(it->get<std::int64_t>());
            }
            auto props = properties_of(r);
            if (!props) return call.stream->fail(invalid(props.error().message));
            m.properties_json = std::move(*props);
            if (!ctx.iot_core.publish)
              return call.stream->fail({ErrorShape::service, "PublishToIoTCore: the cloud link is not available"});
            std::weak_ptr<StreamHandle> weak = call.stream;
            ctx.iot_core.publish(std::move(m), [weak](result<void> done) {
              auto s = weak.lock();
              if (!s) return;
              if (done) s->respond("{}", response_shape("PublishToIoTCore"));
              else s->fail(to_ipc_error(done.error()));
            });
          },
  });

  table.add({
      .name = "aws.greengrass#SubscribeToIoTCore",
      .destination = std::string(kMqttProxyDestination),
      .streaming = true,
      .resources = [](const Call& call) -> result<std::vector<std::string>> {
        auto topic = required_string(call.request, "SubscribeToIoTCore", "topicName");
        if (!topic) return topic.error();
        return std::vector<std::string>{std::move(*topic)};
      },
      .handle =
          [&ctx](Call& call) {
            const std::string filter = call.request.at("topicName").get<std::string>();
            auto qos = parse_qos(call.request, "SubscribeToIoTCore");
            if (!qos) return call.stream->fail(invalid(qos.error().message));
            if (!ctx.iot_core.subscribe)
              return call.stream->fail({ErrorShape::service, "SubscribeToIoTCore: the cloud link is not available"});
            std::weak_ptr<StreamHandle> weak = call.stream;
            auto id = ctx.iot_core.subscribe(
                filter, *qos,
                [weak](const IotCoreMessage& m) {
                  if (auto s = weak.lock()) s->event(event_body(m), kMessageShape);
                },
                [weak](const std::string& why) {
                  if (auto s = weak.lock()) s->fail({ErrorShape::service, "SubscribeToIoTCore: " + why});
                });
            if (!id) return call.stream->fail(invalid("SubscribeToIoTCore: " + id.error().message));
            call.stream->respond("{}", response_shape("SubscribeToIoTCore"));
            call.stream->on_close([&ctx, sub = *id] {
              if (ctx.iot_core.unsubscribe) ctx.iot_core.unsubscribe(sub);
            });
          },
  });
}

}  // namespace canopy::ipc::services
