#include "canopy/core/file.hpp"

#include <cerrno>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace canopy {
namespace fs = std::filesystem;

result<std::string> read_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    auto e = errno_error(fmt::format("cannot read {}", path.string()), err);
    if (err == ENOENT) e.code = errc::not_found;
    errno = err;
    return e;
  }
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      text.append(buf, static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      errno = err;
      return errno_error(fmt::format("cannot read {}", path.string()), err);
    }
    break;
  }
  ::close(fd);
  return text;
}

result<void> write_file_atomically(const fs::path& path, std::string_view text, mode_t mode) {
  const fs::path tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return errno_error(fmt::format("cannot create {}", tmp.string()), errno);
  ::fchmod(fd, mode);  // an older .tmp may have had another mode
  const auto fail = [&](const char* what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return errno_error(fmt::format("cannot {} {}", what, tmp.string()), err);
  };
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write", n < 0 ? errno : EIO);
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("fsync", errno);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return errno_error(fmt::format("cannot rename {} to {}", tmp.string(), path.string()), err);
  }
  // The rename itself is durable once the folder is synced.
  const fs::path parent = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (const int dfd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return ok();
}

}  // namespace canopy
