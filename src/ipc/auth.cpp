#include "canopy/ipc/auth.hpp"

#include <cerrno>
#include <fstream>
#include <sstream>
#include <algorithm>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/rand.h>

namespace canopy::ipc {
namespace fs = std::filesystem;

result<PeerCred> peer_credentials(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return errno_error("SO_PEERCRED", errno);
  return PeerCred{cred.pid, cred.uid, cred.gid};
}

bool in_group(uid_t uid, gid_t gid, gid_t group) {
  if (gid == group) return true;
  const passwd* pw = ::getpwuid(uid);
  if (pw == nullptr) return false;
  int n = 64;
  std::vector<gid_t> groups(static_cast<std::size_t>(n));
  if (::getgrouplist(pw->pw_name, gid, groups.data(), &n) < 0) {
    groups.resize(static_cast<std::size_t>(n));
    if (::getgrouplist(pw->pw_name, gid, groups.data(), &n) < 0) return false;
  }
  groups.resize(static_cast<std::size_t>(n));
  for (gid_t g : groups)
    if (g == group) return true;
  return false;
}

std::string TokenRegistry::issue(Identity identity) {
  unsigned char raw[16];
  if (RAND_bytes(raw, sizeof raw) != 1) throw std::runtime_error("the OpenSSL random generator failed");
  std::string token;
  for (unsigned char c : raw) token += fmt::format("{:02x}", c);
  revoke(identity.name);
  entries_.push_back({std::move(identity), token});
  return token;
}

result<void> TokenRegistry::add(Identity identity, std::string token) {
  if (token.size() < 16)
    return make_error(errc::invalid, fmt::format("the IPC token of {} is {} characters long; use at least 16",
                                                 identity.name, token.size()));
  if (auto owner = find(token); owner && owner->name != identity.name)
    return make_error(errc::invalid,
                      fmt::format("the IPC token of {} is already the token of {}", identity.name, owner->name));
  revoke(identity.name);
  entries_.push_back({std::move(identity), std::move(token)});
  return ok();
}

void TokenRegistry::revoke(std::string_view name) {
  std::erase_if(entries_, [&](const Entry& e) { return e.identity.name == name; });
}

std::optional<Identity> TokenRegistry::find(std::string_view token) const {
  std::optional<Identity> found;
  for (const Entry& e : entries_) {
    // Length is not secret (every issued token has the same length); the content is.
    if (e.token.size() == token.size() && CRYPTO_memcmp(e.token.data(), token.data(), token.size()) == 0)
      found = e.identity;
  }
  return found;
}

bool TokenRegistry::peer_allowed(const Identity& identity, const PeerCred& peer) {
  if (peer.uid == 0) return true;
  if (identity.uid && *identity.uid == peer.uid) return true;
  if (identity.gid && in_group(peer.uid, peer.gid, *identity.gid)) return true;
  return !identity.uid && !identity.gid;  // no owner recorded: the token alone decides
}

namespace {

result<void> write_token_file(const fs::path& file, const nlohmann::json& body, uid_t owner, gid_t group,
                              mode_t mode) {
  const fs::path tmp = file.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return errno_error(fmt::format("cannot write {}", tmp.string()), errno);
  const std::string text = body.dump() + "\n";
  const bool ok_write = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  const bool ok_owner = ::fchown(fd, owner, group) == 0 && ::fchmod(fd, mode) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok_write || !ok_owner) {
    ::unlink(tmp.c_str());
    return errno_error(fmt::format("cannot write {}", file.string()), err);
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) return errno_error(fmt::format("cannot write {}", file.string()), errno);
  return ok();
}

}  // namespace

result<void> write_cli_tokens(const fs::path& dir, const fs::path& socket_path, std::string_view operators_group,
                              TokenRegistry& tokens) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  for (const auto& e : fs::directory_iterator(dir, ec)) fs::remove(e.path(), ec);  // stale tokens of a previous run

  const auto write_for_uid = [&](uid_t uid) -> result<void> {
    Identity id{Identity::Kind::external, fmt::format("cli:uid:{}", uid), uid, std::nullopt};
    const std::string token = tokens.issue(id);
    const nlohmann::json body = {{"cli_auth_token", token}, {"domain_socket_path", socket_path.string()}};
    const passwd* pw = ::getpwuid(uid);
    return write_token_file(dir / std::to_string(uid), body, uid, pw ? pw->pw_gid : 0, 0600);
  };
  if (auto r = write_for_uid(0); !r) return r;
  if (::geteuid() != 0)
    if (auto r = write_for_uid(::geteuid()); !r) return r;

  if (!operators_group.empty()) {
    const std::string group_name(operators_group);
    if (const group* gr = ::getgrnam(group_name.c_str())) {
      Identity id{Identity::Kind::external, fmt::format("cli:group:{}", group_name), std::nullopt, gr->gr_gid};
      const std::string token = tokens.issue(id);
      const nlohmann::json body = {{"cli_auth_token", token}, {"domain_socket_path", socket_path.string()}};
      if (auto r = write_token_file(dir / ("group-" + group_name), body, ::geteuid(), gr->gr_gid, 0640); !r) return r;
    }
  }
  return ok();
}

result<CliConnectInfo> read_cli_token(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return make_error(errc::not_found,
                      fmt::format("{} does not exist: is canopyd running on this root? (set --root or CANOPY_ROOT)",
                                  dir.string()));
  // The folder is 0711: non-root users cannot list it, so look for the files of the user's
  // own uid and of each of its groups by name.
  std::vector<fs::path> candidates = {dir / std::to_string(::geteuid())};
  std::vector<gid_t> groups(static_cast<std::size_t>(std::max(::getgroups(0, nullptr), 0)) + 1);
  const int n = ::getgroups(static_cast<int>(groups.size() - 1), groups.data());
  groups.resize(n >= 0 ? static_cast<std::size_t>(n) : 0);
  groups.push_back(::getegid());
  for (gid_t g : groups)
    if (const group* gr = ::getgrgid(g)) candidates.push_back(dir / (std::string("group-") + gr->gr_name));
  for (const auto& file : candidates) {
    std::ifstream in(file);
    if (!in) continue;
    std::stringstream text;
    text << in.rdbuf();
    try {
      const auto j = nlohmann::json::parse(text.str());
      return CliConnectInfo{j.at("domain_socket_path").get<std::string>(), j.at("cli_auth_token").get<std::string>()};
    } catch (const nlohmann::json::exception&) {
      return make_error(errc::corrupt, fmt::format("{} is not a valid token file; restart canopyd to rewrite it",
                                                   file.string()));
    }
  }
  return make_error(errc::unauthorized,
                    fmt::format("permission denied: no token in {} is readable by uid {}; run as root or as a member "
                                "of the canopy group",
                                dir.string(), ::geteuid()));
}

}  // namespace canopy::ipc
