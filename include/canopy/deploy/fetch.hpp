//! A blocking HTTPS downloader for component artifacts: TLS 1.2+ with chain and host-name
//! checks, redirects, resume with Range from a `.part` file, size limit, timeouts.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "canopy/core/error.hpp"

namespace canopy::deploy {

struct FetchOptions {
  std::filesystem::path ca_file;            ///< PEM bundle to trust; empty: the system's default paths
  std::uint64_t max_bytes = 1ull << 30;     ///< refuse bigger (Content-Length or bytes received)
  std::chrono::seconds connect_timeout{10}; ///< TCP + TLS handshake
  std::chrono::seconds idle_timeout{30};    ///< no byte received for this long: the attempt fails
  int max_redirects = 5;
  int max_attempts = 5;                     ///< a dropped connection resumes with Range from the .part file
  std::function<void(std::uint64_t received, std::optional<std::uint64_t> total)> progress;  ///< may be empty; called at most every 100 ms and at the end
};

/// Downloads `url` (https:// only) into `dest`: streams to `<dest>.part` (never holds the body in
/// memory), resumes with `Range: bytes=N-` after a dropped connection (an existing .part from an
/// earlier run is resumed too; a server answering 200 instead of 206 restarts from 0), renames to
/// `dest` when complete. Verifies the server certificate chain and host name (SNI set), TLS 1.2+.
/// Follows redirects (https only). Blocking: call it from a worker thread.
/// Errors (one sentence naming the URL): errc::not_found for 404; errc::unauthorized for a
/// certificate or host-name failure ("… the server's certificate is not trusted: <openssl reason>",
/// "… the certificate is for another host"); errc::invalid for a non-https URL or a body over
/// max_bytes; errc::timeout; errc::no_connection; errc::io for local file errors.
/// Messages name the URL without its query string (pre-signed URLs carry credentials there).
/// 5xx answers are retried like a dropped connection and end in errc::retry.
/// @par Thread Safety
/// Reentrant: concurrent calls are fine as long as they write to different `dest`s.
result<void> fetch_https(const std::string& url, const std::filesystem::path& dest, const FetchOptions& options);

}  // namespace canopy::deploy
