#include "canopy/ipc/client.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <future>

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>

#include "canopy/ipc/eventstream.hpp"

namespace canopy::ipc {
namespace {

Message rpc(MessageType type, std::int32_t flags, std::int32_t stream) {
  Message m;
  m.headers.push_back(Header::int32(std::string(kHeaderMessageType), static_cast<std::int32_t>(type)));
  m.headers.push_back(Header::int32(std::string(kHeaderMessageFlags), flags));
  m.headers.push_back(Header::int32(std::string(kHeaderStreamId), stream));
  return m;
}

// The first (and only) frame of an operation on stream `id`.
result<std::string> request_frame(std::int32_t id, std::string_view operation, std::string body) {
  Message m = rpc(MessageType::application_message, 0, id);
  m.headers.push_back(Header::string(std::string(kHeaderOperation), std::string(operation)));
  m.headers.push_back(Header::string(std::string(kHeaderContentType), std::string(kContentTypeJson)));
  m.payload = std::move(body);
  return encode(m);
}

Error error_from_payload(std::string_view shape, const std::string& payload) {
  std::string message = payload;
  std::string code;
  try {
    const auto j = nlohmann::json::parse(payload);
    if (j.contains("message") && j["message"].is_string()) message = j["message"].get<std::string>();
    if (j.contains("_errorCode") && j["_errorCode"].is_string()) code = j["_errorCode"].get<std::string>();
  } catch (const nlohmann::json::exception&) {
  }
  if (code.empty() && shape.rfind("aws.greengrass#", 0) == 0) code = std::string(shape.substr(15));
  errc e = errc::io;
  if (code == "UnauthorizedError") e = errc::unauthorized;
  else if (code == "ResourceNotFoundError" || code == "ComponentNotFoundError") e = errc::not_found;
  else if (code == "InvalidArgumentsError") e = errc::invalid;
  else if (code == "ConflictError" || code == "FailedUpdateConditionCheckError") e = errc::conflict;
  else if (code == "InvalidTokenError") e = errc::unauthorized;
  return make_error(e, message);
}

}  // namespace

result<Client::Options> Client::options_from_environment() {
  const char* socket = std::getenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT");
  const char* token = std::getenv("SVCUID");
  if (socket == nullptr || *socket == '\0')
    return make_error(errc::config, "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT is not set: run me as a component");
  if (token == nullptr || *token == '\0') return make_error(errc::config, "SVCUID is not set: run me as a component");
  Options o;
  o.socket_path = socket;
  o.token = token;
  return o;
}

result<std::unique_ptr<Client>> Client::connect(const Options& options) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_error("socket", errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (options.socket_path.native().size() >= sizeof addr.sun_path) {
    ::close(fd);
    return make_error(errc::invalid, fmt::format("socket path {} is too long", options.socket_path.string()));
  }
  std::strncpy(addr.sun_path, options.socket_path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    ::close(fd);
    return make_error(errc::no_connection, fmt::format("cannot connect to canopyd at {}: {}{}",
                                                       options.socket_path.string(), std::strerror(err),
                                                       err == EACCES ? " (run as root or as a member of the canopy group)"
                                                                     : err == ENOENT || err == ECONNREFUSED
                                                                           ? " (is canopyd running?)"
                                                                           : ""));
  }
  std::unique_ptr<Client> client(new Client(fd, options));
  if (auto r = client->handshake(); !r) return r.error();
  return client;
}

Client::Client(int fd, Options options) : fd_(fd), options_(std::move(options)) {
  reader_ = std::thread([this] { reader(); });
}

Client::~Client() {
  ::shutdown(fd_, SHUT_RDWR);
  if (reader_.joinable()) reader_.join();
  ::close(fd_);
}

bool Client::connected() const {
  std::lock_guard lock(mutex_);
  return connected_;
}

result<void> Client::handshake() {
  Message m = rpc(MessageType::connect, 0, 0);
  m.headers.push_back(Header::string(std::string(kHeaderVersion), std::string(kEventStreamVersion)));
  m.payload = nlohmann::json{{"authToken", options_.token}}.dump();
  auto frame = encode(m);
  constexpr const char* kClosed =
      "canopyd closed the connection before answering Connect (its connection limit may be reached; see its log)";
  if (!frame) return make_error(errc::invalid, frame.error().message);
  if (!send_frame(*frame)) return make_error(errc::no_connection, kClosed);
  std::unique_lock lock(mutex_);
  if (!connect_cv_.wait_for(lock, options_.timeout, [&] { return connect_state_ != 0 || !connected_; }))
    return make_error(errc::timeout, fmt::format("canopyd did not answer Connect within {} ms", options_.timeout.count()));
  if (connect_state_ == 0) return make_error(errc::no_connection, kClosed);
  if (connect_state_ != 1)
    return make_error(errc::unauthorized, "canopyd refused the connection: the token is not valid for this user");
  return ok();
}

bool Client::send_frame(const std::string& frame) {
  std::size_t sent = 0;
  while (sent < frame.size()) {
    const ssize_t n = ::send(fd_, frame.data() + sent, frame.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

bool Client::call_async(std::string_view operation, std::string request_json, Done done) {
  std::lock_guard wlock(write_mutex_);
  const std::int32_t id = last_stream_id_ + 1;
  auto frame = request_frame(id, operation, std::move(request_json));
  if (!frame) {
    done(make_error(errc::invalid, frame.error().message));
    return false;
  }
  {
    std::lock_guard lock(mutex_);
    if (!connected_) {
      done(make_error(errc::no_connection, "the connection to canopyd is closed"));
      return false;
    }
    pending_[id] = Pending{std::move(done), {}, false, false};
  }
  last_stream_id_ = id;
  if (!send_frame(*frame)) {
    Done d;
    {
      std::lock_guard lock(mutex_);
      auto it = pending_.find(id);
      if (it != pending_.end()) {
        d = std::move(it->second.done);
        pending_.erase(it);
      }
    }
    if (d) d(make_error(errc::no_connection, "the connection to canopyd is closed"));
    return false;
  }
  return true;
}

result<nlohmann::json> Client::call(std::string_view operation, const nlohmann::json& request) {
  return call(operation, request, options_.timeout);
}

result<nlohmann::json> Client::call(std::string_view operation, const nlohmann::json& request,
                                    std::chrono::milliseconds timeout) {
  auto promise = std::make_shared<std::promise<result<std::string>>>();
  auto future = promise->get_future();
  call_async(operation, request.dump(), [promise](result<std::string> r) { promise->set_value(std::move(r)); });
  if (future.wait_for(timeout) != std::future_status::ready)
    return make_error(errc::timeout, fmt::format("{}: no answer from canopyd within {} ms", operation, timeout.count()));
  auto r = future.get();
  if (!r) return std::move(r).error();
  if (r->empty()) return nlohmann::json::object();
  try {
    return nlohmann::json::parse(*r);
  } catch (const nlohmann::json::exception&) {
    return make_error(errc::parse, fmt::format("{}: canopyd answered with invalid JSON", operation));
  }
}

result<std::unique_ptr<Client::Stream>> Client::subscribe(std::string_view operation, const nlohmann::json& request,
                                                          OnEvent on_event) {
  auto promise = std::make_shared<std::promise<result<std::string>>>();
  auto future = promise->get_future();
  std::int32_t id = 0;
  {
    std::lock_guard wlock(write_mutex_);
    id = last_stream_id_ + 1;
    auto frame = request_frame(id, operation, request.dump());
    if (!frame) return frame.error();
    {
      std::lock_guard lock(mutex_);
      if (!connected_) return make_error(errc::no_connection, "the connection to canopyd is closed");
      pending_[id] = Pending{[promise](result<std::string> r) { promise->set_value(std::move(r)); },
                             std::move(on_event), true, false};
    }
    last_stream_id_ = id;
    if (!send_frame(*frame)) return make_error(errc::no_connection, "the connection to canopyd is closed");
  }
  if (future.wait_for(options_.timeout) != std::future_status::ready)
    return make_error(errc::timeout, fmt::format("{}: no answer from canopyd", operation));
  auto r = future.get();
  if (!r) return std::move(r).error();
  return std::unique_ptr<Stream>(new Stream(*this, id));
}

void Client::end_stream(std::int32_t id) {
  {
    std::lock_guard lock(mutex_);
    if (pending_.erase(id) == 0) return;
  }
  Message m = rpc(MessageType::application_message, message_flags::terminate_stream, id);
  if (auto frame = encode(m)) {
    std::lock_guard wlock(write_mutex_);
    send_frame(*frame);
  }
}

Client::Stream::~Stream() { close(); }

void Client::Stream::close() {
  if (closed_) return;
  closed_ = true;
  client_.end_stream(id_);
}

void Client::fail_all(const Error& error) {
  std::map<std::int32_t, Pending> pending;
  {
    std::lock_guard lock(mutex_);
    connected_ = false;
    pending.swap(pending_);
  }
  connect_cv_.notify_all();
  for (auto& [id, p] : pending)
    if (!p.answered && p.done) p.done(error);
}

void Client::reader() {
  Decoder decoder(Limits{16u << 20, 128 * 1024, 1024});
  std::string buf(64 * 1024, '\0');
  for (;;) {
    const ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    decoder.feed(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    for (;;) {
      auto next = decoder.next();
      if (!next) {
        fail_all(make_error(errc::corrupt, "canopyd sent a malformed frame: " + next.error().message));
        return;
      }
      if (!next->has_value()) break;
      Message& m = **next;
      const auto type = static_cast<MessageType>(m.int32(kHeaderMessageType).value_or(-1));
      const auto flags = m.int32(kHeaderMessageFlags).value_or(0);
      const auto id = m.int32(kHeaderStreamId).value_or(0);
      if (id == 0) {
        if (type == MessageType::connect_ack) {
          std::lock_guard lock(mutex_);
          connect_state_ = (flags & message_flags::connection_accepted) ? 1 : -1;
          connect_cv_.notify_all();
        }
        continue;  // ping responses, protocol errors (followed by a close)
      }
      const bool terminate = (flags & message_flags::terminate_stream) != 0;
      Done done;
      OnEvent on_event;
      bool is_event = false;
      {
        std::lock_guard lock(mutex_);
        auto it = pending_.find(id);
        if (it == pending_.end()) continue;
        Pending& p = it->second;
        if (!p.answered) {
          p.answered = true;
          done = std::move(p.done);
          if (!p.streaming || terminate || type == MessageType::application_error) pending_.erase(it);
        } else {
          is_event = true;
          on_event = p.on_event;
          if (terminate) pending_.erase(it);
        }
      }
      const std::string shape(m.string(kHeaderServiceModelType).value_or(""));
      if (is_event) {
        if (on_event && !m.payload.empty()) on_event(m.payload);
        continue;
      }
      if (!done) continue;
      if (type == MessageType::application_error)
        done(error_from_payload(shape, m.payload));
      else
        done(std::move(m.payload));
    }
  }
  fail_all(make_error(errc::no_connection, "canopyd closed the connection"));
}

}  // namespace canopy::ipc
