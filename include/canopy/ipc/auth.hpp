//! IPC authentication: per-identity random tokens (SVCUID), peer credential checks, and the
//! token files external clients (the CLI) read from <root>/cli_ipc_info/.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "canopy/core/error.hpp"

namespace canopy::ipc {

/// Who is on the other end of an IPC connection.
struct Identity {
  enum class Kind { component, external };
  Kind kind = Kind::component;
  /// Component name (`com.example.Hello`), or for external clients `cli:uid:<n>` /
  /// `cli:group:<name>`.
  std::string name;
  /// Components: the uid the component runs as, when known; the peer must be it or root.
  /// External clients: the uid the token was issued to.
  std::optional<uid_t> uid;
  /// External clients: the group the token was issued to; the peer must belong to it.
  std::optional<gid_t> gid;

  bool is_external() const { return kind == Kind::external; }
};

/// The credentials of a connected peer (SO_PEERCRED).
struct PeerCred {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};

/// Reads SO_PEERCRED of a connected Unix socket. Errors: errc::io.
result<PeerCred> peer_credentials(int fd);

/// True if `uid` (or its primary gid `gid`) belongs to group `group`, looking at the
/// supplementary groups of the user too.
bool in_group(uid_t uid, gid_t gid, gid_t group);

/// Every token that may connect, and whose it is. Not thread-safe: owned by the IPC
/// services strand.
class TokenRegistry {
 public:
  /// Issues a fresh random token (128 bits, 32 lowercase hex characters) for `identity`,
  /// replacing any token that identity had.
  std::string issue(Identity identity);
  /// Registers a token chosen elsewhere (configuration). Errors: errc::invalid when the token
  /// is shorter than 16 characters or already belongs to another identity.
  result<void> add(Identity identity, std::string token);
  /// Forgets every token of the identity with this name.
  void revoke(std::string_view name);
  /// The identity owning `token`, comparing against every known token in constant time per
  /// token, so the time taken does not reveal how much of a guess was right.
  std::optional<Identity> find(std::string_view token) const;
  /// Whether a peer with these credentials may use this identity's token: root always;
  /// otherwise the identity's uid must match, or the peer must be in the identity's group.
  static bool peer_allowed(const Identity& identity, const PeerCred& peer);

  std::size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    Identity identity;
    std::string token;
  };
  std::vector<Entry> entries_;
};

/// Writes the token files external clients read, in the format greengrass-cli uses
/// (`{"cli_auth_token": …, "domain_socket_path": …}`), after removing stale ones:
///  - `<dir>/<uid>` for root and for the user canopyd runs as, mode 0600, owned by that user;
///  - `<dir>/group-<group>` for the operators' group (`canopy`) if it exists, mode 0640,
///    group-owned.
/// Each token is registered in `tokens`. Errors: errc::io naming the file.
result<void> write_cli_tokens(const std::filesystem::path& dir, const std::filesystem::path& socket_path,
                              std::string_view operators_group, TokenRegistry& tokens);

/// What an external client found: the socket and its token.
struct CliConnectInfo {
  std::filesystem::path socket_path;
  std::string token;
};

/// Finds the token file the calling user may read: `<dir>/<uid>` first, then any readable
/// `group-*` file. Errors: errc::unauthorized with a sentence saying which files exist and that
/// the user must be root or in the operators' group; errc::not_found when `dir` does not exist
/// (canopyd never ran on this root).
result<CliConnectInfo> read_cli_token(const std::filesystem::path& dir);

}  // namespace canopy::ipc
