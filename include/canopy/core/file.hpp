//! Whole-file reads and crash-safe whole-file writes.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "canopy/core/error.hpp"

namespace canopy {

/// Reads a whole file (also /proc files, whose size is not known in advance).
/// Errors: errc::not_found or errc::io, `cannot read <path>: <reason>`; errno is left set to
/// the failure's value, for callers that report it themselves.
result<std::string> read_file(const std::filesystem::path& path);

/// Replaces `path` with `text` so that a crash at any moment leaves either the old content or
/// the new one: write `<path>.tmp` (mode `mode`), fsync, rename over `path`, fsync the folder.
/// Errors: errc::io naming the file and the step that failed; the .tmp file is removed.
result<void> write_file_atomically(const std::filesystem::path& path, std::string_view text, mode_t mode = 0600);

}  // namespace canopy
