// The payload the MQTT benchmarks send and check (cloud_e2e_bench, bridge_bench): bytes 0..7
// the sequence number, 8..15 the steady-clock send time in ns, then filler up to kPayload.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kPayload = 256;

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
inline std::int64_t epoch_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline std::vector<std::uint8_t> make_payload(std::int64_t seq, std::int64_t t) {
  std::vector<std::uint8_t> p(kPayload);
  std::memcpy(p.data(), &seq, 8);
  std::memcpy(p.data() + 8, &t, 8);
  for (std::size_t i = 16; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>('a' + i % 26);
  return p;
}

}  // namespace bench
