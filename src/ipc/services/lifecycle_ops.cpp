// The operations over components and local deployments:
//   ListComponents, GetComponentDetails, RestartComponent, StopComponent (greengrass-cli's,
//   policy service aws.greengrass.Cli), PauseComponent, ResumeComponent (aws.greengrass.ipc.lifecycle),
//   CreateLocalDeployment, GetLocalDeploymentStatus, ListLocalDeployments, CancelLocalDeployment
//   (aws.greengrass.Cli), SubscribeToComponentUpdates and DeferComponentUpdate (no policy, as in
//   Greengrass: a component only hears about updates and delays them).
#include <ctime>

#include "canopy/deploy/deployer.hpp"
#include "canopy/lifecycle/manager.hpp"
#include "services/common.hpp"

namespace canopy::ipc::services {
namespace {

constexpr const char* kCliService = "aws.greengrass.Cli";

IpcError unavailable() { return {ErrorShape::service, "component management is not available in this canopyd"}; }

IpcError from_error(const Error& e) {
  if (e.code == errc::not_found) return {ErrorShape::resource_not_found, e.message};
  if (e.code == errc::conflict) return {ErrorShape::conflict, e.message};
  if (e.code == errc::invalid) return {ErrorShape::invalid_arguments, e.message};
  return to_ipc_error(e);
}

nlohmann::json details(const lifecycle::ComponentInfo& i, ServiceContext& ctx) {
  nlohmann::json j{{"componentName", i.name},
                   {"version", i.version},
                   {"state", lifecycle::to_string(i.state)},
                   {"configuration", ctx.store.get(config::component_config_path(i.name)).value_or(nlohmann::json::object())}};
  // Canopy's additions (ignored by the SDKs' models).
  j["statusCode"] = i.status_code;
  j["statusReason"] = i.status_reason;
  j["pid"] = i.pid;
  j["restartCount"] = i.restart_count;
  j["recentErrors"] = i.recent_errors;
  j["paused"] = i.paused;
  j["dependencies"] = i.dependencies;
  return j;
}

std::string iso_time(std::int64_t ms) {
  const std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:03}Z", buf, ms % 1000);
}

nlohmann::json local_deployment(const deploy::Record& r, ServiceContext& ctx) {
  nlohmann::json d{{"deploymentId", r.id}, {"status", r.status}, {"createdOn", iso_time(r.created_ms)}};
  nlohmann::json details{{"detailedDeploymentStatus", r.detailed.empty() ? (r.status == "SUCCEEDED" ? "SUCCESSFUL" : "") : r.detailed}};
  if (r.status == "FAILED" || r.status == "CANCELED")
    details["failureCauses"] = nlohmann::json::array({{{"errorMessage", r.message}}});
  if (details["detailedDeploymentStatus"] == "") details.erase("detailedDeploymentStatus");
  d["deploymentStatusDetails"] = details;
  d["message"] = r.message;
  nlohmann::json comps = nlohmann::json::array();
  for (const auto& [n, v] : r.components) {
    nlohmann::json c{{"componentName", n}, {"version", v}};
    if (ctx.manager)
      if (auto st = ctx.manager->state(n)) c["state"] = lifecycle::to_string(*st);
    comps.push_back(std::move(c));
  }
  d["components"] = comps;
  return d;
}

result<std::vector<std::string>> component_resource(const Call& call) {
  auto name = required_string(call.request, "", "componentName");
  if (!name) return name.error();
  return std::vector<std::string>{*name};
}

// Restart/Stop/Pause/Resume share their shape: componentName in, an action on the manager.
void add_component_action(OperationTable& table, ServiceContext& ctx, std::string op, std::string destination,
                          std::function<result<void>(lifecycle::Manager&, const std::string&)> action,
                          std::string status_member) {
  table.add({
      .name = "aws.greengrass#" + op,
      .destination = destination,
      .resources = component_resource,
      .handle =
          [&ctx, op, action, status_member](Call& call) {
            auto name = required_string(call.request, op, "componentName");
            if (!name) return call.stream->fail(invalid(name.error().message));
            // Built-in components (canopy.LocalBroker) are not the lifecycle manager's.
            result<void> r = make_error(errc::not_found, "");
            if (ctx.builtin_component_action) r = ctx.builtin_component_action(*name, op);
            if (!r && r.error().code == errc::not_found) {
              if (!ctx.manager) return call.stream->fail(unavailable());
              r = action(*ctx.manager, *name);
            }
            if (!r) {
              if (r.error().code == errc::not_found)
                return call.stream->fail({ErrorShape::component_not_found, r.error().message});
              if (status_member.empty()) return call.stream->fail(from_error(r.error()));
              nlohmann::json body{{status_member, "FAILED"}, {"message", r.error().message}};
              return call.stream->respond(body.dump(), response_shape(op));
            }
            nlohmann::json body = nlohmann::json::object();
            if (!status_member.empty()) body = {{status_member, "SUCCEEDED"}, {"message", ""}};
            call.stream->respond(body.dump(), response_shape(op));
          },
  });
}

}  // namespace

void add_lifecycle_operations(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#ListComponents",
      .destination = kCliService,
      .handle =
          [&ctx](Call& call) {
            if (!ctx.manager) return call.stream->fail(unavailable());
            nlohmann::json list = nlohmann::json::array();
            for (const auto& i : ctx.manager->list()) list.push_back(details(i, ctx));
            if (ctx.builtin_components)
              for (const auto& i : ctx.builtin_components()) list.push_back(details(i, ctx));
            call.stream->respond(nlohmann::json{{"components", list}}.dump(), response_shape("ListComponents"));
          },
  });
  table.add({
      .name = "aws.greengrass#GetComponentDetails",
      .destination = kCliService,
      .resources = component_resource,
      .handle =
          [&ctx](Call& call) {
            if (!ctx.manager) return call.stream->fail(unavailable());
            auto name = required_string(call.request, "GetComponentDetails", "componentName");
            if (!name) return call.stream->fail(invalid(name.error().message));
            auto info = ctx.manager->get(*name);
            if (!info && ctx.builtin_components)
              for (auto& i : ctx.builtin_components())
                if (i.name == *name) info = std::move(i);
            if (!info)
              return call.stream->fail(
                  {ErrorShape::component_not_found, fmt::format("component {} is not deployed on this device", *name)});
            call.stream->respond(nlohmann::json{{"componentDetails", details(*info, ctx)}}.dump(),
                                 response_shape("GetComponentDetails"));
          },
  });
  add_component_action(
      table, ctx, "RestartComponent", kCliService,
      [](lifecycle::Manager& m, const std::string& n) { return m.restart(n); }, "restartStatus");
  add_component_action(
      table, ctx, "StopComponent", kCliService, [](lifecycle::Manager& m, const std::string& n) { return m.stop(n); },
      "stopStatus");
  add_component_action(
      table, ctx, "PauseComponent", "aws.greengrass.ipc.lifecycle",
      [](lifecycle::Manager& m, const std::string& n) { return m.pause(n); }, "");
  add_component_action(
      table, ctx, "ResumeComponent", "aws.greengrass.ipc.lifecycle",
      [](lifecycle::Manager& m, const std::string& n) { return m.resume(n); }, "");

  table.add({
      .name = "aws.greengrass#CreateLocalDeployment",
      .destination = kCliService,
      .handle =
          [&ctx](Call& call) {
            if (!ctx.deployer) return call.stream->fail(unavailable());
            auto req = deploy::parse_request(call.request);
            if (!req) return call.stream->fail(invalid(req.error().message));
            auto id = ctx.deployer->submit(*req, call.request);
            if (!id) {
              const auto& e = id.error();
              if (e.message.rfind("recipe folder", 0) == 0)
                return call.stream->fail({ErrorShape::invalid_recipe_directory_path, e.message});
              if (e.message.rfind("artifact folder", 0) == 0)
                return call.stream->fail({ErrorShape::invalid_artifacts_directory_path, e.message});
              return call.stream->fail(from_error(e));
            }
            call.stream->respond(nlohmann::json{{"deploymentId", *id}}.dump(), response_shape("CreateLocalDeployment"));
          },
  });
  table.add({
      .name = "aws.greengrass#GetLocalDeploymentStatus",
      .destination = kCliService,
      .handle =
          [&ctx](Call& call) {
            if (!ctx.deployer) return call.stream->fail(unavailable());
            auto id = required_string(call.request, "GetLocalDeploymentStatus", "deploymentId");
            if (!id) return call.stream->fail(invalid(id.error().message));
            auto r = ctx.deployer->get(*id);
            if (!r)
              return call.stream->fail({ErrorShape::resource_not_found, fmt::format("there is no deployment {}", *id)});
            call.stream->respond(nlohmann::json{{"deployment", local_deployment(*r, ctx)}}.dump(),
                                 response_shape("GetLocalDeploymentStatus"));
          },
  });
  table.add({
      .name = "aws.greengrass#ListLocalDeployments",
      .destination = kCliService,
      .handle =
          [&ctx](Call& call) {
            if (!ctx.deployer) return call.stream->fail(unavailable());
            nlohmann::json list = nlohmann::json::array();
            for (const auto& r : ctx.deployer->list()) list.push_back(local_deployment(r, ctx));
            call.stream->respond(nlohmann::json{{"localDeployments", list}}.dump(),
                                 response_shape("ListLocalDeployments"));
          },
  });
  table.add({
      .name = "aws.greengrass#CancelLocalDeployment",
      .destination = kCliService,
      .handle =
          [&ctx](Call& call) {
            if (!ctx.deployer) return call.stream->fail(unavailable());
            std::string id;
            if (auto it = call.request.find("deploymentId"); it != call.request.end() && it->is_string()) id = *it;
            if (id.empty()) {
              // Greengrass cancels the newest deployment when none is named.
              auto all = ctx.deployer->list();
              for (auto it = all.rbegin(); it != all.rend(); ++it)
                if (it->status == "QUEUED" || it->status == "IN_PROGRESS") {
                  id = it->id;
                  break;
                }
              if (id.empty()) return call.stream->fail({ErrorShape::resource_not_found, "no deployment is queued or in progress"});
            }
            auto r = ctx.deployer->cancel(id);
            if (!r) return call.stream->fail(from_error(r.error()));
            call.stream->respond(nlohmann::json{{"message", *r}}.dump(), response_shape("CancelLocalDeployment"));
          },
  });

  table.add({
      .name = "aws.greengrass#SubscribeToComponentUpdates",
      .streaming = true,
      .handle =
          [&ctx](Call& call) {
            if (call.caller.is_external())
              return call.stream->fail(invalid("SubscribeToComponentUpdates is for components; the CLI is not one"));
            auto& subs = ctx.update_subscribers[call.caller.name];
            std::erase_if(subs, [](const std::weak_ptr<StreamHandle>& w) { return w.expired(); });
            subs.push_back(call.stream);
            call.stream->respond("{}", response_shape("SubscribeToComponentUpdates"));
          },
  });
  table.add({
      .name = "aws.greengrass#DeferComponentUpdate",
      .handle =
          [&ctx](Call& call) {
            if (call.caller.is_external())
              return call.stream->fail(invalid("DeferComponentUpdate is for components; the CLI is not one"));
            std::int64_t recheck = 0;
            if (auto it = call.request.find("recheckAfterMs"); it != call.request.end()) {
              if (!it->is_number_integer() || it->get<std::int64_t>() < 0)
                return call.stream->fail(invalid("DeferComponentUpdate: \"recheckAfterMs\" must be a non-negative integer"));
              recheck = it->get<std::int64_t>();
            }
            auto& p = ctx.pending_update;
            if (!p) return call.stream->fail({ErrorShape::resource_not_found, "no component update is waiting for an answer"});
            if (auto it = call.request.find("deploymentId"); it != call.request.end() && it->is_string() &&
                                                              it->get<std::string>() != p->deployment_id)
              return call.stream->fail({ErrorShape::invalid_arguments,
                                        fmt::format("deployment {} is not the one waiting for answers ({})",
                                                    it->get<std::string>(), p->deployment_id)});
            p->defer_ms = std::max(p->defer_ms, recheck);
            p->waiting.erase(call.caller.name);
            call.stream->respond("{}", response_shape("DeferComponentUpdate"));
            if (p->waiting.empty()) {
              auto done = std::move(p->done);
              const auto defer = p->defer_ms;
              p.reset();
              if (done) done(defer);
            }
          },
  });
}

}  // namespace canopy::ipc::services

namespace canopy::ipc {

void notify_component_update(ServiceContext& ctx, const std::string& deployment_id, std::chrono::seconds timeout,
                             std::function<void(std::int64_t)> done) {
  ServiceContext::PendingUpdate p;
  p.deployment_id = deployment_id;
  p.done = std::move(done);
  const std::string event =
      nlohmann::json{{"preUpdateEvent", {{"deploymentId", deployment_id}, {"isGgcRestarting", false}}}}.dump();
  for (auto& [name, subs] : ctx.update_subscribers) {
    std::erase_if(subs, [](const std::weak_ptr<StreamHandle>& w) {
      auto s = w.lock();
      return !s || !s->is_open();
    });
    if (subs.empty()) continue;
    p.waiting.insert(name);
    for (auto& w : subs)
      if (auto s = w.lock()) s->event(event, "aws.greengrass#ComponentUpdatePolicyEvents");
  }
  if (p.waiting.empty()) {
    if (p.done) p.done(0);
    return;
  }
  ctx.pending_update = std::move(p);
  if (ctx.run_after)
    ctx.run_after(std::chrono::duration_cast<std::chrono::milliseconds>(timeout), [&ctx, deployment_id] {
      auto& pu = ctx.pending_update;
      if (!pu || pu->deployment_id != deployment_id) return;
      auto cb = std::move(pu->done);
      const auto defer = pu->defer_ms;
      pu.reset();
      if (cb) cb(defer);
    });
}

void notify_component_updated(ServiceContext& ctx, const std::string& deployment_id) {
  const std::string event = nlohmann::json{{"postUpdateEvent", {{"deploymentId", deployment_id}}}}.dump();
  for (auto& [name, subs] : ctx.update_subscribers)
    for (auto& w : subs)
      if (auto s = w.lock(); s && s->is_open()) s->event(event, "aws.greengrass#ComponentUpdatePolicyEvents");
}

}  // namespace canopy::ipc
