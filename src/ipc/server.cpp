// The IPC server: acceptor, per-connection sessions, the handshake and stream rules
// (eventstream.md §5-§8), and the hand-off to operation handlers on the services strand.
#include "canopy/ipc/server.hpp"

#include <deque>
#include <map>

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include "canopy/core/log.hpp"
#include "canopy/ipc/eventstream.hpp"
#include "canopy/ipc/policy.hpp"

namespace canopy::ipc {
namespace net = boost::asio;
using local = net::local::stream_protocol;
namespace fs = std::filesystem;

namespace {

constexpr std::int32_t kFlagConnectionAccepted = message_flags::connection_accepted;
constexpr std::int32_t kFlagTerminateStream = message_flags::terminate_stream;

Message rpc_message(MessageType type, std::int32_t flags, std::int32_t stream_id) {
  Message m;
  m.headers.push_back(Header::int32(std::string(kHeaderMessageType), static_cast<std::int32_t>(type)));
  m.headers.push_back(Header::int32(std::string(kHeaderMessageFlags), flags));
  m.headers.push_back(Header::int32(std::string(kHeaderStreamId), stream_id));
  return m;
}

// Frames built only from the server's own constants always fit the codec's limits; a failure
// there is a bug. Frames carrying a client's or a handler's data (Ping echoes, responses,
// events) use encode() and handle its error.
std::string encode_frame(const Message& m) {
  std::string out;
  if (auto r = encode(m, out); !r) throw std::logic_error("cannot encode an IPC frame: " + r.error().message);
  return out;
}

}  // namespace

std::string_view shape_name(ErrorShape shape) {
  switch (shape) {
    case ErrorShape::unauthorized: return "UnauthorizedError";
    case ErrorShape::resource_not_found: return "ResourceNotFoundError";
    case ErrorShape::invalid_arguments: return "InvalidArgumentsError";
    case ErrorShape::service: return "ServiceError";
    case ErrorShape::component_not_found: return "ComponentNotFoundError";
    case ErrorShape::conflict: return "ConflictError";
    case ErrorShape::failed_update_condition_check: return "FailedUpdateConditionCheckError";
    case ErrorShape::invalid_token: return "InvalidTokenError";
    case ErrorShape::invalid_recipe_directory_path: return "InvalidRecipeDirectoryPathError";
    case ErrorShape::invalid_artifacts_directory_path: return "InvalidArtifactsDirectoryPathError";
  }
  return "ServiceError";
}

IpcError to_ipc_error(const Error& error) {
  switch (error.code) {
    case errc::invalid:
    case errc::parse: return {ErrorShape::invalid_arguments, error.message};
    case errc::not_found: return {ErrorShape::resource_not_found, error.message};
    case errc::unauthorized: return {ErrorShape::unauthorized, error.message};
    case errc::conflict: return {ErrorShape::conflict, error.message};
    default: return {ErrorShape::service, error.message};
  }
}

nlohmann::json error_payload(const IpcError& error) {
  nlohmann::json body = {{"message", error.message},
                         {"_message", error.message},
                         {"_errorCode", std::string(shape_name(error.shape))},
                         {"_service", "aws.greengrass#GreengrassCoreIPC"}};
  if (!error.error.empty()) body["error"] = error.error;
  return body;
}

void OperationTable::add(Operation op) {
  std::string name = op.name;
  ops_.insert_or_assign(std::move(name), std::move(op));
}

const Operation* OperationTable::find(std::string_view name) const {
  const auto it = ops_.find(name);
  return it == ops_.end() ? nullptr : &it->second;
}

class Session;

// Shared state of the server, kept alive by sessions and pending handlers.
class Server::Impl : public std::enable_shared_from_this<Server::Impl> {
 public:
  Impl(net::io_context& io, Strand services, const ServerConfig& config, const OperationTable& table,
       TokenRegistry& tokens, const Authorizer& authorizer, std::shared_ptr<ServerStats> stats)
      : io_(io), services_(std::move(services)), config_(config), table_(table), tokens_(tokens),
        authorizer_(authorizer), stats_(std::move(stats)), acceptor_(net::make_strand(io)),
        log_(log::get("ipc")) {}

  result<void> start();
  void stop();
  void accept_next();
  void forget(std::uint64_t id);

  // Runs on the services strand.
  void dispatch(const Identity& caller, std::string operation, nlohmann::json request,
                std::shared_ptr<ParsedRequest> parsed, std::shared_ptr<StreamHandle> stream);

  net::io_context& io_;
  Strand services_;
  ServerConfig config_;
  const OperationTable& table_;
  TokenRegistry& tokens_;
  const Authorizer& authorizer_;
  std::shared_ptr<ServerStats> stats_;
  local::acceptor acceptor_;
  std::shared_ptr<spdlog::logger> log_;
  std::mutex sessions_mutex_;
  std::map<std::uint64_t, std::weak_ptr<Session>> sessions_;
  std::uint64_t next_id_ = 1;
  bool stopped_ = false;
};

// The server side of one operation stream. Thread-safe through posting to the session strand.
class ServerStream final : public StreamHandle, public std::enable_shared_from_this<ServerStream> {
 public:
  ServerStream(std::weak_ptr<Session> session, Server::Strand session_strand, Server::Strand services,
               std::int32_t id, bool streaming)
      : session_(std::move(session)), strand_(std::move(session_strand)), services_(std::move(services)), id_(id),
        streaming_(streaming) {}

  void respond(std::string json_body, std::string_view shape) override;
  void event(std::string json_body, std::string_view shape) override;
  void fail(const IpcError& error) override;
  void close() override;
  void on_close(std::function<void()> callback) override {
    // Called on the services strand, like the callback itself.
    if (closed_notified_) {
      if (callback) callback();
      return;
    }
    on_close_ = std::move(callback);
  }
  bool is_open() const override { return open_.load(); }

  // Session side: the stream ended; run on_close on the services strand.
  void mark_closed() {
    if (!open_.exchange(false)) return;
    net::post(services_, [self = shared_from_this()] {
      self->closed_notified_ = true;
      if (auto cb = std::move(self->on_close_)) cb();
    });
  }
  std::int32_t id() const { return id_; }
  bool streaming() const { return streaming_; }

 private:
  void send(std::string body, std::string_view shape, MessageType type, std::int32_t flags, bool droppable);

  std::weak_ptr<Session> session_;
  Server::Strand strand_;
  Server::Strand services_;
  std::int32_t id_;
  bool streaming_;
  std::atomic<bool> open_{true};
  std::function<void()> on_close_;  // services strand
  bool closed_notified_ = false;    // services strand
};

// One client connection. Lives on its own strand; owned by its coroutines and by
// ServerStream weak references.
class Session final : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<Server::Impl> server, local::socket socket, std::uint64_t id)
      : server_(std::move(server)), socket_(std::move(socket)),
        strand_(net::make_strand(server_->io_)), handshake_timer_(strand_), drained_(strand_), id_(id),
        decoder_(Limits{server_->config_.max_frame_payload_bytes, 32 * 1024, 64}), log_(server_->log_) {}

  void start(const PeerCred& peer) {
    peer_ = peer;
    handshake_timer_.expires_after(server_->config_.handshake_timeout);
    handshake_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
      if (!ec && !self->connected_) {
        self->log_->warn("ipc connection={} pid={} closed: no Connect within {} ms", self->id_, self->peer_.pid,
                         self->server_->config_.handshake_timeout.count());
        self->shutdown();
      }
    });
    net::co_spawn(strand_, read_loop(shared_from_this()), net::detached);
  }

  // Any thread.
  void close_from_server() {
    net::post(strand_, [self = shared_from_this()] { self->shutdown(); });
  }

  // Session strand: queue a frame for writing.
  void queue(std::string frame, bool droppable) {
    if (closed_) return;
    queued_bytes_ += frame.size();
    out_.push_back({std::move(frame), droppable});
    if (queued_bytes_ > server_->config_.max_queued_bytes) {
      if (server_->config_.slow_reader == SlowReaderPolicy::disconnect) {
        log_->warn("ipc connection={} component={} closed: {} bytes queued for a client that does not read "
                   "(limit {}, ipc.slowReaderPolicy=disconnect)",
                   id_, identity_ ? identity_->name : "?", queued_bytes_, server_->config_.max_queued_bytes);
        server_->stats_->slow_disconnects++;
        shutdown();
        return;
      }
      drop_oldest_events();
    }
    if (!writing_) write_next();
  }

  void end_stream(std::int32_t id) {
    const auto it = streams_.find(id);
    if (it == streams_.end()) return;
    it->second->mark_closed();
    streams_.erase(it);
  }

  Server::Strand& strand() { return strand_; }

  // Any thread: an event that could not be encoded.
  void count_dropped_event() { server_->stats_->events_dropped++; }

 private:
  struct Outgoing {
    std::string frame;
    bool droppable;
  };

  void drop_oldest_events() {
    // Frames [0, in_flight_) are being written; only later ones may be dropped.
    std::size_t dropped = 0;
    for (auto it = out_.begin() + static_cast<std::ptrdiff_t>(in_flight_);
         it != out_.end() && queued_bytes_ > server_->config_.max_queued_bytes;) {
      if (it->droppable) {
        queued_bytes_ -= it->frame.size();
        it = out_.erase(it);
        ++dropped;
      } else {
        ++it;
      }
    }
    if (dropped > 0) {
      server_->stats_->events_dropped += dropped;
      dropped_ += dropped;
      if (dropped_ == dropped || dropped_ % 10000 < dropped)
        log_->warn("ipc connection={} component={} reads too slowly: dropped {} events so far (oldest first)", id_,
                   identity_ ? identity_->name : "?", dropped_);
    }
  }

  void write_next() {
    if (out_.empty() || closed_) {
      writing_ = false;
      if (closing_) shutdown();
      return;
    }
    writing_ = true;
    // Gather queued frames into one write: fewer syscalls under load.
    write_buf_.clear();
    in_flight_ = 0;
    for (const auto& o : out_) {
      if (!write_buf_.empty() && write_buf_.size() + o.frame.size() > 256 * 1024) break;
      write_buf_ += o.frame;
      ++in_flight_;
    }
    net::async_write(socket_, net::buffer(write_buf_),
                     net::bind_executor(strand_, [self = shared_from_this()](const boost::system::error_code& ec,
                                                                            std::size_t) {
                       // shutdown() already emptied the queue: nothing of it is ours to pop.
                       if (self->closed_) {
                         self->in_flight_ = 0;
                         self->writing_ = false;
                         return;
                       }
                       for (std::size_t i = 0; i < self->in_flight_; ++i) {
                         self->queued_bytes_ -= self->out_.front().frame.size();
                         self->out_.pop_front();
                       }
                       self->in_flight_ = 0;
                       if (ec) {
                         self->shutdown();
                         return;
                       }
                       if (self->queued_bytes_ <= self->server_->config_.max_queued_bytes) self->drained_.cancel();
                       self->write_next();
                     }));
  }

  static net::awaitable<void> read_loop(std::shared_ptr<Session> self) {
    std::vector<char> buf(64 * 1024);
    while (!self->closed_ && !self->closing_) {
      // Backpressure: a client that does not read its responses is not read from either.
      while (self->queued_bytes_ > self->server_->config_.max_queued_bytes && !self->closed_) {
        self->drained_.expires_after(std::chrono::seconds(1));
        co_await self->drained_.async_wait(net::as_tuple(net::use_awaitable));
      }
      auto [ec, n] = co_await self->socket_.async_read_some(net::buffer(buf), net::as_tuple(net::use_awaitable));
      if (ec) break;
      self->decoder_.feed(std::string_view(buf.data(), n));
      for (;;) {
        auto next = self->decoder_.next();
        if (!next) {
          self->protocol_error(fmt::format("malformed frame: {}", next.error().message));
          break;
        }
        if (!next->has_value()) break;
        self->on_message(std::move(**next));
        if (self->closed_ || self->closing_) break;
      }
    }
    // When closing after a protocol error, the write path closes once the error is out.
    if (!self->closing_) self->shutdown();
  }

  void on_message(Message m) {
    const auto type = m.int32(kHeaderMessageType);
    const auto flags = m.int32(kHeaderMessageFlags).value_or(0);
    const auto stream = m.int32(kHeaderStreamId);
    if (!type || !stream) {
      protocol_error("every message needs int32 headers :message-type and :stream-id");
      return;
    }
    const auto mt = static_cast<MessageType>(*type);
    if (!connected_) {
      if (mt != MessageType::connect || connect_pending_) {
        protocol_error(
            "A CONNECT message must be received, and the CONNECT_ACK must be sent in response, before any other "
            "message-types can be sent on this connection");
        return;
      }
      on_connect(m);
      return;
    }
    if (*stream == 0) {
      switch (mt) {
        case MessageType::ping: {
          Message pong = rpc_message(MessageType::ping_response, 0, 0);
          for (const Header& h : m.headers)
            if (!h.name.empty() && h.name[0] != ':') pong.headers.push_back(h);
          pong.payload = std::move(m.payload);
          auto frame = encode(pong);
          if (!frame) {
            // The decoder accepts a little more than the encoder writes (names up to 255
            // bytes, values up to 65535); such a Ping cannot be echoed.
            protocol_error("cannot echo this Ping: " + frame.error().message);
            return;
          }
          queue(std::move(*frame), false);
          return;
        }
        case MessageType::ping_response: return;
        case MessageType::connect: protocol_error("a second CONNECT message on an established connection"); return;
        default:
          protocol_error(fmt::format("invalid value for message-type {} on stream-id 0", *type));
          return;
      }
    }
    if (mt != MessageType::application_message && mt != MessageType::application_error) {
      protocol_error(fmt::format("invalid value for message-type {} on stream-id {}", *type, *stream));
      return;
    }
    on_stream_message(*stream, flags, std::move(m));
  }

  void on_connect(const Message& m) {
    // Message::int32/string look names up case-insensitively and by type, as the CRT does.
    const auto version = m.string(kHeaderVersion);
    if (!version || *version != kEventStreamVersion) {
      reject_connect(fmt::format("unsupported :version \"{}\" (expected 0.1.0)", version.value_or(std::string_view())));
      return;
    }
    std::string token;
    try {
      const auto body = nlohmann::json::parse(m.payload);
      if (body.contains("authToken") && body["authToken"].is_string()) token = body["authToken"].get<std::string>();
    } catch (const nlohmann::json::exception&) {
    }
    if (token.empty()) {
      reject_connect("the Connect payload has no authToken (set SVCUID for the component)");
      return;
    }
    connect_pending_ = true;
    net::post(server_->services_, [self = shared_from_this(), token = std::move(token)] {
      auto identity = self->server_->tokens_.find(token);
      const bool allowed = identity && TokenRegistry::peer_allowed(*identity, self->peer_);
      net::post(self->strand_, [self, identity, allowed] {
        self->connect_pending_ = false;
        // A protocol error (e.g. a second Connect) while the token was checked: no ConnectAck.
        if (self->closed_ || self->closing_) return;
        if (!identity) {
          self->reject_connect("the authToken is not valid");
          return;
        }
        if (!allowed) {
          self->reject_connect(fmt::format("the token of {} may not be used by uid {}", identity->name, self->peer_.uid));
          return;
        }
        self->connected_ = true;
        self->identity_ = identity;
        self->handshake_timer_.cancel();
        self->server_->stats_->authenticated++;
        self->queue(encode_frame(rpc_message(MessageType::connect_ack, kFlagConnectionAccepted, 0)), false);
        self->log_->debug("ipc connection={} component={} pid={} uid={} connected", self->id_, identity->name,
                          self->peer_.pid, self->peer_.uid);
      });
    });
  }

  // As the Java nucleus does: a ConnectAck without ConnectionAccepted, then close.
  void reject_connect(const std::string& why) {
    log_->warn("ipc connection={} pid={} uid={} refused: {}", id_, peer_.pid, peer_.uid, why);
    server_->stats_->refused_total++;
    queue(encode_frame(rpc_message(MessageType::connect_ack, 0, 0)), false);
    close_after_flush();
  }

  void on_stream_message(std::int32_t id, std::int32_t flags, Message m) {
    const bool terminate = (flags & kFlagTerminateStream) != 0;
    if (id > last_stream_id_) {
      if (id != last_stream_id_ + 1) {
        protocol_error(fmt::format("stream-id {} was incremented by more than 1 (last was {})", id, last_stream_id_));
        return;
      }
      last_stream_id_ = id;
      const auto operation = m.string(kHeaderOperation);
      if (!operation) {
        protocol_error(
            "The first message for on a non-zero :stream-id must contain an operation header value.");
        return;
      }
      if (terminate) return;  // a first message that already terminates is ignored (Java)
      start_operation(id, std::string(*operation), std::move(m.payload));
      return;
    }
    const auto it = streams_.find(id);
    if (it == streams_.end()) {
      if (terminate) return;  // terminate of a closed stream: ignored
      protocol_error(fmt::format("stream-id {} is lower than the last seen stream-id {} and not open", id,
                                 last_stream_id_));
      return;
    }
    if (terminate) end_stream(id);  // the client closes its stream
  }

  void start_operation(std::int32_t id, std::string operation, std::string payload) {
    const Operation* op = server_->table_.find(operation);
    auto stream = std::make_shared<ServerStream>(weak_from_this(), strand_, server_->services_, id,
                                                 op != nullptr && op->streaming);
    streams_.emplace(id, stream);
    server_->stats_->operations++;
    if (streams_.size() > server_->config_.max_streams_per_connection) {
      stream->fail({ErrorShape::service,
                    fmt::format("too many open streams on this connection (limit {}); close some subscriptions",
                                server_->config_.max_streams_per_connection)});
      return;
    }
    nlohmann::json request;
    std::shared_ptr<ParsedRequest> parsed;
    if (op != nullptr && op->parse) {
      // The operation parses its own requests (a hot path); Call::request stays null.
      auto r = op->parse(payload);
      if (!r) {
        stream->fail({ErrorShape::invalid_arguments, fmt::format("the request of {} is not valid JSON", operation)});
        return;
      }
      parsed = std::move(*r);
    } else if (!payload.empty()) {
      try {
        request = nlohmann::json::parse(payload);
      } catch (const nlohmann::json::exception& e) {
        stream->fail({ErrorShape::invalid_arguments, fmt::format("the request of {} is not valid JSON", operation)});
        return;
      }
    } else {
      request = nlohmann::json::object();
    }
    net::post(server_->services_, [server = server_, caller = *identity_, operation = std::move(operation),
                                   request = std::move(request), parsed = std::move(parsed), stream]() mutable {
      // Nothing a request contains may stop the loop: any exception (in authorization's
      // resource extraction, a handler, ...) becomes a ServiceError for this call only.
      try {
        server->dispatch(caller, operation, std::move(request), std::move(parsed), stream);
      } catch (const std::exception& e) {
        server->log_->error("ipc component={} operation={} failed: {}", caller.name, operation, e.what());
        stream->fail({ErrorShape::service, fmt::format("{} failed inside canopyd; see its log", operation)});
      }
    });
  }

  void protocol_error(const std::string& why) {
    if (closed_ || closing_) return;
    server_->stats_->protocol_errors++;
    log_->warn("ipc connection={} component={} pid={} protocol error, closing: {}", id_,
               identity_ ? identity_->name : "(not connected)", peer_.pid, why);
    Message m = rpc_message(MessageType::protocol_error, 0, 0);
    m.headers.push_back(Header::string(std::string(kHeaderContentType), std::string(kContentTypeJson)));
    m.payload = nlohmann::json{{"message", why}}.dump();
    queue(encode_frame(m), false);
    close_after_flush();
  }

  // Stop reading; close once what is queued has been written (bounded by a short deadline).
  void close_after_flush() {
    closing_ = true;
    boost::system::error_code ignored;
    socket_.shutdown(local::socket::shutdown_receive, ignored);
    handshake_timer_.expires_after(std::chrono::seconds(2));
    handshake_timer_.async_wait([self = shared_from_this()](const boost::system::error_code&) { self->shutdown(); });
    if (!writing_) write_next();
  }

  void shutdown() {
    if (closed_) return;
    closed_ = true;
    boost::system::error_code ignored;
    handshake_timer_.cancel();
    drained_.cancel();
    socket_.shutdown(local::socket::shutdown_both, ignored);
    socket_.close(ignored);
    for (auto& [id, s] : streams_) s->mark_closed();
    streams_.clear();
    out_.clear();
    queued_bytes_ = 0;
    server_->stats_->connections--;
    if (connected_) server_->stats_->authenticated--;
    server_->forget(id_);
  }

  std::shared_ptr<Server::Impl> server_;
  local::socket socket_;
  Server::Strand strand_;
  net::steady_timer handshake_timer_;
  net::steady_timer drained_;
  std::uint64_t id_;
  Decoder decoder_;
  std::shared_ptr<spdlog::logger> log_;
  PeerCred peer_;
  std::optional<Identity> identity_;
  bool connected_ = false;
  bool connect_pending_ = false;
  bool closing_ = false;
  bool closed_ = false;
  std::int32_t last_stream_id_ = 0;
  std::map<std::int32_t, std::shared_ptr<ServerStream>> streams_;
  std::deque<Outgoing> out_;
  std::size_t in_flight_ = 0;
  std::size_t queued_bytes_ = 0;
  std::uint64_t dropped_ = 0;
  std::string write_buf_;
  bool writing_ = false;
};

void ServerStream::send(std::string body, std::string_view shape, MessageType type, std::int32_t flags,
                        bool droppable) {
  if (!open_.load()) return;
  Message m = rpc_message(type, flags, id_);
  m.headers.push_back(Header::string(std::string(kHeaderContentType), std::string(kContentTypeJson)));
  if (!shape.empty()) m.headers.push_back(Header::string(std::string(kHeaderServiceModelType), std::string(shape)));
  m.payload = std::move(body);
  auto session = session_.lock();
  if (!session) return;
  bool terminate = (flags & kFlagTerminateStream) != 0;
  // Encode here, off the session strand: with more loop threads this spreads the work.
  auto encoded = encode(m);
  if (!encoded) {
    // Only a body past the codec's 16 MiB frame bound gets here. An event is dropped and
    // counted; a response becomes a ServiceError so the caller is not left waiting.
    log::get("ipc")->error("ipc stream={} cannot send a {} frame: {}", id_, shape, encoded.error().message);
    if (droppable) {
      session->count_dropped_event();
      return;
    }
    Message err = rpc_message(MessageType::application_error, kFlagTerminateStream, id_);
    err.headers.push_back(Header::string(std::string(kHeaderContentType), std::string(kContentTypeJson)));
    err.headers.push_back(Header::string(std::string(kHeaderServiceModelType), "aws.greengrass#ServiceError"));
    err.payload = error_payload({ErrorShape::service, "the response is too large to send"}).dump();
    encoded = encode_frame(err);
    terminate = true;
  }
  net::post(strand_, [session, frame = std::move(*encoded), droppable, terminate, id = id_]() mutable {
    session->queue(std::move(frame), droppable);
    if (terminate) session->end_stream(id);
  });
}

void ServerStream::respond(std::string json_body, std::string_view shape) {
  send(std::move(json_body), shape, MessageType::application_message, streaming_ ? 0 : kFlagTerminateStream, false);
}

void ServerStream::event(std::string json_body, std::string_view shape) {
  send(std::move(json_body), shape, MessageType::application_message, 0, true);
}

void ServerStream::fail(const IpcError& error) {
  send(error_payload(error).dump(), fmt::format("aws.greengrass#{}", shape_name(error.shape)),
       MessageType::application_error, kFlagTerminateStream, false);
}

void ServerStream::close() {
  if (!open_.load()) return;
  Message m = rpc_message(MessageType::application_message, kFlagTerminateStream, id_);
  auto session = session_.lock();
  if (!session) return;
  net::post(strand_, [session, frame = encode_frame(m), id = id_]() mutable {
    session->queue(std::move(frame), false);
    session->end_stream(id);
  });
}

void Server::Impl::dispatch(const Identity& caller, std::string operation, nlohmann::json request,
                            std::shared_ptr<ParsedRequest> parsed, std::shared_ptr<StreamHandle> stream) {
  const Operation* op = table_.find(operation);
  if (op == nullptr) {
    // Greengrass (Java) answers {"error": "Unsupported Operation", "message": "<op> is an unsupported
    // operation."}; a modeled ServiceError carries the header clients check.
    IpcError e{ErrorShape::service, fmt::format("{} is an unsupported operation.", operation), "Unsupported Operation"};
    log_->info("ipc component={} called unsupported operation {}", caller.name, operation);
    stream->fail(e);
    return;
  }
  Call call{.caller = caller,
            .operation = std::move(operation),
            .request = std::move(request),
            .stream = std::move(stream),
            .parsed = std::move(parsed)};
  if (op->external_only && !caller.is_external()) {
    stats_->unauthorized++;
    call.stream->fail({ErrorShape::unauthorized,
                       fmt::format("{} is not authorized to perform {}: only the canopy CLI may", caller.name, op->name)});
    return;
  }
  // The resources also validate the request, so they are read for every caller; the
  // policies bind components only (the CLI's token is root's or the operators' group's).
  std::vector<std::string> resources = {"*"};
  if (op->resources) {
    auto r = op->resources(call);
    if (!r) {
      call.stream->fail({ErrorShape::invalid_arguments, r.error().message});
      return;
    }
    resources = std::move(*r);
  }
  if (!op->destination.empty() && !caller.is_external()) {
    for (const auto& resource : resources) {
      const auto decision = authorizer_.check(caller.name, op->destination, op->name, resource);
      if (!decision.allowed) {
        stats_->unauthorized++;
        log_->info("ipc component={} denied: {}", caller.name, decision.message);
        call.stream->fail({ErrorShape::unauthorized, decision.message});
        return;
      }
    }
  }
  try {
    op->handle(call);
  } catch (const std::exception& e) {
    log_->error("ipc component={} operation={} handler failed: {}", caller.name, op->name, e.what());
    call.stream->fail({ErrorShape::service, fmt::format("{} failed inside canopyd; see its log", op->name)});
  }
}

result<void> Server::Impl::start() {
  const fs::path& path = config_.socket_path;
  if (path.native().size() >= sizeof(sockaddr_un::sun_path))
    return make_error(errc::invalid,
                      fmt::format("the IPC socket path {} is {} bytes long; Unix sockets allow at most {}; choose a "
                                  "shorter system.ipcSocketPath or root",
                                  path.string(), path.native().size(), sizeof(sockaddr_un::sun_path) - 1));
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return make_error(errc::conflict,
                        fmt::format("{} exists and is not a socket; move it away so canopyd can create its IPC socket",
                                    path.string()));
    // A socket file: stale (refused) or live (another server answers).
    local::socket probe(io_);
    boost::system::error_code ec;
    probe.connect(local::endpoint(path.string()), ec);
    if (!ec)
      return make_error(errc::conflict,
                        fmt::format("another process is serving the IPC socket {}; stop it first", path.string()));
    ::unlink(path.c_str());
    log_->info("replaced the stale IPC socket file {}", path.string());
  }
  boost::system::error_code ec;
  acceptor_.open(local(), ec);
  if (!ec) acceptor_.bind(local::endpoint(path.string()), ec);
  if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return make_error(errc::io, fmt::format("cannot listen on the IPC socket {}: {}", path.string(), ec.message()));

  mode_t mode = 0600;
  if (const group* gr = ::getgrnam(config_.socket_group.c_str())) {
    if (::chown(path.c_str(), static_cast<uid_t>(-1), gr->gr_gid) == 0) mode = 0660;
  } else {
    log_->warn("group {} does not exist: the IPC socket {} is usable by its owner only (mode 0600); create the group "
               "to let components running as other users connect",
               config_.socket_group, path.string());
  }
  if (::chmod(path.c_str(), mode) != 0)
    return errno_error(fmt::format("cannot set the mode of {}", path.string()), errno);
  log_->info("ipc listening socket={} mode={:o} maxConnections={}", path.string(), mode, config_.max_connections);
  accept_next();
  return ok();
}

void Server::Impl::accept_next() {
  acceptor_.async_accept(io_.get_executor(), [self = shared_from_this()](const boost::system::error_code& ec,
                                                                            local::socket socket) {
    if (ec == net::error::operation_aborted || self->stopped_) return;
    if (ec) {
      self->log_->warn("ipc accept failed: {}", ec.message());
      // EMFILE and the like: back off briefly rather than spin.
      auto timer = std::make_shared<net::steady_timer>(self->io_, std::chrono::milliseconds(100));
      timer->async_wait([self, timer](const boost::system::error_code&) { self->accept_next(); });
      return;
    }
    self->stats_->accepted_total++;
    auto peer = peer_credentials(socket.native_handle());
    if (!peer || self->stats_->connections.load() >= self->config_.max_connections) {
      self->stats_->refused_total++;
      self->log_->warn("ipc connection refused: {}",
                       peer ? fmt::format("{} connections open (ipc.maxConnections)", self->config_.max_connections)
                            : peer.error().message);
      boost::system::error_code ignored;
      socket.close(ignored);
      self->accept_next();
      return;
    }
    self->stats_->connections++;
    std::uint64_t id;
    std::shared_ptr<Session> session;
    {
      std::lock_guard lock(self->sessions_mutex_);
      id = self->next_id_++;
      session = std::make_shared<Session>(self, std::move(socket), id);
      self->sessions_[id] = session;
    }
    session->start(*peer);
    self->accept_next();
  });
}

void Server::Impl::forget(std::uint64_t id) {
  std::lock_guard lock(sessions_mutex_);
  sessions_.erase(id);
}

void Server::Impl::stop() {
  stopped_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  std::vector<std::shared_ptr<Session>> live;
  {
    std::lock_guard lock(sessions_mutex_);
    for (auto& [id, w] : sessions_)
      if (auto s = w.lock()) live.push_back(std::move(s));
  }
  for (auto& s : live) s->close_from_server();
  ::unlink(config_.socket_path.c_str());
}

Server::Server(net::io_context& io, Strand services, ServerConfig config, const OperationTable& table,
               TokenRegistry& tokens, const Authorizer& authorizer)
    : config_(std::move(config)), stats_(std::make_shared<ServerStats>()),
      impl_(std::make_shared<Impl>(io, std::move(services), config_, table, tokens, authorizer, stats_)) {}

Server::~Server() { impl_->stop(); }

result<void> Server::start() { return impl_->start(); }
void Server::stop() { impl_->stop(); }

}  // namespace canopy::ipc
