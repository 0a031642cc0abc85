#include "support/tcp_proxy.hpp"

#include <cerrno>
#include <cstring>
#include <list>
#include <stdexcept>
#include <system_error>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/process.hpp"

namespace canopy::test {
using namespace std::chrono_literals;

namespace {

[[noreturn]] void throw_errno(const std::string& what) { throw std::system_error(errno, std::generic_category(), what); }

sockaddr_in loopback(const std::string& host, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) throw std::invalid_argument("not an IPv4 address: " + host);
  return a;
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK); }

void set_nodelay(int fd) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Close so that the peer gets an RST rather than a FIN.
void close_reset(int fd) {
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

// Orderly close: FIN in both directions (unread input would still turn it into an RST).
void close_fin(int fd) {
  ::shutdown(fd, SHUT_RDWR);
  ::close(fd);
}

// One direction of a forwarded connection: bytes read from `from`, not yet written to `to`.
struct Direction {
  std::string pending;
  bool eof = false;       ///< `from` reported end-of-file
  bool shut_down = false;  ///< EOF passed on with shutdown(to, SHUT_WR)
};

struct Connection {
  int client = -1;
  int upstream = -1;
  Direction up;    ///< client -> upstream
  Direction down;  ///< upstream -> client
};

constexpr std::size_t kChunk = 64 * 1024;

// Moves data for one direction after poll. Returns false if the connection must be dropped.
bool pump(int from, int to, Direction& d, short from_events, short to_events) {
  if (!d.pending.empty() && (to_events & (POLLOUT | POLLERR | POLLHUP))) {
    const ssize_t n = ::send(to, d.pending.data(), d.pending.size(), MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    if (n > 0) d.pending.erase(0, static_cast<std::size_t>(n));
  }
  if (d.pending.empty() && !d.eof && (from_events & (POLLIN | POLLERR | POLLHUP))) {
    char buf[kChunk];
    const ssize_t n = ::recv(from, buf, sizeof buf, 0);
    if (n > 0) {
      d.pending.assign(buf, static_cast<std::size_t>(n));
      const ssize_t w = ::send(to, d.pending.data(), d.pending.size(), MSG_NOSIGNAL);
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
      if (w > 0) d.pending.erase(0, static_cast<std::size_t>(w));
    } else if (n == 0) {
      d.eof = true;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return false;  // e.g. ECONNRESET: reset the other side too (below)
    }
  }
  if (d.eof && d.pending.empty() && !d.shut_down) {
    ::shutdown(to, SHUT_WR);
    d.shut_down = true;
  }
  return true;
}

}  // namespace

TcpProxy::TcpProxy(int target_port, std::string target_host)
    : target_host_(std::move(target_host)), target_port_(target_port) {
  loopback(target_host_, target_port_);  // validates the address early
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw_errno("eventfd");
  // The port is bound explicitly (not port 0) so that shutdown() in cut() keeps it bound and
  // listen() in restore() reuses it: Linux releases an auto-bound port on shutdown. A port
  // can be taken between free_port() and bind(): try again.
  for (int attempt = 0; attempt < 20 && listen_fd_ < 0; ++attempt) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw_errno("socket");
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const int port = free_port();
    const sockaddr_in a = loopback("127.0.0.1", port);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0 && ::listen(fd, 64) == 0) {
      listen_fd_ = fd;
      port_ = port;
    } else {
      ::close(fd);
    }
  }
  if (listen_fd_ < 0) {
    ::close(wake_fd_);
    throw_errno("TcpProxy: cannot listen on a free port");
  }
  set_nonblocking(listen_fd_);
  thread_ = std::thread([this] { run(); });
}

TcpProxy::~TcpProxy() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    command_ = Command::stop;
    command_done_ = false;
  }
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) ::close(listen_fd_);
  ::close(wake_fd_);
}

void TcpProxy::request(Command c) {
  std::unique_lock<std::mutex> lock(mutex_);
  command_ = c;
  command_done_ = false;
  command_error_.clear();
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);
  if (!done_cv_.wait_for(lock, 5s, [this] { return command_done_; }))
    throw std::runtime_error("TcpProxy: the forwarding thread did not answer within 5 s");
  if (!command_error_.empty()) throw std::runtime_error(command_error_);
}

void TcpProxy::cut(bool reset) { request(reset ? Command::cut_reset : Command::cut_fin); }

void TcpProxy::restore() { request(Command::restore); }

// Runs on the thread. Listening again on the same fd works after shutdown() because the
// port was bound explicitly; if not, a new socket is bound to the same port (SO_REUSEADDR
// covers connections of ours still in TIME_WAIT), retried for up to 2 s.
void TcpProxy::listen_socket() {
  if (::listen(listen_fd_, 64) == 0) return;
  ::close(listen_fd_);
  listen_fd_ = -1;
  const auto until = std::chrono::steady_clock::now() + 2s;
  for (;;) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    const sockaddr_in a = loopback("127.0.0.1", port_);
    if (::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0 && ::listen(fd, 64) == 0) {
      listen_fd_ = fd;
      return;
    }
    const int err = errno;
    ::close(fd);
    if (std::chrono::steady_clock::now() >= until)
      throw std::system_error(err, std::generic_category(), "TcpProxy: cannot listen again on port " + std::to_string(port_));
    std::this_thread::sleep_for(20ms);
  }
}

void TcpProxy::run() {
  std::list<Connection> conns;
  bool listening = true;
  auto drop_all = [&](bool reset) {
    for (auto& c : conns) {
      if (reset) {
        close_reset(c.client);
        close_reset(c.upstream);
      } else {
        close_fin(c.client);
        close_fin(c.upstream);
      }
    }
    conns.clear();
    active_ = 0;
  };

  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_, POLLIN, 0});
    fds.push_back({listening ? listen_fd_ : -1, POLLIN, 0});  // fd -1: ignored by poll
    for (const auto& c : conns) {
      // Read from a side only when nothing is waiting to be written from it (back-pressure);
      // wait for POLLOUT when something is.
      short ce = 0, ue = 0;
      if (c.up.pending.empty() && !c.up.eof) ce |= POLLIN;
      if (c.down.pending.empty() && !c.down.eof) ue |= POLLIN;
      if (!c.up.pending.empty()) ue |= POLLOUT;
      if (!c.down.pending.empty()) ce |= POLLOUT;
      fds.push_back({c.client, ce, 0});
      fds.push_back({c.upstream, ue, 0});
    }
    // Commands wake the loop through the eventfd, so no timeout is needed; 1 s is a guard.
    if (::poll(fds.data(), fds.size(), 1000) < 0 && errno != EINTR) break;

    if (fds[0].revents & POLLIN) {
      std::uint64_t v = 0;
      [[maybe_unused]] const auto n = ::read(wake_fd_, &v, sizeof v);
      std::unique_lock<std::mutex> lock(mutex_);
      const Command cmd = command_;
      command_ = Command::none;
      if (cmd == Command::stop) {
        drop_all(true);
        command_done_ = true;
        done_cv_.notify_all();
        return;
      }
      try {
        if (cmd == Command::cut_reset || cmd == Command::cut_fin) {
          // Stop listening first, so nothing new slips in; shutdown() also resets any
          // connection still in the accept queue.
          if (listening) ::shutdown(listen_fd_, SHUT_RDWR);
          listening = false;
          cut_ = true;
          drop_all(cmd == Command::cut_reset);
        } else if (cmd == Command::restore) {
          if (!listening) listen_socket();
          listening = true;
          cut_ = false;
        }
      } catch (const std::exception& e) {
        command_error_ = e.what();
      }
      if (cmd != Command::none) {
        command_done_ = true;
        done_cv_.notify_all();
      }
      continue;  // the poll set changed
    }

    // Forward data; index 2.. are the connections' fds in order.
    std::size_t i = 2;
    for (auto it = conns.begin(); it != conns.end(); i += 2) {
      Connection& c = *it;
      const short cr = fds[i].revents, ur = fds[i + 1].revents;
      const bool ok = pump(c.client, c.upstream, c.up, cr, ur) && pump(c.upstream, c.client, c.down, ur, cr);
      const bool finished = c.up.shut_down && c.down.shut_down;
      if (!ok || finished) {
        // An error on one side is passed on as an RST to the other; a clean end as FIN.
        if (ok) {
          close_fin(c.client);
          close_fin(c.upstream);
        } else {
          close_reset(c.client);
          close_reset(c.upstream);
        }
        it = conns.erase(it);
        --active_;
      } else {
        ++it;
      }
    }

    if (listening && (fds[1].revents & POLLIN)) {
      for (;;) {
        const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
        if (client < 0) break;  // EAGAIN: queue drained
        ++accepted_;
        // Loopback connect is immediate (accepted or refused), so a blocking connect is fine.
        const int up = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const sockaddr_in a = loopback(target_host_, target_port_);
        if (up < 0 || ::connect(up, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0) {
          if (up >= 0) ::close(up);
          close_reset(client);  // the client sees the target's refusal as a reset
          continue;
        }
        set_nonblocking(client);
        set_nonblocking(up);
        set_nodelay(client);
        set_nodelay(up);
        Connection c;
        c.client = client;
        c.upstream = up;
        conns.push_back(std::move(c));
        ++active_;
      }
    }
  }
  drop_all(true);
}

}  // namespace canopy::test
