// canopy deployment create|status|list|cancel: local deployments, as greengrass-cli makes them.
#include <filesystem>
#include <iostream>

#include <fmt/format.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common.hpp"
#include "deployment_args.hpp"
#include "format.hpp"
#include "progress.hpp"
#include "table.hpp"

namespace canopy::cli {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kStatusOp = "aws.greengrass#GetLocalDeploymentStatus";

/// The options of `deployment create`. Strings rather than optionals: CLI11 2.1 reports
/// presence through Option::count(), recorded in `given_*`.
struct CreateOptions {
  std::string recipe_dir, artifact_dir, update_config, group_id, failure_policy;
  std::vector<std::string> merge, remove, run_with, system_limits;
  CLI::Option* recipe_dir_opt = nullptr;
  CLI::Option* artifact_dir_opt = nullptr;
  CLI::Option* update_config_opt = nullptr;
  CLI::Option* group_id_opt = nullptr;
  CLI::Option* failure_policy_opt = nullptr;
  bool wait = false;
  int timeout_seconds = 600;
  bool notify_components = false;
  bool allow_downgrade = false;
  int notify_timeout_seconds = 60;

  CreateArgs args() const {
    CreateArgs a;
    const auto given = [](const CLI::Option* o, const std::string& v) {
      return o != nullptr && o->count() > 0 ? std::optional<std::string>(v) : std::nullopt;
    };
    a.recipe_dir = given(recipe_dir_opt, recipe_dir);
    a.artifact_dir = given(artifact_dir_opt, artifact_dir);
    a.update_config = given(update_config_opt, update_config);
    a.group_id = given(group_id_opt, group_id);
    a.failure_policy = given(failure_policy_opt, failure_policy);
    a.merge = merge;
    a.remove = remove;
    a.run_with = run_with;
    a.system_limits = system_limits;
    a.notify_components = notify_components;
    a.allow_downgrade = allow_downgrade;
    a.notify_timeout_seconds = notify_timeout_seconds;
    return a;
  }
};

/// A deployment ID given positionally or with greengrass-cli's -i/--deploymentId.
struct IdArgs {
  std::string positional, option;
};

std::optional<std::string> one_id(const IdArgs& a, std::string_view command) {
  if (!a.positional.empty() && !a.option.empty() && a.positional != a.option) {
    usage(fmt::format("{} takes one deployment ID, not two", command));
    return std::nullopt;
  }
  const auto& id = a.positional.empty() ? a.option : a.positional;
  if (id.empty()) {
    usage(fmt::format("{} needs a deployment ID (see canopy deployment list)", command));
    return std::nullopt;
  }
  return id;
}

int deployment_failure(const Error& error, const std::string& id) {
  if (error.code == errc::not_found)
    return fail(fmt::format("there is no local deployment with ID {} (see canopy deployment list)", id));
  return fail(error.message);
}

std::size_t terminal_width() {
  winsize ws{};
  if (::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

/// Polls the deployment's status every 100 ms until it is final, the deadline passes or a stop
/// signal arrives. A dropped connection (canopyd restarting) is retried until the deadline.
int wait_for_deployment(const Globals& g, std::unique_ptr<ipc::Client> client, const std::string& id,
                        std::chrono::seconds timeout) {
  catch_stop_signals();
  ProgressRenderer progress({::isatty(STDERR_FILENO) == 1, terminal_width()});
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  const auto background = fmt::format("it continues in the background: run canopy deployment status {} to follow it",
                                      id);
  nlohmann::json response;
  nlohmann::json deployment = nlohmann::json::object();
  bool reported_lost = false;
  std::chrono::milliseconds poll{5};
  for (;;) {
    if (stop_requested()) {
      std::cerr << progress.finish();
      return fail(fmt::format("stopped waiting for deployment {}; {}", id, background));
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      std::cerr << progress.finish();
      const auto status = field(deployment, "status");
      return fail(fmt::format("deployment {} did not finish within {} seconds{}; {}", id, timeout.count(),
                              status.empty() ? "" : fmt::format(" (it is {})", status), background));
    }
    if (!client) {
      auto again = connect(g);
      if (!again) {
        sleep_unless_stopped(1s);
        continue;
      }
      client = std::move(*again);
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now);
    auto r = client->call(kStatusOp, {{"deploymentId", id}}, std::min<std::chrono::milliseconds>(left, 10s));
    if (!r) {
      if (r.error().code != errc::no_connection && r.error().code != errc::timeout) {
        std::cerr << progress.finish();
        return deployment_failure(r.error(), id);
      }
      if (!reported_lost) {
        std::cerr << progress.finish() << "canopy: lost contact with canopyd (" << r.error().message
                  << "); retrying until the deadline\n";
        reported_lost = true;
      }
      client.reset();
      sleep_unless_stopped(1s);
      continue;
    }
    response = std::move(*r);
    deployment = response.value("deployment", nlohmann::json::object());
    std::cerr << progress.update(deployment, std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 std::chrono::steady_clock::now() - start))
              << std::flush;
    if (is_final_status(field(deployment, "status"))) break;
    // Poll fast at first (most local deployments end within tens of milliseconds), then
    // settle at 100 ms so a long deployment costs canopyd little.
    sleep_unless_stopped(poll);
    poll = std::min<std::chrono::milliseconds>(poll * 2, 100ms);
  }
  std::cerr << progress.finish() << std::flush;
  if (g.json) print_json(response);
  if (field(deployment, "status") == "SUCCEEDED") {
    if (!g.json) std::cout << fmt::format("Deployment {} succeeded.\n", id);
    return kExitOk;
  }
  return fail(describe_failure(deployment));
}

int cmd_create(const Globals& g, const CreateOptions& o) {
  std::error_code ec;
  auto cwd = std::filesystem::current_path(ec);
  if (ec) return fail(fmt::format("cannot read the current folder: {}", ec.message()));
  if (o.timeout_seconds < 1) return usage("--timeout must be at least 1 second");
  auto request = build_create_request(o.args(), cwd);
  if (!request) return usage(request.error().message);

  auto client = connect(g);
  if (!client) return fail(client.error().message);
  auto r = (*client)->call("aws.greengrass#CreateLocalDeployment", *request, 60s);
  if (!r) return fail(r.error().message);
  const auto id = field(*r, "deploymentId");
  if (id.empty()) return fail("canopyd accepted the deployment but returned no deployment ID");
  if (o.wait) return wait_for_deployment(g, std::move(*client), id, std::chrono::seconds(o.timeout_seconds));
  if (g.json) return print_json(*r);
  std::cout << fmt::format("Local deployment {} created.\nRun canopy deployment status {} to see its progress.\n", id,
                           id);
  return kExitOk;
}

std::vector<std::string> failure_causes(const nlohmann::json& deployment) {
  std::vector<std::string> causes;
  const auto details = deployment.value("deploymentStatusDetails", nlohmann::json::object());
  if (details.is_object() && details.contains("failureCauses") && details["failureCauses"].is_array())
    for (const auto& cause : details["failureCauses"]) {
      const auto message = field(cause, "errorMessage");
      if (!message.empty()) causes.push_back(message);
    }
  return causes;
}

int cmd_status(const Globals& g, const std::string& id) {
  auto r = call(g, kStatusOp, {{"deploymentId", id}});
  if (!r) return deployment_failure(r.error(), id);
  if (g.json) return print_json(*r);
  const auto d = r->value("deployment", nlohmann::json::object());
  const auto details = d.value("deploymentStatusDetails", nlohmann::json::object());
  std::cout << render_key_values({
      {"Deployment", field(d, "deploymentId")},
      {"Status", field(d, "status")},
      {"Detail", field(details, "detailedDeploymentStatus")},
      {"Created", format_timestamp(field(d, "createdOn"))},
      {"Message", field(d, "message")},
      {"Failure causes", join(failure_causes(d), "\n")},
  });
  if (d.contains("components") && d["components"].is_array() && !d["components"].empty()) {
    Table table({"COMPONENT", "VERSION", "STATE"});
    for (const auto& c : d["components"])
      table.add_row({field(c, "componentName"), field(c, "version"), field(c, "state")});
    std::cout << "\n" << table.render();
  }
  return kExitOk;
}

int cmd_list(const Globals& g) {
  auto r = call(g, "aws.greengrass#ListLocalDeployments", nlohmann::json::object());
  if (!r) return fail(r.error().message);
  if (g.json) return print_json(*r);
  const auto deployments = r->value("localDeployments", nlohmann::json::array());
  if (!deployments.is_array() || deployments.empty()) {
    std::cout << "There are no local deployments.\n";
    return kExitOk;
  }
  Table table({"ID", "STATUS", "CREATED", "DETAIL"});
  for (const auto& d : deployments) {
    const auto details = d.is_object() ? d.value("deploymentStatusDetails", nlohmann::json::object())
                                       : nlohmann::json::object();
    table.add_row({field(d, "deploymentId"), field(d, "status"), format_timestamp(field(d, "createdOn")),
                   field(details, "detailedDeploymentStatus")});
  }
  std::cout << table.render();
  return kExitOk;
}

int cmd_cancel(const Globals& g, const std::string& id) {
  auto r = call(g, "aws.greengrass#CancelLocalDeployment", {{"deploymentId", id}});
  if (!r) return deployment_failure(r.error(), id);
  if (g.json) return print_json(*r);
  const auto message = field(*r, "message");
  std::cout << (message.empty() ? fmt::format("Requested cancellation of deployment {}.", id) : printable(message))
            << "\n";
  return kExitOk;
}

void add_id(CLI::App* command, IdArgs& ids) {
  command->add_option("id", ids.positional, "Deployment ID");
  command->add_option("-i,--deploymentId", ids.option, "Deployment ID (greengrass-cli spelling)");
}

}  // namespace

void add_deployment_commands(CLI::App& app, Globals& g, Action& action) {
  auto* deployment = app.add_subcommand("deployment", "Create, follow, list and cancel local deployments");
  deployment->require_subcommand(1);
  deployment->footer(
      "Examples:\n"
      "  canopy deployment create --recipeDir ./recipes --artifactDir ./artifacts --merge com.example.Hello=1.0.0 "
      "--wait\n"
      "  canopy deployment list\n"
      "  canopy deployment status 4b1a7d0e-...\n"
      "  canopy deployment cancel 4b1a7d0e-...");

  auto o = std::make_shared<CreateOptions>();
  auto* create = deployment->add_subcommand(
      "create", "Deploy components from local recipes and artifacts, change their configuration, or remove them");
  o->recipe_dir_opt = create->add_option("-r,--recipeDir", o->recipe_dir,
                                         "Folder of recipes (NAME-VERSION.yaml, .yml or .json); relative to the "
                                         "current folder")
                          ->type_name("DIR");
  o->artifact_dir_opt = create->add_option("-a,--artifactDir", o->artifact_dir,
                                           "Folder of artifacts laid out as NAME/VERSION/FILE; relative to the "
                                           "current folder")
                            ->type_name("DIR");
  create->add_option("-m,--merge", o->merge, "Add or update a component to this version; repeat for more")
      ->type_name("NAME=VERSION")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  create->add_option("--remove", o->remove, "Remove a root component; repeat for more")->type_name("NAME")->expected(1)->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  o->update_config_opt =
      create
          ->add_option("-c,--update-config", o->update_config,
                       "Configuration changes as JSON, @FILE or the path of a JSON file: "
                       "{\"NAME\": {\"MERGE\": {...}, \"RESET\": [\"/pointer\", ...]}}")
          ->type_name("JSON");
  o->group_id_opt =
      create->add_option("-g,--groupId", o->group_id, "Thing group the deployment belongs to (default: the local deployments group)")
          ->type_name("GROUP");
  o->failure_policy_opt =
      create
          ->add_option("--failure-handling-policy", o->failure_policy,
                       "ROLLBACK (default) undoes a failed deployment, DO_NOTHING leaves it as it is; greengrass-cli's "
                       "-fp is accepted too")
          ->type_name("POLICY");
  create->add_option("--runWith", o->run_with, "Run a component as a POSIX user (and group); repeat for more")
      ->type_name("NAME:posixUser=USER[:GROUP]")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  create
      ->add_option("--systemLimits", o->system_limits,
                   "Memory (kilobytes) and CPU limits for a component, or greengrass-cli's JSON (inline, @FILE or a "
                   "file path): {\"NAME\": {\"memory\": KB, \"cpus\": N}}; repeat for more")
      ->type_name("NAME:memory=KB,cpus=N")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  create->add_flag("--allow-downgrade", o->allow_downgrade,
                   "Allow installing a component version lower than the one installed (refused otherwise)");
  create->add_flag("--notify-components", o->notify_components,
                   "Tell components subscribed with SubscribeToComponentUpdates before updating, and let them defer "
                   "it with DeferComponentUpdate (Greengrass's NOTIFY_COMPONENTS; local deployments skip it by default)");
  create->add_option("--notify-timeout", o->notify_timeout_seconds,
                     "With --notify-components: seconds to wait for the components' answers (default 60)")
      ->type_name("SECONDS");
  auto* wait = create->add_flag("--wait", o->wait,
                                "Wait until the deployment finishes, showing its progress on stderr; exit 0 only if "
                                "it succeeded");
  create
      ->add_option("--timeout", o->timeout_seconds,
                   "With --wait: stop waiting after this many seconds (default 600); the deployment goes on")
      ->type_name("SECONDS")
      ->needs(wait);
  add_json_flag(create, g);
  create->footer(
      "Relative folders are made absolute before they are sent, and every option is checked\n"
      "before canopyd is contacted (exit code 2 for bad input).\n\n"
      "Examples:\n"
      "  canopy deployment create -r ./recipes -a ./artifacts -m com.example.Hello=1.0.0\n"
      "  canopy deployment create -m com.example.Hello=1.1.0 --wait --timeout 120\n"
      "  canopy deployment create --remove com.example.Old\n"
      "  canopy deployment create -c '{\"com.example.Hello\": {\"MERGE\": {\"Message\": \"hi\"}, \"RESET\": "
      "[\"/Old\"]}}'\n"
      "  canopy deployment create -m com.example.Hello=1.0.0 --runWith com.example.Hello:posixUser=app:app\n"
      "  canopy deployment create -m com.example.Hello=1.0.0 --systemLimits com.example.Hello:memory=102400,cpus=0.5\n"
      "  canopy deployment create -m com.example.Hello=1.0.0 -fp DO_NOTHING");
  create->callback([&, o] { action = [&g, o] { return cmd_create(g, *o); }; });

  auto status_ids = std::make_shared<IdArgs>();
  auto* status = deployment->add_subcommand("status", "Show a local deployment's status, failure causes and components");
  add_id(status, *status_ids);
  add_json_flag(status, g);
  status->footer("Example:\n  canopy deployment status 4b1a7d0e-...");
  status->callback([&, status_ids] {
    action = [&g, status_ids] {
      const auto id = one_id(*status_ids, "deployment status");
      return id ? cmd_status(g, *id) : kExitUsage;
    };
  });

  auto* list = deployment->add_subcommand("list", "List local deployments with their statuses");
  add_json_flag(list, g);
  list->footer("Example:\n  canopy deployment list --json");
  list->callback([&] { action = [&g] { return cmd_list(g); }; });

  auto cancel_ids = std::make_shared<IdArgs>();
  auto* cancel = deployment->add_subcommand("cancel", "Cancel a local deployment that has not finished");
  add_id(cancel, *cancel_ids);
  add_json_flag(cancel, g);
  cancel->footer("Example:\n  canopy deployment cancel 4b1a7d0e-...");
  cancel->callback([&, cancel_ids] {
    action = [&g, cancel_ids] {
      const auto id = one_id(*cancel_ids, "deployment cancel");
      return id ? cmd_cancel(g, *id) : kExitUsage;
    };
  });
}

}  // namespace canopy::cli
