// A component's own log file, size-capped by rotation (see process.hpp).
#include "canopy/lifecycle/process.hpp"

#include <cerrno>
#include <chrono>
#include <ctime>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace canopy::lifecycle {
namespace {

int open_log(const std::filesystem::path& file, int extra_flags) {
  int fd;
  do {
    fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | extra_flags, 0640);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// `2026-11-30T07:42:00.123Z`: UTC with milliseconds, like canopyd's own log.
std::string timestamp() {
  const auto now = std::chrono::system_clock::now();
  const auto secs = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  ::gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
}

std::string_view level_name(ComponentLog::Level level) {
  switch (level) {
    case ComponentLog::Level::info: return "INFO";
    case ComponentLog::Level::warn: return "WARN";
    case ComponentLog::Level::error: return "ERROR";
  }
  return "INFO";
}

std::filesystem::path numbered(const std::filesystem::path& file, std::uint32_t n) {
  return std::filesystem::path(file.string() + "." + std::to_string(n));
}

}  // namespace

result<std::shared_ptr<ComponentLog>> ComponentLog::open(const std::filesystem::path& file,
                                                         std::uint64_t max_file_bytes, std::uint32_t max_files) {
  if (max_file_bytes == 0 || max_files == 0)
    return make_error(errc::invalid, fmt::format("log {}: the size limit and the number of files must be at least 1",
                                                 file.string()));
  std::shared_ptr<ComponentLog> log(new ComponentLog());
  log->path_ = file;
  log->max_file_bytes_ = max_file_bytes;
  log->max_files_ = max_files;
  log->fd_ = open_log(file, 0);
  if (log->fd_ < 0) return errno_error(fmt::format("cannot open component log {}", file.string()), errno);
  struct stat st{};
  if (::fstat(log->fd_, &st) == 0) log->size_ = static_cast<std::uint64_t>(st.st_size);
  return log;
}

ComponentLog::~ComponentLog() {
  if (fd_ >= 0) ::close(fd_);
}

void ComponentLog::line(Level level, std::string_view source, std::string_view text) {
  std::string out = fmt::format("{} [{}] ({}) ", timestamp(), level_name(level), source);
  out.append(text);
  // One record per line, whatever the caller passed.
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  if (out.size() + 1 > max_file_bytes_) out.resize(static_cast<std::size_t>(max_file_bytes_ - 1));
  out.push_back('\n');

  if (fd_ >= 0 && size_ > 0 && size_ + out.size() > max_file_bytes_) rotate();
  if (fd_ < 0) {  // a failed rotation or reopen: try again now
    fd_ = open_log(path_, O_TRUNC);
    size_ = 0;
    if (fd_ < 0) {
      ++write_errors_;
      return;
    }
  }

  const char* p = out.data();
  std::size_t left = out.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // full disk and the like: count it, drop the rest of the line
      ++write_errors_;
      return;
    }
    p += n;
    left -= static_cast<std::size_t>(n);
    size_ += static_cast<std::uint64_t>(n);
  }
}

void ComponentLog::rotate() {
  ::close(fd_);
  fd_ = -1;
  size_ = 0;
  if (max_files_ > 1) {
    // .log.(n-2) -> .log.(n-1) (replacing the oldest) ... .log -> .log.1; missing ones are
    // simply skipped.
    for (std::uint32_t n = max_files_ - 1; n >= 2; --n) ::rename(numbered(path_, n - 1).c_str(), numbered(path_, n).c_str());
    if (::rename(path_.c_str(), numbered(path_, 1).c_str()) != 0 && errno != ENOENT) ++write_errors_;
  }
  // With max_files == 1 the one file is truncated in place.
  fd_ = open_log(path_, O_TRUNC);
  if (fd_ < 0) ++write_errors_;
}

}  // namespace canopy::lifecycle
