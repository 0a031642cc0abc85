// libFuzzer target for the EventStream decoder (src/ipc/eventstream.cpp).
//
// The input is a raw byte stream, as a peer would send it. For half of the inputs (picked by a
// hash bit) the CRCs are repaired first, so that mutations reach the header parser instead of
// dying at the CRC checks. The stream is fed to one decoder in two chunks (split at a point
// derived from the input) and to a second decoder one byte at a time; both must agree frame for
// frame and on the error. Every decoded message that the encoder accepts must re-encode to
// exactly the bytes it was decoded from (the codec is canonical), and decode again to an equal
// message.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <zlib.h>

#include "canopy/ipc/eventstream.hpp"

namespace {

using canopy::ipc::Decoder;
using canopy::ipc::DecodeError;
using canopy::ipc::Limits;
using canopy::ipc::Message;

void check(bool condition) {
  if (!condition) std::abort();
}

struct Outcome {
  std::vector<Message> messages;
  DecodeError error = DecodeError::none;
  std::string error_message;
};

std::uint32_t crc(const std::string& s, std::size_t at, std::size_t n) {
  return static_cast<std::uint32_t>(crc32_z(0, reinterpret_cast<const Bytef*>(s.data() + at), n));
}

std::uint32_t get_u32(const std::string& s, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<std::uint8_t>(s[at + i]);
  return v;
}

void put_u32(std::string& s, std::size_t at, std::uint32_t v) {
  for (std::size_t i = 0; i < 4; ++i) s[at + i] = static_cast<char>((v >> (24 - 8 * i)) & 0xffU);
}

// Rewrites the prelude and message CRCs of every frame the lengths delimit.
void repair_crcs(std::string& s) {
  std::size_t at = 0;
  while (s.size() - at >= 12) {
    put_u32(s, at + 8, crc(s, at, 8));
    const std::size_t total = get_u32(s, at);
    if (total < 16 || total > s.size() - at) return;
    put_u32(s, at + total - 4, crc(s, at, total - 4));
    at += total;
  }
}

// Drains `decoder` until it needs more bytes or fails.
void drain(Decoder& decoder, Outcome& outcome) {
  for (;;) {
    auto r = decoder.next();
    if (!r) {
      check(decoder.failed());
      check(decoder.last_error_kind() != DecodeError::none);
      check(decoder.buffered() == 0);
      check(!r.error().message.empty());
      // Sticky: the same error again, and fed bytes are ignored.
      decoder.feed("x");
      auto again = decoder.next();
      check(!again && again.error().message == r.error().message);
      outcome.error = decoder.last_error_kind();
      outcome.error_message = r.error().message;
      return;
    }
    if (!*r) return;
    outcome.messages.push_back(std::move(**r));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);

  // Small limits so the size checks are reachable within libFuzzer's input lengths.
  Limits limits;
  limits.max_payload_bytes = 4096;
  limits.max_headers_bytes = 1024;
  limits.max_header_count = 16;

  // FNV-1a picks the split and the CRC repair, so the corpus files stay plain frames.
  std::uint32_t hash = 2166136261U;
  for (unsigned char c : bytes) hash = (hash ^ c) * 16777619U;
  if ((hash & 1U) != 0) repair_crcs(bytes);
  const std::string_view input(bytes);
  const std::size_t split = size == 0 ? 0 : (hash >> 1) % (size + 1);

  Decoder chunked(limits);
  Outcome a;
  chunked.feed(input.substr(0, split));
  drain(chunked, a);
  if (a.error == DecodeError::none) {
    chunked.feed(input.substr(split));
    drain(chunked, a);
  }

  Decoder bytewise(limits);
  Outcome b;
  for (std::size_t i = 0; i < size && b.error == DecodeError::none; ++i) {
    bytewise.feed(input.substr(i, 1));
    drain(bytewise, b);
  }

  check(a.messages == b.messages);
  check(a.error == b.error);
  check(a.error_message == b.error_message);

  std::size_t offset = 0;
  for (const Message& m : a.messages) {
    check(m.headers.size() <= limits.max_header_count);
    check(m.payload.size() <= limits.max_payload_bytes);
    auto encoded = canopy::ipc::encode(m);
    if (!encoded) {
      // Only what the wire allows beyond the encoder's bounds may be refused.
      bool beyond = false;
      for (const auto& h : m.headers) {
        if (h.name.size() > canopy::ipc::kMaxEncodedNameBytes) beyond = true;
        if (const auto* s = std::get_if<std::string>(&h.value); s && s->size() > canopy::ipc::kMaxEncodedValueBytes)
          beyond = true;
        if (const auto* v = std::get_if<canopy::ipc::Bytes>(&h.value); v && v->size() > canopy::ipc::kMaxEncodedValueBytes)
          beyond = true;
      }
      check(beyond);
      return 0;  // frame boundaries after this one are unknown to the fuzzer
    }
    check(input.substr(offset, encoded->size()) == *encoded);
    offset += encoded->size();

    Decoder again(limits);
    again.feed(*encoded);
    auto r = again.next();
    check(r && *r && **r == m);
  }
  if (a.error == DecodeError::none) check(chunked.buffered() == size - offset);
  return 0;
}
