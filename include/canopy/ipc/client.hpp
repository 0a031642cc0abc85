//! A Greengrass IPC client (EventStream RPC over the Unix socket) for the canopy CLI, C++
//! components and benchmarks.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"

namespace canopy::ipc {

/// A connection to canopyd. Thread-safe: calls may come from several threads at once.
/// Responses and events are read by one background thread, which also runs the callbacks
/// (keep them short; never call wait-style methods of the same client from a callback).
class Client {
 public:
  struct Options {
    std::filesystem::path socket_path;
    std::string token;
    std::chrono::milliseconds timeout{10'000};  ///< connect and default call deadline
  };

  /// A finished call: the JSON body text, or an Error whose message is the server's and whose
  /// code follows the error shape (UnauthorizedError -> errc::unauthorized,
  /// ResourceNotFoundError -> not_found, InvalidArgumentsError -> invalid,
  /// ConflictError/FailedUpdateConditionCheckError -> conflict, others -> io).
  using Done = std::function<void(result<std::string>)>;
  /// A stream event body (JSON text).
  using OnEvent = std::function<void(std::string_view body)>;

  /// Connects and completes the handshake. Errors: errc::no_connection (socket), 
  /// errc::unauthorized (token refused), errc::timeout.
  static result<std::unique_ptr<Client>> connect(const Options& options);

  /// The connection's environment for components: AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT
  /// and SVCUID. Errors: errc::config naming the missing variable.
  static result<Options> options_from_environment();

  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  /// Calls a request/response operation and waits for its answer (or `timeout`).
  result<nlohmann::json> call(std::string_view operation, const nlohmann::json& request);
  result<nlohmann::json> call(std::string_view operation, const nlohmann::json& request,
                              std::chrono::milliseconds timeout);

  /// Sends a request without waiting; `done` runs on the reader thread with the answer, or
  /// with errc::no_connection if the connection drops first. Returns false if not sent.
  bool call_async(std::string_view operation, std::string request_json, Done done);

  /// An open streaming operation. Destroying it (or close()) ends the stream.
  class Stream {
   public:
    ~Stream();
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    void close();
    std::int32_t id() const { return id_; }

   private:
    friend class Client;
    Stream(Client& client, std::int32_t id) : client_(client), id_(id) {}
    Client& client_;
    std::int32_t id_;
    bool closed_ = false;
  };

  /// Starts a streaming operation (SubscribeToTopic, ...) and waits for its initial response.
  /// Events then go to `on_event` on the reader thread, in order.
  result<std::unique_ptr<Stream>> subscribe(std::string_view operation, const nlohmann::json& request,
                                            OnEvent on_event);

  /// False once the connection has dropped.
  bool connected() const;

 private:
  struct Pending {
    Done done;
    OnEvent on_event;  ///< streaming: events after the initial response
    bool streaming = false;
    bool answered = false;
  };

  Client(int fd, Options options);
  result<void> handshake();
  bool send_frame(const std::string& frame);
  void reader();
  void fail_all(const Error& error);
  void end_stream(std::int32_t id);

  int fd_;
  Options options_;
  std::mutex write_mutex_;    ///< serialises stream-id allocation with the write, so ids go out in order
  std::int32_t last_stream_id_ = 0;
  mutable std::mutex mutex_;  ///< guards pending_, connected_
  std::map<std::int32_t, Pending> pending_;
  bool connected_ = true;
  std::condition_variable connect_cv_;
  int connect_state_ = 0;  ///< 0 waiting, 1 accepted, -1 refused
  std::thread reader_;
};

}  // namespace canopy::ipc
