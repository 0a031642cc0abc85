//! An in-test TCP forwarder, 127.0.0.1:<free port> -> 127.0.0.1:<target>, for network
//! failure tests: cut() really breaks the established connections (not only the listener)
//! and refuses new ones; restore() accepts again on the same port.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace canopy::test {

class TcpProxy {
 public:
  /// Listens on a free 127.0.0.1 port at once (connects are accepted from the moment the
  /// constructor returns) and forwards each accepted connection to target_host:target_port
  /// (an IPv4 literal). If the target refuses, the accepted client is reset. Runs on its own
  /// thread. Throws std::system_error if it cannot listen.
  explicit TcpProxy(int target_port, std::string target_host = "127.0.0.1");
  /// Stops the thread (bounded: it wakes up at once), closes every socket.
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  int port() const { return port_; }
  int target_port() const { return target_port_; }

  /// Breaks every established connection on both sides (client and upstream): with
  /// `reset`, an RST (SO_LINGER 0), so the peers see ECONNRESET; otherwise an orderly FIN,
  /// so they read end-of-file. Stops listening: new connects are refused (RST) until
  /// restore(); the port stays reserved by this proxy. Returns once the thread has done it
  /// (or throws std::runtime_error after 5 s).
  void cut(bool reset = true);
  /// Listens again on the same port. Returns once connects are accepted (or throws).
  void restore();
  bool is_cut() const { return cut_.load(); }

  /// Connections accepted since construction (including ones whose upstream refused).
  std::uint64_t connections_accepted() const { return accepted_.load(); }
  /// Connections currently being forwarded.
  std::size_t active_connections() const { return active_.load(); }

 private:
  enum class Command { none, cut_reset, cut_fin, restore, stop };
  void run();
  void request(Command c);
  void listen_socket();

  std::string target_host_;
  int target_port_ = 0;
  int port_ = 0;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  ///< eventfd: commands wake the poll loop

  std::mutex mutex_;
  std::condition_variable done_cv_;
  Command command_ = Command::none;  ///< guarded by mutex_
  bool command_done_ = true;         ///< guarded by mutex_
  std::string command_error_;        ///< guarded by mutex_

  std::atomic<bool> cut_{false};
  std::atomic<std::uint64_t> accepted_{0};
  std::atomic<std::size_t> active_{0};
  std::thread thread_;
};

}  // namespace canopy::test
