#include "canopy/ipc/eventstream.hpp"

#include <cstdio>
#include <type_traits>
#include <utility>

#include <zlib.h>

namespace canopy::ipc {
namespace {

// A drained decoder keeps at most this much buffer capacity for the next frame.
constexpr std::size_t kKeepCapacityBytes = 16 * 1024;

// --- byte order and CRC -------------------------------------------------------------------------

std::uint32_t crc32_of(std::string_view bytes, std::uint32_t crc = 0) {
  return static_cast<std::uint32_t>(crc32_z(static_cast<uLong>(crc),
                                            reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

std::uint64_t read_be(const char* p, std::size_t n) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

std::uint32_t read_u32(const char* p) { return static_cast<std::uint32_t>(read_be(p, 4)); }

void write_be(std::string& out, std::uint64_t v, std::size_t n) {
  for (std::size_t i = n; i-- > 0;) out.push_back(static_cast<char>((v >> (8 * i)) & 0xffU));
}

std::string hex32(std::uint32_t v) {
  char text[11];
  std::snprintf(text, sizeof text, "0x%08x", static_cast<unsigned>(v));
  return text;
}

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

// "header 2 (\":stream-id\")" for error messages. Names come off the wire, so anything outside
// printable ASCII is escaped rather than copied into a log line.
std::string describe_header(std::size_t index, std::string_view name) {
  std::string s = "header " + std::to_string(index) + " (\"";
  for (char c : name) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '"' && c != '\\') {
      s.push_back(c);
    } else {
      char esc[5];
      std::snprintf(esc, sizeof esc, "\\x%02x", static_cast<unsigned>(u));
      s += esc;
    }
  }
  s += "\")";
  return s;
}

// Encoded size of a header's value, type byte excluded.
std::size_t value_size(const HeaderValue& value) {
  return std::visit(
      [](const auto& v) -> std::size_t {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) return 0;
        else if constexpr (std::is_same_v<T, Bytes> || std::is_same_v<T, std::string>) return 2 + v.size();
        else if constexpr (std::is_same_v<T, Timestamp>) return 8;
        else if constexpr (std::is_same_v<T, Uuid>) return 16;
        else return sizeof(T);
      },
      value);
}

std::size_t variable_length(const HeaderValue& value) {
  if (const auto* b = std::get_if<Bytes>(&value)) return b->size();
  if (const auto* s = std::get_if<std::string>(&value)) return s->size();
  return 0;
}

void write_header(std::string& out, const Header& h) {
  out.push_back(static_cast<char>(h.name.size()));
  out += h.name;
  out.push_back(static_cast<char>(h.type()));
  std::visit(
      [&out](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) {
          // The type byte carries the value.
        } else if constexpr (std::is_same_v<T, Bytes>) {
          write_be(out, v.size(), 2);
          out.append(reinterpret_cast<const char*>(v.data()), v.size());
        } else if constexpr (std::is_same_v<T, std::string>) {
          write_be(out, v.size(), 2);
          out += v;
        } else if constexpr (std::is_same_v<T, Timestamp>) {
          write_be(out, static_cast<std::uint64_t>(v.ms_since_epoch), 8);
        } else if constexpr (std::is_same_v<T, Uuid>) {
          out.append(reinterpret_cast<const char*>(v.bytes.data()), v.bytes.size());
        } else {
          // Signed integers go out in two's complement, big-endian.
          write_be(out, static_cast<std::uint64_t>(static_cast<std::make_unsigned_t<T>>(v)), sizeof(T));
        }
      },
      h.value);
}

}  // namespace

// --- Header -------------------------------------------------------------------------------------

Header Header::boolean(std::string header_name, bool v) {
  return {std::move(header_name), HeaderValue(std::in_place_type<bool>, v)};
}
Header Header::byte(std::string header_name, std::int8_t v) {
  return {std::move(header_name), HeaderValue(std::in_place_type<std::int8_t>, v)};
}
Header Header::int16(std::string header_name, std::int16_t v) {
  return {std::move(header_name), HeaderValue(std::in_place_type<std::int16_t>, v)};
}
Header Header::int32(std::string header_name, std::int32_t v) {
  return {std::move(header_name), HeaderValue(std::in_place_type<std::int32_t>, v)};
}
Header Header::int64(std::string header_name, std::int64_t v) {
  return {std::move(header_name), HeaderValue(std::in_place_type<std::int64_t>, v)};
}
Header Header::bytes(std::string header_name, Bytes v) {
  return {std::move(header_name), HeaderValue(std::in_place_type<Bytes>, std::move(v))};
}
Header Header::string(std::string header_name, std::string v) {
  return {std::move(header_name), HeaderValue(std::in_place_type<std::string>, std::move(v))};
}
Header Header::timestamp(std::string header_name, std::int64_t ms_since_epoch) {
  return {std::move(header_name), HeaderValue(std::in_place_type<Timestamp>, Timestamp{ms_since_epoch})};
}
Header Header::uuid(std::string header_name, const Uuid& v) {
  return {std::move(header_name), HeaderValue(std::in_place_type<Uuid>, v)};
}

HeaderType Header::type() const noexcept {
  return std::visit(
      [](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, bool>) return v ? HeaderType::bool_true : HeaderType::bool_false;
        else if constexpr (std::is_same_v<T, std::int8_t>) return HeaderType::byte;
        else if constexpr (std::is_same_v<T, std::int16_t>) return HeaderType::int16;
        else if constexpr (std::is_same_v<T, std::int32_t>) return HeaderType::int32;
        else if constexpr (std::is_same_v<T, std::int64_t>) return HeaderType::int64;
        else if constexpr (std::is_same_v<T, Bytes>) return HeaderType::bytes;
        else if constexpr (std::is_same_v<T, std::string>) return HeaderType::string;
        else if constexpr (std::is_same_v<T, Timestamp>) return HeaderType::timestamp;
        else return HeaderType::uuid;
      },
      value);
}

std::string_view to_string(HeaderType type) noexcept {
  switch (type) {
    case HeaderType::bool_true: return "bool_true";
    case HeaderType::bool_false: return "bool_false";
    case HeaderType::byte: return "byte";
    case HeaderType::int16: return "int16";
    case HeaderType::int32: return "int32";
    case HeaderType::int64: return "int64";
    case HeaderType::bytes: return "bytes";
    case HeaderType::string: return "string";
    case HeaderType::timestamp: return "timestamp";
    case HeaderType::uuid: return "uuid";
  }
  return "unknown";
}

// --- Message ------------------------------------------------------------------------------------

const Header* Message::find(std::string_view name) const noexcept {
  for (const Header& h : headers)
    if (iequals(h.name, name)) return &h;
  return nullptr;
}

std::optional<std::int32_t> Message::int32(std::string_view name) const noexcept {
  const Header* h = find(name);
  if (h == nullptr) return std::nullopt;
  if (const auto* v = std::get_if<std::int32_t>(&h->value)) return *v;
  return std::nullopt;
}

std::optional<std::string_view> Message::string(std::string_view name) const noexcept {
  const Header* h = find(name);
  if (h == nullptr) return std::nullopt;
  if (const auto* v = std::get_if<std::string>(&h->value)) return std::string_view(*v);
  return std::nullopt;
}

// --- encode -------------------------------------------------------------------------------------

result<void> encode(const Message& message, std::string& out) {
  std::size_t headers_length = 0;
  for (std::size_t i = 0; i < message.headers.size(); ++i) {
    const Header& h = message.headers[i];
    if (h.name.empty())
      return make_error(errc::invalid, "cannot encode " + describe_header(i, h.name) + ": empty name");
    if (h.name.size() > kMaxEncodedNameBytes)
      return make_error(errc::invalid, "cannot encode " + describe_header(i, h.name) + ": name of " +
                                           std::to_string(h.name.size()) + " bytes exceeds the limit of " +
                                           std::to_string(kMaxEncodedNameBytes) + " bytes");
    if (variable_length(h.value) > kMaxEncodedValueBytes)
      return make_error(errc::invalid, "cannot encode " + describe_header(i, h.name) + ": " +
                                           std::string(to_string(h.type())) + " value of " +
                                           std::to_string(variable_length(h.value)) +
                                           " bytes exceeds the limit of " +
                                           std::to_string(kMaxEncodedValueBytes) + " bytes");
    headers_length += 1 + h.name.size() + 1 + value_size(h.value);
  }
  if (headers_length > kMaxEncodedHeadersBytes)
    return make_error(errc::invalid, "cannot encode a header block of " + std::to_string(headers_length) +
                                         " bytes: the limit is " + std::to_string(kMaxEncodedHeadersBytes) +
                                         " bytes");
  // headers_length is bounded above, so this sum cannot overflow.
  if (message.payload.size() > kMaxEncodedFrameBytes - kFrameOverheadBytes - headers_length)
    return make_error(errc::invalid, "cannot encode a frame of " +
                                         std::to_string(kFrameOverheadBytes + headers_length +
                                                        message.payload.size()) +
                                         " bytes: the limit is " + std::to_string(kMaxEncodedFrameBytes) +
                                         " bytes");
  const std::size_t total_length = kFrameOverheadBytes + headers_length + message.payload.size();

  const std::size_t start = out.size();
  out.reserve(start + total_length);
  write_be(out, total_length, 4);
  write_be(out, headers_length, 4);
  write_be(out, crc32_of(std::string_view(out).substr(start, 8)), 4);
  for (const Header& h : message.headers) write_header(out, h);
  out += message.payload;
  write_be(out, crc32_of(std::string_view(out).substr(start, total_length - kTrailerBytes)), 4);
  return ok();
}

result<std::string> encode(const Message& message) {
  std::string out;
  if (auto r = encode(message, out); !r) return std::move(r).error();
  return out;
}

// --- Decoder ------------------------------------------------------------------------------------

std::string_view to_string(DecodeError kind) noexcept {
  switch (kind) {
    case DecodeError::none: return "none";
    case DecodeError::prelude_crc_mismatch: return "prelude_crc_mismatch";
    case DecodeError::frame_too_short: return "frame_too_short";
    case DecodeError::headers_length_out_of_range: return "headers_length_out_of_range";
    case DecodeError::frame_too_large: return "frame_too_large";
    case DecodeError::headers_too_large: return "headers_too_large";
    case DecodeError::payload_too_large: return "payload_too_large";
    case DecodeError::message_crc_mismatch: return "message_crc_mismatch";
    case DecodeError::header_name_empty: return "header_name_empty";
    case DecodeError::header_name_truncated: return "header_name_truncated";
    case DecodeError::unknown_header_type: return "unknown_header_type";
    case DecodeError::header_value_truncated: return "header_value_truncated";
    case DecodeError::duplicate_header: return "duplicate_header";
    case DecodeError::too_many_headers: return "too_many_headers";
  }
  return "unknown";
}

Decoder::Decoder(Limits limits) : limits_(limits) {}

void Decoder::feed(std::string_view bytes) {
  if (failed() || bytes.empty()) return;
  // Drop consumed frames once they are at least half the buffer: amortised linear, and a frame
  // fed one byte at a time is never moved.
  if (pos_ > 0 && pos_ * 2 >= buffer_.size()) {
    buffer_.erase(0, pos_);
    pos_ = 0;
  }
  buffer_.append(bytes);
}

Error Decoder::fail(DecodeError kind, std::string message) {
  kind_ = kind;
  error_ = make_error(errc::invalid, std::move(message));
  // The stream cannot be resynchronised; release what it left behind.
  std::string().swap(buffer_);
  pos_ = 0;
  prelude_.reset();
  return error_;
}

result<void> Decoder::check_prelude() {
  const char* p = buffer_.data() + pos_;
  const std::uint32_t total_length = read_u32(p);
  const std::uint32_t headers_length = read_u32(p + 4);
  const std::uint32_t carried = read_u32(p + 8);
  const std::uint32_t computed = crc32_of(std::string_view(p, 8));
  if (carried != computed)
    return fail(DecodeError::prelude_crc_mismatch,
                "frame prelude CRC mismatch: expected " + hex32(computed) + ", got " + hex32(carried));
  if (total_length < kFrameOverheadBytes)
    return fail(DecodeError::frame_too_short, "frame total_length of " + std::to_string(total_length) +
                                                  " bytes is below the 16-byte minimum");
  const std::size_t room = total_length - kFrameOverheadBytes;
  if (headers_length > room)
    return fail(DecodeError::headers_length_out_of_range,
                "frame headers_length of " + std::to_string(headers_length) + " bytes exceeds the " +
                    std::to_string(room) + " bytes available in a frame of " + std::to_string(total_length) +
                    " bytes");
  if (total_length > limits_.max_frame_bytes())
    return fail(DecodeError::frame_too_large, "frame of " + std::to_string(total_length) +
                                                  " bytes exceeds the limit of " +
                                                  std::to_string(limits_.max_frame_bytes()) + " bytes");
  if (headers_length > limits_.max_headers_bytes)
    return fail(DecodeError::headers_too_large, "frame header block of " + std::to_string(headers_length) +
                                                    " bytes exceeds the limit of " +
                                                    std::to_string(limits_.max_headers_bytes) + " bytes");
  const std::size_t payload_length = room - headers_length;
  if (payload_length > limits_.max_payload_bytes)
    return fail(DecodeError::payload_too_large, "frame payload of " + std::to_string(payload_length) +
                                                    " bytes exceeds the limit of " +
                                                    std::to_string(limits_.max_payload_bytes) + " bytes");
  prelude_ = Prelude{total_length, headers_length};
  return ok();
}

result<Message> Decoder::decode_frame() {
  const std::string_view frame(buffer_.data() + pos_, prelude_->total_length);
  const std::uint32_t carried = read_u32(frame.data() + frame.size() - kTrailerBytes);
  const std::uint32_t computed = crc32_of(frame.substr(0, frame.size() - kTrailerBytes));
  if (carried != computed)
    return fail(DecodeError::message_crc_mismatch,
                "frame message CRC mismatch: expected " + hex32(computed) + ", got " + hex32(carried));

  const std::string_view block = frame.substr(kPreludeBytes, prelude_->headers_length);
  Message message;
  std::size_t at = 0;  // offset in block
  while (at < block.size()) {
    const std::size_t index = message.headers.size();
    if (index >= limits_.max_header_count)
      return fail(DecodeError::too_many_headers,
                  "frame has more than " + std::to_string(limits_.max_header_count) + " headers");
    const std::size_t name_length = static_cast<std::uint8_t>(block[at]);
    if (name_length == 0)
      return fail(DecodeError::header_name_empty,
                  "header " + std::to_string(index) + " at offset " + std::to_string(at) + " has an empty name");
    // The name and the type byte after it.
    if (block.size() - at - 1 < name_length + 1)
      return fail(DecodeError::header_name_truncated,
                  "header " + std::to_string(index) + " at offset " + std::to_string(at) + ": name of " +
                      std::to_string(name_length) + " bytes and its type byte run past the " +
                      std::to_string(block.size()) + "-byte header block");
    std::string name(block.substr(at + 1, name_length));
    at += 1 + name_length;
    const auto type_byte = static_cast<std::uint8_t>(block[at]);
    ++at;
    if (type_byte > static_cast<std::uint8_t>(HeaderType::uuid))
      return fail(DecodeError::unknown_header_type,
                  describe_header(index, name) + " has unknown type " + std::to_string(type_byte));
    const auto type = static_cast<HeaderType>(type_byte);

    std::size_t need = 0;  // fixed value size, or the u16 length prefix
    switch (type) {
      case HeaderType::bool_true:
      case HeaderType::bool_false: need = 0; break;
      case HeaderType::byte: need = 1; break;
      case HeaderType::int16: need = 2; break;
      case HeaderType::int32: need = 4; break;
      case HeaderType::int64:
      case HeaderType::timestamp: need = 8; break;
      case HeaderType::bytes:
      case HeaderType::string: need = 2; break;
      case HeaderType::uuid: need = 16; break;
    }
    const std::size_t left = block.size() - at;
    if (left < need)
      return fail(DecodeError::header_value_truncated,
                  describe_header(index, name) + ": " + std::string(to_string(type)) + " value needs " +
                      std::to_string(need) + " bytes, " + std::to_string(left) + " left in the header block");
    const char* v = block.data() + at;
    HeaderValue value;
    switch (type) {
      case HeaderType::bool_true: value.emplace<bool>(true); break;
      case HeaderType::bool_false: value.emplace<bool>(false); break;
      case HeaderType::byte: value.emplace<std::int8_t>(static_cast<std::int8_t>(v[0])); break;
      case HeaderType::int16:
        value.emplace<std::int16_t>(static_cast<std::int16_t>(static_cast<std::uint16_t>(read_be(v, 2))));
        break;
      case HeaderType::int32:
        value.emplace<std::int32_t>(static_cast<std::int32_t>(read_u32(v)));
        break;
      case HeaderType::int64: value.emplace<std::int64_t>(static_cast<std::int64_t>(read_be(v, 8))); break;
      case HeaderType::timestamp:
        value.emplace<Timestamp>(Timestamp{static_cast<std::int64_t>(read_be(v, 8))});
        break;
      case HeaderType::uuid: {
        Uuid u;
        for (std::size_t i = 0; i < u.bytes.size(); ++i) u.bytes[i] = static_cast<std::uint8_t>(v[i]);
        value.emplace<Uuid>(u);
        break;
      }
      case HeaderType::bytes:
      case HeaderType::string: {
        const std::size_t length = static_cast<std::size_t>(read_be(v, 2));
        if (left - 2 < length)
          return fail(DecodeError::header_value_truncated,
                      describe_header(index, name) + ": " + std::string(to_string(type)) + " value of " +
                          std::to_string(length) + " bytes runs past the header block (" +
                          std::to_string(left - 2) + " bytes left)");
        const std::string_view bytes = block.substr(at + 2, length);
        if (type == HeaderType::string) value.emplace<std::string>(bytes);
        else value.emplace<Bytes>(bytes.begin(), bytes.end());
        need += length;
        break;
      }
    }
    at += need;

    for (std::size_t j = 0; j < message.headers.size(); ++j)
      if (iequals(message.headers[j].name, name))
        return fail(DecodeError::duplicate_header,
                    describe_header(index, name) + " repeats " + describe_header(j, message.headers[j].name));
    message.headers.push_back(Header{std::move(name), std::move(value)});
  }

  const std::size_t payload_at = kPreludeBytes + prelude_->headers_length;
  message.payload.assign(frame.substr(payload_at, frame.size() - kTrailerBytes - payload_at));
  return message;
}

result<std::optional<Message>> Decoder::next() {
  if (failed()) return error_;
  if (!prelude_) {
    if (buffered() < kPreludeBytes) return std::optional<Message>();
    if (auto r = check_prelude(); !r) return std::move(r).error();
  }
  if (buffered() < prelude_->total_length) return std::optional<Message>();
  auto message = decode_frame();
  if (!message) return std::move(message).error();
  pos_ += prelude_->total_length;
  prelude_.reset();
  if (pos_ == buffer_.size()) {
    // Idle connections should not keep the capacity of their largest frame.
    if (buffer_.capacity() > kKeepCapacityBytes) std::string().swap(buffer_);
    else buffer_.clear();
    pos_ = 0;
  }
  return std::optional<Message>(std::move(message).value());
}

}  // namespace canopy::ipc
