// canopy component list|details|restart|stop|pause|resume: the lifecycle operations of the
// Greengrass IPC model, called with the CLI token.
#include <algorithm>
#include <iostream>

#include <fmt/format.h>

#include "common.hpp"
#include "format.hpp"
#include "table.hpp"

namespace canopy::cli {
namespace {

struct ComponentArgs {
  std::vector<std::string> names;  ///< positional
  std::string names_option;        ///< greengrass-cli's -n/--names a,b (or --name for details)
};

/// The component names from the positional arguments and greengrass-cli's comma- or
/// ampersand-separated -n/--names, in order, without duplicates or blanks.
std::vector<std::string> collect_names(const ComponentArgs& args) {
  std::vector<std::string> names;
  const auto add = [&](std::string name) {
    const auto first = name.find_first_not_of(' ');
    const auto last = name.find_last_not_of(' ');
    if (first == std::string::npos) return;
    name = name.substr(first, last - first + 1);
    if (std::find(names.begin(), names.end(), name) == names.end()) names.push_back(std::move(name));
  };
  for (const auto& name : args.names) add(name);
  std::string current;
  for (char c : args.names_option) {
    if (c == ',' || c == '&') {
      add(std::move(current));
      current.clear();
    } else {
      current += c;
    }
  }
  add(std::move(current));
  return names;
}

int component_failure(const Error& error, const std::string& name) {
  if (error.code == errc::not_found)
    return fail(fmt::format("component {} is not deployed on this device (see canopy component list)", name));
  return fail(error.message);
}

int cmd_list(const Globals& g) {
  auto r = call(g, "aws.greengrass#ListComponents", nlohmann::json::object());
  if (!r) return fail(r.error().message);
  if (g.json) return print_json(*r);
  std::vector<nlohmann::json> components;
  if (r->contains("components") && (*r)["components"].is_array())
    components.assign((*r)["components"].begin(), (*r)["components"].end());
  if (components.empty()) {
    std::cout << "No components are deployed on this device.\n";
    return kExitOk;
  }
  std::sort(components.begin(), components.end(), [](const auto& a, const auto& b) {
    return field(a, "componentName") < field(b, "componentName");
  });
  Table table({"NAME", "VERSION", "STATE", "REASON"});
  for (const auto& c : components)
    table.add_row({field(c, "componentName"), field(c, "version"), field(c, "state"), field(c, "statusReason")});
  table.drop_empty_column("REASON");
  std::cout << table.render();
  return kExitOk;
}

int cmd_details(const Globals& g, const std::string& name) {
  auto r = call(g, "aws.greengrass#GetComponentDetails", {{"componentName", name}});
  if (!r) return component_failure(r.error(), name);
  if (g.json) return print_json(*r);
  const auto details = r->value("componentDetails", nlohmann::json::object());
  const auto strings = [&](const char* key) {
    std::vector<std::string> out;
    if (details.contains(key) && details[key].is_array())
      for (const auto& v : details[key]) out.push_back(v.is_string() ? v.get<std::string>() : v.dump());
    return out;
  };
  // Canopy's extras: a pid of 0 means no process runs; recentErrors is a count (or a list).
  const auto pid = field(details, "pid");
  const bool paused = details.contains("paused") && details["paused"].is_boolean() && details["paused"].get<bool>();
  const auto recent = details.contains("recentErrors") && details["recentErrors"].is_array()
                          ? join(strings("recentErrors"), "\n")
                          : field(details, "recentErrors");
  std::cout << render_key_values({
      {"Name", field(details, "componentName")},
      {"Version", field(details, "version")},
      {"State", field(details, "state")},
      {"Reason", field(details, "statusReason")},
      {"Paused", paused ? "yes" : ""},
      {"PID", pid == "0" ? "" : pid},
      {"Restarts", field(details, "restartCount")},
      {"Dependencies", join(strings("dependencies"), ", ")},
      {"Recent errors", recent == "0" ? "" : recent},
  });
  const auto configuration = details.value("configuration", nlohmann::json::object());
  std::cout << "Configuration:\n" << indent(configuration.dump(2), 2) << "\n";
  return kExitOk;
}

/// Restart or stop: {"<verb>Status": "SUCCEEDED"|"FAILED", "message": ...}.
int cmd_restart_or_stop(const Globals& g, const std::vector<std::string>& names, bool restart) {
  const std::string_view operation = restart ? "aws.greengrass#RestartComponent" : "aws.greengrass#StopComponent";
  const std::string_view status_key = restart ? "restartStatus" : "stopStatus";
  const std::string_view verb = restart ? "restart" : "stop";
  int code = kExitOk;
  for (const auto& name : names) {
    auto r = call(g, operation, {{"componentName", name}}, std::chrono::seconds(60));
    if (!r) {
      code = component_failure(r.error(), name);
      continue;
    }
    const auto status = field(*r, status_key);
    const auto message = field(*r, "message");
    if (status != "SUCCEEDED") {
      code = fail(fmt::format("could not {} {}: {}", verb, name,
                              message.empty() ? fmt::format("canopyd answered {}", status.empty() ? "nothing" : status)
                                              : printable(message)));
      continue;
    }
    std::cout << fmt::format("Requested a {} of {}.\n", verb, name);
  }
  return code;
}

int cmd_pause_or_resume(const Globals& g, const std::string& name, bool pause) {
  auto r = call(g, pause ? "aws.greengrass#PauseComponent" : "aws.greengrass#ResumeComponent",
                {{"componentName", name}});
  if (!r) return component_failure(r.error(), name);
  std::cout << fmt::format("{} {}.\n", pause ? "Paused" : "Resumed", name);
  return kExitOk;
}

}  // namespace

void add_component_commands(CLI::App& app, Globals& g, Action& action) {
  auto* component = app.add_subcommand("component", "List, inspect, restart, stop, pause and resume components");
  component->require_subcommand(1);
  component->footer(
      "Examples:\n"
      "  canopy component list\n"
      "  canopy component details com.example.Hello\n"
      "  canopy component restart com.example.Hello\n"
      "  canopy component stop -n com.example.A,com.example.B");
  auto args = std::make_shared<ComponentArgs>();

  auto* list = component->add_subcommand("list", "List the components on this device with their versions and states");
  add_json_flag(list, g);
  list->footer("Example:\n  canopy component list --json");
  list->callback([&] { action = [&g] { return cmd_list(g); }; });

  // Positional NAME, or greengrass-cli's -n/--name(s); exactly one name where one is expected.
  const auto one_name = [args](const char* verb) -> std::optional<std::string> {
    const auto names = collect_names(*args);
    if (names.size() == 1) return names.front();
    usage(names.empty() ? fmt::format("{} needs a component name", verb)
                        : fmt::format("{} takes one component name, not {}", verb, names.size()));
    return std::nullopt;
  };

  auto* details = component->add_subcommand("details", "Show a component's version, state and configuration");
  details->add_option("name", args->names, "Component name");
  details->add_option("-n,--name", args->names_option, "Component name (greengrass-cli spelling)");
  add_json_flag(details, g);
  details->footer("Examples:\n  canopy component details com.example.Hello\n"
                  "  canopy component details com.example.Hello --json");
  details->callback([&, one_name] {
    action = [&g, one_name] {
      const auto name = one_name("component details");
      return name ? cmd_details(g, *name) : kExitUsage;
    };
  });

  for (const bool restart : {true, false}) {
    auto* command = component->add_subcommand(
        restart ? "restart" : "stop",
        restart ? "Restart components (their shutdown, then install and startup or run again)"
                : "Stop components; they stay deployed, and component restart starts them again");
    command->add_option("names", args->names, "Component names");
    command->add_option("-n,--names", args->names_option, "Comma-separated component names (greengrass-cli spelling)");
    command->footer(restart ? "Examples:\n  canopy component restart com.example.Hello\n"
                              "  canopy component restart -n com.example.A,com.example.B"
                            : "Examples:\n  canopy component stop com.example.Hello");
    command->callback([&, args, restart] {
      action = [&g, args, restart] {
        const auto names = collect_names(*args);
        if (names.empty()) return usage(fmt::format("component {} needs a component name", restart ? "restart" : "stop"));
        return cmd_restart_or_stop(g, names, restart);
      };
    });
  }

  for (const bool pause : {true, false}) {
    auto* command = component->add_subcommand(
        pause ? "pause" : "resume",
        pause ? "Pause a component's processes; they keep their state until resumed" : "Resume a paused component");
    command->add_option("name", args->names, "Component name")->required();
    command->footer(pause ? "Example:\n  canopy component pause com.example.Hello"
                          : "Example:\n  canopy component resume com.example.Hello");
    command->callback([&, one_name, pause] {
      action = [&g, one_name, pause] {
        const auto name = one_name(pause ? "component pause" : "component resume");
        return name ? cmd_pause_or_resume(g, *name, pause) : kExitUsage;
      };
    });
  }
}

}  // namespace canopy::cli
