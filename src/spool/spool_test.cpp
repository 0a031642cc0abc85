#include "canopy/spool/spool.hpp"

#include <atomic>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <regex>
#include <thread>

#include <gtest/gtest.h>
#include <sqlite3.h>

#include "support/process.hpp"

namespace canopy::spool {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Synchronous wrappers: the completions run on the spool's thread, the test waits here.
result<std::int64_t> enqueue_sync(Spool& s, Message m) {
  std::promise<result<std::int64_t>> p;
  auto f = p.get_future();
  s.enqueue(std::move(m), [&p](result<std::int64_t> r) { p.set_value(std::move(r)); });
  return f.get();
}

result<std::vector<StoredMessage>> fetch_sync(Spool& s, std::int64_t after, std::size_t limit) {
  std::promise<result<std::vector<StoredMessage>>> p;
  auto f = p.get_future();
  s.fetch(after, limit, [&p](result<std::vector<StoredMessage>> r) { p.set_value(std::move(r)); });
  return f.get();
}

result<void> flush_sync(Spool& s) {
  std::promise<result<void>> p;
  auto f = p.get_future();
  s.flush([&p](result<void> r) { p.set_value(std::move(r)); });
  return f.get();
}

void set_pages_sync(Spool& s, std::uint32_t pages) {
  std::promise<void> p;
  auto f = p.get_future();
  s.test_set_max_page_count(pages, [&p] { p.set_value(); });
  f.get();
}

std::vector<std::int64_t> ids_of(const std::vector<StoredMessage>& v) {
  std::vector<std::int64_t> out;
  for (const auto& m : v) out.push_back(m.id);
  return out;
}

Message msg(std::string topic, std::string payload, int qos = 1) {
  Message m;
  m.topic = std::move(topic);
  m.payload = std::move(payload);
  m.qos = qos;
  return m;
}

/// A message of exactly `size` bytes (topic "t" + payload).
Message sized(std::size_t size, int qos = 1) { return msg("t", std::string(size - 1, 'x'), qos); }

class SpoolTest : public ::testing::Test {
 protected:
  Options opts() const {
    Options o;
    o.path = dir_.path() / "spool" / "spool.db";
    return o;
  }
  std::unique_ptr<Spool> open(Options o) {
    auto r = Spool::open(std::move(o));
    EXPECT_TRUE(r) << (r ? "" : r.error().message);
    return r ? std::move(r).value() : nullptr;
  }
  std::unique_ptr<Spool> open() { return open(opts()); }

  test::TempDir dir_;
};

TEST_F(SpoolTest, EnqueueThenFetchReturnsEverythingInOrder) {
  auto s = open();
  ASSERT_TRUE(s);
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 10; ++i) {
    Message m = msg("dev/" + std::to_string(i), std::string("bin\0ary", 7) + std::to_string(i), i % 2);
    m.retain = i == 3;
    if (i == 4) m.properties_json = R"({"contentType":"application/json"})";
    if (i == 5) m.expiry_seconds = 3600;
    auto r = enqueue_sync(*s, std::move(m));
    ASSERT_TRUE(r) << r.error().message;
    if (!ids.empty()) {
      EXPECT_GT(*r, ids.back());
    }
    ids.push_back(*r);
  }
  auto all = fetch_sync(*s, 0, 100);
  ASSERT_TRUE(all) << all.error().message;
  ASSERT_EQ(ids_of(*all), ids);
  for (int i = 0; i < 10; ++i) {
    const auto& m = (*all)[static_cast<std::size_t>(i)];
    EXPECT_EQ(m.message.topic, "dev/" + std::to_string(i));
    EXPECT_EQ(m.message.payload, std::string("bin\0ary", 7) + std::to_string(i));
    EXPECT_EQ(m.message.qos, i % 2);
    EXPECT_EQ(m.message.retain, i == 3);
    EXPECT_EQ(m.message.properties_json, i == 4 ? R"({"contentType":"application/json"})" : "");
    EXPECT_EQ(m.message.expiry_seconds, i == 5 ? 3600u : 0u);
    EXPECT_EQ(m.expires_unix_ms, i == 5 ? m.enqueued_unix_ms + 3600'000 : 0);
    EXPECT_GT(m.enqueued_unix_ms, 0);
    EXPECT_EQ(m.attempts, 0);
  }
  auto page = fetch_sync(*s, ids[4], 3);
  ASSERT_TRUE(page);
  EXPECT_EQ(ids_of(*page), (std::vector<std::int64_t>{ids[5], ids[6], ids[7]}));
  auto none = fetch_sync(*s, ids.back(), 10);
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  EXPECT_EQ(s->counters().queued, 10u);
  EXPECT_EQ(s->counters().accepted, 10u);
}

TEST_F(SpoolTest, CompletionRunsOnlyAfterTheRowIsCommitted) {
  auto s = open();
  ASSERT_TRUE(s);
  const std::string path = opts().path.string();
  std::promise<std::pair<std::int64_t, int>> seen;
  auto f = seen.get_future();
  s->enqueue(msg("a", "b"), [&](result<std::int64_t> id) {
    // A second, independent connection sees only committed rows.
    int count = -1;
    sqlite3* db = nullptr;
    if (id && sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
      sqlite3_stmt* st = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT count(*) FROM msgs WHERE id = ?1", -1, &st, nullptr) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, *id);
        if (sqlite3_step(st) == SQLITE_ROW) count = sqlite3_column_int(st, 0);
      }
      sqlite3_finalize(st);
    }
    sqlite3_close(db);
    seen.set_value({id ? *id : -1, count});
  });
  auto [id, count] = f.get();
  EXPECT_GT(id, 0);
  EXPECT_EQ(count, 1);
}

TEST_F(SpoolTest, IdsKeepIncreasingAcrossReopenEvenWhenEmptied) {
  std::int64_t last = 0;
  {
    auto s = open();
    ASSERT_TRUE(s);
    std::vector<std::int64_t> ids;
    for (int i = 0; i < 3; ++i) ids.push_back(*enqueue_sync(*s, msg("t", "p")));
    last = ids.back();
    s->ack(ids);
    ASSERT_TRUE(flush_sync(*s));
    EXPECT_EQ(s->counters().queued, 0u);
  }
  auto s = open();
  ASSERT_TRUE(s);
  auto id = enqueue_sync(*s, msg("t", "p"));
  ASSERT_TRUE(id);
  EXPECT_GT(*id, last);
}

// The feed's contract: every committed row once, in id order, as fetch() would return it, with
// the newest id given out before it; after a reopen that is the newest id ever given out, even
// when those rows were acked (a reader at that position can take the rows; one behind fetches).
TEST_F(SpoolTest, CommitFeedHandsOverEachCommitWithTheNewestIdBeforeIt) {
  struct Fed {
    std::int64_t newest_before;
    std::vector<StoredMessage> rows;
  };
  std::mutex mu;
  std::vector<Fed> fed;
  auto take_feed = [&](Spool& s) {
    s.set_commit_feed([&](std::int64_t newest_before, std::vector<StoredMessage> rows) {
      std::lock_guard lk(mu);
      fed.push_back({newest_before, std::move(rows)});
    });
  };
  std::int64_t last = 0;
  {
    Options o = opts();
    o.ttl = std::chrono::seconds(600);
    auto s = open(o);
    ASSERT_TRUE(s);
    take_feed(*s);
    // Two commits: a flush ends the first.
    std::vector<std::int64_t> ids;
    Message first = msg("a/1", std::string("x\0y", 3), 0);
    first.properties_json = R"({"contentType":"text/plain"})";
    first.expiry_seconds = 60;
    ids.push_back(*enqueue_sync(*s, first));
    ASSERT_TRUE(flush_sync(*s));
    for (int i = 0; i < 3; ++i) ids.push_back(*enqueue_sync(*s, msg("b/" + std::to_string(i), "p")));
    ASSERT_TRUE(flush_sync(*s));
    auto stored = fetch_sync(*s, 0, 10);
    ASSERT_TRUE(stored);
    std::lock_guard lk(mu);
    std::vector<StoredMessage> all;
    std::int64_t before = 0;
    for (auto& f : fed) {
      EXPECT_EQ(f.newest_before, before) << "each commit continues where the previous one ended";
      ASSERT_FALSE(f.rows.empty());
      before = f.rows.back().id;
      for (auto& r : f.rows) all.push_back(r);
    }
    ASSERT_EQ(ids_of(all), ids);
    ASSERT_EQ(ids_of(*stored), ids);
    for (std::size_t i = 0; i < all.size(); ++i) {
      EXPECT_EQ(all[i].message.topic, (*stored)[i].message.topic);
      EXPECT_EQ(all[i].message.payload, (*stored)[i].message.payload);
      EXPECT_EQ(all[i].message.qos, (*stored)[i].message.qos);
      EXPECT_EQ(all[i].message.properties_json, (*stored)[i].message.properties_json);
      EXPECT_EQ(all[i].message.expiry_seconds, (*stored)[i].message.expiry_seconds);
      EXPECT_EQ(all[i].enqueued_unix_ms, (*stored)[i].enqueued_unix_ms);
      EXPECT_EQ(all[i].expires_unix_ms, (*stored)[i].expires_unix_ms);
      EXPECT_EQ(all[i].attempts, 0);
    }
    EXPECT_EQ(all[0].expires_unix_ms, all[0].enqueued_unix_ms + 60'000) << "the message's own expiry is shorter";
    EXPECT_EQ(all[1].expires_unix_ms, all[1].enqueued_unix_ms + 600'000) << "the spool's ttl";
    last = ids.back();
    s->ack(ids);
    ASSERT_TRUE(flush_sync(*s));
    fed.clear();
  }
  auto s = open();
  ASSERT_TRUE(s);
  take_feed(*s);
  auto id = enqueue_sync(*s, msg("c", "p"));
  ASSERT_TRUE(id);
  ASSERT_TRUE(flush_sync(*s));
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(fed.size(), 1u);
    EXPECT_EQ(fed[0].newest_before, last);
    EXPECT_EQ(ids_of(fed[0].rows), std::vector<std::int64_t>{*id});
  }
  // Removing the feed stops it.
  s->set_commit_feed({});
  ASSERT_TRUE(enqueue_sync(*s, msg("d", "p")));
  std::lock_guard lk(mu);
  EXPECT_EQ(fed.size(), 1u);
}

TEST_F(SpoolTest, AckDeletesAndCountsDelivered) {
  auto s = open();
  ASSERT_TRUE(s);
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(*enqueue_sync(*s, sized(10)));
  s->ack({ids[0], ids[2], 999999});  // an unknown id is ignored, not counted
  ASSERT_TRUE(flush_sync(*s));
  auto c = s->counters();
  EXPECT_EQ(c.queued, 3u);
  EXPECT_EQ(c.bytes, 30u);
  EXPECT_EQ(c.delivered, 2u);
  EXPECT_EQ(c.accepted, 5u);
  auto rest = fetch_sync(*s, 0, 10);
  ASSERT_TRUE(rest);
  EXPECT_EQ(ids_of(*rest), (std::vector<std::int64_t>{ids[1], ids[3], ids[4]}));
  s->ack({ids[0]});  // twice: still counted once
  ASSERT_TRUE(flush_sync(*s));
  EXPECT_EQ(s->counters().delivered, 2u);
}

TEST_F(SpoolTest, CountersSurviveReopen) {
  Counters before;
  {
    Options o = opts();
    o.max_messages = 3;
    auto s = open(o);
    ASSERT_TRUE(s);
    std::vector<std::int64_t> ids;
    for (int i = 0; i < 3; ++i) ids.push_back(*enqueue_sync(*s, sized(20)));
    EXPECT_FALSE(enqueue_sync(*s, sized(20)));  // rejected_full
    s->mark_sent({ids[0], ids[1]});
    s->mark_sent({ids[1]});  // resent
    s->ack({ids[0]});
    ASSERT_TRUE(flush_sync(*s));
    before = s->counters();
    EXPECT_EQ(before.accepted, 3u);
    EXPECT_EQ(before.delivered, 1u);
    EXPECT_EQ(before.rejected_full, 1u);
    EXPECT_EQ(before.resent, 1u);
    EXPECT_EQ(before.queued, 2u);
    EXPECT_EQ(before.bytes, 40u);
  }
  auto s = open();
  ASSERT_TRUE(s);
  auto after = s->counters();
  EXPECT_EQ(after.queued, before.queued);
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(after.accepted, before.accepted);
  EXPECT_EQ(after.delivered, before.delivered);
  EXPECT_EQ(after.dropped_full, before.dropped_full);
  EXPECT_EQ(after.rejected_full, before.rejected_full);
  EXPECT_EQ(after.expired, before.expired);
  EXPECT_EQ(after.resent, before.resent);
  EXPECT_EQ(after.duplicates_suspected, before.duplicates_suspected);
  EXPECT_EQ(after.commits, 0u);  // per Spool object, not stored
}

TEST_F(SpoolTest, RejectNewAtTheMessageCountBound) {
  Options o = opts();
  o.max_messages = 3;
  auto s = open(o);
  ASSERT_TRUE(s);
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 3; ++i) {
    auto r = enqueue_sync(*s, sized(10));
    ASSERT_TRUE(r);
    ids.push_back(*r);
  }
  auto r = enqueue_sync(*s, sized(10));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::busy);
  EXPECT_EQ(r.error().message,
            "the spool is full (3 of 3 messages, 30 of 67108864 bytes); spooler.whenFull is reject-new, so this "
            "message was refused");
  auto c = s->counters();
  EXPECT_EQ(c.queued, 3u);
  EXPECT_EQ(c.bytes, 30u);
  EXPECT_EQ(c.accepted, 3u);
  EXPECT_EQ(c.rejected_full, 1u);
  EXPECT_EQ(c.dropped_full, 0u);
  EXPECT_EQ(ids_of(*fetch_sync(*s, 0, 10)), ids);
  // Room made by an ack is usable again.
  s->ack({ids[0]});
  EXPECT_TRUE(enqueue_sync(*s, sized(10)));
}

TEST_F(SpoolTest, RejectNewAtTheByteBound) {
  Options o = opts();
  o.max_bytes = 100;
  auto s = open(o);
  ASSERT_TRUE(s);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(enqueue_sync(*s, sized(30)));
  auto r = enqueue_sync(*s, sized(11));  // 101 > 100
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::busy);
  EXPECT_NE(r.error().message.find("90 of 100 bytes"), std::string::npos) << r.error().message;
  EXPECT_TRUE(enqueue_sync(*s, sized(10)));  // exactly 100 fits
  auto c = s->counters();
  EXPECT_EQ(c.queued, 4u);
  EXPECT_EQ(c.bytes, 100u);
  EXPECT_EQ(c.rejected_full, 1u);
  EXPECT_EQ(c.accepted, 4u);
}

TEST_F(SpoolTest, DropOldestAtTheMessageCountBound) {
  Options o = opts();
  o.max_messages = 3;
  o.when_full = WhenFull::drop_oldest;
  auto s = open(o);
  ASSERT_TRUE(s);
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 5; ++i) {
    auto r = enqueue_sync(*s, sized(10));
    ASSERT_TRUE(r) << r.error().message;
    ids.push_back(*r);
  }
  auto c = s->counters();
  EXPECT_EQ(c.queued, 3u);
  EXPECT_EQ(c.bytes, 30u);
  EXPECT_EQ(c.accepted, 5u);
  EXPECT_EQ(c.dropped_full, 2u);
  EXPECT_EQ(c.rejected_full, 0u);
  EXPECT_EQ(ids_of(*fetch_sync(*s, 0, 10)), (std::vector<std::int64_t>{ids[2], ids[3], ids[4]}));
}

TEST_F(SpoolTest, DropOldestAtTheByteBoundWithinOneBatch) {
  Options o = opts();
  o.max_bytes = 100;
  o.when_full = WhenFull::drop_oldest;
  auto s = open(o);
  ASSERT_TRUE(s);
  // Four enqueues in flight at once: the bound holds against the rows of the same batch too.
  std::mutex mu;
  std::vector<result<std::int64_t>> got;
  for (int i = 0; i < 4; ++i)
    s->enqueue(sized(30), [&](result<std::int64_t> r) {
      std::lock_guard lk(mu);
      got.push_back(std::move(r));
    });
  ASSERT_TRUE(flush_sync(*s));
  {
    std::lock_guard lk(mu);
    ASSERT_EQ(got.size(), 4u);
    for (auto& r : got) EXPECT_TRUE(r);
  }
  auto c = s->counters();
  EXPECT_EQ(c.queued, 3u);
  EXPECT_EQ(c.bytes, 90u);
  EXPECT_EQ(c.dropped_full, 1u);
  // 70 bytes need 60 freed: the two oldest go.
  auto big = enqueue_sync(*s, sized(70));
  ASSERT_TRUE(big);
  c = s->counters();
  EXPECT_EQ(c.queued, 2u);
  EXPECT_EQ(c.bytes, 100u);
  EXPECT_EQ(c.dropped_full, 3u);
  EXPECT_EQ(c.accepted, 5u);
  auto rows = fetch_sync(*s, 0, 10);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ(rows->back().id, *big);
}

TEST_F(SpoolTest, DropQos0FirstAtTheMessageCountBound) {
  Options o = opts();
  o.max_messages = 3;
  o.when_full = WhenFull::drop_qos0_first;
  auto s = open(o);
  ASSERT_TRUE(s);
  const auto a = *enqueue_sync(*s, sized(10, 1));
  ASSERT_TRUE(enqueue_sync(*s, sized(10, 0)));  // the oldest QoS 0 row
  const auto c0 = *enqueue_sync(*s, sized(10, 0));
  const auto d = *enqueue_sync(*s, sized(10, 1));  // drops the oldest QoS 0 row
  EXPECT_EQ(ids_of(*fetch_sync(*s, 0, 10)), (std::vector<std::int64_t>{a, c0, d}));
  EXPECT_EQ(s->counters().dropped_full, 1u);
  const auto e = *enqueue_sync(*s, sized(10, 1));  // drops c0
  EXPECT_EQ(ids_of(*fetch_sync(*s, 0, 10)), (std::vector<std::int64_t>{a, d, e}));
  auto r = enqueue_sync(*s, sized(10, 0));  // only QoS 1 left: refused
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::busy);
  EXPECT_NE(r.error().message.find("drop-qos0-first"), std::string::npos) << r.error().message;
  auto c = s->counters();
  EXPECT_EQ(c.queued, 3u);
  EXPECT_EQ(c.dropped_full, 2u);
  EXPECT_EQ(c.rejected_full, 1u);
  EXPECT_EQ(c.accepted, 5u);
  EXPECT_EQ(ids_of(*fetch_sync(*s, 0, 10)), (std::vector<std::int64_t>{a, d, e}));
}

TEST_F(SpoolTest, DropQos0FirstAtTheByteBound) {
  Options o = opts();
  o.max_bytes = 100;
  o.when_full = WhenFull::drop_qos0_first;
  auto s = open(o);
  ASSERT_TRUE(s);
  const auto a = *enqueue_sync(*s, sized(60, 1));
  ASSERT_TRUE(enqueue_sync(*s, sized(20, 0)));
  ASSERT_TRUE(enqueue_sync(*s, sized(20, 0)));
  // 50 bytes: dropping both QoS 0 rows frees only 40, so nothing is dropped and it is refused.
  auto r = enqueue_sync(*s, sized(50, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::busy);
  auto c = s->counters();
  EXPECT_EQ(c.queued, 3u);
  EXPECT_EQ(c.bytes, 100u);
  EXPECT_EQ(c.dropped_full, 0u);
  EXPECT_EQ(c.rejected_full, 1u);
  // 40 bytes: both QoS 0 rows go.
  auto big = enqueue_sync(*s, sized(40, 1));
  ASSERT_TRUE(big);
  c = s->counters();
  EXPECT_EQ(c.queued, 2u);
  EXPECT_EQ(c.bytes, 100u);
  EXPECT_EQ(c.dropped_full, 2u);
  EXPECT_EQ(ids_of(*fetch_sync(*s, 0, 10)), (std::vector<std::int64_t>{a, *big}));
}

TEST_F(SpoolTest, MessageLargerThanTheWholeSpoolIsInvalid) {
  Options o = opts();
  o.max_bytes = 100;
  o.when_full = WhenFull::drop_oldest;  // even this policy cannot make room for it
  auto s = open(o);
  ASSERT_TRUE(s);
  ASSERT_TRUE(enqueue_sync(*s, sized(50)));
  auto r = enqueue_sync(*s, sized(101));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_NE(r.error().message.find("101 bytes"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("100"), std::string::npos) << r.error().message;
  auto c = s->counters();
  EXPECT_EQ(c.queued, 1u);
  EXPECT_EQ(c.dropped_full, 0u);
  EXPECT_EQ(c.rejected_full, 0u);
  EXPECT_EQ(c.accepted, 1u);
  auto q = enqueue_sync(*s, msg("t", "p", 2));
  ASSERT_FALSE(q);
  EXPECT_EQ(q.error().code, errc::invalid);
}

TEST_F(SpoolTest, TtlAndMessageExpiryTheShorterWins) {
  Options o = opts();
  o.ttl = 3600s;
  auto s = open(o);
  ASSERT_TRUE(s);
  Message shorter = msg("t", "a");
  shorter.expiry_seconds = 60;
  Message longer = msg("t", "b");
  longer.expiry_seconds = 7200;
  ASSERT_TRUE(enqueue_sync(*s, shorter));
  ASSERT_TRUE(enqueue_sync(*s, longer));
  ASSERT_TRUE(enqueue_sync(*s, msg("t", "c")));
  auto rows = fetch_sync(*s, 0, 10);
  ASSERT_TRUE(rows);
  ASSERT_EQ(rows->size(), 3u);
  EXPECT_EQ((*rows)[0].expires_unix_ms - (*rows)[0].enqueued_unix_ms, 60'000);
  EXPECT_EQ((*rows)[1].expires_unix_ms - (*rows)[1].enqueued_unix_ms, 3600'000);
  EXPECT_EQ((*rows)[2].expires_unix_ms - (*rows)[2].enqueued_unix_ms, 3600'000);
}

TEST_F(SpoolTest, ExpiredRowsAreCountedAndNeverReturned) {
  auto s = open();
  ASSERT_TRUE(s);
  const auto keep1 = *enqueue_sync(*s, msg("t", "keep"));
  Message soon = msg("t", "expires");
  soon.expiry_seconds = 1;
  ASSERT_TRUE(enqueue_sync(*s, soon));
  ASSERT_TRUE(enqueue_sync(*s, soon));
  const auto keep2 = *enqueue_sync(*s, msg("t", "keep"));
  std::this_thread::sleep_for(1200ms);
  auto rows = fetch_sync(*s, 0, 3);  // the limit counts returned rows, not expired ones
  ASSERT_TRUE(rows);
  EXPECT_EQ(ids_of(*rows), (std::vector<std::int64_t>{keep1, keep2}));
  auto c = s->counters();
  EXPECT_EQ(c.expired, 2u);
  EXPECT_EQ(c.queued, 2u);
  EXPECT_EQ(c.bytes, 2 * std::string("tkeep").size());
}

TEST_F(SpoolTest, SpoolTtlExpiresRowsFoundAtOpen) {
  Options o = opts();
  o.ttl = 1s;
  {
    auto s = open(o);
    ASSERT_TRUE(s);
    ASSERT_TRUE(enqueue_sync(*s, msg("t", "1")));
    ASSERT_TRUE(enqueue_sync(*s, msg("t", "2")));
  }
  std::this_thread::sleep_for(1200ms);
  auto s = open(o);  // the sweep at open removes them
  ASSERT_TRUE(s);
  auto c = s->counters();
  EXPECT_EQ(c.expired, 2u);
  EXPECT_EQ(c.queued, 0u);
  EXPECT_EQ(c.bytes, 0u);
  EXPECT_TRUE(fetch_sync(*s, 0, 10)->empty());
}

TEST_F(SpoolTest, MarkSentCountsResentAndDuplicatesSuspectedAcrossReopen) {
  std::vector<std::int64_t> ids;
  {
    auto s = open();
    ASSERT_TRUE(s);
    for (int i = 0; i < 3; ++i) ids.push_back(*enqueue_sync(*s, msg("t", "p")));
    s->mark_sent({ids[0], ids[1]});
    ASSERT_TRUE(flush_sync(*s));
    EXPECT_EQ(s->counters().resent, 0u);
    auto rows = fetch_sync(*s, 0, 10);
    ASSERT_TRUE(rows);
    EXPECT_EQ((*rows)[0].attempts, 1);
    EXPECT_EQ((*rows)[1].attempts, 1);
    EXPECT_EQ((*rows)[2].attempts, 0);
    s->mark_sent({ids[0]});  // sent again in the same process: resent, not a suspected duplicate
    ASSERT_TRUE(flush_sync(*s));
    EXPECT_EQ(s->counters().resent, 1u);
    EXPECT_EQ(s->counters().duplicates_suspected, 0u);
  }
  {
    auto s = open();
    ASSERT_TRUE(s);
    auto rows = fetch_sync(*s, 0, 10);
    ASSERT_TRUE(rows);
    EXPECT_EQ((*rows)[0].attempts, 2);
    s->mark_sent({ids[0], ids[1], ids[2]});  // 0 and 1 were sent by the previous process
    ASSERT_TRUE(flush_sync(*s));
    auto c = s->counters();
    EXPECT_EQ(c.resent, 3u);
    EXPECT_EQ(c.duplicates_suspected, 2u);
    s->mark_sent({ids[0]});  // its last send was in this process now
    ASSERT_TRUE(flush_sync(*s));
    c = s->counters();
    EXPECT_EQ(c.resent, 4u);
    EXPECT_EQ(c.duplicates_suspected, 2u);
  }
  auto s = open();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->counters().resent, 4u);
  EXPECT_EQ(s->counters().duplicates_suspected, 2u);
}

TEST_F(SpoolTest, GroupCommitPutsManyMessagesInOneTransaction) {
  Options o = opts();
  o.group_commit_messages = 100;
  o.group_commit_interval = 10min;  // only the count (or flush) ends a batch
  auto s = open(o);
  ASSERT_TRUE(s);
  std::atomic<int> ok{0}, failed{0};
  std::promise<void> all;
  for (int i = 0; i < 1000; ++i)
    s->enqueue(sized(64), [&](result<std::int64_t> r) {
      (r ? ok : failed)++;
      if (ok + failed == 1000) all.set_value();
    });
  all.get_future().get();
  EXPECT_EQ(ok, 1000);
  EXPECT_EQ(s->counters().commits, 10u);
  EXPECT_EQ(s->counters().queued, 1000u);
}

TEST_F(SpoolTest, GroupCommitWithDefaultSettingsBatchesConcurrentEnqueues) {
  auto s = open();
  ASSERT_TRUE(s);
  std::atomic<int> done{0};
  for (int i = 0; i < 1000; ++i) s->enqueue(sized(64), [&](result<std::int64_t>) { ++done; });
  ASSERT_TRUE(flush_sync(*s));
  EXPECT_EQ(done, 1000);
  EXPECT_LT(s->counters().commits, 500u);  // 1000 without batching
}

TEST_F(SpoolTest, DiskFullFailsTheBatchKeepsCommittedRowsAndRecovers) {
  Options o = opts();
  o.test_max_page_count = 24;  // 96 KiB with 4 KiB pages
  std::vector<std::int64_t> committed;
  {
    auto s = open(o);
    ASSERT_TRUE(s);
    std::optional<Error> full;
    for (int i = 0; i < 500 && !full; ++i) {
      auto r = enqueue_sync(*s, sized(1000));
      if (r) committed.push_back(*r);
      else full = r.error();
    }
    ASSERT_TRUE(full) << "the page limit was never reached";
    ASSERT_FALSE(committed.empty());
    EXPECT_EQ(full->code, errc::io);
    EXPECT_EQ(full->message,
              "the spool database " + o.path.string() + " could not be written: the disk is full (SQLITE_FULL)");
    EXPECT_EQ(s->counters().queued, committed.size());
    EXPECT_EQ(s->counters().accepted, committed.size());

    // Every enqueue of a failing batch fails, and so does the flush that carried them.
    std::atomic<int> failed{0};
    for (int i = 0; i < 5; ++i)
      s->enqueue(sized(1000), [&](result<std::int64_t> r) {
        if (!r && r.error().code == errc::io) ++failed;
      });
    auto f = flush_sync(*s);
    EXPECT_FALSE(f);
    EXPECT_EQ(failed, 5);

    // Nothing committed was lost.
    auto rows = fetch_sync(*s, 0, 1000);
    ASSERT_TRUE(rows) << rows.error().message;
    EXPECT_EQ(ids_of(*rows), committed);

    // Space again: the next batch goes through normally.
    set_pages_sync(*s, 0);
    auto r = enqueue_sync(*s, sized(1000));
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_GT(*r, committed.back());
    committed.push_back(*r);
    EXPECT_EQ(s->counters().queued, committed.size());
  }
  auto s = open();
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->quarantined());
  EXPECT_EQ(ids_of(*fetch_sync(*s, 0, 1000)), committed);
  EXPECT_EQ(s->counters().accepted, committed.size());
}

void expect_quarantine_name(const fs::path& db, const fs::path& q) {
  EXPECT_TRUE(std::regex_match(q.string(), std::regex(std::regex_replace(db.string(), std::regex(R"([.^$|()\[\]{}*+?\\])"),
                                                                          R"(\$&)") +
                                                       R"(\.corrupt-\d{8}T\d{6}Z)")))
      << q;
}

TEST_F(SpoolTest, GarbageFileIsQuarantinedAndANewSpoolStarts) {
  const fs::path db = opts().path;
  fs::create_directories(db.parent_path());
  std::string garbage(10000, '\0');
  std::mt19937 rng(42);
  for (auto& ch : garbage) ch = static_cast<char>(rng());
  test::write_file(db, garbage);
  auto s = open();
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->quarantined());
  expect_quarantine_name(db, *s->quarantined());
  EXPECT_EQ(test::read_file(*s->quarantined()), garbage);
  EXPECT_EQ(s->counters().queued, 0u);
  auto id = enqueue_sync(*s, msg("t", "p"));
  ASSERT_TRUE(id) << id.error().message;
  EXPECT_EQ(ids_of(*fetch_sync(*s, 0, 10)), std::vector<std::int64_t>{*id});
}

TEST_F(SpoolTest, DamagedPageIsQuarantinedAndANewSpoolStarts) {
  const fs::path db = opts().path;
  {
    auto s = open();
    ASSERT_TRUE(s);
    for (int i = 0; i < 300; ++i) s->enqueue(sized(1000), [](result<std::int64_t>) {});
    ASSERT_TRUE(flush_sync(*s));
  }
  ASSERT_FALSE(fs::exists(db.string() + "-wal"));  // checkpointed by the last close
  ASSERT_GT(fs::file_size(db), 20u * 4096);
  {
    std::fstream f(db, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10 * 4096);
    std::mt19937 rng(7);
    for (int i = 0; i < 4096; ++i) f.put(static_cast<char>(rng()));
  }
  const auto damaged_size = fs::file_size(db);
  auto s = open();
  ASSERT_TRUE(s);
  ASSERT_TRUE(s->quarantined());
  expect_quarantine_name(db, *s->quarantined());
  EXPECT_EQ(fs::file_size(*s->quarantined()), damaged_size);
  EXPECT_EQ(s->counters().queued, 0u);
  EXPECT_TRUE(enqueue_sync(*s, msg("t", "p")));
}

TEST_F(SpoolTest, UnwritableFolderIsAnIoError) {
  test::write_file(dir_.path() / "file", "x");
  Options o;
  o.path = dir_.path() / "file" / "spool" / "spool.db";
  auto r = Spool::open(o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::io);
  EXPECT_NE(r.error().message.find((dir_.path() / "file").string()), std::string::npos) << r.error().message;
}

TEST_F(SpoolTest, DestructorCommitsPendingEnqueuesAndCallsEveryCompletionOnce) {
  Options o = opts();
  o.group_commit_messages = 10000;
  o.group_commit_interval = 10min;  // nothing commits until the destructor
  constexpr int kCount = 100;
  std::vector<std::atomic<int>> calls(kCount);
  std::atomic<int> ok{0};
  std::atomic<int> late{0};
  {
    auto s = open(o);
    ASSERT_TRUE(s);
    Spool* raw = s.get();
    for (int i = 0; i < kCount; ++i)
      s->enqueue(sized(32), [&, i, raw](result<std::int64_t> r) {
        ++calls[static_cast<std::size_t>(i)];
        if (r) ++ok;
        // An enqueue from a completion while closing is refused, and still completed.
        if (i == 0) raw->enqueue(sized(32), [&](result<std::int64_t> r2) {
          if (!r2 && r2.error().code == errc::busy) ++late;
        });
      });
    EXPECT_EQ(s->counters().commits, 0u);
  }
  for (auto& c : calls) EXPECT_EQ(c, 1);
  EXPECT_EQ(ok, kCount);
  EXPECT_EQ(late, 1);
  auto s = open();
  ASSERT_TRUE(s);
  EXPECT_EQ(s->counters().queued, static_cast<std::uint64_t>(kCount));
}

TEST(SpoolNames, RoundTrip) {
  for (auto w : {WhenFull::reject_new, WhenFull::drop_oldest, WhenFull::drop_qos0_first})
    EXPECT_EQ(when_full_from_string(to_string(w)), w);
  for (auto d : {Durability::full, Durability::normal}) EXPECT_EQ(durability_from_string(to_string(d)), d);
  EXPECT_FALSE(when_full_from_string("drop-newest"));
  EXPECT_FALSE(durability_from_string("extra"));
}

}  // namespace
}  // namespace canopy::spool
