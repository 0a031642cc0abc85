// canopyd: parses the command line into nucleus::Options and hands over to the nucleus.
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>

#include "canopy/core/log.hpp"
#include "canopy/core/version.hpp"
#include "canopy/nucleus/nucleus.hpp"

int main(int argc, char** argv) {
  CLI::App app{
      "canopyd - the Canopy edge gateway daemon.\n"
      "Runs components from Greengrass-style recipes, serves the component IPC socket, and keeps\n"
      "cloud-bound messages in a durable spool.\n\n"
      "Settings come from the command line first, then the configuration file (--config), then\n"
      "built-in defaults. Without --config, canopyd runs on built-in defaults alone.\n\n"
      "Exit codes: 0 stopped cleanly, 1 failed to start or failed while running,\n"
      "2 bad command line or configuration.",
      "canopyd"};
  canopy::nucleus::Options options;
  std::string root, config_file, level;
  bool version = false;
  app.add_option("--root", root, "Root folder for all state (default: system.rootPath, else /var/lib/canopy)");
  app.add_option("--config", config_file, "YAML configuration file (default: none; built-in defaults)");
  app.add_option("--log-level", level, "trace, debug, info, warn or error (default: logging.level, else info)");
  app.add_flag("--foreground", options.foreground,
               "Stay attached to the terminal and log to the console as well as to the log file");
  app.add_flag("--version", version, "Print the version and git hash, then exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return canopy::nucleus::kExitConfig;
  }
  if (version) {
    std::printf("canopyd %s (git %s)\n", canopy::kVersion, canopy::kGitHash);
    return 0;
  }
  if (!root.empty()) options.root = root;
  if (!config_file.empty()) options.config_file = config_file;
  if (!level.empty()) {
    auto parsed = canopy::log::parse_level(level);
    if (!parsed) {
      std::cerr << "canopyd: --log-level: " << parsed.error().message << "\n";
      return canopy::nucleus::kExitConfig;
    }
    options.log_level = *parsed;
  }
  return canopy::nucleus::run(options);
}
