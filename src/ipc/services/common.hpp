// Helpers shared by the operation handlers (private to src/ipc/services).
#pragma once

#include <chrono>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "canopy/config/store.hpp"
#include "canopy/ipc/service.hpp"
#include "canopy/ipc/services.hpp"

namespace canopy::ipc::services {

inline std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// `aws.greengrass#<Op>Response`.
inline std::string response_shape(std::string_view op) { return fmt::format("aws.greengrass#{}Response", op); }

inline IpcError invalid(std::string message) { return {ErrorShape::invalid_arguments, std::move(message)}; }

/// A required string member; an Error names the operation and the member.
inline result<std::string> required_string(const nlohmann::json& request, std::string_view op, const char* member) {
  const auto it = request.find(member);
  if (it == request.end() || !it->is_string() || it->get_ref<const std::string&>().empty())
    return make_error(errc::invalid, fmt::format("{}: \"{}\" is required and must be a non-empty string", op, member));
  return it->get<std::string>();
}

/// `keyPath` as a list of strings (absent: empty). An Error names the operation.
inline result<config::KeyPath> key_path(const nlohmann::json& request, std::string_view op) {
  config::KeyPath path;
  const auto it = request.find("keyPath");
  if (it == request.end() || it->is_null()) return path;
  if (!it->is_array()) return make_error(errc::invalid, fmt::format("{}: \"keyPath\" must be a list of strings", op));
  for (const auto& k : *it) {
    if (!k.is_string()) return make_error(errc::invalid, fmt::format("{}: \"keyPath\" must be a list of strings", op));
    path.push_back(k.get<std::string>());
  }
  return path;
}

/// The caller's component, or `componentName` when given. External clients must name one.
inline result<std::string> target_component(const Call& call, std::string_view op) {
  const auto it = call.request.find("componentName");
  if (it != call.request.end() && !it->is_null()) {
    if (!it->is_string() || it->get_ref<const std::string&>().empty())
      return make_error(errc::invalid, fmt::format("{}: \"componentName\" must be a non-empty string", op));
    return it->get<std::string>();
  }
  if (call.caller.is_external())
    return make_error(errc::invalid, fmt::format("{}: \"componentName\" is required for the CLI", op));
  return call.caller.name;
}

inline config::KeyPath concat(config::KeyPath a, const config::KeyPath& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Registration functions, one per operation file.
void add_publish_to_topic(OperationTable&, ServiceContext&);
void add_subscribe_to_topic(OperationTable&, ServiceContext&);
void add_get_configuration(OperationTable&, ServiceContext&);
void add_update_configuration(OperationTable&, ServiceContext&);
void add_subscribe_to_configuration_update(OperationTable&, ServiceContext&);
void add_subscribe_to_validate_configuration_updates(OperationTable&, ServiceContext&);
void add_send_configuration_validity_report(OperationTable&, ServiceContext&);
void add_validate_authorization_token(OperationTable&, ServiceContext&);
void add_update_state(OperationTable&, ServiceContext&);
void add_put_component_metric(OperationTable&, ServiceContext&);
void add_canopy_status(OperationTable&, ServiceContext&);
void add_canopy_update_configuration(OperationTable&, ServiceContext&);
void add_lifecycle_operations(OperationTable&, ServiceContext&);
void add_iot_core_operations(OperationTable&, ServiceContext&);
void add_client_device_operations(OperationTable&, ServiceContext&);

}  // namespace canopy::ipc::services
