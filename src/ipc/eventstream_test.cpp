#include "canopy/ipc/eventstream.hpp"

#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <zlib.h>

namespace canopy::ipc {
namespace {

std::string from_hex(std::string_view hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

std::string to_hex(std::string_view bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(digits[u >> 4]);
    out.push_back(digits[u & 0xf]);
  }
  return out;
}

void put_u32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

std::uint32_t crc(std::string_view bytes) {
  return static_cast<std::uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
}

// A prelude with the given lengths and a correct prelude CRC, for frames the encoder won't make.
std::string prelude(std::uint32_t total_length, std::uint32_t headers_length) {
  std::string p;
  put_u32(p, total_length);
  put_u32(p, headers_length);
  put_u32(p, crc(p));
  return p;
}

// A frame around a raw header block, with correct CRCs.
std::string raw_frame(std::string_view header_block, std::string_view payload = {}) {
  std::string f = prelude(static_cast<std::uint32_t>(16 + header_block.size() + payload.size()),
                          static_cast<std::uint32_t>(header_block.size()));
  f += header_block;
  f += payload;
  put_u32(f, crc(f));
  return f;
}

std::string must_encode(const Message& m) {
  auto r = encode(m);
  EXPECT_TRUE(r) << r.error().message;
  return r ? *r : std::string();
}

// Feeds `bytes` in one piece and expects exactly one message and nothing after it.
Message decode_one(std::string_view bytes, Limits limits = {}) {
  Decoder d(limits);
  d.feed(bytes);
  auto r = d.next();
  EXPECT_TRUE(r) << r.error().message;
  if (!r || !*r) {
    ADD_FAILURE() << "no message decoded";
    return {};
  }
  Message m = std::move(**r);
  auto after = d.next();
  EXPECT_TRUE(after && !*after);
  EXPECT_EQ(d.buffered(), 0u);
  return m;
}

// Every header type, as in the hand-computed vector below.
Message all_types_message() {
  Message m;
  m.headers = {
      Header::boolean("bt", true),
      Header::boolean("bf", false),
      Header::byte("b", -5),
      Header::int16("i16", -2),
      Header::int32("i32", 0x01020304),
      Header::int64("i64", -0x0102030405060708),
      Header::bytes("buf", Bytes{0x00, 0xff, 0x10}),
      Header::string("str", "hello"),
      Header::timestamp("ts", 1700000000000),
      Header::uuid("id", Uuid{{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}}),
  };
  m.payload = R"({"ok":true})";
  return m;
}

// Computed independently with Python's struct + zlib.crc32 (not with this codec).
constexpr std::string_view kAllTypesHex =
    "0000007a0000005f2d946b62"
    "02627400"                              // "bt" bool true
    "02626601"                              // "bf" bool false
    "016202fb"                              // "b" byte -5
    "0369313603fffe"                        // "i16" int16 -2
    "036933320401020304"                    // "i32" int32 0x01020304
    "0369363405fefdfcfbfaf9f8f8"            // "i64" int64 -0x0102030405060708
    "036275660600" "0300ff10"               // "buf" bytes 00 ff 10
    "0373747207" "0005" "68656c6c6f"        // "str" string "hello"
    "027473080000018bcfe56800"              // "ts" timestamp 1700000000000
    "026964090001020304050607"              // "id" uuid 00..0f
    "08090a0b0c0d0e0f"
    "7b226f6b223a747275657d"                // {"ok":true}
    "8215f961";                             // message CRC

// Feeds `bytes` and expects the decoder to fail with `kind` and exactly `message`.
void expect_failure(std::string_view bytes, DecodeError kind, std::string_view message, Limits limits = {}) {
  Decoder d(limits);
  d.feed(bytes);
  auto r = d.next();
  ASSERT_FALSE(r) << "decoded a message from a malformed frame";
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(r.error().message, message);
  EXPECT_EQ(d.last_error_kind(), kind) << to_string(d.last_error_kind());
  EXPECT_TRUE(d.failed());
  EXPECT_EQ(d.buffered(), 0u);
}

// --- vectors ------------------------------------------------------------------------------------

TEST(EventStreamCodec, EmptyMessageMatchesTheCrtVector) {
  const std::string expected = from_hex("00000010" "00000000" "05c248eb" "7d98c8ff");
  EXPECT_EQ(to_hex(must_encode(Message{})), to_hex(expected));
  EXPECT_EQ(decode_one(expected), Message{});
}

TEST(EventStreamCodec, EveryHeaderTypeMatchesTheHandComputedVector) {
  const std::string expected = from_hex(kAllTypesHex);
  ASSERT_EQ(expected.size(), 122u);
  EXPECT_EQ(to_hex(must_encode(all_types_message())), kAllTypesHex);
  EXPECT_EQ(decode_one(expected), all_types_message());
}

TEST(EventStreamCodec, ConnectAckMatchesTheNotesExample) {
  Message ack;
  ack.headers = {Header::int32(std::string(kHeaderMessageType), static_cast<std::int32_t>(MessageType::connect_ack)),
                 Header::int32(std::string(kHeaderMessageFlags), message_flags::connection_accepted),
                 Header::int32(std::string(kHeaderStreamId), 0)};
  EXPECT_EQ(to_hex(must_encode(ack)),
            "0000004700000037374cfe3f0d3a6d6573736167652d7479706504000000050e3a6d6573736167652d666c616773"
            "04000000010a3a73747265616d2d69640400000000e237e27d");
}

TEST(EventStreamCodec, EncodeAppendsToWhatIsAlreadyThere) {
  std::string out = "xy";
  ASSERT_TRUE(encode(Message{}, out));
  ASSERT_TRUE(encode(all_types_message(), out));
  EXPECT_EQ(to_hex(out), "7879" "000000100000000005c248eb7d98c8ff" + std::string(kAllTypesHex));
}

// --- round trips --------------------------------------------------------------------------------

TEST(EventStreamCodec, EveryHeaderTypeRoundTripsAtItsExtremes) {
  Message m;
  m.headers = {
      Header::boolean("t", true),
      Header::boolean("f", false),
      Header::byte("byte-min", std::numeric_limits<std::int8_t>::min()),
      Header::byte("byte-max", std::numeric_limits<std::int8_t>::max()),
      Header::int16("i16-min", std::numeric_limits<std::int16_t>::min()),
      Header::int16("i16-max", std::numeric_limits<std::int16_t>::max()),
      Header::int32("i32-min", std::numeric_limits<std::int32_t>::min()),
      Header::int32("i32-max", std::numeric_limits<std::int32_t>::max()),
      Header::int64("i64-min", std::numeric_limits<std::int64_t>::min()),
      Header::int64("i64-max", std::numeric_limits<std::int64_t>::max()),
      Header::bytes("bytes-empty", {}),
      Header::bytes("bytes-max", Bytes(kMaxEncodedValueBytes, 0xab)),
      Header::string("string-empty", ""),
      Header::string("string-binary", std::string("a\0b\xff", 4)),
      Header::string("string-max", std::string(kMaxEncodedValueBytes, 's')),
      Header::timestamp("ts-negative", -1),
      Header::timestamp("ts-max", std::numeric_limits<std::int64_t>::max()),
      Header::uuid("uuid-zero", Uuid{}),
      Header::uuid("uuid-ff", Uuid{{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0xff, 0xff}}),
      Header::string(std::string(kMaxEncodedNameBytes, 'n'), "longest name"),
  };
  m.payload = std::string("\0binary\xff payload", 16);
  Limits roomy;
  roomy.max_headers_bytes = kMaxEncodedHeadersBytes;
  const Message back = decode_one(must_encode(m), roomy);
  EXPECT_EQ(back, m);
  // The types survive, not only the values.
  for (std::size_t i = 0; i < m.headers.size(); ++i) EXPECT_EQ(back.headers[i].type(), m.headers[i].type()) << i;
  EXPECT_EQ(back.headers[0].type(), HeaderType::bool_true);
  EXPECT_EQ(back.headers[1].type(), HeaderType::bool_false);
  EXPECT_EQ(back.headers[15].type(), HeaderType::timestamp);
}

TEST(EventStreamCodec, DecodesWhatTheWireAllowsBeyondTheEncoderBounds) {
  // Names up to 255 bytes and values up to 65535 bytes are legal on the wire (current CRT);
  // only the encoder keeps to the older bounds.
  std::string block;
  block.push_back(static_cast<char>(255));
  block += std::string(255, 'n');
  block.push_back(static_cast<char>(HeaderType::string));
  block += "\xff\xff";
  block += std::string(65535, 'v');
  Limits roomy;
  roomy.max_headers_bytes = 128 * 1024;
  const Message m = decode_one(raw_frame(block), roomy);
  ASSERT_EQ(m.headers.size(), 1u);
  EXPECT_EQ(m.headers[0].name, std::string(255, 'n'));
  EXPECT_EQ(m.string(std::string(255, 'n')), std::string(65535, 'v'));
  EXPECT_FALSE(encode(m));
}

TEST(EventStreamCodec, FramesAtTheLimitsAreAccepted) {
  Limits limits;
  limits.max_payload_bytes = 100;
  limits.max_headers_bytes = 10;
  limits.max_header_count = 2;
  Message m;
  m.headers = {Header::int32("a", 1), Header::boolean("b", true)};  // 7 + 3 = 10 bytes
  m.payload = std::string(100, 'p');
  const std::string f = must_encode(m);
  EXPECT_EQ(f.size(), limits.max_frame_bytes());
  EXPECT_EQ(decode_one(f, limits), m);
}

// --- incremental decoding -----------------------------------------------------------------------

TEST(EventStreamDecoder, ByteAtATime) {
  const std::string stream = from_hex(kAllTypesHex) + must_encode(Message{}) + from_hex(kAllTypesHex);
  Decoder d;
  std::vector<Message> got;
  for (std::size_t i = 0; i < stream.size(); ++i) {
    d.feed(stream.substr(i, 1));
    auto r = d.next();
    ASSERT_TRUE(r) << r.error().message;
    if (*r) {
      got.push_back(std::move(**r));
      EXPECT_EQ(d.buffered(), 0u);
      auto again = d.next();
      ASSERT_TRUE(again && !*again);
    } else {
      EXPECT_GT(d.buffered(), 0u);
    }
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[0], all_types_message());
  EXPECT_EQ(got[1], Message{});
  EXPECT_EQ(got[2], all_types_message());
}

TEST(EventStreamDecoder, ManyFramesInOneFeedThenAPartialOne) {
  std::string stream;
  std::vector<Message> sent;
  for (int i = 0; i < 50; ++i) {
    Message m;
    m.headers = {Header::int32(std::string(kHeaderStreamId), i), Header::string("n", std::to_string(i))};
    m.payload = std::string(static_cast<std::size_t>(i), 'x');
    ASSERT_TRUE(encode(m, stream));
    sent.push_back(std::move(m));
  }
  const std::string tail = must_encode(all_types_message());
  stream += tail.substr(0, 20);

  Decoder d;
  d.feed(stream);
  for (const Message& expected : sent) {
    auto r = d.next();
    ASSERT_TRUE(r) << r.error().message;
    ASSERT_TRUE(*r);
    EXPECT_EQ(**r, expected);
  }
  auto r = d.next();
  ASSERT_TRUE(r && !*r);
  EXPECT_EQ(d.buffered(), 20u);
  d.feed(std::string_view(tail).substr(20));
  r = d.next();
  ASSERT_TRUE(r && *r);
  EXPECT_EQ(**r, all_types_message());
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(EventStreamDecoder, NeedsMoreBytesUntilThePreludeAndTheFrameAreIn) {
  const std::string f = from_hex(kAllTypesHex);
  Decoder d;
  d.feed(f.substr(0, 11));
  auto r = d.next();
  ASSERT_TRUE(r && !*r);
  d.feed(f.substr(11, 1));  // prelude complete, frame not
  r = d.next();
  ASSERT_TRUE(r && !*r);
  EXPECT_EQ(d.buffered(), 12u);
  d.feed(f.substr(12, f.size() - 13));
  r = d.next();
  ASSERT_TRUE(r && !*r);
  d.feed(f.substr(f.size() - 1));
  r = d.next();
  ASSERT_TRUE(r && *r);
  EXPECT_EQ(**r, all_types_message());
}

// --- malformed frames, one test per DecodeError -------------------------------------------------

TEST(EventStreamDecoder, PreludeCrcMismatch) {
  expect_failure(from_hex("00000010" "00000000" "00000000" "7d98c8ff"), DecodeError::prelude_crc_mismatch,
                 "frame prelude CRC mismatch: expected 0x05c248eb, got 0x00000000");
}

TEST(EventStreamDecoder, PreludeCrcIsCheckedBeforeTheLengthIsTrusted) {
  // A huge total_length under a bad CRC is a CRC error, not a size error.
  expect_failure(from_hex("ffffffff" "00000000" "05c248eb"), DecodeError::prelude_crc_mismatch,
                 "frame prelude CRC mismatch: expected 0x" + to_hex(prelude(0xffffffff, 0).substr(8)) +
                     ", got 0x05c248eb");
}

TEST(EventStreamDecoder, FrameTooShort) {
  expect_failure(prelude(15, 0), DecodeError::frame_too_short,
                 "frame total_length of 15 bytes is below the 16-byte minimum");
}

TEST(EventStreamDecoder, HeadersLengthOutOfRange) {
  expect_failure(prelude(20, 5), DecodeError::headers_length_out_of_range,
                 "frame headers_length of 5 bytes exceeds the 4 bytes available in a frame of 20 bytes");
}

// The size checks fire on the 12-byte prelude alone, before the frame is buffered.
TEST(EventStreamDecoder, FrameTooLarge) {
  expect_failure(prelude(200000, 0), DecodeError::frame_too_large,
                 "frame of 200000 bytes exceeds the limit of 163856 bytes");
  expect_failure(prelude(0xffffffff, 0), DecodeError::frame_too_large,
                 "frame of 4294967295 bytes exceeds the limit of 163856 bytes");
}

TEST(EventStreamDecoder, HeadersTooLarge) {
  expect_failure(prelude(16 + 40000, 40000), DecodeError::headers_too_large,
                 "frame header block of 40000 bytes exceeds the limit of 32768 bytes");
}

TEST(EventStreamDecoder, PayloadTooLarge) {
  expect_failure(prelude(16 + 10 + 140000, 10), DecodeError::payload_too_large,
                 "frame payload of 140000 bytes exceeds the limit of 131072 bytes");
}

TEST(EventStreamDecoder, MessageCrcMismatch) {
  expect_failure(from_hex("00000010" "00000000" "05c248eb" "7d98c800"), DecodeError::message_crc_mismatch,
                 "frame message CRC mismatch: expected 0x7d98c8ff, got 0x7d98c800");
  // A flipped payload bit is caught too.
  std::string f = from_hex(kAllTypesHex);
  f[f.size() - 6] ^= 0x01;
  Decoder d;
  d.feed(f);
  ASSERT_FALSE(d.next());
  EXPECT_EQ(d.last_error_kind(), DecodeError::message_crc_mismatch);
}

TEST(EventStreamDecoder, HeaderNameEmpty) {
  expect_failure(raw_frame(std::string("\x01" "a\x00" "\x00\x00", 5)), DecodeError::header_name_empty,
                 "header 1 at offset 3 has an empty name");
}

TEST(EventStreamDecoder, HeaderNameTruncated) {
  expect_failure(raw_frame("\x05" "ab"), DecodeError::header_name_truncated,
                 "header 0 at offset 0: name of 5 bytes and its type byte run past the 3-byte header block");
  // The name fits but its type byte does not.
  expect_failure(raw_frame("\x02" "ab"), DecodeError::header_name_truncated,
                 "header 0 at offset 0: name of 2 bytes and its type byte run past the 3-byte header block");
}

TEST(EventStreamDecoder, UnknownHeaderType) {
  expect_failure(raw_frame("\x01" "a\x0a"), DecodeError::unknown_header_type, "header 0 (\"a\") has unknown type 10");
  expect_failure(raw_frame("\x02" "\x01\"\xff"), DecodeError::unknown_header_type,
                 "header 0 (\"\\x01\\x22\") has unknown type 255");
}

TEST(EventStreamDecoder, HeaderValueTruncated) {
  expect_failure(raw_frame(std::string("\x03" "i32\x04\x00\x01", 7)), DecodeError::header_value_truncated,
                 "header 0 (\"i32\"): int32 value needs 4 bytes, 2 left in the header block");
  expect_failure(raw_frame(std::string("\x01" "s\x07\x00", 4)), DecodeError::header_value_truncated,
                 "header 0 (\"s\"): string value needs 2 bytes, 1 left in the header block");
  expect_failure(raw_frame(std::string("\x01" "s\x07\x00\x05" "abc", 8)), DecodeError::header_value_truncated,
                 "header 0 (\"s\"): string value of 5 bytes runs past the header block (3 bytes left)");
  // The payload right after the block does not lend the value its bytes.
  expect_failure(raw_frame(std::string("\x01" "u\x09" "0123456789", 13), "abcdef"),
                 DecodeError::header_value_truncated,
                 "header 0 (\"u\"): uuid value needs 16 bytes, 10 left in the header block");
}

TEST(EventStreamDecoder, DuplicateHeaderIgnoringCase) {
  Message m;
  m.headers = {Header::int32(":stream-id", 1), Header::string("operation", "x"), Header::int32(":Stream-ID", 2)};
  expect_failure(must_encode(m), DecodeError::duplicate_header,
                 "header 2 (\":Stream-ID\") repeats header 0 (\":stream-id\")");
}

TEST(EventStreamDecoder, TooManyHeaders) {
  Message m;
  for (int i = 0; i < 65; ++i) m.headers.push_back(Header::boolean("h" + std::to_string(i), true));
  expect_failure(must_encode(m), DecodeError::too_many_headers, "frame has more than 64 headers");
  m.headers.pop_back();
  EXPECT_EQ(decode_one(must_encode(m)), m);
}

TEST(EventStreamDecoder, StaysFailedAndDropsItsBuffer) {
  Decoder d;
  d.feed(from_hex("00000010" "00000000" "00000000" "7d98c8ff"));
  auto first = d.next();
  ASSERT_FALSE(first);
  d.feed(must_encode(Message{}));
  EXPECT_EQ(d.buffered(), 0u);
  auto second = d.next();
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().message, first.error().message);
  EXPECT_EQ(d.last_error_kind(), DecodeError::prelude_crc_mismatch);
}

TEST(EventStreamDecoder, GoodFramesBeforeABadOneAreDelivered) {
  std::string stream = must_encode(all_types_message()) + prelude(15, 0);
  Decoder d;
  d.feed(stream);
  auto r = d.next();
  ASSERT_TRUE(r && *r);
  r = d.next();
  ASSERT_FALSE(r);
  EXPECT_EQ(d.last_error_kind(), DecodeError::frame_too_short);
}

TEST(EventStreamDecoder, ErrorKindsHaveNames) {
  EXPECT_EQ(to_string(DecodeError::none), "none");
  EXPECT_EQ(to_string(DecodeError::prelude_crc_mismatch), "prelude_crc_mismatch");
  EXPECT_EQ(to_string(DecodeError::too_many_headers), "too_many_headers");
  EXPECT_EQ(to_string(HeaderType::timestamp), "timestamp");
}

// --- encoder bounds -----------------------------------------------------------------------------

void expect_encode_error(const Message& m, std::string_view message) {
  std::string out = "keep";
  auto r = encode(m, out);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(r.error().message, message);
  EXPECT_EQ(out, "keep");
}

TEST(EventStreamCodec, EncodeRefusesWhatOlderClientsCannotRead) {
  Message m;
  m.headers = {Header::int32("ok", 1), Header::boolean("", true)};
  expect_encode_error(m, "cannot encode header 1 (\"\"): empty name");

  m.headers = {Header::boolean(std::string(128, 'n'), true)};
  expect_encode_error(m, "cannot encode header 0 (\"" + std::string(128, 'n') +
                             "\"): name of 128 bytes exceeds the limit of 127 bytes");

  m.headers = {Header::string("s", std::string(32768, 'v'))};
  expect_encode_error(m, "cannot encode header 0 (\"s\"): string value of 32768 bytes exceeds the limit of "
                         "32767 bytes");

  m.headers = {Header::bytes("b", Bytes(70000))};
  expect_encode_error(m, "cannot encode header 0 (\"b\"): bytes value of 70000 bytes exceeds the limit of "
                         "32767 bytes");

  m.headers.clear();
  for (int i = 0; i < 5; ++i) m.headers.push_back(Header::string("s" + std::to_string(i), std::string(30000, 'v')));
  expect_encode_error(m, "cannot encode a header block of 150030 bytes: the limit is 131072 bytes");

  m.headers = {Header::int32("i", 1)};
  m.payload = std::string(kMaxEncodedFrameBytes, 'p');
  expect_encode_error(m, "cannot encode a frame of 16777239 bytes: the limit is 16777216 bytes");
}

// --- accessors and constants --------------------------------------------------------------------

TEST(EventStreamMessage, LookupIsCaseInsensitiveAndTypeChecked) {
  Message m;
  m.headers = {
      Header::int32(":message-type", 4),      Header::int16(":stream-id", 1),
      Header::string(":version", "0.1.0"),    Header::bytes("operation", Bytes{'x'}),
      Header::string(":Content-Type", "application/json"),
  };
  ASSERT_NE(m.find(":MESSAGE-TYPE"), nullptr);
  EXPECT_EQ(m.find(":MESSAGE-TYPE")->name, ":message-type");
  EXPECT_EQ(m.find("missing"), nullptr);
  EXPECT_EQ(m.int32(":message-type"), 4);
  EXPECT_EQ(m.int32(":stream-id"), std::nullopt);  // int16, not int32
  EXPECT_EQ(m.int32(":version"), std::nullopt);
  EXPECT_EQ(m.string(":version"), "0.1.0");
  EXPECT_EQ(m.string(":message-type"), std::nullopt);
  EXPECT_EQ(m.string("operation"), std::nullopt);  // a byte buffer, not a string
  EXPECT_EQ(m.string(":content-type"), "application/json");
}

TEST(EventStreamRpc, ConstantsMatchTheProtocol) {
  EXPECT_EQ(static_cast<int>(MessageType::application_message), 0);
  EXPECT_EQ(static_cast<int>(MessageType::application_error), 1);
  EXPECT_EQ(static_cast<int>(MessageType::ping), 2);
  EXPECT_EQ(static_cast<int>(MessageType::ping_response), 3);
  EXPECT_EQ(static_cast<int>(MessageType::connect), 4);
  EXPECT_EQ(static_cast<int>(MessageType::connect_ack), 5);
  EXPECT_EQ(static_cast<int>(MessageType::protocol_error), 6);
  EXPECT_EQ(static_cast<int>(MessageType::internal_error), 7);
  EXPECT_EQ(message_flags::connection_accepted, 1);
  EXPECT_EQ(message_flags::terminate_stream, 2);
  EXPECT_EQ(kHeaderMessageType, ":message-type");
  EXPECT_EQ(kHeaderMessageFlags, ":message-flags");
  EXPECT_EQ(kHeaderStreamId, ":stream-id");
  EXPECT_EQ(kHeaderVersion, ":version");
  EXPECT_EQ(kHeaderOperation, "operation");
  EXPECT_EQ(kHeaderContentType, ":content-type");
  EXPECT_EQ(kHeaderServiceModelType, "service-model-type");
  EXPECT_EQ(kEventStreamVersion, "0.1.0");
}

TEST(EventStreamRpc, DecodesTheClientConnectFromTheNotes) {
  // eventstream.md §13, built here from its parts.
  std::string block;
  auto add_int32 = [&block](std::string_view name, std::uint32_t v) {
    block.push_back(static_cast<char>(name.size()));
    block += name;
    block.push_back('\x04');
    put_u32(block, v);
  };
  add_int32(":message-type", 4);
  add_int32(":message-flags", 0);
  add_int32(":stream-id", 0);
  block += std::string("\x08:version\x07\x00\x05" "0.1.0", 17);
  const std::string f = raw_frame(block, R"({"authToken":"ABCDEFGHIJKLMNOP"})");
  EXPECT_EQ(to_hex(f.substr(0, 12)), "0000007800000048d487bdc5");
  EXPECT_EQ(to_hex(f.substr(f.size() - 4)), "928e2af7");
  const Message m = decode_one(f);
  EXPECT_EQ(m.int32(kHeaderMessageType), static_cast<std::int32_t>(MessageType::connect));
  EXPECT_EQ(m.int32(kHeaderMessageFlags), 0);
  EXPECT_EQ(m.int32(kHeaderStreamId), 0);
  EXPECT_EQ(m.string(kHeaderVersion), kEventStreamVersion);
  EXPECT_EQ(m.payload, R"({"authToken":"ABCDEFGHIJKLMNOP"})");
}

}  // namespace
}  // namespace canopy::ipc
