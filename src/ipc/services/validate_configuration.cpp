// aws.greengrass#SubscribeToValidateConfigurationUpdates and
// aws.greengrass#SendConfigurationValidityReport: components vet a proposed configuration
// before it is applied.
#include <memory>
#include <set>

#include "services/common.hpp"

namespace canopy::ipc::services {

void add_subscribe_to_validate_configuration_updates(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#SubscribeToValidateConfigurationUpdates",
      .streaming = true,
      .handle =
          [&ctx](Call& call) {
            if (call.caller.is_external()) {
              call.stream->fail(invalid("SubscribeToValidateConfigurationUpdates is for components"));
              return;
            }
            ctx.validators[call.caller.name].push_back(call.stream);
            call.stream->respond("{}", response_shape("SubscribeToValidateConfigurationUpdates"));
            call.stream->on_close([&ctx, name = call.caller.name] {
              auto& list = ctx.validators[name];
              std::erase_if(list, [](const std::weak_ptr<StreamHandle>& w) {
                auto s = w.lock();
                return !s || !s->is_open();
              });
              if (list.empty()) ctx.validators.erase(name);
            });
          },
  });
}

void add_send_configuration_validity_report(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#SendConfigurationValidityReport",
      .handle =
          [&ctx](Call& call) {
            const auto report = call.request.find("configurationValidityReport");
            if (report == call.request.end() || !report->is_object() || !report->contains("status") ||
                !report->at("status").is_string()) {
              call.stream->fail(invalid(
                  "SendConfigurationValidityReport: \"configurationValidityReport\" with a \"status\" is required"));
              return;
            }
            const std::string status = report->at("status").get<std::string>();
            if (status != "ACCEPTED" && status != "REJECTED") {
              call.stream->fail(invalid("SendConfigurationValidityReport: status must be ACCEPTED or REJECTED"));
              return;
            }
            const std::string deployment = report->value("deploymentId", std::string());
            const auto pending = ctx.pending_validations.find(deployment);
            if (pending == ctx.pending_validations.end()) {
              call.stream->fail({ErrorShape::invalid_arguments,
                                 fmt::format("SendConfigurationValidityReport: no validation is waiting for "
                                             "deploymentId \"{}\" (it may have timed out)",
                                             deployment)});
              return;
            }
            auto cb = pending->second;
            call.stream->respond("{}", response_shape("SendConfigurationValidityReport"));
            cb(status == "ACCEPTED",
               fmt::format("{}: {}", call.caller.name, report->value("message", std::string("no message"))));
          },
  });
}

}  // namespace canopy::ipc::services

namespace canopy::ipc {

void validate_configuration(ServiceContext& ctx, const std::string& component, const nlohmann::json& configuration,
                            const std::string& deployment_id, std::function<void(bool, std::string)> done) {
  std::vector<std::shared_ptr<StreamHandle>> streams;
  if (const auto it = ctx.validators.find(component); it != ctx.validators.end())
    for (const auto& w : it->second)
      if (auto s = w.lock(); s && s->is_open()) streams.push_back(std::move(s));
  if (streams.empty()) {
    done(true, "no component validates this configuration");
    return;
  }
  // Every report must say ACCEPTED; the first REJECTED or the deadline decides otherwise.
  struct State {
    std::size_t waiting;
    bool finished = false;
    std::function<void(bool, std::string)> done;
  };
  auto state = std::make_shared<State>(State{streams.size(), false, std::move(done)});
  ctx.pending_validations[deployment_id] = [&ctx, state, deployment_id](bool accepted, std::string message) {
    if (state->finished) return;
    if (!accepted || --state->waiting == 0) {
      state->finished = true;
      ctx.pending_validations.erase(deployment_id);
      state->done(accepted, std::move(message));
    }
  };
  const nlohmann::json event = {
      {"validateConfigurationUpdateEvent", {{"configuration", configuration}, {"deploymentId", deployment_id}}}};
  const std::string body = event.dump();
  for (auto& s : streams) s->event(body, "aws.greengrass#ValidateConfigurationUpdateEvents");
  if (ctx.run_after) {
    ctx.run_after(ctx.validation_timeout, [&ctx, state, deployment_id] {
      if (state->finished) return;
      state->finished = true;
      ctx.pending_validations.erase(deployment_id);
      state->done(false, fmt::format("no validity report within {} ms", ctx.validation_timeout.count()));
    });
  }
}

}  // namespace canopy::ipc
