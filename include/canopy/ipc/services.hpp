//! The Greengrass IPC operations Canopy serves, and the state they share.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "canopy/ipc/service.hpp"

namespace canopy::config {
class ConfigStore;
}
namespace canopy::pubsub {
class Router;
}
namespace canopy::lifecycle {
class Manager;
struct ComponentInfo;
}
namespace canopy::deploy {
class Deployer;
}

namespace canopy::spool {
struct Message;
}

namespace canopy::ipc {

class Authorizer;

/// A message from a cloud subscription, as SubscribeToIoTCore streams it.
struct IotCoreMessage {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
  nlohmann::json properties = nlohmann::json::object();  ///< IoTCoreMessage's MQTT 5 members
};

/// The cloud as the IPC operations see it (filled by the nucleus; unset: ServiceError).
struct IotCorePort {
  /// Commits the message to the spool (or hands QoS 0 straight to the link when so configured)
  /// and calls `done` afterwards, from any thread.
  std::function<void(spool::Message, std::function<void(result<void>)>)> publish;
  /// Adds a cloud subscription; `on_message` and `on_refused` run on the link's strand.
  std::function<result<std::uint64_t>(const std::string& filter, int qos,
                                      std::function<void(const IotCoreMessage&)> on_message,
                                      std::function<void(const std::string&)> on_refused)>
      subscribe;
  std::function<void(std::uint64_t)> unsubscribe;
  /// Releases the messages the cloud link held; `done(n)` from any thread (canopy#ReleaseHeldMessages).
  std::function<void(std::function<void(std::size_t)> done)> release_held;
};

/// A state a component reported with UpdateState.
struct ReportedState {
  std::string state;  ///< RUNNING or ERRORED
  std::int64_t at_ms = 0;
};

/// A metric a component recorded with PutComponentMetric.
struct Metric {
  std::string name;
  std::string unit;
  double value = 0;
  std::int64_t at_ms = 0;
};

/// Everything the operation handlers share. Used only on the services strand.
/// Lifetime: the router, store, tokens and authorizer outlive it.
struct ServiceContext {
  ServiceContext(pubsub::Router& r, config::ConfigStore& s, TokenRegistry& t, Authorizer& a)
      : router(r), store(s), tokens(t), authorizer(a) {}
  ServiceContext(const ServiceContext&) = delete;
  ServiceContext& operator=(const ServiceContext&) = delete;

  pubsub::Router& router;
  config::ConfigStore& store;
  TokenRegistry& tokens;
  Authorizer& authorizer;

  /// Latest UpdateState per component (used by the lifecycle manager later).
  std::map<std::string, ReportedState> reported_states;
  /// Latest value per component and metric name.
  std::map<std::string, std::map<std::string, Metric>> metrics;
  /// Streams of SubscribeToValidateConfigurationUpdates, per component.
  std::map<std::string, std::vector<std::weak_ptr<StreamHandle>>> validators;
  /// Pending validations: deployment id -> callback with (accepted, message).
  std::map<std::string, std::function<void(bool, std::string)>> pending_validations;
  /// How long a configuration validation waits for reports.
  std::chrono::milliseconds validation_timeout{30'000};
  /// Daemon status for `canopy status` (filled by the nucleus).
  std::function<nlohmann::json()> status;
  /// Called when UpdateState arrives (the lifecycle manager hooks in here later).
  std::function<void(const std::string& component, const std::string& state)> on_state_reported;
  /// The lifecycle manager and the deployment queue (null in unit tests of other operations:
  /// their operations then answer ServiceError).
  lifecycle::Manager* manager = nullptr;
  deploy::Deployer* deployer = nullptr;
  /// Streams of SubscribeToComponentUpdates, per component.
  std::map<std::string, std::vector<std::weak_ptr<StreamHandle>>> update_subscribers;
  /// A NOTIFY_COMPONENTS deployment waiting for DeferComponentUpdate answers.
  struct PendingUpdate {
    std::string deployment_id;
    std::set<std::string> waiting;  ///< components not yet answered
    std::int64_t defer_ms = 0;      ///< the largest recheckAfterMs asked for
    std::function<void(std::int64_t)> done;
  };
  std::optional<PendingUpdate> pending_update;
  /// PublishToIoTCore and SubscribeToIoTCore go here.
  IotCorePort iot_core;
  /// Components built into canopyd (canopy.LocalBroker), appended by ListComponents and
  /// GetComponentDetails after the deployed ones (filled by the nucleus; unset: none).
  std::function<std::vector<lifecycle::ComponentInfo>()> builtin_components;
  /// RestartComponent/StopComponent/PauseComponent/ResumeComponent (`action` is the
  /// operation name) on a built-in component. Errors: errc::not_found when `name` is not
  /// built in (the lifecycle manager then handles it), errc::unsupported for an action the
  /// component does not support (the message says what to do instead).
  std::function<result<void>(const std::string& name, const std::string& action)> builtin_component_action;
  /// canopy#IssueClientDeviceCertificate: {certificatePem, privateKeyPem, caPem, tlsPort}
  /// for a client device of the local broker (unset: ServiceError).
  std::function<result<nlohmann::json>(const std::string& name, int days)> issue_client_device_certificate;
  /// Posts a function to run later on the services strand after a delay (timers).
  std::function<void(std::chrono::milliseconds, std::function<void()>)> run_after;
};

/// Registers every operation of this module into `table`. `ctx` must outlive the table.
void register_operations(OperationTable& table, ServiceContext& ctx);

/// Asks every component subscribed to SubscribeToValidateConfigurationUpdates for `component`
/// whether `configuration` is acceptable; calls `done(accepted, message)` once, on the
/// services strand: accepted when nobody is subscribed, every report says ACCEPTED; rejected
/// on a REJECTED report or when no report arrives within ctx.validation_timeout.
void validate_configuration(ServiceContext& ctx, const std::string& component, const nlohmann::json& configuration,
                            const std::string& deployment_id, std::function<void(bool, std::string)> done);

/// NOTIFY_COMPONENTS: sends a preUpdateEvent to every SubscribeToComponentUpdates stream and
/// calls `done(defer_ms)` once every subscriber answered with DeferComponentUpdate or `timeout`
/// passed (subscribers that did not answer agree). defer_ms is the largest recheckAfterMs
/// asked for, 0 when nobody deferred.
void notify_component_update(ServiceContext& ctx, const std::string& deployment_id, std::chrono::seconds timeout,
                             std::function<void(std::int64_t)> done);
/// Sends a postUpdateEvent to every SubscribeToComponentUpdates stream.
void notify_component_updated(ServiceContext& ctx, const std::string& deployment_id);

/// Re-reads `services.<component>.configuration.accessControl` from the store into the
/// authorizer. A malformed policy document removes the component's policies (deny) and
/// returns the error, so nothing is allowed by a half-understood policy.
result<void> reload_policies(ServiceContext& ctx, const std::string& component);

}  // namespace canopy::ipc
