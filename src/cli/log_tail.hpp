//! `canopy logs`: the last lines of a log file, and following it across rotations like `tail -F`.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "canopy/core/error.hpp"

namespace canopy::cli {

/// Checks a log name typed by the operator (a component name, or "canopyd"): not empty, no '/',
/// no "..", no control characters, so it can only name a file directly inside the logs folder.
/// Errors: errc::invalid.
result<void> check_log_name(std::string_view name);

/// The logs in `dir`: the NAME of every regular file NAME.log, sorted, leaving out rotated copies
/// (a name ending in .<digits> whose base name also has a log, as spdlog's canopyd.1.log).
/// An unreadable or missing folder gives an empty list.
std::vector<std::string> list_logs(const std::filesystem::path& dir);

/// An open log file that can be followed. Reads never block. Not thread-safe. Move-only; owns
/// its file descriptor.
class LogFollower {
 public:
  /// Opens `file` for reading. Errors: errc::not_found when it does not exist,
  /// errc::unauthorized when permission is denied, errc::io otherwise.
  static result<LogFollower> open(std::filesystem::path file);

  LogFollower(LogFollower&& other) noexcept;
  LogFollower& operator=(LogFollower&& other) noexcept;
  LogFollower(const LogFollower&) = delete;
  LogFollower& operator=(const LogFollower&) = delete;
  ~LogFollower();

  /// The last `n` lines of the file as it is now (a last line without '\n' counts), and moves
  /// the follow position to the end. Errors: errc::io.
  result<std::string> tail(std::size_t n);

  /// What was written since the last tail() or poll(), at most `max_bytes`. When the file was
  /// truncated, reading restarts at its beginning. When another file now sits at the path (the
  /// log was rotated: renamed away and recreated), the rest of the old file is returned first,
  /// then the new file from its beginning. A path that is missing for now is waited for. Errors:
  /// errc::io when reading fails.
  result<std::string> poll(std::size_t max_bytes = 1 << 20);

 private:
  LogFollower(std::filesystem::path file, int fd);
  result<std::string> read_new(std::size_t max_bytes);

  std::filesystem::path file_;
  int fd_ = -1;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
  std::uint64_t position_ = 0;  ///< next byte of fd_ to return
};

}  // namespace canopy::cli
