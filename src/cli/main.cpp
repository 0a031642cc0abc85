// canopy: the operator's command line. Talks to canopyd over its IPC socket, with the token
// canopyd leaves for the calling user in <root>/cli_ipc_info/; `logs` reads files directly.
#include <cstdio>

#include "canopy/core/version.hpp"
#include "common.hpp"
#include "format.hpp"

int main(int argc, char** argv) {
  using namespace canopy::cli;
  CLI::App app{
      "canopy - operate a Canopy gateway. Talks to canopyd on this machine over its IPC socket, using the token\n"
      "canopyd leaves for root and for the canopy group in <root>/cli_ipc_info/.\n\n"
      "Exit codes: 0 success, 1 the operation failed (the message says why), 2 bad command line.",
      "canopy"};
  app.footer(
      "Examples:\n"
      "  canopy status\n"
      "  canopy component list\n"
      "  canopy deployment create --recipeDir ./recipes --artifactDir ./artifacts --merge com.example.Hello=1.0.0 "
      "--wait\n"
      "  canopy logs com.example.Hello -f\n"
      "  canopy config get com.example.Hello Message\n"
      "  canopy sign recipes/com.example.Hello-1.0.0.yaml --key release.key\n"
      "  canopy client-device issue sensor-1 --out ./sensor-1\n\n"
      "Run canopy COMMAND --help for a command's options.");
  Globals g;
  g.root = default_root();
  bool version = false;
  app.add_flag("--version", version, "Print the version and git hash, then exit");
  app.add_option("--root", g.root, "canopyd's root folder (default: $CANOPY_ROOT, else /var/lib/canopy)");
  app.require_subcommand(0, 1);

  Action action;
  add_status_commands(app, g, action);
  add_component_commands(app, g, action);
  add_deployment_commands(app, g, action);
  add_logs_command(app, g, action);
  add_sign_commands(app, g, action);
  add_client_device_commands(app, g, action);

  std::vector<std::string> args(argv + 1, argv + argc);
  args = rewrite_greengrass_short_options(std::move(args));
  // CLI11 parses a reversed vector (it pops from the back).
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  if (version) {
    std::printf("canopy %s (git %s)\n", canopy::kVersion, canopy::kGitHash);
    return kExitOk;
  }
  if (action) return action();
  std::fputs(app.help().c_str(), stdout);
  return kExitOk;
}
