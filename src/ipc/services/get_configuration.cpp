// aws.greengrass#GetConfiguration: read a component's configuration (own, or another's).
#include "services/common.hpp"

namespace canopy::ipc::services {

void add_get_configuration(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#GetConfiguration",
      .handle =
          [&ctx](Call& call) {
            auto component = target_component(call, "GetConfiguration");
            auto path = key_path(call.request, "GetConfiguration");
            if (!component || !path) {
              call.stream->fail(invalid(!component ? component.error().message : path.error().message));
              return;
            }
            auto value = ctx.store.get(concat(config::component_config_path(*component), *path));
            if (!value) {
              call.stream->fail({ErrorShape::resource_not_found,
                                 fmt::format("GetConfiguration: component {} has no configuration at {}", *component,
                                             config::to_pointer(*path).empty() ? "/" : config::to_pointer(*path))});
              return;
            }
            // Greengrass answers a leaf as {"<last key>": value}; a container as itself.
            nlohmann::json body = {{"componentName", *component}};
            if (value->is_object() || path->empty())
              body["value"] = std::move(*value);
            else
              body["value"] = nlohmann::json{{path->back(), std::move(*value)}};
            call.stream->respond(body.dump(), response_shape("GetConfiguration"));
          },
  });
}

}  // namespace canopy::ipc::services
