//! Logging setup: one spdlog logger per module, console and/or a rotated, size-capped file.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string_view>

#include <spdlog/spdlog.h>

#include "canopy/core/error.hpp"

namespace canopy::log {

enum class Format { text, json };

/// Where and how log lines go. Applied to every module logger at once.
struct Settings {
  spdlog::level::level_enum level = spdlog::level::info;
  Format format = Format::text;
  bool console = true;                  ///< lines on stderr
  std::filesystem::path file;           ///< empty: no log file
  std::size_t max_file_bytes = 10u << 20;  ///< one file's size before rotation
  std::size_t max_files = 5;               ///< files kept, current one included (>= 1)
};

/// (Re)configures logging. May be called again at any time (SIGHUP); existing module
/// loggers keep working and pick up the new sinks, level and format.
/// The disk use of `file` and its rotated copies never exceeds max_file_bytes * max_files.
/// Errors: errc::io when the log file cannot be opened (the previous setup stays).
/// Thread-safe.
result<void> configure(const Settings& settings);

/// The logger of one module (`core`, `nucleus`, `ipc`, ...), created on first use.
/// Thread-safe; the returned logger lives until shutdown().
std::shared_ptr<spdlog::logger> get(std::string_view module);

/// Flushes every sink. Call before exit.
void flush();

/// Parses a level name (trace, debug, info, warn, error, critical, off).
result<spdlog::level::level_enum> parse_level(std::string_view name);

/// Names the calling thread as `top -H`, `ps -L`, perf and gdb show it, so an operator can
/// tell which part of canopyd uses the CPU. Linux keeps at most 15 characters; longer names
/// are cut. Best effort: a failure changes nothing else.
void name_this_thread(std::string_view name);

}  // namespace canopy::log
