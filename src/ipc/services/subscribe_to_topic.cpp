// aws.greengrass#SubscribeToTopic: a stream of SubscriptionResponseMessage events.
#include "canopy/core/base64.hpp"
#include "canopy/pubsub/router.hpp"
#include "services/common.hpp"

namespace canopy::ipc::services {

namespace {

constexpr std::string_view kEventShape = "aws.greengrass#SubscriptionResponseMessage";

// {"jsonMessage"|"binaryMessage": {"message": …, "context": {"topic": …}}}
std::string event_body(const pubsub::Delivery& d) {
  const std::string topic = nlohmann::json(d.topic).dump();
  constexpr std::string_view kJsonHead = R"({"jsonMessage":{"message":)";
  constexpr std::string_view kBinaryHead = R"({"binaryMessage":{"message":")";
  constexpr std::string_view kJsonContext = R"(,"context":{"topic":)";
  constexpr std::string_view kBinaryContext = R"(","context":{"topic":)";
  constexpr std::string_view kTail = "}}}";
  std::string body;
  const auto build = [&](std::string_view head, std::string_view message, std::string_view context) {
    body.reserve(head.size() + message.size() + context.size() + topic.size() + kTail.size());
    body.append(head).append(message).append(context).append(topic).append(kTail);
  };
  if (d.payload.is_json_text()) {
    build(kJsonHead, d.payload.json_text(), kJsonContext);  // validated JSON text, embedded as is
  } else if (d.payload.is_json()) {
    build(kJsonHead, d.payload.json_string(), kJsonContext);
  } else {
    // The publisher's own base64 text when it is plain base64; encoded afresh otherwise.
    const std::string& given = d.payload.binary_base64();
    if (!given.empty() || d.payload.binary_message().empty())
      build(kBinaryHead, given, kBinaryContext);
    else
      build(kBinaryHead, base64_encode(std::span(d.payload.binary_message())), kBinaryContext);
  }
  return body;
}

}  // namespace

void add_subscribe_to_topic(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#SubscribeToTopic",
      .destination = "aws.greengrass.ipc.pubsub",
      .streaming = true,
      .resources = [](const Call& call) -> result<std::vector<std::string>> {
        auto topic = required_string(call.request, "SubscribeToTopic", "topic");
        if (!topic) return topic.error();
        return std::vector<std::string>{std::move(*topic)};
      },
      .handle =
          [&ctx](Call& call) {
            const std::string filter = call.request.at("topic").get<std::string>();
            pubsub::ReceiveMode mode = pubsub::default_receive_mode(filter);
            if (const auto it = call.request.find("receiveMode"); it != call.request.end() && !it->is_null()) {
              auto parsed = it->is_string() ? pubsub::parse_receive_mode(it->get<std::string>())
                                            : result<pubsub::ReceiveMode>(make_error(errc::invalid, "not a string"));
              if (!parsed) {
                call.stream->fail(invalid(
                    "SubscribeToTopic: \"receiveMode\" must be RECEIVE_ALL_MESSAGES or RECEIVE_MESSAGES_FROM_OTHERS"));
                return;
              }
              mode = *parsed;
            }
            std::weak_ptr<StreamHandle> weak = call.stream;
            auto id = ctx.router.subscribe(filter, pubsub::Subscriber{call.caller.name, mode,
                                                                      [weak](const pubsub::Delivery& d) {
                                                                        if (auto s = weak.lock())
                                                                          s->event(event_body(d), kEventShape);
                                                                      }});
            if (!id) {
              call.stream->fail(invalid("SubscribeToTopic: " + id.error().message));
              return;
            }
            // The initial response goes out before any event: both are posted in this order.
            call.stream->respond("{}", response_shape("SubscribeToTopic"));
            call.stream->on_close([&ctx, sub = *id] { ctx.router.unsubscribe(sub); });
          },
      .parse = {},  // the server's nlohmann::json parse: subscribing is not a hot path
  });
}

}  // namespace canopy::ipc::services
