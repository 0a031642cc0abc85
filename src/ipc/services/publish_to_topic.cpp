// aws.greengrass#PublishToTopic: publish a JSON or binary message on local pub/sub.
#include "canopy/core/base64.hpp"
#include "canopy/pubsub/router.hpp"
#include "services/common.hpp"

namespace canopy::ipc::services {

namespace {

// {"jsonMessage": {"message": …}} or {"binaryMessage": {"message": "<base64>"}}
result<pubsub::Payload> parse_publish_message(const nlohmann::json& request) {
  const auto it = request.find("publishMessage");
  if (it == request.end() || !it->is_object())
    return make_error(errc::invalid, "PublishToTopic: \"publishMessage\" is required and must be an object");
  const auto json_it = it->find("jsonMessage");
  const auto bin_it = it->find("binaryMessage");
  const bool has_json = json_it != it->end() && !json_it->is_null();
  const bool has_bin = bin_it != it->end() && !bin_it->is_null();
  if (has_json == has_bin)
    return make_error(errc::invalid,
                      "PublishToTopic: \"publishMessage\" must hold exactly one of jsonMessage or binaryMessage");
  if (has_json) {
    if (!json_it->is_object() || !json_it->contains("message"))
      return make_error(errc::invalid, "PublishToTopic: jsonMessage must be an object with a \"message\"");
    return pubsub::Payload::json(json_it->at("message"));
  }
  if (!bin_it->is_object()) return make_error(errc::invalid, "PublishToTopic: binaryMessage must be an object");
  const auto msg = bin_it->find("message");
  if (msg == bin_it->end() || msg->is_null()) return pubsub::Payload::binary(std::string_view());
  if (!msg->is_string())
    return make_error(errc::invalid, "PublishToTopic: binaryMessage.message must be a base64 string");
  auto bytes = base64_decode(msg->get_ref<const std::string&>());
  if (!bytes) return make_error(errc::invalid, "PublishToTopic: binaryMessage.message is not valid base64");
  return pubsub::Payload::binary(std::move(*bytes));
}

}  // namespace

void add_publish_to_topic(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#PublishToTopic",
      .destination = "aws.greengrass.ipc.pubsub",
      .streaming = false,
      .external_only = false,
      .resources = [](const Call& call) -> result<std::vector<std::string>> {
        auto topic = required_string(call.request, "PublishToTopic", "topic");
        if (!topic) return topic.error();
        return std::vector<std::string>{std::move(*topic)};
      },
      .handle =
          [&ctx](Call& call) {
            const std::string topic = call.request.at("topic").get<std::string>();
            auto payload = parse_publish_message(call.request);
            if (!payload) {
              call.stream->fail(invalid(payload.error().message));
              return;
            }
            auto delivered = ctx.router.publish(topic, *payload, call.caller.name);
            if (!delivered) {
              call.stream->fail(invalid("PublishToTopic: " + delivered.error().message));
              return;
            }
            call.stream->respond("{}", response_shape("PublishToTopic"));
          },
  });
}

}  // namespace canopy::ipc::services
