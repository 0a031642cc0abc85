//! canopy::errc (behaviour classes of expected failures) and canopy::result<T>.
#pragma once

#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace canopy {

/// Classes of expected failure. Callers branch on the class, humans read Error::message.
/// Registered as a std::error_code enum, so `ec == canopy::errc::timeout` works.
enum class errc {
  ok = 0,
  invalid,        ///< input is malformed or out of range
  parse,          ///< a document could not be parsed at all
  config,         ///< configuration is wrong
  not_found,      ///< a named thing does not exist
  conflict,       ///< the request conflicts with the current state (e.g. a lock is held)
  unauthorized,   ///< the caller may not do this
  timeout,        ///< a deadline passed
  retry,          ///< transient; trying again later may succeed
  busy,           ///< a resource is in use or a limit is reached
  no_connection,  ///< a peer is not reachable
  io,             ///< an operating-system call failed
  corrupt,        ///< stored data failed an integrity check
  unsupported,    ///< not implemented or not available here
};

const std::error_category& error_category() noexcept;
std::error_code make_error_code(errc e) noexcept;

/// An expected failure: a class to branch on and a sentence for the operator.
/// The message names what is wrong and where (file, field, key), never just "failed".
struct Error {
  errc code = errc::invalid;
  std::string message;
};

/// Build an Error; `errno_error` appends strerror(err) to the message.
Error make_error(errc code, std::string message);
Error errno_error(std::string what, int err);

/// A value or an Error. Small on purpose: C++20 has no std::expected.
template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT: implicit by design
  result(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

/// result<void>: success or an Error.
template <>
class [[nodiscard]] result<void> {
 public:
  result() = default;
  result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT: implicit by design

  bool has_value() const noexcept { return ok_; }
  explicit operator bool() const noexcept { return ok_; }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_{};
  bool ok_ = true;
};

/// The success value of result<void>.
inline result<void> ok() { return {}; }

}  // namespace canopy

template <>
struct std::is_error_code_enum<canopy::errc> : std::true_type {};
