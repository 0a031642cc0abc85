//! The composition root: builds every module in order, runs the event loop, shuts down.
#pragma once

#include <filesystem>
#include <optional>

#include <spdlog/common.h>

namespace canopy::nucleus {

/// What canopyd's command line says. Each set field overrides the configuration file,
/// which overrides the built-in defaults.
struct Options {
  std::optional<std::filesystem::path> root;
  std::optional<std::filesystem::path> config_file;
  std::optional<spdlog::level::level_enum> log_level;
  bool foreground = false;  ///< stay attached and log to the console
};

/// Exit codes of run().
inline constexpr int kExitOk = 0;       ///< stopped cleanly (SIGTERM, SIGINT)
inline constexpr int kExitFailure = 1;  ///< could not start or failed while running
inline constexpr int kExitConfig = 2;   ///< the configuration or command line is wrong

/// Runs canopyd until SIGTERM or SIGINT. Returns an exit code (above).
/// Without `foreground`, and when not started by systemd, detaches first (the parent
/// returns once the daemon is ready, or with its start-up error).
int run(const Options& options);

}  // namespace canopy::nucleus
