//! The contract between the IPC server and the operation handlers: the operation table,
//! a call, the server side of a stream, and the modeled errors.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"
#include "canopy/ipc/auth.hpp"

namespace canopy::ipc {

/// Greengrass's modeled error shapes (`aws.greengrass#<Shape>`).
enum class ErrorShape {
  unauthorized,                    ///< UnauthorizedError
  resource_not_found,              ///< ResourceNotFoundError
  invalid_arguments,               ///< InvalidArgumentsError
  service,                         ///< ServiceError
  component_not_found,             ///< ComponentNotFoundError
  conflict,                        ///< ConflictError
  failed_update_condition_check,   ///< FailedUpdateConditionCheckError
  invalid_token,                   ///< InvalidTokenError
  invalid_recipe_directory_path,   ///< InvalidRecipeDirectoryPathError
  invalid_artifacts_directory_path,///< InvalidArtifactsDirectoryPathError
};

/// `UnauthorizedError` etc.
std::string_view shape_name(ErrorShape shape);

/// A modeled error as a handler reports it. `message` is for the component's developer: it
/// names what is wrong (never internal paths or SQL).
struct IpcError {
  IpcError(ErrorShape s, std::string m, std::string e = {}) : shape(s), message(std::move(m)), error(std::move(e)) {}
  ErrorShape shape = ErrorShape::service;
  std::string message;
  std::string error;  ///< optional `error` member (Java's "Unsupported Operation")
};

/// The one place an internal error class becomes a wire error.
IpcError to_ipc_error(const Error& error);

/// The payload of a modeled error: both Greengrass forms (`message` for the SDKs' models,
/// `_message`/`_errorCode`/`_service` for the event-stream layer).
nlohmann::json error_payload(const IpcError& error);

/// The server side of one operation stream. Every method may be called from any thread
/// (it posts to the connection's strand); calls after the stream closed are ignored.
class StreamHandle {
 public:
  virtual ~StreamHandle() = default;
  /// The response. For request/response operations it ends the stream (TerminateStream);
  /// for streaming operations it is the initial response and must come before any event.
  virtual void respond(std::string json_body, std::string_view shape) = 0;
  /// A stream event (streaming operations only). May be dropped, and counted, when the
  /// client does not read fast enough (the connection's slow-reader policy).
  virtual void event(std::string json_body, std::string_view shape) = 0;
  /// A modeled error; ends the stream.
  virtual void fail(const IpcError& error) = 0;
  /// Ends the stream from the server side (TerminateStream, empty body).
  virtual void close() = 0;
  /// Sets what runs once the stream ends, whichever side ends it or if the connection drops.
  /// It runs on the services executor, at most once.
  virtual void on_close(std::function<void()> callback) = 0;
  /// False once the stream has ended.
  virtual bool is_open() const = 0;
};

/// A request that an operation parsed itself (Operation::parse). Each such operation derives
/// its own type and downcasts Call::parsed to it.
struct ParsedRequest {
  virtual ~ParsedRequest() = default;
};

/// One incoming operation call, as a handler sees it.
struct Call {
  Identity caller;
  std::string operation;  ///< e.g. aws.greengrass#PublishToTopic
  nlohmann::json request;  ///< the parsed request; null when the operation has its own parser
  std::shared_ptr<StreamHandle> stream;
  std::shared_ptr<ParsedRequest> parsed = {};  ///< Operation::parse's result; null without one
};

/// One operation the server serves.
struct Operation {
  std::string name;          ///< `aws.greengrass#PublishToTopic`
  std::string destination = {};  ///< accessControl service (`aws.greengrass.ipc.pubsub`); empty: no policy
  bool streaming = false;
  bool external_only = false;  ///< only external clients (the CLI) may call it
  /// The resources a call touches, each checked against the policies (e.g. the topic, or
  /// every metric name). Unset: the resource is "*". An Error here is answered with
  /// InvalidArgumentsError.
  std::function<result<std::vector<std::string>>(const Call&)> resources = {};
  /// Handles the call; runs on the services executor. Must answer through call.stream
  /// (now or later).
  std::function<void(Call&)> handle;
  /// Optional, for hot operations: parses the request payload instead of the server's
  /// nlohmann::json::parse. The result goes to Call::parsed and Call::request stays null.
  /// Runs on the connection's strand, before the call is handed to the services executor, so
  /// it must not touch shared state. It gets the payload as received (possibly empty, which
  /// must mean `{}`) and may modify it (e.g. pad it). An Error means the payload is not valid
  /// JSON: the server answers as it does when its own parse fails.
  std::function<result<std::shared_ptr<ParsedRequest>>(std::string& payload)> parse = {};
};

/// The table of operations, by name. Not thread-safe; filled before the server starts.
class OperationTable {
 public:
  void add(Operation op);
  const Operation* find(std::string_view name) const;
  std::size_t size() const { return ops_.size(); }

 private:
  std::map<std::string, Operation, std::less<>> ops_;
};

}  // namespace canopy::ipc
