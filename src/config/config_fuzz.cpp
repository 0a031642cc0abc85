// Fuzz target: the nucleus configuration parser must reject or accept any text without
// crashing, and every rejection must carry a message.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "canopy/config/nucleus_config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = canopy::config::parse(text, "fuzz.yaml");
  if (!r && r.error().message.empty()) std::abort();
  return 0;
}
