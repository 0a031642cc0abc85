#include "canopy/core/error.hpp"

#include <cstring>

namespace canopy {
namespace {

class Category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "canopy"; }
  std::string message(int v) const override {
    switch (static_cast<errc>(v)) {
      case errc::ok: return "success";
      case errc::invalid: return "invalid input";
      case errc::parse: return "parse error";
      case errc::config: return "configuration error";
      case errc::not_found: return "not found";
      case errc::conflict: return "conflict";
      case errc::unauthorized: return "unauthorized";
      case errc::timeout: return "timed out";
      case errc::retry: return "temporary failure";
      case errc::busy: return "busy";
      case errc::no_connection: return "no connection";
      case errc::io: return "I/O error";
      case errc::corrupt: return "corrupt data";
      case errc::unsupported: return "not supported";
    }
    return "unknown canopy error";
  }
};

}  // namespace

const std::error_category& error_category() noexcept {
  static const Category category;
  return category;
}

std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), error_category()}; }

Error make_error(errc code, std::string message) { return Error{code, std::move(message)}; }

Error errno_error(std::string what, int err) {
  what += ": ";
  what += std::strerror(err);
  return Error{errc::io, std::move(what)};
}

}  // namespace canopy
