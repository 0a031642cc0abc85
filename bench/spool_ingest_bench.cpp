// Spool ingest and drain: canopy::spool against raw SQLite on the same table, one run, same
// disk. Prints figures; asserts nothing.
//
//   spool_ingest_bench [COUNT] [FOLDER]
//
// COUNT (default 200000) messages of 256-byte payloads. FOLDER (default: a new mktemp folder
// under /tmp, removed at the end) gets the database files; a given FOLDER is kept, only the
// files this program made in it are removed.
//
// 1. Spool ingest, durability full and normal: all COUNT enqueues issued at once without
//    waiting (the group commit sees as much concurrency as it can use); msgs/s from the first
//    enqueue to the last completion, and the enqueue-to-completion (= commit) latency p50/p99.
// 2. Raw SQLite, the same schema, WAL, synchronous FULL and NORMAL, 512 rows per transaction
//    with one prepared INSERT: the floor the spool's overhead is measured against.
// 3. Drain of each spool: fetch(limit 500) + ack of what was fetched, until empty.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <string>
#include <vector>

#include <sqlite3.h>
#include <stdlib.h>

#include "canopy/core/log.hpp"
#include "canopy/spool/spool.hpp"

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using canopy::spool::Durability;

constexpr std::size_t kPayload = 256;
constexpr const char* kTopic = "canopy/bench/telemetry";

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

double pct_us(std::vector<std::int64_t>& v, double p) {
  if (v.empty()) return 0;
  return static_cast<double>(v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))]) / 1000.0;
}

void remove_db(const fs::path& db) {
  std::error_code ec;
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db.string() + suffix, ec);
}

std::string payload() {
  std::string p(kPayload, 'x');
  for (std::size_t i = 0; i < p.size(); ++i) p[i] = static_cast<char>('a' + i % 26);
  return p;
}

bool spool_ingest(const fs::path& db, Durability d, std::int64_t count) {
  canopy::spool::Options o;
  o.path = db;
  o.durability = d;
  o.max_bytes = 1ull << 40;
  o.max_messages = static_cast<std::uint64_t>(count) * 2;
  auto opened = canopy::spool::Spool::open(o);
  if (!opened) {
    std::fprintf(stderr, "open failed: %s\n", opened.error().message.c_str());
    return false;
  }
  auto& spool = *opened.value();
  const std::string body = payload();
  const auto n = static_cast<std::size_t>(count);
  std::vector<std::int64_t> start(n), done(n);
  std::atomic<std::int64_t> completed{0}, failed{0};
  std::promise<void> all;

  const std::int64_t t0 = now_ns();
  for (std::size_t i = 0; i < n; ++i) {
    canopy::spool::Message m;
    m.topic = kTopic;
    m.payload = body;
    start[i] = now_ns();
    spool.enqueue(std::move(m), [&, i](canopy::result<std::int64_t> r) {
      done[i] = now_ns();
      if (!r) failed.fetch_add(1, std::memory_order_relaxed);
      if (completed.fetch_add(1, std::memory_order_acq_rel) + 1 == count) all.set_value();
    });
  }
  const std::int64_t t_issued = now_ns();
  all.get_future().wait();
  const std::int64_t t1 = now_ns();

  std::vector<std::int64_t> lat(n);
  for (std::size_t i = 0; i < n; ++i) lat[i] = done[i] - start[i];
  std::sort(lat.begin(), lat.end());
  const auto c = spool.counters();
  const double secs = static_cast<double>(t1 - t0) / 1e9;
  std::printf("spool ingest  durability=%-6s  %lld msgs  %9.0f msgs/s  (%.2f s; enqueue calls took %.2f s)  "
              "enqueue->commit p50=%.1f ms p99=%.1f ms  commits=%llu (%.0f msgs/commit)%s\n",
              canopy::spool::to_string(d), static_cast<long long>(count), static_cast<double>(count) / secs, secs,
              static_cast<double>(t_issued - t0) / 1e9, pct_us(lat, 0.5) / 1000.0, pct_us(lat, 0.99) / 1000.0,
              static_cast<unsigned long long>(c.commits),
              c.commits ? static_cast<double>(count) / static_cast<double>(c.commits) : 0.0,
              failed.load() ? "  FAILURES" : "");

  // Drain: fetch 500, ack them (the ack rides in the same batch as the next fetch).
  const std::int64_t d0 = now_ns();
  std::int64_t after = 0, drained = 0;
  for (;;) {
    std::promise<canopy::result<std::vector<canopy::spool::StoredMessage>>> p;
    auto f = p.get_future();
    spool.fetch(after, 500, [&p](canopy::result<std::vector<canopy::spool::StoredMessage>> r) { p.set_value(std::move(r)); });
    auto rows = f.get();
    if (!rows) {
      std::fprintf(stderr, "fetch failed: %s\n", rows.error().message.c_str());
      return false;
    }
    if (rows->empty()) break;
    std::vector<std::int64_t> ids;
    ids.reserve(rows->size());
    for (const auto& r : *rows) ids.push_back(r.id);
    after = ids.back();
    drained += static_cast<std::int64_t>(ids.size());
    spool.ack(std::move(ids));
  }
  std::promise<canopy::result<void>> fp;
  auto ff = fp.get_future();
  spool.flush([&fp](canopy::result<void> r) { fp.set_value(std::move(r)); });
  const bool flushed = static_cast<bool>(ff.get());
  const std::int64_t d1 = now_ns();
  const double dsecs = static_cast<double>(d1 - d0) / 1e9;
  std::printf("spool drain   durability=%-6s  %lld msgs  %9.0f msgs/s  (%.2f s; fetch 500 + ack)  queued after=%llu%s\n",
              canopy::spool::to_string(d), static_cast<long long>(drained), static_cast<double>(drained) / dsecs, dsecs,
              static_cast<unsigned long long>(spool.counters().queued), flushed ? "" : "  FLUSH FAILED");
  return true;
}

bool check(sqlite3* db, int rc, const char* what) {
  if (rc == SQLITE_OK || rc == SQLITE_DONE || rc == SQLITE_ROW) return true;
  std::fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
  return false;
}

// The spool's table (see src/spool/spool.cpp), written the plainest way.
bool raw_ingest(const fs::path& path, bool full, std::int64_t count) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return check(db, SQLITE_ERROR, "open");
  const std::string setup = std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") + (full ? "FULL" : "NORMAL") +
                            R"sql(;
CREATE TABLE msgs(id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
  qos INTEGER NOT NULL, retain INTEGER NOT NULL, props TEXT NOT NULL, size INTEGER NOT NULL,
  enqueued_ms INTEGER NOT NULL, expires_ms INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  sent_gen INTEGER NOT NULL DEFAULT 0, expiry_s INTEGER NOT NULL DEFAULT 0);
CREATE INDEX msgs_qos0 ON msgs(qos) WHERE qos = 0;
CREATE INDEX msgs_expiry ON msgs(expires_ms) WHERE expires_ms > 0;)sql";
  bool ok = check(db, sqlite3_exec(db, setup.c_str(), nullptr, nullptr, nullptr), "schema");
  sqlite3_stmt* ins = nullptr;
  ok = ok && check(db,
                   sqlite3_prepare_v2(db,
                                      "INSERT INTO msgs(topic, payload, qos, retain, props, size, enqueued_ms, "
                                      "expires_ms, expiry_s) VALUES(?1, ?2, 1, 0, '', ?3, ?4, 0, 0)",
                                      -1, &ins, nullptr),
                   "prepare");
  const std::string body = payload();
  const std::string topic = kTopic;
  const std::int64_t t0 = now_ns();
  std::int64_t i = 0;
  while (ok && i < count) {
    ok = check(db, sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), "begin");
    for (int k = 0; ok && k < 512 && i < count; ++k, ++i) {
      sqlite3_bind_text(ins, 1, topic.data(), static_cast<int>(topic.size()), SQLITE_STATIC);
      sqlite3_bind_blob(ins, 2, body.data(), static_cast<int>(body.size()), SQLITE_STATIC);
      sqlite3_bind_int64(ins, 3, static_cast<sqlite3_int64>(topic.size() + body.size()));
      sqlite3_bind_int64(ins, 4, i);
      ok = check(db, sqlite3_step(ins), "insert");
      sqlite3_reset(ins);
    }
    ok = ok && check(db, sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr), "commit");
  }
  const std::int64_t t1 = now_ns();
  sqlite3_finalize(ins);
  sqlite3_close(db);
  const double secs = static_cast<double>(t1 - t0) / 1e9;
  if (ok)
    std::printf("raw sqlite    synchronous=%-6s %lld rows  %9.0f rows/s  (%.2f s; 512 rows/txn, prepared INSERT)\n",
                full ? "FULL" : "NORMAL", static_cast<long long>(count), static_cast<double>(count) / secs, secs);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t count = argc > 1 ? std::atoll(argv[1]) : 200000;
  if (count <= 0) {
    std::fprintf(stderr, "usage: spool_ingest_bench [COUNT] [FOLDER]\n");
    return 2;
  }
  fs::path folder;
  bool own_folder = false;
  if (argc > 2) {
    folder = argv[2];
    std::error_code ec;
    fs::create_directories(folder, ec);
  } else {
    std::string tmpl = "/tmp/spool-bench-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    folder = tmpl;
    own_folder = true;
  }
  canopy::log::Settings quiet;
  quiet.level = spdlog::level::warn;
  (void)canopy::log::configure(quiet);

  std::printf("spool_ingest_bench: %lld messages, payload %zu B, topic %zu B, folder %s, SQLite %s\n",
              static_cast<long long>(count), kPayload, std::string(kTopic).size(), folder.c_str(), sqlite3_libversion());
  bool ok = true;
  const fs::path spool_full = folder / "spool-full.db", spool_normal = folder / "spool-normal.db";
  const fs::path raw_full = folder / "raw-full.db", raw_normal = folder / "raw-normal.db";
  ok = spool_ingest(spool_full, Durability::full, count) && ok;
  remove_db(spool_full);
  ok = spool_ingest(spool_normal, Durability::normal, count) && ok;
  remove_db(spool_normal);
  ok = raw_ingest(raw_full, true, count) && ok;
  remove_db(raw_full);
  ok = raw_ingest(raw_normal, false, count) && ok;
  remove_db(raw_normal);

  if (own_folder) {
    std::error_code ec;
    fs::remove_all(folder, ec);
  }
  return ok ? 0 : 1;
}
