//! The runtime configuration store: one timestamped tree for the nucleus and every component
//! (`services.<component>.configuration...`), MERGE/RESET, subscriptions, atomic persistence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"

namespace canopy::config {

/// A key path from the root of the tree, one key per element, as Greengrass IPC sends it
/// (`keyPath: ["services", "com.x", "configuration", "a"]`). A key may contain any character,
/// `/` and `~` included; the empty path is the root. Keys are matched case-insensitively
/// (ASCII), as Greengrass config keys are; a node keeps the spelling it was created with.
using KeyPath = std::vector<std::string>;

/// Parses a JSON pointer (RFC 6901: "" is the root, "/a/b", `~1` is `/`, `~0` is `~`).
/// Errors: errc::invalid naming the pointer when it does not start with `/` or has a `~`
/// not followed by 0 or 1.
result<KeyPath> parse_pointer(std::string_view pointer);

/// The JSON pointer of a key path (inverse of parse_pointer), for messages and IPC.
std::string to_pointer(const KeyPath& path);

/// `{"services", component, "configuration"}`: where a component's configuration lives.
KeyPath component_config_path(std::string_view component);

/// Identifies a subscription; never 0, never reused within one store.
using SubscriptionId = std::uint64_t;

/// Called after a committed change: `changed` is the absolute path of the node that changed
/// (a leaf whose value changed or that was created, an empty object that was created, or the
/// top of a subtree that was removed or whose type changed between leaf and object).
using ChangeCallback = std::function<void(const KeyPath& changed)>;

/// Limits of one store.
struct StoreOptions {
  /// Deepest allowed node: a key path of length N plus a value nested M levels (objects and
  /// arrays both count) makes N + M levels.
  std::size_t max_depth = 64;
  /// Largest allowed snapshot (values and timestamps, compact JSON, as written to disk).
  /// A write that would grow the snapshot past this is rejected; one that shrinks it is not.
  std::size_t max_bytes = 16u << 20;
};

class ConfigStore;

namespace detail {
struct Node;
using NodePtr = std::shared_ptr<const Node>;
/// One change to report: the node's path, and whether the subtree under it was replaced or
/// removed (then subscribers below it are affected too).
struct Change {
  KeyPath path;
  bool subtree = false;
};
/// Writes staged but not yet committed: the tree they produce and the changes to report.
struct Pending {
  NodePtr root;
  std::vector<Change> changes;
  bool dirty = false;  ///< something (a value or a timestamp) differs from the committed tree
};
struct Subscription {
  KeyPath path;
  std::shared_ptr<ChangeCallback> callback;  ///< shared: stays alive while it runs
};
}  // namespace detail

/// The operations of one transaction (ConfigStore::transaction). Reads see the writes made
/// earlier in the same transaction. Lives only during the transaction body.
class Transaction {
 public:
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;

  /// Same contract as ConfigStore::merge, but nothing is written to disk or notified until
  /// the transaction commits. A rejected merge (errc::invalid) changes nothing; the body may
  /// carry on or return the error to abandon the whole transaction.
  result<void> merge(const KeyPath& at, const nlohmann::json& value, std::int64_t timestamp_ms);

  /// Same contract as ConfigStore::reset, deferred like merge().
  result<void> reset(const KeyPath& at, std::int64_t timestamp_ms);

  /// The value at `at` as this transaction would leave it (ConfigStore::get).
  std::optional<nlohmann::json> get(const KeyPath& at) const;

  /// The timestamp at `at` as this transaction would leave it (ConfigStore::timestamp).
  std::int64_t timestamp(const KeyPath& at) const;

 private:
  friend class ConfigStore;
  Transaction(const ConfigStore& store, detail::Pending& pending)
      : store_(store), pending_(pending) {}
  const ConfigStore& store_;
  detail::Pending& pending_;
};

/// The configuration tree. Every node has a timestamp (ms since the epoch, chosen by the
/// writer): a leaf's is that of its last applied write, an object's is the newest of its own
/// creation/reset and everything beneath it.
///
/// Semantics (greengrass-semantics.md §4.3, §5 "Lite"):
/// - merge: objects merge key by key, recursively; anything else (scalars, null, arrays)
///   replaces the node. A write older than a node's timestamp is ignored for that node; an
///   equal timestamp is applied (only "older" is ignored, so re-merging recipe defaults at
///   timestamp 1 replaces the previous defaults). A leaf may become an object and an object a
///   leaf, if the write is not older than the node (for an object: than anything beneath it).
///   `null` is a value like any other (removal is reset's job).
/// - reset: removes a node and everything beneath it that is not newer than the reset.
///   The root and a component's configuration object (`services/<c>/configuration`) are
///   emptied instead of removed, so they stay `{}`.
/// - Subscribers on the changed node, its ancestors, and (when a subtree is removed or
///   replaced) its descendants are called, once per changed node, after the change is on disk.
///
/// Persistence: `<dir>/store.json` holds the committed tree (values and timestamps);
/// `store.json.bak` the one before it. Every successful write is committed before it
/// returns: the new snapshot goes to `store.json.tmp`, is fsynced, the current one is
/// hard-linked as the backup, the new one renamed over it, and the folder fsynced. A kill -9
/// at any moment leaves the last committed state loadable.
///
/// @par Thread Safety
/// Not thread-safe: owned by one strand, every call made on it.
class ConfigStore {
 public:
  /// Opens the store in `dir` (created if missing) with default limits.
  /// See open(dir, options).
  static result<std::unique_ptr<ConfigStore>> open(const std::filesystem::path& dir);

  /// Opens the store in `dir` (created if missing) and loads the last committed tree, or an
  /// empty one when there is none. A snapshot that is not valid JSON or not of the expected
  /// shape is moved aside as `store.json.corrupt-<unix time>`; if the backup is intact it is
  /// loaded, committed as the current snapshot, and open_warnings() says what happened.
  /// Errors: errc::corrupt naming the moved-aside file(s) when no intact snapshot is left;
  /// errc::unsupported for a snapshot written by a newer format version (left in place);
  /// errc::io naming the path for operating-system failures.
  static result<std::unique_ptr<ConfigStore>> open(const std::filesystem::path& dir,
                                                   const StoreOptions& options);

  ConfigStore(const ConfigStore&) = delete;
  ConfigStore& operator=(const ConfigStore&) = delete;
  ~ConfigStore();

  /// Human-readable warnings from open() (a corrupt snapshot replaced by its backup, ...).
  const std::vector<std::string>& open_warnings() const { return warnings_; }

  /// The folder holding the snapshot files.
  const std::filesystem::path& dir() const { return dir_; }

  /// The value at `at`: a leaf's value, or an object built from a container's children.
  /// std::nullopt when nothing is there (also when the path runs through a leaf).
  std::optional<nlohmann::json> get(const KeyPath& at) const;

  /// The timestamp of the node at `at` (see class comment); 0 when there is no node.
  std::int64_t timestamp(const KeyPath& at) const;

  /// Merges `value` at `at`, creating missing objects on the way (a leaf on the way is
  /// replaced by an object if the write is not older than it), commits and notifies.
  /// A merge that changes nothing (all older, or equal values at equal times) writes nothing.
  /// Errors (nothing changed): errc::invalid when the result would be nested deeper than
  /// StoreOptions::max_depth, when the snapshot would grow past max_bytes, or when a non-object
  /// is merged at the root; errc::conflict when called inside a transaction body; errc::io
  /// when the commit fails.
  result<void> merge(const KeyPath& at, const nlohmann::json& value, std::int64_t timestamp_ms);

  /// Removes the node at `at` (see class comment), commits and notifies. A missing node is
  /// not an error. The caller re-merges defaults afterwards (deployments: reset, then
  /// DefaultConfiguration at timestamp 1, then MERGE at the deployment timestamp).
  /// Errors (nothing changed): errc::conflict inside a transaction body; errc::io.
  result<void> reset(const KeyPath& at, std::int64_t timestamp_ms);

  /// Runs `body` on a transaction and, if it returns success, commits all of its writes with
  /// one snapshot (one fsync) and then notifies. If `body` returns an error, nothing is
  /// committed and that error is returned — also the way to compute a proposed configuration
  /// (read it with Transaction::get) without applying it. The size limit is checked at commit.
  /// Errors: body's error; errc::invalid (size); errc::conflict when nested; errc::io.
  result<void> transaction(const std::function<result<void>(Transaction&)>& body);

  /// Calls `callback` after each committed change at `at`, under it or above it (see
  /// ChangeCallback). The node need not exist. Callbacks run synchronously on the writer's
  /// call stack, after the commit, in subscription order. Inside a callback it is allowed to
  /// subscribe (the new subscription sees only later changes), unsubscribe (any id, itself
  /// included: it is not called again) and write: the notifications of such a write are
  /// queued and delivered after the current callback returns, before the outermost write
  /// returns. A callback must not destroy the store. An exception from a callback is logged
  /// and swallowed.
  SubscriptionId subscribe(const KeyPath& at, ChangeCallback callback);

  /// Ends a subscription. Unknown or already ended ids are ignored.
  void unsubscribe(SubscriptionId id);

 private:
  friend class Transaction;
  struct Queued {
    detail::Change change;
    SubscriptionId newest;  ///< subscriptions made after the commit are not called
  };

  ConfigStore(std::filesystem::path dir, const StoreOptions& options);

  result<void> load();
  result<void> stage_merge(detail::Pending& pending, const KeyPath& at,
                           const nlohmann::json& value, std::int64_t timestamp_ms) const;
  void stage_reset(detail::Pending& pending, const KeyPath& at, std::int64_t timestamp_ms) const;
  result<void> commit(detail::Pending& pending);
  result<void> write_snapshot(const std::string& text);
  void notify(std::vector<detail::Change> changes);

  std::filesystem::path dir_;
  StoreOptions options_;
  std::vector<std::string> warnings_;
  detail::NodePtr root_;
  std::size_t snapshot_bytes_ = 0;
  detail::Pending* open_transaction_ = nullptr;  ///< the body being run, if any
  std::map<SubscriptionId, detail::Subscription> subscriptions_;
  SubscriptionId next_id_ = 1;
  std::deque<Queued> queue_;  ///< notifications not yet delivered
  bool delivering_ = false;   ///< a notify() further up the stack drains queue_
};

}  // namespace canopy::config
