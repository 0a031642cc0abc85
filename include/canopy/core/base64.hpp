//! Base64 (RFC 4648, with padding), as Greengrass writes blobs in JSON and digests.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "canopy/core/error.hpp"

namespace canopy {

std::string base64_encode(std::span<const std::uint8_t> bytes);
std::string base64_encode(std::string_view bytes);
/// Errors: errc::invalid when `text` is not padded base64.
result<std::vector<std::uint8_t>> base64_decode(std::string_view text);

}  // namespace canopy
