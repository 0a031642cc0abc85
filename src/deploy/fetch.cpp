// A blocking HTTPS client on Beast's async API driven by a private io_context: the async
// operations are what honour tcp_stream::expires_after (the sync ones would block forever on a
// silent peer).
#include "canopy/deploy/fetch.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

namespace canopy::deploy {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;
using Clock = std::chrono::steady_clock;

struct Url {
  std::string host;
  std::string port = "443";
  std::string target = "/";
};

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  return std::equal(prefix.begin(), prefix.end(), s.begin(),
                    [](char a, char b) { return std::tolower(static_cast<unsigned char>(a)) == b; });
}

/// The URL without query and fragment: safe to log (pre-signed URLs carry credentials there).
std::string redact(const std::string& url) {
  auto cut = url.find_first_of("?#");
  if (cut == std::string::npos) return url;
  return url.substr(0, cut) + (url[cut] == '?' ? "?…" : "");
}

/// Parses `https://host[:port][/path][?query][#fragment]`; nullopt if malformed or not https.
std::optional<Url> parse_url(std::string_view url) {
  constexpr std::string_view scheme = "https://";
  if (!iequals_prefix(url, scheme)) return std::nullopt;
  url.remove_prefix(scheme.size());
  if (auto hash = url.find('#'); hash != std::string_view::npos) url = url.substr(0, hash);
  auto end = url.find_first_of("/?");
  std::string_view authority = url.substr(0, end);
  Url out;
  if (end != std::string_view::npos) {
    std::string_view rest = url.substr(end);
    out.target = rest.front() == '?' ? "/" + std::string(rest) : std::string(rest);
  }
  if (authority.empty() || authority.find('@') != std::string_view::npos || authority.front() == '[') return std::nullopt;
  if (auto colon = authority.find(':'); colon != std::string_view::npos) {
    std::string_view port = authority.substr(colon + 1);
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc{} || p != port.data() + port.size() || value == 0 || value > 65535) return std::nullopt;
    out.port = std::to_string(value);
    authority = authority.substr(0, colon);
  }
  if (authority.empty()) return std::nullopt;
  for (char c : authority) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_')) return std::nullopt;
  }
  out.host.reserve(authority.size());
  for (char c : authority) out.host.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  for (char c : out.target) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;  // no spaces or CR/LF in the request line
  }
  return out;
}

/// Resolves a Location header against the URL it came from.
std::string resolve_location(const Url& base, std::string_view location) {
  if (location.find("://") != std::string_view::npos) return std::string(location);
  std::string authority = base.port == "443" ? base.host : base.host + ":" + base.port;
  if (location.substr(0, 2) == "//") return "https:" + std::string(location);
  if (!location.empty() && location.front() == '/') return "https://" + authority + std::string(location);
  std::string dir = base.target.substr(0, base.target.find('?'));
  dir = dir.substr(0, dir.rfind('/') + 1);
  return "https://" + authority + dir + std::string(location);
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

/// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::optional<std::uint64_t> part_size(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return static_cast<std::uint64_t>(st.st_size);
}

/// What one attempt (one connection, one request) ended with.
struct Outcome {
  enum Kind { done, redirect, retry, fail } kind = fail;
  Error error{};         ///< retry, fail
  std::string location;  ///< redirect
};

class Attempt {
 public:
  Attempt(ssl::context& ctx, const FetchOptions& options, std::string what)
      : ctx_(ctx), options_(options), what_(std::move(what)) {}

  /// Fetches `url` into `part`, appending from `offset` when the server honours the Range.
  Outcome run(const Url& url, const std::filesystem::path& part, std::uint64_t offset, Clock::time_point& last_progress);

 private:
  /// Runs the io_context until `start`'s operation completes; returns its error.
  template <class Start>
  error_code await(Start&& start) {
    std::optional<error_code> done;
    start([&done](error_code ec, auto&&...) { done = ec; });
    ioc_.restart();
    ioc_.run();
    return done.value_or(net::error::operation_aborted);
  }

  Outcome failure(errc code, const std::string& reason) { return {Outcome::fail, make_error(code, what_ + ": " + reason), {}}; }
  Outcome retryable(errc code, const std::string& reason) { return {Outcome::retry, make_error(code, what_ + ": " + reason), {}}; }
  Outcome handshake_failure(error_code ec, SSL* ssl);
  void report(std::uint64_t received, std::optional<std::uint64_t> total, Clock::time_point& last, bool force);

  net::io_context ioc_;
  ssl::context& ctx_;
  const FetchOptions& options_;
  std::string what_;
};

Outcome Attempt::handshake_failure(error_code ec, SSL* ssl) {
  long verify = SSL_get_verify_result(ssl);
  if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
    return failure(errc::unauthorized, "the certificate is for another host");
  }
  if (verify != X509_V_OK) {
    return failure(errc::unauthorized,
                   std::string("the server's certificate is not trusted: ") + X509_verify_cert_error_string(verify));
  }
  if (ec == beast::error::timeout) return retryable(errc::timeout, "the TLS handshake timed out");
  return retryable(errc::no_connection, "the TLS handshake failed: " + ec.message());
}

void Attempt::report(std::uint64_t received, std::optional<std::uint64_t> total, Clock::time_point& last, bool force) {
  if (!options_.progress) return;
  auto now = Clock::now();
  if (!force && now - last < std::chrono::milliseconds(100)) return;
  last = now;
  options_.progress(received, total);
}

Outcome Attempt::run(const Url& url, const std::filesystem::path& part, std::uint64_t offset,
                     Clock::time_point& last_progress) {
  // Connect: resolve, TCP, TLS, all under connect_timeout.
  auto connect_deadline = Clock::now() + options_.connect_timeout;
  tcp::resolver resolver(ioc_);
  tcp::resolver::results_type endpoints;
  {
    std::optional<error_code> done;
    resolver.async_resolve(url.host, url.port, [&](error_code ec, tcp::resolver::results_type r) {
      done = ec;
      endpoints = std::move(r);
    });
    ioc_.restart();
    ioc_.run_until(connect_deadline);
    if (!done) {
      resolver.cancel();
      return retryable(errc::timeout, fmt::format("resolving {} timed out", url.host));
    }
    if (*done) return retryable(errc::no_connection, fmt::format("cannot resolve {}: {}", url.host, done->message()));
  }

  beast::ssl_stream<beast::tcp_stream> stream(ioc_, ctx_);
  SSL* ssl = stream.native_handle();
  if (!is_ip_literal(url.host) && SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(url.host.c_str())) != 1) {
    return failure(errc::invalid, "cannot set the TLS server name");
  }
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  int set = is_ip_literal(url.host) ? X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str())
                                    : X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), 0);
  if (set != 1) return failure(errc::invalid, "cannot set the host name to verify");

  auto remaining = [&] {
    return std::max(Clock::duration::zero(), connect_deadline - Clock::now());
  };
  beast::get_lowest_layer(stream).expires_after(remaining());
  if (auto ec = await([&](auto h) { beast::get_lowest_layer(stream).async_connect(endpoints, std::move(h)); })) {
    if (ec == beast::error::timeout) return retryable(errc::timeout, fmt::format("connecting to {}:{} timed out", url.host, url.port));
    return retryable(errc::no_connection, fmt::format("cannot connect to {}:{}: {}", url.host, url.port, ec.message()));
  }
  beast::get_lowest_layer(stream).expires_after(remaining());
  if (auto ec = await([&](auto h) { stream.async_handshake(ssl::stream_base::client, std::move(h)); })) {
    return handshake_failure(ec, ssl);
  }

  // Request.
  http::request<http::empty_body> req{http::verb::get, url.target, 11};
  req.set(http::field::host, url.port == "443" ? url.host : url.host + ":" + url.port);
  req.set(http::field::user_agent, "canopy");
  req.set(http::field::accept_encoding, "identity");
  req.set(http::field::connection, "close");
  if (offset > 0) req.set(http::field::range, fmt::format("bytes={}-", offset));
  beast::get_lowest_layer(stream).expires_after(options_.idle_timeout);
  if (auto ec = await([&](auto h) { http::async_write(stream, req, std::move(h)); })) {
    if (ec == beast::error::timeout) return retryable(errc::timeout, "sending the request timed out");
    return retryable(errc::no_connection, "sending the request failed: " + ec.message());
  }

  // Header.
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);  // max_bytes is enforced below, with a better message
  beast::get_lowest_layer(stream).expires_after(options_.idle_timeout);
  if (auto ec = await([&](auto h) { http::async_read_header(stream, buffer, parser, std::move(h)); })) {
    if (ec == beast::error::timeout) return retryable(errc::timeout, fmt::format("no answer for {} s", options_.idle_timeout.count()));
    return retryable(errc::no_connection, "reading the answer failed: " + ec.message());
  }
  const auto& res = parser.get();
  unsigned status = res.result_int();
  std::string status_text = fmt::format("{} {}", status, std::string(res.reason()));
  if (status == 301 || status == 302 || status == 303 || status == 307 || status == 308) {
    auto location = res[http::field::location];
    if (location.empty()) return failure(errc::invalid, fmt::format("the server answered {} without a Location", status_text));
    return {Outcome::redirect, {}, resolve_location(url, std::string(location))};
  }
  if (status == 404 || status == 410) return failure(errc::not_found, fmt::format("the server answered {}", status_text));
  if (status == 401 || status == 403) return failure(errc::unauthorized, fmt::format("the server answered {}", status_text));
  if (status == 416) {
    // The .part is longer than the file (it changed, or it is complete but was never renamed): start over.
    std::error_code ignored;
    std::filesystem::remove(part, ignored);
    return retryable(errc::invalid, fmt::format("the server refused to resume at byte {} ({})", offset, status_text));
  }
  if (status >= 500) return retryable(errc::retry, fmt::format("the server answered {}", status_text));
  if (status != 200 && status != 206) return failure(errc::invalid, fmt::format("the server answered {}", status_text));

  std::uint64_t start = 0;
  std::optional<std::uint64_t> total;
  if (status == 206) {
    // Content-Range: bytes <first>-<last>/<total or *>
    std::string range(res[http::field::content_range]);
    unsigned long long first = 0, last = 0;
    char total_text[32] = {};
    if (offset == 0 || std::sscanf(range.c_str(), "bytes %llu-%llu/%31s", &first, &last, total_text) != 3 || first != offset) {
      std::error_code ignored;
      std::filesystem::remove(part, ignored);
      return retryable(errc::invalid, fmt::format("the server answered 206 with an unexpected Content-Range \"{}\"", range));
    }
    start = offset;
    if (std::string_view(total_text) != "*") total = std::strtoull(total_text, nullptr, 10);
  }
  if (!total && parser.content_length()) total = start + *parser.content_length();
  if (total && *total > options_.max_bytes) {
    return failure(errc::invalid, fmt::format("the file is {} bytes, over the limit of {}", *total, options_.max_bytes));
  }

  // A 200 restarts from 0 (O_TRUNC); a 206 appends to what is there.
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (status == 206 ? O_APPEND : O_TRUNC);
  Fd fd(::open(part.c_str(), flags, 0644));
  if (fd.get() < 0) return failure(errc::io, fmt::format("cannot open {}: {}", part.string(), std::strerror(errno)));
  if (status == 206 && part_size(part).value_or(0) != start) {
    return retryable(errc::io, fmt::format("{} changed size while resuming", part.string()));
  }

  std::array<char, 64 * 1024> chunk{};
  std::uint64_t received = start;
  report(received, total, last_progress, false);
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    beast::get_lowest_layer(stream).expires_after(options_.idle_timeout);
    auto ec = await([&](auto h) { http::async_read_some(stream, buffer, parser, std::move(h)); });
    if (ec == http::error::need_buffer) ec = {};
    if (ec == ssl::error::stream_truncated && !parser.is_done() && !parser.content_length() && !parser.chunked()) {
      // A body delimited by the end of the connection, closed without close_notify.
      parser.put_eof(ec);
    }
    std::size_t n = chunk.size() - parser.get().body().size;
    if (n > 0) {
      received += n;
      if (received > options_.max_bytes) {
        fd.reset();
        std::error_code ignored;
        std::filesystem::remove(part, ignored);
        return failure(errc::invalid, fmt::format("the file is over the limit of {} bytes", options_.max_bytes));
      }
      const char* p = chunk.data();
      std::size_t left = n;
      while (left > 0) {
        ssize_t w = ::write(fd.get(), p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0) return failure(errc::io, fmt::format("cannot write {}: {}", part.string(), std::strerror(errno)));
        p += w;
        left -= static_cast<std::size_t>(w);
      }
      report(received, total, last_progress, false);
    }
    if (ec) {
      if (ec == beast::error::timeout) {
        return retryable(errc::timeout, fmt::format("no byte received for {} s after {} bytes", options_.idle_timeout.count(), received));
      }
      return retryable(errc::no_connection, fmt::format("the connection was dropped after {} bytes: {}", received, ec.message()));
    }
  }
  if (::fsync(fd.get()) != 0) return failure(errc::io, fmt::format("cannot sync {}: {}", part.string(), std::strerror(errno)));
  fd.reset();
  report(received, total ? total : std::optional<std::uint64_t>(received), last_progress, true);
  // No TLS shutdown: the body is complete and the connection is not reused.
  error_code ignored;
  beast::get_lowest_layer(stream).socket().close(ignored);
  return {Outcome::done, {}, {}};
}

}  // namespace

result<void> fetch_https(const std::string& url, const std::filesystem::path& dest, const FetchOptions& options) {
  const std::string original = redact(url);
  auto parsed = parse_url(url);
  if (!parsed) return make_error(errc::invalid, fmt::format("cannot download {}: not a valid https:// URL", original));

  std::filesystem::path part = dest;
  part += ".part";
  std::error_code fs_ec;
  if (dest.has_parent_path()) {
    std::filesystem::create_directories(dest.parent_path(), fs_ec);
    if (fs_ec) {
      return make_error(errc::io, fmt::format("cannot download {}: cannot create {}: {}", original, dest.parent_path().string(), fs_ec.message()));
    }
  }

  ssl::context ctx(ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.set_verify_mode(ssl::verify_peer);
  boost::system::error_code ec;
  if (options.ca_file.empty()) {
    ctx.set_default_verify_paths(ec);
  } else {
    ctx.load_verify_file(options.ca_file.string(), ec);
  }
  if (ec) {
    std::string which = options.ca_file.empty() ? "the system's CA certificates" : options.ca_file.string();
    return make_error(errc::io, fmt::format("cannot download {}: cannot load {}: {}", original, which, ec.message()));
  }

  std::string current = url;
  int redirects = 0;
  int attempts = 0;
  auto last_progress = Clock::now() - std::chrono::seconds(1);
  for (;;) {
    std::string what = current == url ? "cannot download " + original
                                      : fmt::format("cannot download {} (redirected to {})", original, redact(current));
    auto here = parse_url(current);
    if (!here) return make_error(errc::invalid, what + ": the redirect is not to a valid https:// URL");
    std::uint64_t offset = part_size(part).value_or(0);
    ++attempts;
    Attempt attempt(ctx, options, what);
    Outcome out = attempt.run(*here, part, offset, last_progress);
    switch (out.kind) {
      case Outcome::done:
        std::filesystem::rename(part, dest, fs_ec);
        if (fs_ec) return make_error(errc::io, fmt::format("{}: cannot rename {} to {}: {}", what, part.string(), dest.string(), fs_ec.message()));
        return ok();
      case Outcome::redirect:
        --attempts;  // a redirect is not a failed attempt
        if (++redirects > options.max_redirects) {
          return make_error(errc::invalid, fmt::format("{}: more than {} redirects", what, options.max_redirects));
        }
        current = out.location;
        break;
      case Outcome::retry:
        if (attempts >= options.max_attempts) {
          out.error.message += fmt::format(" (attempt {} of {})", attempts, options.max_attempts);
          return std::move(out.error);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(std::min(2000, 200 * attempts)));
        break;
      case Outcome::fail:
        return std::move(out.error);
    }
  }
}

}  // namespace canopy::deploy
