// Fuzzes the local MQTT client's packet parser with whatever a (misbehaving) broker could send.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "canopy/broker/local_mqtt.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view buf(reinterpret_cast<const char*>(data), size);
  // Parse packet after packet, as the read loop does.
  for (int i = 0; i < 1000; ++i) {
    auto r = canopy::broker::wire::parse(buf, 1 << 20);
    if (!r || r->first == 0) break;
    buf.remove_prefix(r->first);
  }
  return 0;
}
