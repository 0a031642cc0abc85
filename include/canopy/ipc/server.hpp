//! The component IPC server: Greengrass EventStream RPC on a Unix socket.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>

#include "canopy/core/error.hpp"
#include "canopy/ipc/auth.hpp"
#include "canopy/ipc/service.hpp"

namespace canopy::ipc {

class Authorizer;

/// What to do when a client does not read its stream events fast enough.
enum class SlowReaderPolicy {
  drop_oldest,  ///< drop the oldest queued events (responses are never dropped), counted
  disconnect,   ///< close the connection, logged
};

struct ServerConfig {
  std::filesystem::path socket_path;
  /// Group that owns the socket (mode 0660). If it does not exist the socket is 0600 and a
  /// warning says so.
  std::string socket_group = "canopy";
  std::size_t max_connections = 1024;
  std::size_t max_streams_per_connection = 512;
  std::size_t max_frame_payload_bytes = 128 * 1024;
  /// Bytes queued for one client before the slow-reader policy applies. Also the point where
  /// the server stops reading that client's requests until its responses drain.
  std::size_t max_queued_bytes = 4 * 1024 * 1024;
  SlowReaderPolicy slow_reader = SlowReaderPolicy::drop_oldest;
  /// A client must complete Connect within this time.
  std::chrono::milliseconds handshake_timeout{10'000};
};

/// Counters, readable from any thread.
struct ServerStats {
  std::atomic<std::uint64_t> connections{0};         ///< open now
  std::atomic<std::uint64_t> authenticated{0};       ///< open and past Connect
  std::atomic<std::uint64_t> accepted_total{0};
  std::atomic<std::uint64_t> refused_total{0};       ///< over max_connections, or bad token
  std::atomic<std::uint64_t> protocol_errors{0};
  std::atomic<std::uint64_t> operations{0};
  std::atomic<std::uint64_t> unauthorized{0};
  std::atomic<std::uint64_t> events_dropped{0};      ///< slow-reader drops
  std::atomic<std::uint64_t> slow_disconnects{0};
};

/// Accepts connections, runs the handshake and stream rules, and hands operations to the
/// table's handlers on the services strand, after authenticating the token and checking the
/// caller's policies.
///
/// Threading: each connection runs on its own strand; the token registry, the authorizer
/// and every handler are used only on `services` (a strand the caller owns, shared with the
/// state the handlers touch). start() and stop() are called on `services` too.
/// Lifetime: the table, tokens and authorizer must outlive the server.
class Server {
 public:
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  Server(boost::asio::io_context& io, Strand services, ServerConfig config, const OperationTable& table,
         TokenRegistry& tokens, const Authorizer& authorizer);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Binds the socket (replacing a stale socket file; refusing when another server answers
  /// on it or the path is not a socket), sets its mode and group, and starts accepting.
  /// Errors: errc::conflict, errc::io, errc::invalid (path too long for a Unix socket).
  result<void> start();
  /// Stops accepting and closes every connection; their streams end (on_close runs).
  void stop();

  const ServerStats& stats() const { return *stats_; }
  const ServerConfig& config() const { return config_; }

  class Impl;

 private:
  ServerConfig config_;
  std::shared_ptr<ServerStats> stats_;
  std::shared_ptr<Impl> impl_;
};

}  // namespace canopy::ipc
