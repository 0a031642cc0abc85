//! The on-disk layout under the root folder, and the lock that gives one canopyd per root.
#pragma once

#include <filesystem>
#include <string>

#include <sys/types.h>

#include "canopy/core/error.hpp"

namespace canopy {

/// Names of the folders and files under the root (DESIGN.md, "On disk").
struct RootLayout {
  std::filesystem::path root;

  std::filesystem::path config_dir() const { return root / "config"; }
  std::filesystem::path recipes_dir() const { return root / "packages" / "recipes"; }
  std::filesystem::path artifacts_dir() const { return root / "packages" / "artifacts"; }
  std::filesystem::path unarchived_dir() const { return root / "packages" / "artifacts-unarchived"; }
  std::filesystem::path work_dir() const { return root / "work"; }
  std::filesystem::path deployments_dir() const { return root / "deployments"; }
  std::filesystem::path spool_dir() const { return root / "spool"; }
  std::filesystem::path logs_dir() const { return root / "logs"; }
  std::filesystem::path cli_ipc_info_dir() const { return root / "cli_ipc_info"; }
  std::filesystem::path ipc_socket() const { return root / "ipc.socket"; }
  std::filesystem::path lock_file() const { return root / "canopyd.lock"; }
};

/// Creates the root and every folder of the layout, and sets their modes:
/// the root, packages/ and work/ 0755 (components running as other users traverse them),
/// logs/ 0750, and config/, deployments/, spool/ 0700 (secrets and state only canopyd reads).
/// Existing folders get their modes corrected. Errors: errc::io naming the path.
result<void> create_root_layout(const RootLayout& layout);

/// An exclusive lock on <root>/canopyd.lock, held for the life of the object.
/// The lock file holds the PID of the holder, so a refused start can say who holds it.
/// The lock is an OFD lock (fcntl F_OFD_SETLK): it goes away when the holder dies,
/// even by kill -9, so a stale lock file never blocks a start.
class RootLock {
 public:
  /// Errors: errc::conflict "... is in use by canopyd (pid N)" when another process holds
  /// the lock; errc::io when the file cannot be opened.
  static result<RootLock> acquire(const RootLayout& layout);

  RootLock(RootLock&& other) noexcept;
  RootLock& operator=(RootLock&& other) noexcept;
  RootLock(const RootLock&) = delete;
  RootLock& operator=(const RootLock&) = delete;
  ~RootLock();

 private:
  explicit RootLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace canopy
