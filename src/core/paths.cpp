#include "canopy/core/paths.hpp"

#include <cerrno>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace canopy {
namespace fs = std::filesystem;

namespace {

result<void> ensure_dir(const fs::path& dir, mode_t mode) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(errc::io, fmt::format("cannot create folder {}: {}", dir.string(), ec.message()));
  if (::chmod(dir.c_str(), mode) != 0) return errno_error(fmt::format("cannot set the mode of {}", dir.string()), errno);
  return ok();
}

}  // namespace

result<void> create_root_layout(const RootLayout& layout) {
  const std::pair<fs::path, mode_t> dirs[] = {
      {layout.root, 0755},
      {layout.config_dir(), 0700},
      {layout.root / "packages", 0755},
      {layout.recipes_dir(), 0755},
      {layout.artifacts_dir(), 0755},
      {layout.unarchived_dir(), 0755},
      {layout.work_dir(), 0755},
      {layout.deployments_dir(), 0700},
      {layout.spool_dir(), 0700},
      {layout.logs_dir(), 0750},
      // Per-user token files live inside; the folder only needs to be traversable.
      {layout.cli_ipc_info_dir(), 0711},
  };
  for (const auto& [dir, mode] : dirs) {
    if (auto r = ensure_dir(dir, mode); !r) return r;
  }
  return ok();
}

result<RootLock> RootLock::acquire(const RootLayout& layout) {
  const fs::path path = layout.lock_file();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno_error(fmt::format("cannot open the lock file {}", path.string()), errno);

  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  if (::fcntl(fd, F_OFD_SETLK, &fl) != 0) {
    const int err = errno;
    std::string holder = "another process";
    char buf[32] = {};
    if (::pread(fd, buf, sizeof buf - 1, 0) > 0) {
      const long pid = std::strtol(buf, nullptr, 10);
      if (pid > 0) holder = fmt::format("canopyd (pid {})", pid);
    }
    ::close(fd);
    if (err == EAGAIN || err == EACCES)
      return make_error(errc::conflict,
                        fmt::format("the root folder {} is in use by {}; stop it first or choose another --root",
                                    layout.root.string(), holder));
    return errno_error(fmt::format("cannot lock {}", path.string()), err);
  }
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    const int err = errno;
    ::close(fd);
    return errno_error(fmt::format("cannot write the lock file {}", path.string()), err);
  }
  return RootLock(fd);
}

RootLock::RootLock(RootLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

RootLock& RootLock::operator=(RootLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

RootLock::~RootLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace canopy
