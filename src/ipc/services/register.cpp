// The operation table and the policy reload.
#include "canopy/ipc/policy.hpp"
#include "services/common.hpp"

namespace canopy::ipc {

void register_operations(OperationTable& table, ServiceContext& ctx) {
  services::add_publish_to_topic(table, ctx);
  services::add_subscribe_to_topic(table, ctx);
  services::add_get_configuration(table, ctx);
  services::add_update_configuration(table, ctx);
  services::add_subscribe_to_configuration_update(table, ctx);
  services::add_subscribe_to_validate_configuration_updates(table, ctx);
  services::add_send_configuration_validity_report(table, ctx);
  services::add_validate_authorization_token(table, ctx);
  services::add_update_state(table, ctx);
  services::add_put_component_metric(table, ctx);
  services::add_canopy_status(table, ctx);
  services::add_canopy_update_configuration(table, ctx);
  services::add_lifecycle_operations(table, ctx);
  services::add_iot_core_operations(table, ctx);
  services::add_client_device_operations(table, ctx);
}

result<void> reload_policies(ServiceContext& ctx, const std::string& component) {
  config::KeyPath path = config::component_config_path(component);
  path.push_back("accessControl");
  const auto doc = ctx.store.get(path);
  if (!doc) {
    ctx.authorizer.remove(component);
    return ok();
  }
  auto policies = parse_access_control(*doc, component);
  if (!policies) {
    ctx.authorizer.remove(component);
    return policies.error();
  }
  ctx.authorizer.set_policies(component, std::move(*policies));
  return ok();
}

}  // namespace canopy::ipc
