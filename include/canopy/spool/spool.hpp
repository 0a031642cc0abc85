//! The store-and-forward spool: every message bound for the cloud, in SQLite (WAL) on its own
//! thread, from the moment it is accepted until the cloud acknowledges it.
//!
//! Contract:
//! - `enqueue` calls its completion only after the message is committed (group commit: one
//!   transaction per `group_commit_messages` messages or `group_commit_interval`, whichever
//!   comes first). With Durability::full the commit is fsynced (survives power loss if the
//!   storage honours flushes); with Durability::normal it survives a crash of canopyd but a
//!   power loss may drop the newest commits (a suffix, never a hole).
//! - A row leaves the spool only by `ack` (the cloud's PUBACK), by TTL expiry (counted in
//!   `expired`) or by the full policy (counted in `dropped_full`). Nothing is deleted before it
//!   was delivered, and nothing silently.
//! - Completions run on the spool's thread: post them to your own strand, never block in them.
//! - Every call is thread-safe. After the destructor returns every pending enqueue has been
//!   committed (or failed) and its completion has run.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "canopy/core/error.hpp"

namespace canopy::spool {

/// What enqueue does when the spool is at maxSizeInBytes or maxMessages.
enum class WhenFull {
  reject_new,       ///< refuse the new message (errc::busy); nothing stored is touched
  drop_oldest,      ///< delete the oldest rows until the new one fits (counted in dropped_full)
  drop_qos0_first,  ///< delete the oldest QoS 0 rows first, then refuse (errc::busy)
};

enum class Durability {
  full,    ///< synchronous=FULL: each group commit is fsynced
  normal,  ///< synchronous=NORMAL: durable across process crashes, not power loss
};

struct Options {
  std::filesystem::path path;  ///< the database file, e.g. <root>/spool/spool.db
  std::uint64_t max_bytes = 64ull * 1024 * 1024;  ///< topic + payload + properties bytes
  std::uint64_t max_messages = 1'000'000;
  WhenFull when_full = WhenFull::reject_new;
  Durability durability = Durability::full;
  /// Default time to live of a message, 0 = forever. A message's own expiry wins if shorter.
  std::chrono::seconds ttl{0};
  std::size_t group_commit_messages = 512;
  std::chrono::milliseconds group_commit_interval{2};
  /// Test only: `PRAGMA max_page_count` for the connection (0 = SQLite's default), to make
  /// the database "full" without filling a disk. See Spool::test_set_max_page_count.
  std::uint32_t test_max_page_count = 0;
};

/// One message bound for the cloud, as PublishToIoTCore carries it.
struct Message {
  std::string topic;
  std::string payload;
  int qos = 1;  ///< 0 or 1
  bool retain = false;
  /// MQTT 5 properties, stored as JSON text (e.g. userProperties, contentType,
  /// correlationData, responseTopic, payloadFormat); empty when none.
  std::string properties_json;
  /// Message-specific expiry in seconds (MQTT 5 message expiry), 0 = the spool's ttl.
  std::uint32_t expiry_seconds = 0;
};

struct StoredMessage {
  std::int64_t id = 0;  ///< increasing in enqueue order: FIFO = ascending id
  Message message;
  std::int64_t enqueued_unix_ms = 0;
  std::int64_t expires_unix_ms = 0;  ///< 0 = never
  /// How many times a send was recorded with `mark_sent` before this fetch. > 0 after a
  /// restart means the cloud may already have it (counted as duplicates_suspected when resent).
  int attempts = 0;
};

/// Counters. queued and bytes describe the database now; the others are totals since the
/// database was created (they are stored in it, in the same transactions as the rows).
struct Counters {
  std::uint64_t queued = 0;
  std::uint64_t bytes = 0;
  std::uint64_t accepted = 0;
  std::uint64_t delivered = 0;
  std::uint64_t dropped_full = 0;
  std::uint64_t rejected_full = 0;
  std::uint64_t expired = 0;
  std::uint64_t resent = 0;
  std::uint64_t duplicates_suspected = 0;
  /// Group commits (write transactions that committed) by this Spool object since open();
  /// the only counter not stored in the database. Tells how well group commit batches.
  std::uint64_t commits = 0;
};

/// What the spool holds at one moment, for the cloud link's backlog/live interleaving.
struct BacklogSnapshot {
  std::int64_t last_id = 0;  ///< the newest id (0: empty)
  std::map<std::string, std::int64_t> last_id_by_topic;
};

class Spool {
 public:
  /// Opens (or creates) the database: journal_mode=WAL, the configured synchronous mode,
  /// `PRAGMA quick_check`. A file that is not a database or fails the check is renamed to
  /// `<path>.corrupt-<UTC timestamp>` (never deleted; the name is in `quarantined()` and in an
  /// ERROR log line that says so) and a new database is started. Errors: errc::io when the
  /// folder cannot be written.
  static result<std::unique_ptr<Spool>> open(Options options);
  ~Spool();
  Spool(const Spool&) = delete;
  Spool& operator=(const Spool&) = delete;

  using EnqueueDone = std::function<void(result<std::int64_t> id)>;
  /// Queues `message` for the next group commit; `done` gets its id once committed.
  /// Errors: errc::busy when full and the policy refuses (the message names the limit and the
  /// policy), errc::invalid when the message alone is larger than max_bytes, errc::io when
  /// the disk is full or the database fails (the message says which, and where).
  void enqueue(Message message, EnqueueDone done);

  using FetchDone = std::function<void(result<std::vector<StoredMessage>>)>;
  /// Up to `limit` rows with id > after_id in ascending id order. Expired rows found on the
  /// way are deleted and counted, never returned.
  void fetch(std::int64_t after_id, std::size_t limit, FetchDone done);

  using CommitFeed = std::function<void(std::int64_t newest_before, std::vector<StoredMessage> rows)>;
  /// After each commit that stored messages, calls `feed` on the spool's thread with those rows
  /// (id order, `attempts` 0) and the newest id given out before them. A reader whose position
  /// is `newest_before` can take them as they are instead of reading them back with fetch();
  /// any other reader should fetch. One feed at a time; an empty function removes it.
  void set_commit_feed(CommitFeed feed);

  using SnapshotDone = std::function<void(result<BacklogSnapshot>)>;
  /// The newest id and each topic's newest id of the rows stored now (one scan of the table).
  void snapshot(SnapshotDone done);

  /// Records that these rows were handed to the cloud client (attempts + 1), with the next
  /// commit (at most about 50 ms later: a lost mark only undercounts duplicates_suspected). `resent` counts rows whose attempts was already > 0 in this process's
  /// life; `duplicates_suspected` those whose attempts came from before the last open.
  void mark_sent(std::vector<std::int64_t> ids);
  /// Deletes delivered rows (the cloud's PUBACK) with the next commit, at most about 50 ms
  /// later (an ack lost in a crash only means the row is sent again); counts delivered.
  void ack(std::vector<std::int64_t> ids);

  /// Commits everything pending now and calls `done` afterwards.
  void flush(std::function<void(result<void>)> done);

  Counters counters() const;
  const Options& options() const;
  /// Where a corrupt database found by open() was moved, if one was.
  std::optional<std::filesystem::path> quarantined() const;

  /// Test only: sets `PRAGMA max_page_count` on the spool's connection (0 = no limit beyond
  /// SQLite's default), on the spool's thread, then calls `done` there. Used to simulate a
  /// full disk and to lift it again.
  void test_set_max_page_count(std::uint32_t pages, std::function<void()> done);

  struct Impl;

 private:
  explicit Spool(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

const char* to_string(WhenFull w);
std::optional<WhenFull> when_full_from_string(const std::string& s);
const char* to_string(Durability d);
std::optional<Durability> durability_from_string(const std::string& s);

}  // namespace canopy::spool
