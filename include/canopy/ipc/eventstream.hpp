//! The EventStream frame codec (eventstream.md §2-§4, §9) and the EventStream RPC constants.
//! Pure code: no sockets, no Asio, no logging.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "canopy/core/error.hpp"

namespace canopy::ipc {

// ---------------------------------------------------------------------------------------------
// Frame layout and encoder bounds (eventstream.md §2, §9)
// ---------------------------------------------------------------------------------------------

/// total_length + headers_length + prelude_crc.
inline constexpr std::size_t kPreludeBytes = 12;
/// The message CRC at the end of every frame.
inline constexpr std::size_t kTrailerBytes = 4;
/// Prelude + trailer: the size of a frame with no headers and no payload.
inline constexpr std::size_t kFrameOverheadBytes = kPreludeBytes + kTrailerBytes;

/// The encoder stays within the bounds of older CRT releases, which clients may bundle (§9,
/// §12.12): header names of at most 127 bytes (INT8_MAX), string and byte-buffer values of at
/// most 32767 bytes (INT16_MAX, "followed Java implementation"), a header block of at most
/// 128 KiB and a frame of at most 16 MiB. The decoder accepts what the wire format can carry
/// (names up to 255 bytes, values up to 65535 bytes) within its Limits.
inline constexpr std::size_t kMaxEncodedNameBytes = 127;
inline constexpr std::size_t kMaxEncodedValueBytes = 32767;
inline constexpr std::size_t kMaxEncodedHeadersBytes = 128 * 1024;
inline constexpr std::size_t kMaxEncodedFrameBytes = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Headers (eventstream.md §3)
// ---------------------------------------------------------------------------------------------

/// The wire type byte of a header (`enum aws_event_stream_header_value_type`).
enum class HeaderType : std::uint8_t {
  bool_true = 0,
  bool_false = 1,
  byte = 2,
  int16 = 3,
  int32 = 4,
  int64 = 5,
  bytes = 6,
  string = 7,
  timestamp = 8,
  uuid = 9,
};

/// A timestamp header value: milliseconds since the Unix epoch (wire type 8). A distinct type
/// so that it never collapses into an int64 header (wire type 5).
struct Timestamp {
  std::int64_t ms_since_epoch = 0;
  bool operator==(const Timestamp&) const = default;
};

/// A UUID header value: 16 raw bytes, in wire order (wire type 9).
struct Uuid {
  std::array<std::uint8_t, 16> bytes{};
  bool operator==(const Uuid&) const = default;
};

/// A byte-buffer header value (wire type 6); a string value (type 7) is a std::string instead.
using Bytes = std::vector<std::uint8_t>;

/// One header value; each wire type maps to exactly one alternative, except that types 0 and 1
/// (bool true/false) both map to `bool`, whose value picks the wire type.
using HeaderValue = std::variant<bool, std::int8_t, std::int16_t, std::int32_t, std::int64_t,
                                 Bytes, std::string, Timestamp, Uuid>;

/// One header: a name and a typed value. A plain value type; copying is cheap for the fixed-size
/// types and copies the buffer for strings and byte buffers.
struct Header {
  std::string name;
  HeaderValue value;

  /// Named constructors, one per wire type, so that the value type is never guessed from a
  /// literal (e.g. Header::string("content-type", "application/json")).
  static Header boolean(std::string header_name, bool v);
  static Header byte(std::string header_name, std::int8_t v);
  static Header int16(std::string header_name, std::int16_t v);
  static Header int32(std::string header_name, std::int32_t v);
  static Header int64(std::string header_name, std::int64_t v);
  static Header bytes(std::string header_name, Bytes v);
  static Header string(std::string header_name, std::string v);
  static Header timestamp(std::string header_name, std::int64_t ms_since_epoch);
  static Header uuid(std::string header_name, const Uuid& v);

  /// The wire type this header is encoded with (bool_true or bool_false for a bool).
  HeaderType type() const noexcept;

  bool operator==(const Header&) const = default;
};

/// The name of a wire type for messages ("int32", "string", ...); "unknown" outside the enum.
std::string_view to_string(HeaderType type) noexcept;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// One EventStream frame's content: headers in wire order and the payload bytes.
/// A plain value type with no invariants: the decoder never yields two headers whose names are
/// equal ignoring ASCII case, and the encoder checks sizes, but a Message built by hand may hold
/// anything until it is encoded.
struct Message {
  std::vector<Header> headers;
  std::string payload;

  /// The first header whose name equals `name` ignoring ASCII case (the CRT compares RPC header
  /// names case-insensitively, §4), or nullptr. The pointer is valid until `headers` changes.
  const Header* find(std::string_view name) const noexcept;

  /// The value of header `name` if it is present *and* int32-typed; nullopt otherwise (an
  /// int16 or string ":stream-id" is not a stream id, as in the CRT).
  std::optional<std::int32_t> int32(std::string_view name) const noexcept;

  /// The value of header `name` if it is present *and* string-typed (wire type 7, not a byte
  /// buffer); nullopt otherwise. The view is valid until `headers` changes.
  std::optional<std::string_view> string(std::string_view name) const noexcept;

  bool operator==(const Message&) const = default;
};

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Appends one frame holding `message` to `out`.
/// Errors (errc::invalid, naming the header by index and name; `out` is left unchanged):
/// an empty header name, a name over kMaxEncodedNameBytes, a string or byte-buffer value over
/// kMaxEncodedValueBytes, a header block over kMaxEncodedHeadersBytes, or a frame over
/// kMaxEncodedFrameBytes. Thread safety: pure; `out` must not be shared without a lock.
result<void> encode(const Message& message, std::string& out);

/// The frame holding `message` as a new string. Errors: as encode(message, out).
result<std::string> encode(const Message& message);

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Bounds the decoder enforces before it buffers or allocates a frame. The defaults suit the
/// Greengrass IPC traffic (JSON requests and events) with room to spare; the wire format itself
/// allows up to 4 GiB.
struct Limits {
  std::size_t max_payload_bytes = 128 * 1024;  ///< payload bytes of one frame
  std::size_t max_headers_bytes = 32 * 1024;   ///< header block bytes of one frame
  std::size_t max_header_count = 64;           ///< headers in one frame

  /// The largest frame these limits admit: overhead + header block + payload.
  std::size_t max_frame_bytes() const noexcept {
    return kFrameOverheadBytes + max_headers_bytes + max_payload_bytes;
  }
};

/// Why a stream was rejected. Every class has its own value so the server can answer and count
/// them apart; Error::message carries the details (the numbers, the header's index and name).
enum class DecodeError {
  none = 0,                    ///< the decoder has not failed
  prelude_crc_mismatch,        ///< the prelude CRC does not match bytes 0..8
  frame_too_short,             ///< total_length < 16
  headers_length_out_of_range, ///< headers_length > total_length - 16
  frame_too_large,             ///< total_length > Limits::max_frame_bytes()
  headers_too_large,           ///< headers_length > Limits::max_headers_bytes
  payload_too_large,           ///< payload length > Limits::max_payload_bytes
  message_crc_mismatch,        ///< the trailing CRC does not match bytes 0..total_length-4
  header_name_empty,           ///< a header name of length 0
  header_name_truncated,       ///< a header's name or type byte runs past the header block
  unknown_header_type,         ///< a type byte above 9
  header_value_truncated,      ///< a header's value (or its u16 length) runs past the block
  duplicate_header,            ///< two headers whose names are equal ignoring ASCII case
  too_many_headers,            ///< more than Limits::max_header_count headers
};

/// The enumerator's name, e.g. "prelude_crc_mismatch", for logs and metrics labels.
std::string_view to_string(DecodeError kind) noexcept;

/// An incremental decoder for one byte stream (one connection).
///
/// feed() hands it bytes in whatever pieces the transport delivers (one byte at a time or many
/// frames at once); next() yields the frames one by one. Checks, in order, for each frame:
/// the prelude CRC (before total_length is trusted), total_length >= 16, headers_length within
/// the frame, the frame, header-block and payload limits -- all as soon as the 12-byte prelude is
/// in, before the rest of the frame is waited for -- then, once the whole frame is in, the
/// message CRC, then the headers (strictly: no empty, truncated or duplicate names, no unknown
/// types, no truncated values, no more than max_header_count).
///
/// The first malformed frame fails the decoder for good: the stream cannot be resynchronised,
/// so the connection should answer and close. The decoder never reserves memory from a length
/// field; it holds only the bytes fed to it and not yet consumed, so callers bound its memory by
/// bounding each feed() and draining next() after it.
///
/// Not thread-safe: one decoder per connection, used from one strand. Copyable and movable.
class Decoder {
 public:
  explicit Decoder(Limits limits = {});

  /// Appends `bytes` to the internal buffer (copied; the caller keeps ownership of the view).
  /// Ignored once the decoder has failed. Never fails.
  void feed(std::string_view bytes);

  /// The next complete frame: a Message, nullopt when more bytes are needed, or an Error
  /// (errc::invalid, message as described on DecodeError) when the stream is malformed. After
  /// an error every later call returns the same Error.
  result<std::optional<Message>> next();

  /// True once next() has returned an Error.
  bool failed() const noexcept { return kind_ != DecodeError::none; }

  /// DecodeError::none, or the class of the error next() returned.
  DecodeError last_error_kind() const noexcept { return kind_; }

  /// Bytes fed and not yet consumed by a returned Message (0 after a failure, which drops them).
  std::size_t buffered() const noexcept { return buffer_.size() - pos_; }

  /// The limits given at construction.
  const Limits& limits() const noexcept { return limits_; }

 private:
  /// The validated prelude of the frame being waited for.
  struct Prelude {
    std::uint32_t total_length = 0;
    std::uint32_t headers_length = 0;
  };

  Error fail(DecodeError kind, std::string message);
  result<void> check_prelude();
  result<Message> decode_frame();

  Limits limits_;
  std::string buffer_;             ///< bytes fed; [pos_, size) not yet consumed
  std::size_t pos_ = 0;            ///< start of the next frame in buffer_
  std::optional<Prelude> prelude_; ///< set once the current frame's prelude passed its checks
  DecodeError kind_ = DecodeError::none;
  Error error_;                    ///< the sticky error, once failed
};

// ---------------------------------------------------------------------------------------------
// EventStream RPC (eventstream.md §4)
// ---------------------------------------------------------------------------------------------

/// `:message-type` values (`enum aws_event_stream_rpc_message_type`).
enum class MessageType : std::int32_t {
  application_message = 0,  ///< streams >= 1
  application_error = 1,    ///< streams >= 1
  ping = 2,                 ///< stream 0
  ping_response = 3,        ///< stream 0
  connect = 4,              ///< stream 0
  connect_ack = 5,          ///< stream 0
  protocol_error = 6,       ///< stream 0
  internal_error = 7,       ///< stream 0 (the Java server calls it ServerError)
};

/// `:message-flags` bits.
namespace message_flags {
inline constexpr std::int32_t connection_accepted = 1;  ///< on ConnectAck: the connection is up
inline constexpr std::int32_t terminate_stream = 2;     ///< the last message of a stream
inline constexpr std::int32_t mask = 3;                 ///< every defined bit (Lite masks with 3)
}  // namespace message_flags

/// Header names. The first three are int32 on every RPC frame; the rest are strings.
inline constexpr std::string_view kHeaderMessageType = ":message-type";
inline constexpr std::string_view kHeaderMessageFlags = ":message-flags";
inline constexpr std::string_view kHeaderStreamId = ":stream-id";
inline constexpr std::string_view kHeaderVersion = ":version";        ///< on Connect
inline constexpr std::string_view kHeaderOperation = "operation";     ///< first message of a stream
inline constexpr std::string_view kHeaderContentType = ":content-type";
inline constexpr std::string_view kHeaderServiceModelType = "service-model-type";
inline constexpr std::string_view kHeaderSvcuid = "svcuid";           ///< Lite's ConnectAck

/// The only `:version` value clients send and servers accept.
inline constexpr std::string_view kEventStreamVersion = "0.1.0";
/// `:content-type` values.
inline constexpr std::string_view kContentTypeJson = "application/json";
inline constexpr std::string_view kContentTypeText = "text/plain";

}  // namespace canopy::ipc
