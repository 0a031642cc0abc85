// The spool: one SQLite connection (WAL) owned by one worker thread; callers hand it requests
// through a mutex-guarded queue and get their completions on that thread.
//
// Why this shape:
// - One connection, one thread: no SQLITE_BUSY, no locking games, statements prepared once.
// - Group commit: the worker takes every pending request (up to group_commit_messages
//   enqueues, waiting at most group_commit_interval after the oldest pending enqueue) and runs
//   them in one BEGIN IMMEDIATE ... COMMIT together with the counters, so one fsync covers
//   hundreds of messages and the counters can never disagree with the rows.
// - Completions run only after COMMIT returned; a failed batch is rolled back as a whole and
//   every enqueue in it fails with errc::io. Nothing committed before is touched.
// - queued/bytes live in memory (loaded at open with one aggregate query) and change only
//   together with a commit, so the bounds are checked without a query per message.
#include "canopy/spool/spool.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <ctime>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>

#include <fmt/format.h>
#include <sqlite3.h>

#include "canopy/core/log.hpp"

namespace canopy::spool {
namespace fs = std::filesystem;

namespace {

using SteadyClock = std::chrono::steady_clock;

/// Expired rows are also removed without a fetch meeting them, this often.
constexpr std::chrono::seconds kSweepInterval{30};
/// How long acks and sent-marks may wait for a commit they can share, and how many may wait.
constexpr std::chrono::milliseconds kLazyDelay{50};
constexpr std::size_t kLazyMax = 2000;

/// SQLite 3.40's default (and maximum) max_page_count; what test_set_max_page_count(0) restores.
constexpr std::uint32_t kDefaultMaxPageCount = 1073741823u;
constexpr int kSchemaVersion = 1;

std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

const char* code_name(int rc) {
  switch (rc & 0xff) {
    case SQLITE_FULL: return "SQLITE_FULL";
    case SQLITE_IOERR: return "SQLITE_IOERR";
    case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
    case SQLITE_NOTADB: return "SQLITE_NOTADB";
    case SQLITE_READONLY: return "SQLITE_READONLY";
    case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
    case SQLITE_PERM: return "SQLITE_PERM";
    case SQLITE_BUSY: return "SQLITE_BUSY";
    case SQLITE_LOCKED: return "SQLITE_LOCKED";
    case SQLITE_NOMEM: return "SQLITE_NOMEM";
    case SQLITE_TOOBIG: return "SQLITE_TOOBIG";
    case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
    case SQLITE_PROTOCOL: return "SQLITE_PROTOCOL";
    default: return "SQLite error";
  }
}

bool is_corruption(int rc) { return (rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB; }

/// <path>.corrupt-YYYYMMDDTHHMMSSZ (UTC), with -1, -2... appended if that name is taken.
fs::path quarantine_name(const fs::path& db) {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  fs::path base = db.string() + ".corrupt-" + stamp;
  fs::path candidate = base;
  std::error_code ec;
  for (int i = 1; fs::exists(candidate, ec); ++i) candidate = base.string() + "-" + std::to_string(i);
  return candidate;
}

struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};
using Stmt = std::unique_ptr<sqlite3_stmt, StmtDeleter>;

/// A failed SQLite call inside the worker. Thrown by the statement helpers and caught by the
/// batch (or open) that ran them, which rolls back; it never leaves this file.
struct SqliteFailure {
  int rc = SQLITE_ERROR;
  std::string message;  ///< sqlite3_errmsg at the time of the failure
};

/// Resets (and unbinds) a statement however the step sequence using it ends.
class Reset {
 public:
  explicit Reset(sqlite3_stmt* s) : s_(s) {}
  ~Reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }
  Reset(const Reset&) = delete;
  Reset& operator=(const Reset&) = delete;

 private:
  sqlite3_stmt* s_;
};

std::string column_string(sqlite3_stmt* s, int col) {
  const void* p = sqlite3_column_blob(s, col);  // text or blob: the bytes as stored
  const int n = sqlite3_column_bytes(s, col);
  if (p == nullptr || n <= 0) return {};
  return std::string(static_cast<const char*>(p), static_cast<std::size_t>(n));
}

/// The counters stored in `meta`, by key.
struct StoredCounter {
  const char* key;
  std::uint64_t Counters::*field;
};
constexpr StoredCounter kStoredCounters[] = {
    {"accepted", &Counters::accepted},
    {"delivered", &Counters::delivered},
    {"dropped_full", &Counters::dropped_full},
    {"rejected_full", &Counters::rejected_full},
    {"expired", &Counters::expired},
    {"resent", &Counters::resent},
    {"duplicates_suspected", &Counters::duplicates_suspected},
};

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS msgs(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  qos INTEGER NOT NULL,
  retain INTEGER NOT NULL,
  props TEXT NOT NULL,
  size INTEGER NOT NULL,
  enqueued_ms INTEGER NOT NULL,
  expires_ms INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  sent_gen INTEGER NOT NULL DEFAULT 0,
  expiry_s INTEGER NOT NULL DEFAULT 0);  -- the message's own expiry_seconds, returned as given
-- Partial indexes: only QoS 0 rows (for drop-qos0-first) and rows with an expiry (for the
-- sweep) pay for them, so plain QoS 1 ingest maintains no index but the table's own.
CREATE INDEX IF NOT EXISTS msgs_qos0 ON msgs(qos) WHERE qos = 0;
CREATE INDEX IF NOT EXISTS msgs_expiry ON msgs(expires_ms) WHERE expires_ms > 0;
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(key, value) VALUES
  ('accepted', 0), ('delivered', 0), ('dropped_full', 0), ('rejected_full', 0), ('expired', 0),
  ('resent', 0), ('duplicates_suspected', 0), ('generation', 0);
)sql";

}  // namespace

const char* to_string(WhenFull w) {
  switch (w) {
    case WhenFull::reject_new: return "reject-new";
    case WhenFull::drop_oldest: return "drop-oldest";
    case WhenFull::drop_qos0_first: return "drop-qos0-first";
  }
  return "?";
}

std::optional<WhenFull> when_full_from_string(const std::string& s) {
  if (s == "reject-new") return WhenFull::reject_new;
  if (s == "drop-oldest") return WhenFull::drop_oldest;
  if (s == "drop-qos0-first") return WhenFull::drop_qos0_first;
  return std::nullopt;
}

const char* to_string(Durability d) {
  switch (d) {
    case Durability::full: return "full";
    case Durability::normal: return "normal";
  }
  return "?";
}

std::optional<Durability> durability_from_string(const std::string& s) {
  if (s == "full") return Durability::full;
  if (s == "normal") return Durability::normal;
  return std::nullopt;
}

struct Spool::Impl {
  struct EnqueueRequest {
    Message message;
    EnqueueDone done;
    std::int64_t enqueued_unix_ms = 0;
    SteadyClock::time_point arrived;  ///< for the group-commit deadline
  };
  struct FetchRequest {
    std::int64_t after_id = 0;
    std::size_t limit = 0;
    FetchDone done;
  };
  struct SnapshotRequest {
    SnapshotDone done;
  };
  struct PageCountRequest {
    std::uint32_t pages = 0;
    std::function<void()> done;
  };
  /// What the worker took from the queues for one round.
  struct Batch {
    std::vector<EnqueueRequest> enqueues;
    std::vector<std::int64_t> acks;
    std::vector<std::int64_t> marks;
    std::vector<FetchRequest> fetches;
    std::vector<SnapshotRequest> snapshots;
    std::vector<std::function<void(result<void>)>> flushes;
    std::vector<PageCountRequest> page_counts;
    bool empty() const {
      return enqueues.empty() && acks.empty() && marks.empty() && fetches.empty() && snapshots.empty() &&
             flushes.empty() && page_counts.empty();
    }
  };

  explicit Impl(Options o) : opts(std::move(o)), path_str(opts.path.string()), log(log::get("spool")) {
    if (opts.group_commit_messages == 0) opts.group_commit_messages = 1;
  }

  Options opts;
  const std::string path_str;
  std::shared_ptr<spdlog::logger> log;
  std::optional<fs::path> quarantined;  // set in open(), read-only afterwards

  // --- Owned by the worker thread once open() returned (by open() before that). ---
  sqlite3* db = nullptr;
  std::int64_t generation = 0;  ///< this open's generation (meta.generation)
  std::int64_t last_id = 0;  ///< the newest id given out (worker thread only)
  Counters committed;           ///< the database as of the last commit
  Stmt begin, commit, insert, delete_by_id, select_sent, update_sent, delete_oldest, select_qos0, fetch_rows,
      sweep_expired, update_meta;

  // --- Shared; guarded by mu. ---
  mutable std::mutex mu;
  std::condition_variable cv;
  std::deque<EnqueueRequest> enqueues;
  std::vector<std::int64_t> acks, marks;
  SteadyClock::time_point lazy_since;  ///< when the oldest pending ack or mark was queued
  std::vector<FetchRequest> fetches;
  std::vector<SnapshotRequest> snapshots;
  std::vector<std::function<void(result<void>)>> flushes;
  std::vector<PageCountRequest> page_counts;
  bool stopping = false;
  CommitFeed feed;
  Counters published;  ///< what counters() returns: `committed` after each commit

  std::thread worker;

  // ---------------------------------------------------------------- errors

  Error db_error(int rc, std::string_view message, std::string_view action) const {
    if ((rc & 0xff) == SQLITE_FULL)
      return make_error(errc::io,
                        fmt::format("the spool database {} could not be written: the disk is full (SQLITE_FULL)", path_str));
    return make_error(errc::io, fmt::format("the spool database {} could not be {}: {} ({})", path_str, action, message,
                                            code_name(rc)));
  }
  Error db_error(const SqliteFailure& f, std::string_view action) const { return db_error(f.rc, f.message, action); }

  [[noreturn]] void fail(int rc) const { throw SqliteFailure{rc, sqlite3_errmsg(db)}; }

  /// Steps a statement; SQLITE_ROW or SQLITE_DONE, anything else throws SqliteFailure.
  int step(sqlite3_stmt* s) const {
    const int rc = sqlite3_step(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) fail(rc);
    return rc;
  }
  void run_to_done(sqlite3_stmt* s) const {
    Reset r(s);
    while (step(s) == SQLITE_ROW) {
    }
  }
  void exec(const char* sql) const {
    if (const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr); rc != SQLITE_OK) fail(rc);
  }
  Stmt prepare(const char* sql) const {
    sqlite3_stmt* s = nullptr;
    if (const int rc = sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr); rc != SQLITE_OK)
      fail(rc);
    return Stmt(s);
  }
  void rollback_if_open() const {
    // SQLITE_FULL and SQLITE_IOERR may already have rolled the transaction back.
    if (db != nullptr && sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
  }

  // ---------------------------------------------------------------- open

  void close_db() {
    for (Stmt* s : {&begin, &commit, &insert, &delete_by_id, &select_sent, &update_sent, &delete_oldest, &select_qos0,
                    &fetch_rows, &sweep_expired, &update_meta})
      s->reset();
    if (db != nullptr) {
      if (const int rc = sqlite3_close(db); rc != SQLITE_OK)
        log->error("closing the spool database {} failed: {} ({})", path_str, sqlite3_errstr(rc), code_name(rc));
    }
    db = nullptr;
  }

  /// Opens and checks the database. errc::corrupt means "quarantine it and start again".
  result<void> try_open() {
    const int rc = sqlite3_open_v2(path_str.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                   nullptr);
    if (rc != SQLITE_OK) {
      std::string why = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
      return make_error(is_corruption(rc) ? errc::corrupt : errc::io,
                        fmt::format("cannot open the spool database {}: {} ({})", path_str, why, code_name(rc)));
    }
    sqlite3_busy_timeout(db, 5000);  // one connection: only an outside reader could make us wait
    try {
      // journal_mode reads page 1: a file that is not a database fails here (SQLITE_NOTADB).
      {
        Stmt s = prepare("PRAGMA journal_mode=WAL");
        Reset r(s.get());
        if (step(s.get()) == SQLITE_ROW) {
          std::string mode = column_string(s.get(), 0);
          if (mode != "wal")
            log->warn("the spool database {} runs in journal mode {} instead of wal (the file system may not support it)",
                      path_str, mode);
        }
      }
      {
        Stmt s = prepare("PRAGMA quick_check");
        Reset r(s.get());
        std::vector<std::string> lines;
        while (step(s.get()) == SQLITE_ROW) lines.push_back(column_string(s.get(), 0));
        if (lines.size() != 1 || lines[0] != "ok") {
          std::string why = lines.empty() ? std::string("no answer") : lines[0];
          if (lines.size() > 1) why += fmt::format(" (and {} more problem(s))", lines.size() - 1);
          return make_error(errc::corrupt, fmt::format("quick_check: {}", why));
        }
      }
      exec(opts.durability == Durability::full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
      if (opts.test_max_page_count != 0) set_max_page_count(opts.test_max_page_count);

      int user_version = 0;
      {
        Stmt s = prepare("PRAGMA user_version");
        Reset r(s.get());
        if (step(s.get()) == SQLITE_ROW) user_version = sqlite3_column_int(s.get(), 0);
      }
      if (user_version > kSchemaVersion)
        return make_error(errc::unsupported,
                          fmt::format("the spool database {} has schema version {}, newer than this canopyd's ({})",
                                      path_str, user_version, kSchemaVersion));

      exec("BEGIN IMMEDIATE");
      exec(kSchema);
      exec(fmt::format("PRAGMA user_version={}", kSchemaVersion).c_str());
      exec("UPDATE meta SET value = value + 1 WHERE key = 'generation'");
      {
        Stmt s = prepare("SELECT key, value FROM meta");
        Reset r(s.get());
        while (step(s.get()) == SQLITE_ROW) {
          const std::string key = column_string(s.get(), 0);
          const auto value = sqlite3_column_int64(s.get(), 1);
          if (key == "generation") generation = value;
          for (const auto& c : kStoredCounters)
            if (key == c.key) committed.*(c.field) = static_cast<std::uint64_t>(value);
        }
      }
      {
        // The newest id ever given out (AUTOINCREMENT never reuses one), for the commit feed.
        Stmt s = prepare("SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'msgs'), 0)");
        Reset r(s.get());
        if (step(s.get()) == SQLITE_ROW) last_id = sqlite3_column_int64(s.get(), 0);
      }
      {
        Stmt s = prepare("SELECT count(*), coalesce(sum(size), 0) FROM msgs");
        Reset r(s.get());
        if (step(s.get()) == SQLITE_ROW) {
          committed.queued = static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 0));
          committed.bytes = static_cast<std::uint64_t>(sqlite3_column_int64(s.get(), 1));
        }
      }
      exec("COMMIT");

      begin = prepare("BEGIN IMMEDIATE");
      commit = prepare("COMMIT");
      insert = prepare(
          "INSERT INTO msgs(topic, payload, qos, retain, props, size, enqueued_ms, expires_ms, expiry_s) "
          "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
      delete_by_id = prepare("DELETE FROM msgs WHERE id = ?1 RETURNING size");
      select_sent = prepare("SELECT attempts, sent_gen FROM msgs WHERE id = ?1");
      update_sent = prepare("UPDATE msgs SET attempts = attempts + 1, sent_gen = ?2 WHERE id = ?1");
      delete_oldest = prepare("DELETE FROM msgs WHERE id = (SELECT min(id) FROM msgs) RETURNING size");
      select_qos0 = prepare("SELECT id, size FROM msgs WHERE qos = 0 ORDER BY id");
      fetch_rows = prepare(
          "SELECT id, topic, payload, qos, retain, props, enqueued_ms, expires_ms, attempts, expiry_s "
          "FROM msgs WHERE id > ?1 ORDER BY id LIMIT ?2");
      sweep_expired = prepare("DELETE FROM msgs WHERE expires_ms > 0 AND expires_ms <= ?1 RETURNING size");
      update_meta = prepare("UPDATE meta SET value = ?2 WHERE key = ?1");
    } catch (const SqliteFailure& f) {
      rollback_if_open();
      if (is_corruption(f.rc)) return make_error(errc::corrupt, fmt::format("{} ({})", f.message, code_name(f.rc)));
      return db_error(f, "opened");
    }
    published = committed;
    return ok();
  }

  /// Renames the database and its -wal/-shm to <path>.corrupt-<stamp>[-wal|-shm].
  result<fs::path> quarantine() {
    const fs::path target = quarantine_name(opts.path);
    std::error_code ec;
    fs::rename(opts.path, target, ec);
    if (ec && fs::exists(opts.path, ec))
      return make_error(errc::io, fmt::format("cannot move {} to {}: {}", path_str, target.string(), ec.message()));
    for (const char* suffix : {"-wal", "-shm"}) {
      const fs::path from = path_str + suffix;
      if (!fs::exists(from, ec)) continue;
      fs::rename(from, target.string() + suffix, ec);
      if (ec) return make_error(errc::io, fmt::format("cannot move {} aside: {}", from.string(), ec.message()));
    }
    return target;
  }

  result<void> open_db() {
    if (opts.path.empty()) return make_error(errc::invalid, "the spool database path is empty");
    std::error_code ec;
    if (opts.path.has_parent_path()) {
      fs::create_directories(opts.path.parent_path(), ec);
      if (ec)
        return make_error(errc::io, fmt::format("cannot create the spool folder {}: {}", opts.path.parent_path().string(),
                                                ec.message()));
    }
    auto r = try_open();
    if (!r && r.error().code == errc::corrupt) {
      close_db();
      committed = Counters{};
      const std::string why = r.error().message;
      auto moved = quarantine();
      if (!moved)
        return make_error(errc::io, fmt::format("the spool database {} is damaged ({}) and could not be moved aside: {}",
                                                path_str, why, moved.error().message));
      quarantined = *moved;
      log->error(
          "the spool database {} is damaged ({}); moved it to {} (kept, never deleted) and started a new, empty "
          "spool. Messages still in the old file were not sent.",
          path_str, why, moved->string());
      r = try_open();
      if (!r && r.error().code == errc::corrupt)
        r = make_error(errc::io, fmt::format("the new spool database {} is unusable: {}", path_str, r.error().message));
    }
    if (!r) {
      close_db();
      return r;
    }
    if (auto s = sweep(now_unix_ms()); !s) log->warn("{}", s.error().message);
    log->info("spool {} open: generation={} queued={} bytes={} durability={} whenFull={}", path_str, generation,
              committed.queued, committed.bytes, to_string(opts.durability), to_string(opts.when_full));
    return ok();
  }

  void set_max_page_count(std::uint32_t pages) const {
    exec(fmt::format("PRAGMA max_page_count={}", pages == 0 ? kDefaultMaxPageCount : pages).c_str());
  }

  // ---------------------------------------------------------------- writes (inside a txn)

  void publish() {
    std::lock_guard lk(mu);
    published = committed;
  }

  /// Writes the stored counters that differ from the last commit.
  void save_counters(const Counters& c) const {
    for (const auto& sc : kStoredCounters) {
      if (c.*(sc.field) == committed.*(sc.field)) continue;
      sqlite3_stmt* s = update_meta.get();
      Reset r(s);
      sqlite3_bind_text(s, 1, sc.key, -1, SQLITE_STATIC);
      sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(c.*(sc.field)));
      step(s);
    }
  }

  /// Deletes one row; its size, or nullopt when there is no such row.
  std::optional<std::uint64_t> delete_row(std::int64_t id) const {
    sqlite3_stmt* s = delete_by_id.get();
    Reset r(s);
    sqlite3_bind_int64(s, 1, id);
    std::optional<std::uint64_t> size;
    while (step(s) == SQLITE_ROW) size = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
    return size;
  }

  void apply_ack(std::int64_t id, Counters& c) const {
    if (auto size = delete_row(id)) {
      --c.queued;
      c.bytes -= *size;
      ++c.delivered;
    }
  }

  void apply_mark(std::int64_t id, Counters& c) const {
    {
      sqlite3_stmt* s = select_sent.get();
      Reset r(s);
      sqlite3_bind_int64(s, 1, id);
      if (step(s) != SQLITE_ROW) return;  // already acked or dropped: nothing to record
      if (sqlite3_column_int64(s, 0) > 0) {
        ++c.resent;
        if (sqlite3_column_int64(s, 1) < generation) ++c.duplicates_suspected;
      }
    }
    sqlite3_stmt* s = update_sent.get();
    Reset r(s);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int64(s, 2, generation);
    step(s);
  }

  bool fits(const Counters& c, std::uint64_t size) const {
    return c.queued + 1 <= opts.max_messages && c.bytes + size <= opts.max_bytes;
  }

  std::string full_message(const Counters& c, std::string_view tail) const {
    return fmt::format("the spool is full ({} of {} messages, {} of {} bytes); spooler.whenFull is {}{}", c.queued,
                       opts.max_messages, c.bytes, opts.max_bytes, to_string(opts.when_full), tail);
  }

  /// Makes room for `size` bytes by the policy; false when the policy refuses.
  bool make_room(std::uint64_t size, Counters& c, std::uint64_t& dropped) const {
    switch (opts.when_full) {
      case WhenFull::reject_new: return false;
      case WhenFull::drop_oldest:
        while (!fits(c, size) && c.queued > 0) {
          sqlite3_stmt* s = delete_oldest.get();
          Reset r(s);
          std::optional<std::uint64_t> freed;
          while (step(s) == SQLITE_ROW) freed = static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
          if (!freed) break;
          --c.queued;
          c.bytes -= *freed;
          ++c.dropped_full;
          ++dropped;
        }
        return fits(c, size);
      case WhenFull::drop_qos0_first: {
        // Find the oldest QoS 0 rows that would make room; delete them only if they do, so a
        // refused message does not cost the spool anything.
        std::vector<std::pair<std::int64_t, std::uint64_t>> victims;
        Counters after = c;
        {
          sqlite3_stmt* s = select_qos0.get();
          Reset r(s);
          while (!fits(after, size) && step(s) == SQLITE_ROW) {
            const auto row_size = static_cast<std::uint64_t>(sqlite3_column_int64(s, 1));
            victims.emplace_back(sqlite3_column_int64(s, 0), row_size);
            --after.queued;
            after.bytes -= row_size;
          }
        }
        if (!fits(after, size)) return false;
        for (const auto& v : victims) {
          if (!delete_row(v.first)) continue;
          --c.queued;
          c.bytes -= v.second;
          ++c.dropped_full;
          ++dropped;
        }
        return fits(c, size);
      }
    }
    return false;
  }

  /// When a message expires (unix ms; 0 = never): the spool's ttl or its own expiry, the shorter.
  std::int64_t expires_of(const EnqueueRequest& req) const {
    std::uint64_t ttl_s = static_cast<std::uint64_t>(std::max<std::int64_t>(opts.ttl.count(), 0));
    const auto own = req.message.expiry_seconds;
    if (own != 0 && (ttl_s == 0 || own < ttl_s)) ttl_s = own;
    return ttl_s == 0 ? 0 : req.enqueued_unix_ms + static_cast<std::int64_t>(ttl_s) * 1000;
  }

  result<std::int64_t> apply_enqueue(const EnqueueRequest& req, Counters& c, std::uint64_t& dropped,
                                     std::uint64_t& refused) const {
    const Message& m = req.message;
    if (m.qos != 0 && m.qos != 1)
      return make_error(errc::invalid, fmt::format("a spooled message has QoS 0 or 1, not {} (topic {})", m.qos, m.topic));
    const std::uint64_t size = m.topic.size() + m.payload.size() + m.properties_json.size();
    if (size > opts.max_bytes)
      return make_error(errc::invalid,
                        fmt::format("the message is {} bytes (topic + payload + properties), more than the whole spool "
                                    "may hold (spooler.maxSizeInBytes = {}); it was refused (topic {})",
                                    size, opts.max_bytes, m.topic));
    if (!fits(c, size)) {
      const Counters before = c;
      if (!make_room(size, c, dropped)) {
        ++c.rejected_full;
        ++refused;
        return make_error(errc::busy, full_message(before, opts.when_full == WhenFull::drop_qos0_first
                                                               ? " and dropping every QoS 0 message would not make "
                                                                 "room, so this message was refused"
                                                               : ", so this message was refused"));
      }
    }
    const std::int64_t expires = expires_of(req);

    sqlite3_stmt* s = insert.get();
    Reset r(s);
    sqlite3_bind_text64(s, 1, m.topic.data(), m.topic.size(), SQLITE_STATIC, SQLITE_UTF8);
    sqlite3_bind_blob64(s, 2, m.payload.data(), m.payload.size(), SQLITE_STATIC);  // data() is never null: '' not NULL
    sqlite3_bind_int(s, 3, m.qos);
    sqlite3_bind_int(s, 4, m.retain ? 1 : 0);
    sqlite3_bind_text64(s, 5, m.properties_json.data(), m.properties_json.size(), SQLITE_STATIC, SQLITE_UTF8);
    sqlite3_bind_int64(s, 6, static_cast<sqlite3_int64>(size));
    sqlite3_bind_int64(s, 7, req.enqueued_unix_ms);
    sqlite3_bind_int64(s, 8, expires);
    sqlite3_bind_int64(s, 9, m.expiry_seconds);
    step(s);
    ++c.accepted;
    ++c.queued;
    c.bytes += size;
    return std::int64_t{sqlite3_last_insert_rowid(db)};
  }

  /// Deletes the given expired rows (or, with no ids, every row expired at `now`) in one
  /// transaction and counts them.
  result<void> expire(const std::vector<std::int64_t>& ids, std::int64_t now) {
    Counters c = committed;
    try {
      step_once(begin.get());
      if (ids.empty()) {
        sqlite3_stmt* s = sweep_expired.get();
        Reset r(s);
        sqlite3_bind_int64(s, 1, now);
        while (step(s) == SQLITE_ROW) {
          --c.queued;
          c.bytes -= static_cast<std::uint64_t>(sqlite3_column_int64(s, 0));
          ++c.expired;
        }
      } else {
        for (auto id : ids) {
          if (auto size = delete_row(id)) {
            --c.queued;
            c.bytes -= *size;
            ++c.expired;
          }
        }
      }
      if (c.expired != committed.expired) save_counters(c);
      step_once(commit.get());
    } catch (const SqliteFailure& f) {
      rollback_if_open();
      return db_error(f, "written");
    }
    if (c.expired != committed.expired) {
      log->info("{} message(s) expired (their time to live passed) and were removed from the spool",
                c.expired - committed.expired);
      ++c.commits;
      committed = c;
      publish();
    }
    return ok();
  }
  result<void> sweep(std::int64_t now) { return expire({}, now); }

  void step_once(sqlite3_stmt* s) const {
    Reset r(s);
    step(s);
  }

  // ---------------------------------------------------------------- reads

  result<std::vector<StoredMessage>> fetch(std::int64_t after_id, std::size_t limit) {
    std::vector<StoredMessage> out;
    std::vector<std::int64_t> expired;
    const std::int64_t now = now_unix_ms();
    try {
      std::int64_t cursor = after_id;
      while (out.size() < limit) {
        const std::size_t want = limit - out.size();
        std::size_t got = 0;
        sqlite3_stmt* s = fetch_rows.get();
        Reset r(s);
        sqlite3_bind_int64(s, 1, cursor);
        sqlite3_bind_int64(s, 2, static_cast<sqlite3_int64>(std::min<std::size_t>(want, INT64_MAX)));
        while (step(s) == SQLITE_ROW) {
          ++got;
          StoredMessage m;
          m.id = sqlite3_column_int64(s, 0);
          cursor = m.id;
          m.expires_unix_ms = sqlite3_column_int64(s, 7);
          if (m.expires_unix_ms > 0 && m.expires_unix_ms <= now) {
            expired.push_back(m.id);
            continue;
          }
          m.message.topic = column_string(s, 1);
          m.message.payload = column_string(s, 2);
          m.message.qos = sqlite3_column_int(s, 3);
          m.message.retain = sqlite3_column_int(s, 4) != 0;
          m.message.properties_json = column_string(s, 5);
          m.enqueued_unix_ms = sqlite3_column_int64(s, 6);
          m.attempts = sqlite3_column_int(s, 8);
          m.message.expiry_seconds = static_cast<std::uint32_t>(sqlite3_column_int64(s, 9));
          out.push_back(std::move(m));
        }
        if (got < want) break;  // no more rows
      }
    } catch (const SqliteFailure& f) {
      return db_error(f, "read");
    }
    if (!expired.empty()) {
      // The rows returned are fine either way; a failed delete is retried by the sweep.
      if (auto e = expire(expired, now); !e) log->warn("{}", e.error().message);
    }
    return out;
  }

  result<BacklogSnapshot> snapshot() {
    BacklogSnapshot out;
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, "SELECT topic, MAX(id) FROM msgs GROUP BY topic", -1, &st, nullptr) != SQLITE_OK)
      return make_error(errc::io, fmt::format("cannot read the spool database {}: {}", path_str, sqlite3_errmsg(db)));
    int rc = SQLITE_OK;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
      const std::int64_t id = sqlite3_column_int64(st, 1);
      out.last_id_by_topic[t ? t : ""] = id;
      out.last_id = std::max(out.last_id, id);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
      return make_error(errc::io, fmt::format("cannot read the spool database {}: {}", path_str, sqlite3_errstr(rc)));
    return out;
  }

  // ---------------------------------------------------------------- the worker

  template <class F, class... A>
  void call(F& f, A&&... a) {
    try {
      if (f) f(std::forward<A>(a)...);
    } catch (const std::exception& e) {
      log->error("a spool completion threw: {}", e.what());
    } catch (...) {
      log->error("a spool completion threw");
    }
  }

  void process(Batch& b) {
    for (auto& p : b.page_counts) {
      try {
        set_max_page_count(p.pages);
      } catch (const SqliteFailure& f) {
        log->warn("PRAGMA max_page_count failed: {}", f.message);
      }
      call(p.done);
    }

    const bool writes = !b.enqueues.empty() || !b.acks.empty() || !b.marks.empty();
    std::vector<result<std::int64_t>> ids;
    std::optional<Error> failure;
    std::uint64_t dropped = 0, refused = 0;
    if (writes) {
      Counters c = committed;
      ids.reserve(b.enqueues.size());
      try {
        step_once(begin.get());
        // Acks first: they free room for the enqueues of the same batch.
        for (auto id : b.acks) apply_ack(id, c);
        // A mark for a row acked in this same batch would find no row (apply_mark does nothing
        // then): skip the lookup. In a steady drain that is most of them.
        std::sort(b.acks.begin(), b.acks.end());
        for (auto id : b.marks)
          if (!std::binary_search(b.acks.begin(), b.acks.end(), id)) apply_mark(id, c);
        for (const auto& e : b.enqueues) ids.push_back(apply_enqueue(e, c, dropped, refused));
        save_counters(c);
        step_once(commit.get());
        ++c.commits;
        committed = c;
        publish();
      } catch (const SqliteFailure& f) {
        rollback_if_open();
        failure = db_error(f, "written");
        log->error("{}; the batch was rolled back: {} message(s) refused, {} ack(s) and {} send record(s) not stored "
                   "(those messages stay in the spool and will be sent again)",
                   failure->message, b.enqueues.size(), b.acks.size(), b.marks.size());
      }
    }
    if (!failure && dropped > 0)
      log->warn("the spool is full: dropped {} message(s) to make room (spooler.whenFull is {}; dropped_full={})", dropped,
                to_string(opts.when_full), committed.dropped_full);
    if (!failure && refused > 0)
      log->warn("the spool is full: refused {} message(s) (spooler.whenFull is {}; queued={} bytes={})", refused,
                to_string(opts.when_full), committed.queued, committed.bytes);

    if (!failure) feed_committed(b, ids);
    for (std::size_t i = 0; i < b.enqueues.size(); ++i) {
      auto& done = b.enqueues[i].done;
      if (failure) call(done, result<std::int64_t>(*failure));
      else call(done, std::move(ids[i]));
    }
    for (auto& f : b.fetches) call(f.done, fetch(f.after_id, f.limit));
    for (auto& f : b.snapshots) call(f.done, snapshot());
    for (auto& f : b.flushes) call(f, failure ? result<void>(*failure) : ok());
  }

  /// Hands the rows this commit stored to the commit feed (see Spool::set_commit_feed), with
  /// the newest id before them. Their messages are moved out: only the ids are needed after.
  void feed_committed(Batch& b, const std::vector<result<std::int64_t>>& ids) {
    CommitFeed f;
    {
      std::lock_guard lk(mu);
      f = feed;
    }
    const std::int64_t before = last_id;
    std::vector<StoredMessage> rows;
    for (std::size_t i = 0; i < b.enqueues.size(); ++i) {
      if (!ids[i]) continue;
      last_id = *ids[i];
      if (!f) continue;
      auto& req = b.enqueues[i];
      StoredMessage row;
      row.id = *ids[i];
      row.enqueued_unix_ms = req.enqueued_unix_ms;
      row.expires_unix_ms = expires_of(req);
      row.message = std::move(req.message);
      rows.push_back(std::move(row));
    }
    if (f && !rows.empty()) call(f, before, std::move(rows));
  }

  void run() {
    auto next_sweep = SteadyClock::now() + kSweepInterval;
    for (;;) {
      Batch b;
      bool exit_now = false;
      {
        std::unique_lock lk(mu);
        for (;;) {
          if (stopping || !fetches.empty() || !snapshots.empty() || !flushes.empty() || !page_counts.empty()) break;
          const auto now = SteadyClock::now();
          // Enqueues wait at most group_commit_interval; acks and sent-marks ride along with them
          // or go on their own after kLazyDelay: losing them in a crash costs only duplicates, so
          // they need not cost an fsync each.
          auto deadline = SteadyClock::time_point::max();
          if (!enqueues.empty()) {
            if (enqueues.size() >= opts.group_commit_messages) break;
            deadline = enqueues.front().arrived + opts.group_commit_interval;
          }
          if (!acks.empty() || !marks.empty()) {
            if (acks.size() + marks.size() >= kLazyMax) break;
            deadline = std::min(deadline, lazy_since + kLazyDelay);
          }
          if (deadline != SteadyClock::time_point::max()) {
            if (now >= deadline) break;
            cv.wait_until(lk, deadline);
            continue;
          }
          if (now >= next_sweep) break;
          cv.wait_until(lk, next_sweep);
        }
        // A flush, and the destructor, want everything pending now in this commit.
        const std::size_t n = stopping || !flushes.empty()
                                  ? enqueues.size()
                                  : std::min(enqueues.size(), opts.group_commit_messages);
        b.enqueues.reserve(n);
        for (std::size_t i = 0; i < n; ++i) {
          b.enqueues.push_back(std::move(enqueues.front()));
          enqueues.pop_front();
        }
        b.acks.swap(acks);
        b.marks.swap(marks);
        b.fetches.swap(fetches);
        b.snapshots.swap(snapshots);
        b.flushes.swap(flushes);
        b.page_counts.swap(page_counts);
        exit_now = stopping && b.empty() && enqueues.empty();
      }
      if (exit_now) break;
      if (!b.empty()) process(b);
      if (const auto now = SteadyClock::now(); now >= next_sweep) {
        if (auto s = sweep(now_unix_ms()); !s) log->warn("{}", s.error().message);
        next_sweep = now + kSweepInterval;
      }
    }
    close_db();
  }

  /// Queues a request unless the spool is closing; false then (the caller completes it).
  template <class F>
  bool submit(F&& push) {
    {
      std::lock_guard lk(mu);
      if (stopping) return false;
      push();
    }
    cv.notify_one();
    return true;
  }

  /// Queues an ack or a sent-mark. The worker is woken only when the lazy wait starts (it
  /// then sets its deadline) or the lazy queue reaches kLazyMax: waking it for every batch cost a
  /// context switch each, for nothing (measured in the bridge benchmark).
  bool submit_lazy(std::vector<std::int64_t>& into, const std::vector<std::int64_t>& ids) {
    bool wake = false;
    {
      std::lock_guard lk(mu);
      if (stopping) return false;
      const std::size_t before = acks.size() + marks.size();
      if (before == 0) lazy_since = SteadyClock::now();
      into.insert(into.end(), ids.begin(), ids.end());
      wake = before == 0 || (before < kLazyMax && before + ids.size() >= kLazyMax);
    }
    if (wake) cv.notify_one();
    return true;
  }

  static Error closing_error() { return make_error(errc::busy, "the spool is closing"); }
};

Spool::Spool(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

result<std::unique_ptr<Spool>> Spool::open(Options options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  if (auto r = impl->open_db(); !r) return std::move(r).error();
  Impl* p = impl.get();
  p->worker = std::thread([p] {
    log::name_this_thread("spool");
    p->run();
  });
  return std::unique_ptr<Spool>(new Spool(std::move(impl)));
}

Spool::~Spool() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_one();
  if (impl_->worker.joinable()) impl_->worker.join();
}

void Spool::enqueue(Message message, EnqueueDone done) {
  Impl& i = *impl_;
  Impl::EnqueueRequest req{std::move(message), std::move(done), now_unix_ms(), SteadyClock::now()};
  std::size_t pending = 0;
  {
    std::lock_guard lk(i.mu);
    if (!i.stopping) {
      i.enqueues.push_back(std::move(req));
      pending = i.enqueues.size();
    }
  }
  if (pending == 0) {
    // Only reachable once the destructor has started (e.g. from a completion it runs): the
    // worker takes nothing new then, so the completion runs here, exactly once.
    i.call(req.done, result<std::int64_t>(Impl::closing_error()));
    return;
  }
  // The worker needs waking only to start a group-commit wait or to end one early.
  if (pending == 1 || pending == i.opts.group_commit_messages) i.cv.notify_one();
}

void Spool::snapshot(SnapshotDone done) {
  Impl& i = *impl_;
  if (!i.submit([&] { i.snapshots.push_back({std::move(done)}); }))
    i.call(done, result<BacklogSnapshot>(Impl::closing_error()));
}

void Spool::set_commit_feed(CommitFeed feed) {
  std::lock_guard lk(impl_->mu);
  impl_->feed = std::move(feed);
}

void Spool::fetch(std::int64_t after_id, std::size_t limit, FetchDone done) {
  Impl& i = *impl_;
  // `done` is moved only when the request is queued; otherwise it is completed here.
  if (!i.submit([&] { i.fetches.push_back({after_id, limit, std::move(done)}); }))
    i.call(done, result<std::vector<StoredMessage>>(Impl::closing_error()));
}

void Spool::mark_sent(std::vector<std::int64_t> ids) {
  Impl& i = *impl_;
  if (ids.empty()) return;
  const std::size_t n = ids.size();
  if (!i.submit_lazy(i.marks, ids))
    i.log->warn("mark_sent of {} message(s) after the spool started closing was not recorded", n);
}

void Spool::ack(std::vector<std::int64_t> ids) {
  Impl& i = *impl_;
  if (ids.empty()) return;
  const std::size_t n = ids.size();
  if (!i.submit_lazy(i.acks, ids))
    i.log->warn("ack of {} message(s) after the spool started closing was not recorded; they will be sent again", n);
}

void Spool::flush(std::function<void(result<void>)> done) {
  Impl& i = *impl_;
  if (!i.submit([&] { i.flushes.push_back(std::move(done)); })) i.call(done, result<void>(Impl::closing_error()));
}

void Spool::test_set_max_page_count(std::uint32_t pages, std::function<void()> done) {
  Impl& i = *impl_;
  if (!i.submit([&] { i.page_counts.push_back({pages, std::move(done)}); })) i.call(done);
}

Counters Spool::counters() const {
  std::lock_guard lk(impl_->mu);
  return impl_->published;
}

const Options& Spool::options() const { return impl_->opts; }

std::optional<std::filesystem::path> Spool::quarantined() const { return impl_->quarantined; }

}  // namespace canopy::spool
