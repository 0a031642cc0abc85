#include "log_tail.hpp"

#include <algorithm>
#include <cerrno>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace canopy::cli {
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kBlock = 64 * 1024;

bool all_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

/// Reads up to `size` bytes at `offset`; short only at end of file.
result<std::string> read_at(int fd, std::uint64_t offset, std::size_t size, const fs::path& file) {
  std::string data(size, '\0');
  std::size_t done = 0;
  while (done < size) {
    const auto n = ::pread(fd, data.data() + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(fmt::format("cannot read {}", file.string()), errno);
    if (n == 0) break;
    done += static_cast<std::size_t>(n);
  }
  data.resize(done);
  return data;
}

}  // namespace

result<void> check_log_name(std::string_view name) {
  if (name.empty()) return make_error(errc::invalid, "the log name is empty");
  if (name.find('/') != std::string_view::npos || name.find("..") != std::string_view::npos)
    return make_error(errc::invalid,
                      fmt::format("\"{}\" is not a log name: it must not contain / or ..", name));
  if (std::any_of(name.begin(), name.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; }))
    return make_error(errc::invalid, "the log name contains control characters");
  return ok();
}

std::vector<std::string> list_logs(const fs::path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const auto file = it->path().filename().string();
    if (file.size() <= 4 || !file.ends_with(".log") || !it->is_regular_file(ec)) continue;
    names.push_back(file.substr(0, file.size() - 4));
  }
  std::sort(names.begin(), names.end());
  std::vector<std::string> logs;
  for (const auto& name : names) {
    const auto dot = name.rfind('.');
    if (dot != std::string::npos && all_digits(std::string_view(name).substr(dot + 1)) &&
        std::binary_search(names.begin(), names.end(), name.substr(0, dot)))
      continue;
    logs.push_back(name);
  }
  return logs;
}

result<LogFollower> LogFollower::open(fs::path file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return make_error(errc::not_found, fmt::format("{} does not exist", file.string()));
    if (err == EACCES)
      return make_error(errc::unauthorized, fmt::format("cannot read {}: permission denied", file.string()));
    return errno_error(fmt::format("cannot open {}", file.string()), err);
  }
  return LogFollower(std::move(file), fd);
}

LogFollower::LogFollower(fs::path file, int fd) : file_(std::move(file)), fd_(fd) {
  struct stat st {};
  if (::fstat(fd_, &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
}

LogFollower::LogFollower(LogFollower&& other) noexcept
    : file_(std::move(other.file_)),
      fd_(std::exchange(other.fd_, -1)),
      dev_(other.dev_),
      ino_(other.ino_),
      position_(other.position_) {}

LogFollower& LogFollower::operator=(LogFollower&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    file_ = std::move(other.file_);
    fd_ = std::exchange(other.fd_, -1);
    dev_ = other.dev_;
    ino_ = other.ino_;
    position_ = other.position_;
  }
  return *this;
}

LogFollower::~LogFollower() {
  if (fd_ >= 0) ::close(fd_);
}

result<std::string> LogFollower::tail(std::size_t n) {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return errno_error(fmt::format("cannot read {}", file_.string()), errno);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  position_ = size;
  if (n == 0 || size == 0) return std::string();

  // Walk back block by block counting line ends. The newline that ends the file closes the
  // last line rather than starting another one, so it is not counted.
  std::uint64_t start = 0;
  std::size_t found = 0;
  std::uint64_t block_end = size;
  bool done = false;
  while (block_end > 0 && !done) {
    const std::uint64_t block_start = block_end > kBlock ? block_end - kBlock : 0;
    auto block = read_at(fd_, block_start, static_cast<std::size_t>(block_end - block_start), file_);
    if (!block) return std::move(block).error();
    for (std::size_t i = block->size(); i-- > 0;) {
      const std::uint64_t at = block_start + i;
      if ((*block)[i] != '\n' || at + 1 == size) continue;
      if (++found == n) {
        start = at + 1;
        done = true;
        break;
      }
    }
    block_end = block_start;
  }
  return read_at(fd_, start, static_cast<std::size_t>(size - start), file_);
}

result<std::string> LogFollower::read_new(std::size_t max_bytes) {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return errno_error(fmt::format("cannot read {}", file_.string()), errno);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < position_) position_ = 0;  // truncated in place (copytruncate): start over
  if (size == position_) return std::string();
  auto data = read_at(fd_, position_, static_cast<std::size_t>(std::min<std::uint64_t>(size - position_, max_bytes)),
                      file_);
  if (data) position_ += data->size();
  return data;
}

result<std::string> LogFollower::poll(std::size_t max_bytes) {
  auto data = read_new(max_bytes);
  if (!data || !data->empty()) return data;

  // Nothing new in the open file: has the log been rotated?
  struct stat st {};
  if (::stat(file_.c_str(), &st) != 0 || (st.st_dev == dev_ && st.st_ino == ino_)) return data;
  const int fd = ::open(file_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return data;  // replaced by something unreadable for now; try again next poll
  // Whatever reached the old file after the read above still belongs before the new file:
  // return it now and switch on a later poll.
  auto rest = read_new(max_bytes);
  if (!rest || !rest->empty()) {
    ::close(fd);
    return rest;
  }
  ::close(fd_);
  fd_ = fd;
  position_ = 0;
  struct stat now {};
  if (::fstat(fd_, &now) == 0) {
    dev_ = now.st_dev;
    ino_ = now.st_ino;
  }
  return read_new(max_bytes);
}

}  // namespace canopy::cli
