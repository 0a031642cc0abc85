// aws.greengrass#SubscribeToConfigurationUpdate: events when a component's configuration
// changes at or below a key path.
#include "services/common.hpp"

namespace canopy::ipc::services {

void add_subscribe_to_configuration_update(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#SubscribeToConfigurationUpdate",
      .streaming = true,
      .handle =
          [&ctx](Call& call) {
            auto component = target_component(call, "SubscribeToConfigurationUpdate");
            auto path = key_path(call.request, "SubscribeToConfigurationUpdate");
            if (!component || !path) {
              call.stream->fail(invalid(!component ? component.error().message : path.error().message));
              return;
            }
            const config::KeyPath base = config::component_config_path(*component);
            std::weak_ptr<StreamHandle> weak = call.stream;
            call.stream->respond("{}", response_shape("SubscribeToConfigurationUpdate"));
            const auto id = ctx.store.subscribe(
                concat(base, *path), [weak, base, component = *component](const config::KeyPath& changed) {
                  auto s = weak.lock();
                  if (!s) return;
                  // The event's keyPath is relative to the component's configuration.
                  config::KeyPath relative;
                  if (changed.size() >= base.size() && std::equal(base.begin(), base.end(), changed.begin()))
                    relative.assign(changed.begin() + static_cast<std::ptrdiff_t>(base.size()), changed.end());
                  nlohmann::json event = {
                      {"configurationUpdateEvent", {{"componentName", component}, {"keyPath", relative}}}};
                  s->event(event.dump(), "aws.greengrass#ConfigurationUpdateEvents");
                });
            call.stream->on_close([&ctx, id] { ctx.store.unsubscribe(id); });
          },
  });
}

}  // namespace canopy::ipc::services
