// Fuzzes the MQTT packet parser with whatever a (misbehaving) broker could send, under both
// protocol versions.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "canopy/mqtt/codec.hpp"

namespace {
void parse_all(std::string_view buf, canopy::mqtt::Version v) {
  // Packet after packet, as a connection's read loop does; the cap bounds the work per input.
  for (int i = 0; i < 1000; ++i) {
    auto r = canopy::mqtt::parse(buf, v, 1 << 20);
    if (!r || r->used == 0) return;
    if (r->used > buf.size() || !r->packet) __builtin_trap();  // parse() broke its contract
    (void)canopy::mqtt::reason_text(v, r->packet->reason, r->packet->type);
    buf.remove_prefix(r->used);
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view buf(reinterpret_cast<const char*>(data), size);
  parse_all(buf, canopy::mqtt::Version::v5);
  parse_all(buf, canopy::mqtt::Version::v311);
  return 0;
}
