// aws.greengrass#UpdateConfiguration: merge into the caller's own configuration.
#include <cmath>

#include "services/common.hpp"

namespace canopy::ipc::services {

namespace {

// Shared with canopy#UpdateConfiguration (the CLI's variant, which names the component).
void merge_configuration(ServiceContext& ctx, Call& call, const std::string& component, std::string_view op,
                         std::string_view shape) {
  auto path = key_path(call.request, op);
  if (!path) {
    call.stream->fail(invalid(path.error().message));
    return;
  }
  const auto value = call.request.find("valueToMerge");
  if (value == call.request.end() || value->is_null()) {
    call.stream->fail(invalid(fmt::format("{}: \"valueToMerge\" is required", op)));
    return;
  }
  if (!value->is_object() && path->empty()) {
    call.stream->fail(invalid(fmt::format("{}: \"valueToMerge\" must be an object when \"keyPath\" is empty", op)));
    return;
  }
  // Greengrass sends the timestamp as epoch seconds (fractional). Absent: now.
  std::int64_t ts = now_ms();
  if (const auto t = call.request.find("timestamp"); t != call.request.end() && !t->is_null()) {
    if (!t->is_number() || t->get<double>() < 0) {
      call.stream->fail(invalid(fmt::format("{}: \"timestamp\" must be epoch seconds", op)));
      return;
    }
    ts = std::llround(t->get<double>() * 1000.0);
  }
  const config::KeyPath at = concat(config::component_config_path(component), *path);
  if (ts < ctx.store.timestamp(at)) {
    call.stream->fail({ErrorShape::failed_update_condition_check,
                       fmt::format("{}: the proposed timestamp is older than the configuration's latest change", op)});
    return;
  }
  if (auto r = ctx.store.merge(at, *value, ts); !r) {
    call.stream->fail(to_ipc_error(r.error()));
    return;
  }
  call.stream->respond("{}", shape);
}

}  // namespace

void add_update_configuration(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#UpdateConfiguration",
      .handle =
          [&ctx](Call& call) {
            if (call.caller.is_external()) {
              call.stream->fail(invalid("UpdateConfiguration changes the caller's own configuration; the CLI uses "
                                        "canopy#UpdateConfiguration with a componentName"));
              return;
            }
            merge_configuration(ctx, call, call.caller.name, "UpdateConfiguration",
                                response_shape("UpdateConfiguration"));
          },
  });
}

void add_canopy_update_configuration(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "canopy#UpdateConfiguration",
      .external_only = true,
      .handle =
          [&ctx](Call& call) {
            auto component = target_component(call, "UpdateConfiguration");
            if (!component) {
              call.stream->fail(invalid(component.error().message));
              return;
            }
            // Components that validate their configuration get a say first, as in a deployment.
            auto proposed = ctx.store.get(config::component_config_path(*component)).value_or(nlohmann::json::object());
            auto path = key_path(call.request, "UpdateConfiguration");
            const auto value = call.request.find("valueToMerge");
            if (path && value != call.request.end() && !value->is_null()) {
              nlohmann::json* node = &proposed;
              for (const auto& k : *path) {
                if (!node->is_object()) *node = nlohmann::json::object();
                node = &(*node)[k];
              }
              if (node->is_object() && value->is_object())
                node->merge_patch(*value);
              else
                *node = *value;
            }
            const std::string deployment = fmt::format("cli-{}", now_ms());
            validate_configuration(
                ctx, *component, proposed, deployment,
                [&ctx, call, component = *component](bool accepted, std::string message) mutable {
                  if (!accepted) {
                    call.stream->fail({ErrorShape::conflict,
                                       fmt::format("{} rejected the configuration: {}", component, message)});
                    return;
                  }
                  merge_configuration(ctx, call, component, "UpdateConfiguration", "canopy#UpdateConfigurationResponse");
                });
          },
  });
}

}  // namespace canopy::ipc::services
