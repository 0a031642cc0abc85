// cgroup v2 set-up for component resource limits (see process.hpp).
#include "canopy/lifecycle/process.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <csignal>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "canopy/core/file.hpp"
#include "canopy/core/log.hpp"

namespace canopy::lifecycle {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Reads a small kernel file; nullopt (errno kept) when it cannot be opened.
std::optional<std::string> read_small(const fs::path& file) {
  auto text = read_file(file);
  if (!text) return std::nullopt;
  return std::move(*text);
}

// One write(2) of the whole value, as cgroupfs expects. Returns 0 or an errno value.
int write_value(const fs::path& file, std::string_view value) {
  const int fd = ::open(file.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ssize_t n;
  do {
    n = ::write(fd, value.data(), value.size());
  } while (n < 0 && errno == EINTR);
  const int err = n < 0 ? errno : (static_cast<std::size_t>(n) == value.size() ? 0 : EIO);
  ::close(fd);
  return err;
}

std::vector<std::string> words(std::string_view text) {
  std::vector<std::string> out;
  std::istringstream in{std::string(text)};
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mount_path(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      if (std::from_chars(s.data() + i + 1, s.data() + i + 4, v, 8).ptr == s.data() + i + 4) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

std::optional<fs::path> cgroup2_mount() {
  const auto text = read_small("/proc/self/mountinfo");
  if (!text) return std::nullopt;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    // `id parent major:minor root mountpoint options [optional...] - fstype source superoptions`
    const auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    const auto after = words(std::string_view(line).substr(sep + 3));
    if (after.empty() || after[0] != "cgroup2") continue;
    const auto before = words(std::string_view(line).substr(0, sep));
    if (before.size() < 5) continue;
    return fs::path(unescape_mount_path(before[4]));
  }
  return std::nullopt;
}

std::string join(const std::vector<std::string>& list) {
  std::string out;
  for (const auto& w : list) out += (out.empty() ? "" : " ") + w;
  return out;
}

bool valid_component_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// mkdir that accepts an existing folder. Returns 0 or an errno value.
int make_dir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST) return 0;
  return errno;
}

}  // namespace

Cgroups Cgroups::detect() {
  Cgroups out;
  const auto unavailable = [&](std::string reason) {
    out.available_ = false;
    out.reason_ = std::move(reason);
    return out;
  };

  const auto mount = cgroup2_mount();
  if (!mount) return unavailable("no cgroup2 file system is mounted (none in /proc/self/mountinfo)");

  const auto self = read_small("/proc/self/cgroup");
  if (!self) return unavailable(fmt::format("cannot read /proc/self/cgroup: {}", std::strerror(errno)));
  std::string own_rel;
  bool found = false;
  std::istringstream in(*self);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("0::", 0) == 0) {
      own_rel = line.substr(3);
      found = true;
      break;
    }
  }
  if (!found || own_rel.empty() || own_rel[0] != '/')
    return unavailable("/proc/self/cgroup has no cgroup v2 entry (0::<path>)");
  // Restarted inside the leaf a previous canopyd made (same service cgroup): use its parent.
  fs::path rel = fs::path(own_rel).lexically_normal();
  if (rel.has_filename() && rel.filename() == "canopyd") rel = rel.parent_path();
  const fs::path own = *mount / rel.relative_path();

  const fs::path controllers_file = own / "cgroup.controllers";
  const auto controllers = read_small(controllers_file);
  if (!controllers)
    return unavailable(fmt::format("cannot read {}: {}", controllers_file.string(), std::strerror(errno)));
  const auto list = words(*controllers);
  const bool memory = std::find(list.begin(), list.end(), "memory") != list.end();
  const bool cpu = std::find(list.begin(), list.end(), "cpu") != list.end();
  if (!memory || !cpu)
    return unavailable(fmt::format("the memory and cpu controllers are not available in {} (it lists: {})",
                                   controllers_file.string(), list.empty() ? std::string("none") : join(list)));

  // Moving "every process of our cgroup" out of the root cgroup would move the whole system.
  if (rel.relative_path().empty())
    return unavailable(fmt::format("canopyd runs in the root cgroup of {}, not in a delegated one; run it as a "
                                   "systemd service with Delegate=yes",
                                   mount->string()));

  const fs::path subtree = own / "cgroup.subtree_control";
  if (::access(subtree.c_str(), W_OK) != 0)
    return unavailable(fmt::format("cannot write {}: {}", subtree.string(), std::strerror(errno)));

  // cgroup v2 allows no processes in a cgroup that has controllers enabled for children, so
  // canopyd (and anything else in its cgroup) moves into the leaf <own>/canopyd first.
  const fs::path leaf = own / "canopyd";
  if (const int err = make_dir(leaf); err != 0)
    return unavailable(fmt::format("cannot create {}: {}", leaf.string(), std::strerror(err)));
  const fs::path procs = own / "cgroup.procs";
  const auto pids = read_small(procs);
  if (!pids) return unavailable(fmt::format("cannot read {}: {}", procs.string(), std::strerror(errno)));
  for (const auto& pid : words(*pids)) {
    const int err = write_value(leaf / "cgroup.procs", pid);
    if (err != 0 && err != ESRCH)
      return unavailable(
          fmt::format("cannot move pid {} into {}: {}", pid, (leaf / "cgroup.procs").string(), std::strerror(err)));
  }
  if (const int err = write_value(subtree, "+memory +cpu"); err != 0)
    return unavailable(fmt::format("cannot write \"+memory +cpu\" to {}: {}", subtree.string(), std::strerror(err)));
  const fs::path components = own / "components";
  if (const int err = make_dir(components); err != 0)
    return unavailable(fmt::format("cannot create {}: {}", components.string(), std::strerror(err)));
  const fs::path components_subtree = components / "cgroup.subtree_control";
  if (const int err = write_value(components_subtree, "+memory +cpu"); err != 0)
    return unavailable(
        fmt::format("cannot write \"+memory +cpu\" to {}: {}", components_subtree.string(), std::strerror(err)));

  out.available_ = true;
  out.reason_.clear();
  out.base_ = components;
  return out;
}

result<std::filesystem::path> Cgroups::prepare(const std::string& component, const ResourceLimits& limits) {
  if (!available_) return make_error(errc::unsupported, "resource limits are not applied: " + reason_);
  if (!valid_component_name(component))
    return make_error(errc::invalid, fmt::format("component name \"{}\" cannot name a cgroup", component));
  const fs::path dir = base_ / component;
  if (const int err = make_dir(dir); err != 0)
    return make_error(errc::io, fmt::format("cannot create {}: {}", dir.string(), std::strerror(err)));

  const std::string memory = limits.memory_bytes ? std::to_string(*limits.memory_bytes) : "max";
  std::string cpu = "max 100000";
  if (limits.cpus) {
    if (!std::isfinite(*limits.cpus) || *limits.cpus <= 0)
      return make_error(errc::invalid, fmt::format("cpus {} for {} is not a positive number", *limits.cpus, component));
    // The kernel's smallest quota is 1 ms per period.
    const double quota = std::max(1000.0, std::round(*limits.cpus * 100000.0));
    cpu = fmt::format("{} 100000", static_cast<std::uint64_t>(std::min(quota, 1e15)));
  }
  for (const auto& [file, value] : {std::pair{dir / "memory.max", memory}, std::pair{dir / "cpu.max", cpu}}) {
    if (const int err = write_value(file, value); err != 0)
      return make_error(errc::io, fmt::format("cannot write \"{}\" to {}: {}", value, file.string(), std::strerror(err)));
  }
  return dir;
}

void Cgroups::kill_and_remove(const std::string& component) {
  if (!available_ || !valid_component_name(component)) return;
  const fs::path dir = base_ / component;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return;
  const fs::path procs = dir / "cgroup.procs";

  const int err = write_value(dir / "cgroup.kill", "1");
  if (err == ENOENT) {  // kernels before 5.14: signal each member (new forks may slip through)
    if (const auto pids = read_small(procs)) {
      for (const auto& p : words(*pids)) {
        pid_t pid = 0;
        if (std::from_chars(p.data(), p.data() + p.size(), pid).ec == std::errc{} && pid > 1) ::kill(pid, SIGKILL);
      }
    }
  } else if (err != 0) {
    log::get("lifecycle")->warn("cannot write 1 to {}: {}", (dir / "cgroup.kill").string(), std::strerror(err));
  }

  const auto deadline = std::chrono::steady_clock::now() + 1s;
  for (;;) {
    const auto pids = read_small(procs);
    if (!pids || words(*pids).empty() || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(10ms);
  }
  if (::rmdir(dir.c_str()) != 0 && errno != ENOENT)
    log::get("lifecycle")->warn("cannot remove cgroup {}: {}", dir.string(), std::strerror(errno));
}

}  // namespace canopy::lifecycle
