// aws.greengrass#PublishToTopic: publish a JSON or binary message on local pub/sub.
//
// This is the hot path of local pub/sub, so the operation parses its own requests (Operation::parse)
// with simdjson's On-Demand API instead of building an nlohmann::json document: a binary message
// is one long base64 string, and a JSON message is forwarded to the subscribers as the
// publisher's text (Payload::json_text) instead of a document that is serialized again for each.
// What is accepted and every error stay as they were with nlohmann::json: the whole request is
// validated, and a member given twice counts with its last value.
#include <algorithm>
#include <optional>
#include <stdexcept>

#include <simdjson.h>

#include "canopy/core/base64.hpp"
#include "canopy/pubsub/router.hpp"
#include "services/common.hpp"

namespace canopy::ipc::services {

namespace {

namespace od = simdjson::ondemand;
using simdjson::error_code;

// What kind of JSON value a member holds (absent: not there).
enum class Kind { absent, null, object, string, other };

// jsonMessage, as far as PublishToTopic looks into it.
struct JsonMessage {
  Kind kind = Kind::absent;
  bool has_message = false;
  std::string_view message;  // the raw JSON text of "message" (into the request)
};

// binaryMessage, as far as PublishToTopic looks into it.
struct BinaryMessage {
  Kind kind = Kind::absent;
  Kind message_kind = Kind::absent;
  std::string_view message;  // the unescaped string (into the parser's buffer)
};

struct PublishMessage {
  Kind kind = Kind::absent;
  JsonMessage json;
  BinaryMessage binary;
};

// A parsed PublishToTopic request (Call::parsed).
struct PublishRequest final : ParsedRequest {
  PublishRequest(std::optional<std::string> t, result<pubsub::Payload> p) : topic(std::move(t)), payload(std::move(p)) {}
  std::optional<std::string> topic;  // set when "topic" is a string (possibly empty)
  result<pubsub::Payload> payload;   // the message, or what is wrong with publishMessage
};

bool is_json_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

Kind kind_of(od::json_type type) {
  switch (type) {
    case od::json_type::null: return Kind::null;
    case od::json_type::object: return Kind::object;
    case od::json_type::string: return Kind::string;
    default: return Kind::other;
  }
}

// How deeply check_value recurses. Deeper values are skipped without a check and the whole
// request is then checked with nlohmann::json::accept (no recursion) instead: a request of
// ipc.maxFramePayloadBytes could otherwise nest deep enough to overflow the stack.
constexpr int kMaxCheckDepth = 128;

// Set when check_value skipped a value that nests too deeply (see kMaxCheckDepth).
struct CheckState {
  bool needs_full_check = false;
};

error_code check_value(od::value& value, CheckState& state, int depth = 0);

error_code check_value(simdjson::simdjson_result<od::value> result, CheckState& state, int depth = 0) {
  od::value value;
  if (auto e = std::move(result).get(value)) return e;
  return check_value(value, state, depth);
}

// Reads a value completely, so that anything malformed in it is an error: On-Demand checks only
// what is read, and nlohmann::json rejected a request with an error anywhere.
error_code check_value(od::value& value, CheckState& state, int depth) {
  od::json_type type;
  if (auto e = value.type().get(type)) return e;
  switch (type) {
    case od::json_type::object: {
      od::object object;
      if (auto e = value.get_object().get(object)) return e;
      if (depth >= kMaxCheckDepth) {
        state.needs_full_check = true;
        std::string_view skipped;
        return object.raw_json().get(skipped);  // consumes the object without recursing
      }
      for (auto field : object) {
        std::string_view key;
        if (auto e = field.unescaped_key().get(key)) return e;
        if (auto e = check_value(field.value(), state, depth + 1)) return e;
      }
      return simdjson::SUCCESS;
    }
    case od::json_type::array: {
      od::array array;
      if (auto e = value.get_array().get(array)) return e;
      if (depth >= kMaxCheckDepth) {
        state.needs_full_check = true;
        std::string_view skipped;
        return array.raw_json().get(skipped);
      }
      for (auto element : array)
        if (auto e = check_value(std::move(element), state, depth + 1)) return e;
      return simdjson::SUCCESS;
    }
    case od::json_type::string: {
      std::string_view s;
      return value.get_string().get(s);
    }
    case od::json_type::number: {
      // As a double: any number nlohmann::json accepts (big integers too) fits, 1e400 does not.
      double d;
      return value.get_double().get(d);
    }
    case od::json_type::boolean: {
      bool b;
      return value.get_bool().get(b);
    }
    case od::json_type::null: {
      bool is_null = false;
      if (auto e = value.is_null().get(is_null)) return e;
      return is_null ? simdjson::SUCCESS : simdjson::N_ATOM_ERROR;
    }
  }
  return simdjson::INCORRECT_TYPE;
}

// Iterates an object value's members: `on_member(key, value)` reads (or checks) each value.
template <class OnMember>
error_code for_each_member(od::value& value, OnMember on_member) {
  od::object object;
  if (auto e = value.get_object().get(object)) return e;
  for (auto field : object) {
    std::string_view key;
    if (auto e = field.unescaped_key().get(key)) return e;
    od::value member;
    if (auto e = field.value().get(member)) return e;
    if (auto e = on_member(key, member)) return e;
  }
  return simdjson::SUCCESS;
}

// The type of a value, or an error.
error_code kind(od::value& value, Kind& out) {
  od::json_type type;
  if (auto e = value.type().get(type)) return e;
  out = kind_of(type);
  return simdjson::SUCCESS;
}

error_code read_json_message(od::document& doc, od::value& value, JsonMessage& out, CheckState& state) {
  out = {};
  if (auto e = kind(value, out.kind)) return e;
  if (out.kind != Kind::object) return check_value(value, state);
  return for_each_member(value, [&](std::string_view key, od::value& member) -> error_code {
    if (key != "message") return check_value(member, state);
    // The raw text: from the value's first character to the next token (`,` or `}`).
    const char* start = member.raw_json_token().data();
    if (auto e = check_value(member, state)) return e;
    const char* end = nullptr;
    if (auto e = doc.current_location().get(end)) return e;
    while (end > start && is_json_space(end[-1])) --end;
    out.has_message = true;
    out.message = std::string_view(start, static_cast<std::size_t>(end - start));
    return simdjson::SUCCESS;
  });
}

error_code read_binary_message(od::value& value, BinaryMessage& out, CheckState& state) {
  out = {};
  if (auto e = kind(value, out.kind)) return e;
  if (out.kind != Kind::object) return check_value(value, state);
  return for_each_member(value, [&](std::string_view key, od::value& member) -> error_code {
    if (key != "message") return check_value(member, state);
    if (auto e = kind(member, out.message_kind)) return e;
    out.message = {};
    if (out.message_kind == Kind::string) return member.get_string().get(out.message);
    return check_value(member, state);
  });
}

error_code read_publish_message(od::document& doc, od::value& value, PublishMessage& out, CheckState& state) {
  out = {};
  if (auto e = kind(value, out.kind)) return e;
  if (out.kind != Kind::object) return check_value(value, state);
  return for_each_member(value, [&](std::string_view key, od::value& member) -> error_code {
    if (key == "jsonMessage") return read_json_message(doc, member, out.json, state);
    if (key == "binaryMessage") return read_binary_message(member, out.binary, state);
    return check_value(member, state);
  });
}

// {"jsonMessage": {"message": …}} or {"binaryMessage": {"message": "<base64>"}}
result<pubsub::Payload> publish_payload(const PublishMessage& pm) {
  if (pm.kind != Kind::object)
    return make_error(errc::invalid, "PublishToTopic: \"publishMessage\" is required and must be an object");
  const bool has_json = pm.json.kind != Kind::absent && pm.json.kind != Kind::null;
  const bool has_bin = pm.binary.kind != Kind::absent && pm.binary.kind != Kind::null;
  if (has_json == has_bin)
    return make_error(errc::invalid,
                      "PublishToTopic: \"publishMessage\" must hold exactly one of jsonMessage or binaryMessage");
  if (has_json) {
    if (pm.json.kind != Kind::object || !pm.json.has_message)
      return make_error(errc::invalid, "PublishToTopic: jsonMessage must be an object with a \"message\"");
    // Validated above; only the whitespace between tokens goes, as when nlohmann::json dumped it.
    std::string text(pm.json.message.size(), '\0');
    std::size_t size = 0;
    if (simdjson::minify(pm.json.message.data(), pm.json.message.size(), text.data(), size) == simdjson::SUCCESS)
      text.resize(size);
    else
      text.assign(pm.json.message);  // cannot happen for valid JSON; the text as it came is fine too
    return pubsub::Payload::json_text(std::move(text));
  }
  if (pm.binary.kind != Kind::object)
    return make_error(errc::invalid, "PublishToTopic: binaryMessage must be an object");
  if (pm.binary.message_kind == Kind::absent || pm.binary.message_kind == Kind::null)
    return pubsub::Payload::binary(std::string_view());
  if (pm.binary.message_kind != Kind::string)
    return make_error(errc::invalid, "PublishToTopic: binaryMessage.message must be a base64 string");
  auto bytes = base64_decode(pm.binary.message);
  if (!bytes) return make_error(errc::invalid, "PublishToTopic: binaryMessage.message is not valid base64");
  // Keep the text for the subscribers when it is plain base64 (no whitespace or other bytes
  // the decoder tolerates), so it is not encoded again for each of them.
  const bool plain = std::all_of(pm.binary.message.begin(), pm.binary.message.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
           c == '=';
  });
  if (plain) return pubsub::Payload::binary(std::move(*bytes), std::string(pm.binary.message));
  return pubsub::Payload::binary(std::move(*bytes));
}

// Operation::parse. The request is read in one pass; an Error means it is not valid JSON.
result<std::shared_ptr<ParsedRequest>> parse_request(std::string& payload) {
  // An empty payload is `{}`, as for every operation.
  if (payload.empty())
    return std::shared_ptr<ParsedRequest>(std::make_shared<PublishRequest>(std::nullopt, publish_payload({})));
  // simdjson reads up to SIMDJSON_PADDING bytes past the end.
  payload.reserve(payload.size() + simdjson::SIMDJSON_PADDING);
  // nlohmann::json skips a UTF-8 byte order mark; simdjson does not.
  const std::size_t bom = payload.starts_with("\xEF\xBB\xBF") ? 3 : 0;
  thread_local od::parser parser;
  std::optional<std::string> topic;
  PublishMessage message;
  CheckState state;
  const error_code error = [&]() -> error_code {
    od::document doc;
    if (auto e = parser.iterate(payload.data() + bom, payload.size() - bom, payload.capacity() - bom).get(doc))
      return e;
    od::json_type type;
    if (auto e = doc.type().get(type)) return e;
    switch (type) {
      case od::json_type::object: {
        od::object object;
        if (auto e = doc.get_object().get(object)) return e;
        for (auto field : object) {
          std::string_view key;
          if (auto e = field.unescaped_key().get(key)) return e;
          od::value value;
          if (auto e = field.value().get(value)) return e;
          if (key == "topic") {
            Kind k = Kind::absent;
            if (auto e = kind(value, k)) return e;
            topic.reset();
            if (k != Kind::string) {
              if (auto e = check_value(value, state)) return e;
              continue;
            }
            std::string_view s;
            if (auto e = value.get_string().get(s)) return e;
            topic.emplace(s);
          } else if (key == "publishMessage") {
            if (auto e = read_publish_message(doc, value, message, state)) return e;
          } else {
            if (auto e = check_value(value, state)) return e;
          }
        }
        break;
      }
      case od::json_type::array: {
        od::array array;
        if (auto e = doc.get_array().get(array)) return e;
        for (auto element : array)
          if (auto e = check_value(std::move(element), state)) return e;
        break;
      }
      case od::json_type::string: {
        std::string_view s;
        if (auto e = doc.get_string().get(s)) return e;
        break;
      }
      case od::json_type::number: {
        double d;
        if (auto e = doc.get_double().get(d)) return e;
        break;
      }
      case od::json_type::boolean: {
        bool b;
        if (auto e = doc.get_bool().get(b)) return e;
        break;
      }
      case od::json_type::null: {
        bool is_null = false;
        if (auto e = doc.is_null().get(is_null)) return e;
        if (!is_null) return simdjson::N_ATOM_ERROR;
        break;
      }
    }
    // Nothing may follow the value.
    if (doc.current_location().error() != simdjson::OUT_OF_BOUNDS) return simdjson::TRAILING_CONTENT;
    return simdjson::SUCCESS;
  }();
  if (error != simdjson::SUCCESS)
    return make_error(errc::parse, fmt::format("PublishToTopic: {}", simdjson::error_message(error)));
  if (state.needs_full_check && !nlohmann::json::accept(payload))
    return make_error(errc::parse, "PublishToTopic: the request is not valid JSON");
  // The payload is made while the parser's string buffer (the unescaped base64) is valid.
  return std::shared_ptr<ParsedRequest>(std::make_shared<PublishRequest>(std::move(topic), publish_payload(message)));
}

PublishRequest& publish_request(const Call& call) {
  if (!call.parsed) throw std::logic_error("PublishToTopic: the request was not parsed");
  return static_cast<PublishRequest&>(*call.parsed);
}

}  // namespace

void add_publish_to_topic(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#PublishToTopic",
      .destination = "aws.greengrass.ipc.pubsub",
      .resources = [](const Call& call) -> result<std::vector<std::string>> {
        const PublishRequest& request = publish_request(call);
        if (!request.topic || request.topic->empty())
          return make_error(errc::invalid, "PublishToTopic: \"topic\" is required and must be a non-empty string");
        return std::vector<std::string>{*request.topic};
      },
      .handle =
          [&ctx](Call& call) {
            PublishRequest& request = publish_request(call);
            // Without a string topic only an external caller (the CLI, whose calls skip
            // `resources`) gets here. The handler used to throw on it (json::at), which answers
            // ServiceError; kept as it was.
            if (!request.topic) throw std::invalid_argument("PublishToTopic: \"topic\" is missing or not a string");
            if (!request.payload) {
              call.stream->fail(invalid(request.payload.error().message));
              return;
            }
            auto delivered = ctx.router.publish(*request.topic, *request.payload, call.caller.name);
            if (!delivered) {
              call.stream->fail(invalid("PublishToTopic: " + delivered.error().message));
              return;
            }
            call.stream->respond("{}", response_shape("PublishToTopic"));
          },
      .parse = parse_request,
  });
}

}  // namespace canopy::ipc::services
