// canopy: the operator's command line. Talks to canopyd over its IPC socket.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "canopy/core/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"canopy - operate a Canopy gateway (talks to canopyd on this machine).", "canopy"};
  bool version = false;
  app.add_flag("--version", version, "Print the version and git hash, then exit");
  app.require_subcommand(0, 1);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  if (version) {
    std::printf("canopy %s (git %s)\n", canopy::kVersion, canopy::kGitHash);
    return 0;
  }
  std::fputs(app.help().c_str(), stdout);
  return 0;
}
