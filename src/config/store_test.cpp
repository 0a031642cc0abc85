#include "canopy/config/store.hpp"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

namespace canopy::config {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using json = nlohmann::json;
namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "canopy-store-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::unique_ptr<ConfigStore> open_ok(const fs::path& dir, const StoreOptions& options = {}) {
  auto r = ConfigStore::open(dir, options);
  EXPECT_TRUE(r) << r.error().message;
  if (!r) return nullptr;
  EXPECT_TRUE(r.value()->open_warnings().empty());
  return std::move(r).value();
}

KeyPath cfg(std::initializer_list<std::string> rest = {}) {
  KeyPath p = component_config_path("com.example.A");
  p.insert(p.end(), rest.begin(), rest.end());
  return p;
}

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

std::vector<fs::path> corrupt_files(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().find(".corrupt-") != std::string::npos) out.push_back(e.path());
  }
  return out;
}

// ---- key paths ------------------------------------------------------------------------------

TEST(ConfigStorePointer, ParsesAndEscapes) {
  auto p = parse_pointer("/services/com.x/configuration/a~1b/c~0d");
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_THAT(*p, ElementsAre("services", "com.x", "configuration", "a/b", "c~d"));
  EXPECT_EQ(to_pointer(*p), "/services/com.x/configuration/a~1b/c~0d");
  EXPECT_TRUE(parse_pointer("")->empty());
  EXPECT_THAT(*parse_pointer("/"), ElementsAre(""));
  EXPECT_THAT(*parse_pointer("/a//b"), ElementsAre("a", "", "b"));
  EXPECT_EQ(to_pointer({}), "");
}

TEST(ConfigStorePointer, RejectsMalformedPointers) {
  auto a = parse_pointer("a/b");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, errc::invalid);
  EXPECT_THAT(a.error().message, HasSubstr("a/b"));
  EXPECT_FALSE(parse_pointer("/a~2"));
  EXPECT_FALSE(parse_pointer("/a~"));
}

// ---- merge ----------------------------------------------------------------------------------

TEST(ConfigStoreMerge, ObjectsMergeRecursively) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"a", 1}, {"b", {{"c", 2}, {"e", {{"f", 1}}}}}}, 10));
  ASSERT_TRUE(s->merge(cfg(), {{"b", {{"d", 3}, {"e", {{"g", 2}}}}}}, 20));
  EXPECT_EQ(*s->get(cfg()), json({{"a", 1}, {"b", {{"c", 2}, {"d", 3}, {"e", {{"f", 1}, {"g", 2}}}}}}));
}

TEST(ConfigStoreMerge, LeavesArraysAndNullReplace) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"s", "x"}, {"arr", {1, 2, 3}}, {"objs", {{{"k", 1}}}}}, 10));
  ASSERT_TRUE(s->merge(cfg(), {{"s", 5}, {"arr", {4}}, {"objs", {{{"j", 2}}}}}, 11));
  EXPECT_EQ(*s->get(cfg({"s"})), json(5));
  EXPECT_EQ(*s->get(cfg({"arr"})), json({4}));  // arrays are leaves: replaced, not merged
  EXPECT_EQ(*s->get(cfg({"objs"})), json::array({{{"j", 2}}}));
  // null is a stored value, not a deletion
  ASSERT_TRUE(s->merge(cfg({"s"}), nullptr, 12));
  auto v = s->get(cfg({"s"}));
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(v->is_null());
}

TEST(ConfigStoreMerge, MergeAtAPathCreatesObjectsOnTheWay) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg({"x", "y"}), 7, 10));
  EXPECT_EQ(*s->get({}), json({{"services", {{"com.example.A", {{"configuration", {{"x", {{"y", 7}}}}}}}}}}));
  ASSERT_TRUE(s->merge(cfg({"empty"}), json::object(), 10));
  EXPECT_EQ(*s->get(cfg({"empty"})), json::object());
}

TEST(ConfigStoreMerge, LeafAndObjectMayReplaceEachOther) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"a", 1}}, 10));
  ASSERT_TRUE(s->merge(cfg(), {{"a", {{"b", 2}}}}, 20));  // leaf -> object
  EXPECT_EQ(*s->get(cfg({"a"})), json({{"b", 2}}));
  ASSERT_TRUE(s->merge(cfg(), {{"a", "flat"}}, 30));  // object -> leaf
  EXPECT_EQ(*s->get(cfg({"a"})), json("flat"));
  EXPECT_FALSE(s->get(cfg({"a", "b"})).has_value());
  // Through a leaf on the way: replaced by an object when not older.
  ASSERT_TRUE(s->merge(cfg({"a", "c"}), 3, 40));
  EXPECT_EQ(*s->get(cfg({"a"})), json({{"c", 3}}));
}

TEST(ConfigStoreMerge, OlderTypeChangesAreIgnored) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"leaf", 1}, {"obj", {{"x", {{"deep", 1}}}}}}, 20));
  ASSERT_TRUE(s->merge(cfg(), {{"leaf", {{"b", 2}}}, {"obj", 5}}, 10));
  ASSERT_TRUE(s->merge(cfg({"leaf", "q"}), 1, 10));
  EXPECT_EQ(*s->get(cfg()), json({{"leaf", 1}, {"obj", {{"x", {{"deep", 1}}}}}}));
  // An object becomes a leaf only if the write is not older than anything inside it.
  ASSERT_TRUE(s->merge(cfg({"obj", "x", "deep"}), 2, 30));
  ASSERT_TRUE(s->merge(cfg({"obj"}), "flat", 25));
  EXPECT_EQ(*s->get(cfg({"obj", "x", "deep"})), json(2));
  ASSERT_TRUE(s->merge(cfg({"obj"}), "flat", 30));
  EXPECT_EQ(*s->get(cfg({"obj"})), json("flat"));
}

TEST(ConfigStoreMerge, NonObjectAtTheRootIsRejected) {
  TempDir dir;
  auto s = open_ok(dir.path());
  auto r = s->merge({}, 5, 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(*s->get({}), json::object());
}

TEST(ConfigStoreMerge, KeysAreCaseInsensitiveAndKeepTheirFirstSpelling) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"MqttPort", 1}}, 10));
  ASSERT_TRUE(s->merge(cfg(), {{"mqttport", 2}}, 11));
  EXPECT_EQ(*s->get(cfg()), json({{"MqttPort", 2}}));
  EXPECT_EQ(*s->get({"SERVICES", "com.example.a", "Configuration", "MQTTPORT"}), json(2));
}

TEST(ConfigStoreMerge, KeysMayContainSlashAndTilde) {
  TempDir dir;
  {
    auto s = open_ok(dir.path());
    ASSERT_TRUE(s->merge(cfg({"a/b", "c~d"}), "v", 10));
    EXPECT_EQ(*s->get(*parse_pointer("/services/com.example.A/configuration/a~1b/c~0d")), json("v"));
    EXPECT_FALSE(s->get(cfg({"a", "b"})).has_value());
  }
  auto s = open_ok(dir.path());
  EXPECT_EQ(*s->get(cfg()), json({{"a/b", {{"c~d", "v"}}}}));
}

TEST(ConfigStoreMerge, RejectsWhatTheSnapshotCannotHold) {
  TempDir dir;
  auto s = open_ok(dir.path());
  auto nan = s->merge(cfg({"n"}), std::nan(""), 1);
  ASSERT_FALSE(nan);
  EXPECT_EQ(nan.error().code, errc::invalid);
  auto utf = s->merge(cfg({"u"}), std::string("\xff\xfe"), 1);
  ASSERT_FALSE(utf);
  EXPECT_THAT(utf.error().message, HasSubstr("UTF-8"));
  EXPECT_FALSE(s->merge({std::string("bad\xc0")}, 1, 1));
  EXPECT_EQ(*s->get({}), json::object());
}

// ---- get and timestamps ---------------------------------------------------------------------

TEST(ConfigStoreGet, ContainersLeavesAndMissingNodes) {
  TempDir dir;
  auto s = open_ok(dir.path());
  EXPECT_EQ(*s->get({}), json::object());
  ASSERT_TRUE(s->merge(cfg(), {{"a", {{"b", true}}}, {"n", 1.5}}, 10));
  EXPECT_EQ(*s->get(cfg({"a"})), json({{"b", true}}));
  EXPECT_EQ(*s->get(cfg({"n"})), json(1.5));
  EXPECT_FALSE(s->get(cfg({"missing"})).has_value());
  EXPECT_FALSE(s->get(cfg({"n", "below-a-leaf"})).has_value());
}

TEST(ConfigStoreTimestamps, OlderIgnoredNewerAndEqualAppliedPerNode) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"a", 1}, {"b", 1}}, 10));
  ASSERT_TRUE(s->merge(cfg({"a"}), 2, 20));
  // One write at 15: older than a (20), newer than b (10).
  ASSERT_TRUE(s->merge(cfg(), {{"a", 3}, {"b", 3}, {"c", 3}}, 15));
  EXPECT_EQ(*s->get(cfg()), json({{"a", 2}, {"b", 3}, {"c", 3}}));
  EXPECT_EQ(s->timestamp(cfg({"a"})), 20);
  EXPECT_EQ(s->timestamp(cfg({"b"})), 15);
  EXPECT_EQ(s->timestamp(cfg({"c"})), 15);
  // An object's timestamp is the newest change inside it.
  EXPECT_EQ(s->timestamp(cfg()), 20);
  EXPECT_EQ(s->timestamp({}), 20);
  EXPECT_EQ(s->timestamp(cfg({"missing"})), 0);
  // Equal timestamps are applied (recipe defaults re-merged at timestamp 1 replace old ones).
  ASSERT_TRUE(s->merge(cfg({"a"}), 4, 20));
  EXPECT_EQ(*s->get(cfg({"a"})), json(4));
  ASSERT_TRUE(s->merge(cfg({"d"}), "default-1", 1));
  ASSERT_TRUE(s->merge(cfg({"d"}), "default-2", 1));
  EXPECT_EQ(*s->get(cfg({"d"})), json("default-2"));
}

TEST(ConfigStoreTimestamps, SameValueNewerTimeUpdatesTheTimestampOnly) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
  int calls = 0;
  s->subscribe(cfg(), [&](const KeyPath&) { ++calls; });
  ASSERT_TRUE(s->merge(cfg({"a"}), 1, 30));
  EXPECT_EQ(s->timestamp(cfg({"a"})), 30);
  EXPECT_EQ(calls, 0);
  ASSERT_TRUE(s->merge(cfg({"a"}), 2, 20));  // older than 30 now
  EXPECT_EQ(*s->get(cfg({"a"})), json(1));
}

TEST(ConfigStoreTimestamps, ANoOpWriteDoesNotTouchTheDisk) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
  struct stat before{};
  ASSERT_EQ(::stat((dir.path() / "store.json").c_str(), &before), 0);
  ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
  ASSERT_TRUE(s->merge(cfg({"a"}), 7, 5));
  struct stat after{};
  ASSERT_EQ(::stat((dir.path() / "store.json").c_str(), &after), 0);
  EXPECT_EQ(before.st_ino, after.st_ino);  // every commit renames a new file in
}

// ---- reset ----------------------------------------------------------------------------------

TEST(ConfigStoreReset, RemovesTheNode) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"a", {{"b", 1}}}, {"c", 2}}, 10));
  ASSERT_TRUE(s->reset(cfg({"a"}), 20));
  EXPECT_EQ(*s->get(cfg()), json({{"c", 2}}));
  EXPECT_EQ(s->timestamp(cfg()), 20);
  ASSERT_TRUE(s->reset(cfg({"missing", "x"}), 20));  // not an error
  ASSERT_TRUE(s->reset(cfg({"c", "below-a-leaf"}), 20));
  EXPECT_EQ(*s->get(cfg()), json({{"c", 2}}));
}

TEST(ConfigStoreReset, AComponentConfigurationRootBecomesEmpty) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"a", 1}, {"b", {{"c", 2}}}}, 10));
  ASSERT_TRUE(s->reset(cfg(), 20));
  EXPECT_EQ(*s->get(cfg()), json::object());
  // Then the deployment re-merges the defaults at timestamp 1 and MERGE at its own.
  ASSERT_TRUE(s->merge(cfg(), {{"a", 100}, {"b", {{"c", 200}}}}, 1));
  ASSERT_TRUE(s->merge(cfg(), {{"a", 5}}, 20));
  EXPECT_EQ(*s->get(cfg()), json({{"a", 5}, {"b", {{"c", 200}}}}));
  // A configuration that did not exist is created empty.
  const KeyPath other = component_config_path("com.example.New");
  ASSERT_TRUE(s->reset(other, 5));
  EXPECT_EQ(*s->get(other), json::object());
  // The whole tree.
  ASSERT_TRUE(s->reset({}, 30));
  EXPECT_EQ(*s->get({}), json::object());
}

TEST(ConfigStoreReset, NodesNewerThanTheResetSurvive) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"old", 1}, {"mixed", {{"old", 1}, {"new", 1}}}}, 10));
  ASSERT_TRUE(s->merge(cfg({"mixed", "new"}), 2, 30));
  ASSERT_TRUE(s->reset(cfg(), 20));
  EXPECT_EQ(*s->get(cfg()), json({{"mixed", {{"new", 2}}}}));
}

// ---- subscriptions --------------------------------------------------------------------------

struct Recorder {
  std::vector<std::string> seen;
  ChangeCallback callback() {
    return [this](const KeyPath& p) { seen.push_back(to_pointer(p)); };
  }
};

TEST(ConfigStoreSubscribe, NodeAncestorsAndAffectedDescendantsAreNotified) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"a", {{"b", {{"c", 1}}}}}, {"z", 1}}, 10));
  Recorder node, ancestor, root, descendant, sibling, not_yet;
  s->subscribe(cfg({"a", "b"}), node.callback());
  s->subscribe(cfg(), ancestor.callback());
  s->subscribe({}, root.callback());
  s->subscribe(cfg({"a", "b", "c"}), descendant.callback());
  s->subscribe(cfg({"z"}), sibling.callback());
  s->subscribe(cfg({"new", "leaf"}), not_yet.callback());

  const std::string base = "/services/com.example.A/configuration";
  ASSERT_TRUE(s->merge(cfg({"a", "b", "d"}), 2, 20));  // a new leaf below b
  EXPECT_THAT(node.seen, ElementsAre(base + "/a/b/d"));
  EXPECT_THAT(ancestor.seen, ElementsAre(base + "/a/b/d"));
  EXPECT_THAT(root.seen, ElementsAre(base + "/a/b/d"));
  EXPECT_TRUE(descendant.seen.empty());
  EXPECT_TRUE(sibling.seen.empty());

  ASSERT_TRUE(s->reset(cfg({"a"}), 30));  // removes b and c: their subscribers are affected
  EXPECT_THAT(node.seen, ElementsAre(base + "/a/b/d", base + "/a"));
  EXPECT_THAT(descendant.seen, ElementsAre(base + "/a"));
  EXPECT_TRUE(sibling.seen.empty());

  ASSERT_TRUE(s->merge(cfg({"new"}), {{"leaf", 1}, {"other", 2}}, 40));  // creation of a path
  EXPECT_THAT(not_yet.seen, ElementsAre(base + "/new/leaf"));
  EXPECT_EQ(ancestor.seen.size(), 4u);  // /a/b/d, /a, /new/leaf, /new/other
}

TEST(ConfigStoreSubscribe, TypeChangeNotifiesOnceAtTheReplacedNode) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg(), {{"a", 1}}, 10));
  Recorder at_a, below;
  s->subscribe(cfg({"a"}), at_a.callback());
  s->subscribe(cfg({"a", "x"}), below.callback());
  ASSERT_TRUE(s->merge(cfg({"a"}), {{"x", 1}, {"y", 2}}, 20));
  const std::string a = "/services/com.example.A/configuration/a";
  EXPECT_THAT(at_a.seen, ElementsAre(a));
  EXPECT_THAT(below.seen, ElementsAre(a));
}

TEST(ConfigStoreSubscribe, UnsubscribeStopsNotifications) {
  TempDir dir;
  auto s = open_ok(dir.path());
  int calls = 0;
  const SubscriptionId id = s->subscribe(cfg(), [&](const KeyPath&) { ++calls; });
  EXPECT_NE(id, 0u);
  ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
  EXPECT_EQ(calls, 1);
  s->unsubscribe(id);
  s->unsubscribe(id);      // twice: ignored
  s->unsubscribe(999999);  // unknown: ignored
  ASSERT_TRUE(s->merge(cfg({"a"}), 2, 20));
  EXPECT_EQ(calls, 1);
}

TEST(ConfigStoreSubscribe, CallbacksMayUnsubscribeSubscribeAndWrite) {
  TempDir dir;
  auto s = open_ok(dir.path());
  std::vector<std::string> log;
  SubscriptionId self = 0;
  SubscriptionId victim = 0;
  SubscriptionId late = 0;
  self = s->subscribe(cfg(), [&](const KeyPath& p) {
    log.push_back("self " + p.back());
    s->unsubscribe(self);    // itself
    s->unsubscribe(victim);  // a later one, before it is called
    late = s->subscribe(cfg(), [&](const KeyPath& q) { log.push_back("late " + q.back()); });
    // A write from inside a callback: delivered after this callback returns.
    EXPECT_TRUE(s->merge(cfg({"echo"}), "from-callback", 100));
    log.push_back("self done");
  });
  victim = s->subscribe(cfg(), [&](const KeyPath& p) { log.push_back("victim " + p.back()); });
  const SubscriptionId writer = s->subscribe(cfg({"b"}), [&](const KeyPath& p) {
    log.push_back("writer " + p.back());
    EXPECT_TRUE(s->merge(cfg({"b"}), "again", 50));  // same value afterwards: no loop
  });
  s->subscribe(cfg(), [&](const KeyPath& p) {
    log.push_back("thrower " + p.back());
    throw std::runtime_error("subscriber bug");
  });

  ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
  EXPECT_THAT(log, ElementsAre("self a", "self done", "thrower a", "thrower echo", "late echo"));
  log.clear();
  ASSERT_TRUE(s->merge(cfg({"b"}), 1, 20));
  EXPECT_THAT(log, ElementsAre("writer b", "thrower b", "late b", "writer b", "thrower b", "late b"));
  EXPECT_EQ(*s->get(cfg({"b"})), json("again"));
  EXPECT_EQ(*s->get(cfg({"echo"})), json("from-callback"));
  s->unsubscribe(writer);
  s->unsubscribe(late);
}

// ---- transactions ---------------------------------------------------------------------------

TEST(ConfigStoreTransaction, CommitsEverythingOnceThenNotifies) {
  TempDir dir;
  auto s = open_ok(dir.path());
  std::vector<json> seen_by_subscriber;
  s->subscribe(cfg(), [&](const KeyPath&) { seen_by_subscriber.push_back(*s->get(cfg())); });
  auto r = s->transaction([&](Transaction& t) -> result<void> {
    if (auto m = t.merge(cfg(), {{"a", 1}, {"b", 1}}, 10); !m) return m;
    EXPECT_TRUE(t.reset(cfg({"b"}), 10));
    if (auto m = t.merge(cfg({"c"}), 3, 1); !m) return m;
    EXPECT_EQ(*t.get(cfg()), json({{"a", 1}, {"c", 3}}));
    EXPECT_EQ(t.timestamp(cfg({"a"})), 10);
    EXPECT_FALSE(s->get(cfg()).has_value());  // nothing committed yet
    auto nested = s->merge(cfg({"x"}), 1, 1);
    EXPECT_FALSE(nested);
    EXPECT_EQ(nested.error().code, errc::conflict);
    return ok();
  });
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*s->get(cfg()), json({{"a", 1}, {"c", 3}}));
  ASSERT_FALSE(seen_by_subscriber.empty());
  EXPECT_EQ(seen_by_subscriber.front(), json({{"a", 1}, {"c", 3}}));  // only after the commit
}

TEST(ConfigStoreTransaction, AnErrorFromTheBodyCommitsNothing) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
  int calls = 0;
  s->subscribe({}, [&](const KeyPath&) { ++calls; });
  json proposed;
  auto r = s->transaction([&](Transaction& t) -> result<void> {
    EXPECT_TRUE(t.merge(cfg({"a"}), 2, 20));
    proposed = *t.get(cfg());
    return make_error(errc::conflict, "validation failed");
  });
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "validation failed");
  EXPECT_EQ(proposed, json({{"a", 2}}));
  EXPECT_EQ(*s->get(cfg({"a"})), json(1));
  EXPECT_EQ(calls, 0);
  auto reopened = open_ok(dir.path());
  EXPECT_EQ(*reopened->get(cfg({"a"})), json(1));
}

// ---- persistence ----------------------------------------------------------------------------

TEST(ConfigStorePersist, ValuesAndTimestampsSurviveReopen) {
  TempDir dir;
  const json value = {{"a", 1}, {"arr", {1, "two", nullptr}}, {"o", {{"f", 1.25}, {"b", false}}}};
  {
    auto s = open_ok(dir.path());
    ASSERT_TRUE(s->merge(cfg(), value, 10));
    ASSERT_TRUE(s->merge(cfg({"a"}), 2, 40));
    ASSERT_TRUE(s->reset(cfg({"o", "b"}), 15));
  }
  auto s = open_ok(dir.path());
  EXPECT_EQ(*s->get(cfg()), json({{"a", 2}, {"arr", {1, "two", nullptr}}, {"o", {{"f", 1.25}}}}));
  EXPECT_EQ(s->timestamp(cfg({"a"})), 40);
  EXPECT_EQ(s->timestamp(cfg({"arr"})), 10);
  EXPECT_EQ(s->timestamp(cfg({"o"})), 15);
  ASSERT_TRUE(s->merge(cfg({"a"}), 3, 39));  // still older after the reopen
  EXPECT_EQ(*s->get(cfg({"a"})), json(2));
  EXPECT_FALSE(fs::exists(dir.path() / "store.json.tmp"));
  EXPECT_TRUE(fs::exists(dir.path() / "store.json.bak"));
}

TEST(ConfigStorePersist, OpenCreatesTheFolderAndStartsEmpty) {
  TempDir dir;
  auto s = open_ok(dir.path() / "root" / "config");
  EXPECT_EQ(*s->get({}), json::object());
  EXPECT_TRUE(fs::is_directory(dir.path() / "root" / "config"));
}

TEST(ConfigStorePersist, ALeftoverTempFileIsDiscarded) {
  TempDir dir;
  {
    auto s = open_ok(dir.path());
    ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
  }
  write_file(dir.path() / "store.json.tmp", "{\"half\":");
  auto s = open_ok(dir.path());
  EXPECT_EQ(*s->get(cfg({"a"})), json(1));
  EXPECT_FALSE(fs::exists(dir.path() / "store.json.tmp"));
}

TEST(ConfigStorePersist, CorruptSnapshotIsMovedAsideAndTheBackupUsed) {
  TempDir dir;
  {
    auto s = open_ok(dir.path());
    ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
    ASSERT_TRUE(s->merge(cfg({"a"}), 2, 20));  // the backup holds a = 1
  }
  const std::string garbage = "{\"format\":\"canopy-config\",\"version\":1,\"root\":{\"t\":1,\"c\":{";
  write_file(dir.path() / "store.json", garbage);
  auto r = ConfigStore::open(dir.path());
  ASSERT_TRUE(r) << r.error().message;
  auto& s = *r;
  EXPECT_EQ(*s->get(cfg({"a"})), json(1));
  ASSERT_EQ(s->open_warnings().size(), 1u);
  EXPECT_THAT(s->open_warnings()[0], HasSubstr("not valid JSON"));
  EXPECT_THAT(s->open_warnings()[0], HasSubstr("store.json.bak"));
  auto moved = corrupt_files(dir.path());
  ASSERT_EQ(moved.size(), 1u);
  EXPECT_EQ(read_file(moved[0]), garbage);
  // The recovered state was made current again, and the store keeps working.
  ASSERT_TRUE(s->merge(cfg({"b"}), 1, 30));
  r = ConfigStore::open(dir.path());
  ASSERT_TRUE(r);
  EXPECT_TRUE((*r)->open_warnings().empty());
  EXPECT_EQ(*(*r)->get(cfg()), json({{"a", 1}, {"b", 1}}));
}

TEST(ConfigStorePersist, CorruptSnapshotWithoutBackupIsAnError) {
  TempDir dir;
  {
    auto s = open_ok(dir.path());
    ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));  // first commit: no backup yet
  }
  ASSERT_FALSE(fs::exists(dir.path() / "store.json.bak"));
  // Valid JSON of the wrong shape: a leaf with both a value and children.
  write_file(dir.path() / "store.json",
             R"({"format":"canopy-config","version":1,"root":{"t":1,"c":{"x":{"t":1,"v":1,"c":{}}}}})");
  auto r = ConfigStore::open(dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::corrupt);
  EXPECT_THAT(r.error().message, HasSubstr("/x"));
  EXPECT_THAT(r.error().message, HasSubstr("store.json.corrupt-"));
  EXPECT_EQ(corrupt_files(dir.path()).size(), 1u);
  EXPECT_FALSE(fs::exists(dir.path() / "store.json"));
}

TEST(ConfigStorePersist, CorruptSnapshotAndCorruptBackupIsAnError) {
  TempDir dir;
  {
    auto s = open_ok(dir.path());
    ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
    ASSERT_TRUE(s->merge(cfg({"a"}), 2, 20));
  }
  write_file(dir.path() / "store.json.bak", "[]");  // breaks the hard link, on purpose
  write_file(dir.path() / "store.json", "not json");
  auto r = ConfigStore::open(dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::corrupt);
  EXPECT_THAT(r.error().message, HasSubstr("backup is corrupt too"));
  EXPECT_EQ(corrupt_files(dir.path()).size(), 2u);
}

TEST(ConfigStorePersist, ANewerFormatIsRefusedAndLeftInPlace) {
  TempDir dir;
  write_file(dir.path() / "store.json", R"({"format":"canopy-config","version":2,"root":{}})");
  auto r = ConfigStore::open(dir.path());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unsupported);
  EXPECT_TRUE(fs::exists(dir.path() / "store.json"));
  EXPECT_TRUE(corrupt_files(dir.path()).empty());
}

TEST(ConfigStorePersist, AFailedCommitChangesNothing) {
  TempDir dir;
  const fs::path store_dir = dir.path() / "config";
  auto s = open_ok(store_dir);
  ASSERT_TRUE(s->merge(cfg({"a"}), 1, 10));
  int calls = 0;
  s->subscribe({}, [&](const KeyPath&) { ++calls; });
  fs::rename(store_dir, dir.path() / "elsewhere");  // the folder vanishes under the store
  auto r = s->merge(cfg({"a"}), 2, 20);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::io);
  EXPECT_THAT(r.error().message, HasSubstr("store.json.tmp"));
  EXPECT_EQ(*s->get(cfg({"a"})), json(1));
  EXPECT_EQ(s->timestamp(cfg({"a"})), 10);
  EXPECT_EQ(calls, 0);
}

// ---- limits ---------------------------------------------------------------------------------

json nested(int levels) {
  json v = 1;
  for (int i = 0; i < levels; ++i) v = json{{"k", v}};
  return v;
}

TEST(ConfigStoreLimits, DepthOver64IsRejectedAndNothingChanges) {
  TempDir dir;
  auto s = open_ok(dir.path());
  ASSERT_TRUE(s->merge(cfg({"keep"}), 1, 1));
  const std::string before = read_file(dir.path() / "store.json");
  // cfg() is 3 levels; 61 more make 64.
  ASSERT_TRUE(s->merge(cfg(), nested(61), 5));
  auto r = s->merge(cfg(), nested(62), 6);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_THAT(r.error().message, HasSubstr("64 levels"));
  EXPECT_EQ(*s->get(cfg({"k"})), nested(60));
  // Arrays count as levels too.
  json arr = nested(60);
  arr = json::array({arr});
  EXPECT_FALSE(s->merge(cfg({"x"}), arr, 7));
  KeyPath long_path(65, "p");
  EXPECT_FALSE(s->merge(long_path, 1, 7));
  EXPECT_FALSE(s->get(cfg({"x"})).has_value());
  // Nothing else changed either.
  ASSERT_TRUE(s->merge(cfg({"keep"}), 1, 1));
  EXPECT_NE(read_file(dir.path() / "store.json"), before);  // the 64-level merge did commit
}

TEST(ConfigStoreLimits, ByteCapIsEnforcedAndNothingChanges) {
  TempDir dir;
  StoreOptions options;
  options.max_bytes = 4096;
  auto s = open_ok(dir.path(), options);
  ASSERT_TRUE(s->merge(cfg({"small"}), std::string(1000, 'a'), 1));
  const std::string before = read_file(dir.path() / "store.json");
  int calls = 0;
  s->subscribe({}, [&](const KeyPath&) { ++calls; });
  auto r = s->merge(cfg({"big"}), std::string(5000, 'b'), 2);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_THAT(r.error().message, HasSubstr("limit of 4096 bytes"));
  EXPECT_FALSE(s->get(cfg({"big"})).has_value());
  EXPECT_EQ(read_file(dir.path() / "store.json"), before);
  EXPECT_EQ(calls, 0);
  // A transaction over the cap is rejected as a whole.
  auto t = s->transaction([&](Transaction& txn) -> result<void> {
    for (int i = 0; i < 10; ++i) {
      if (auto m = txn.merge(cfg({"k" + std::to_string(i)}), std::string(500, 'c'), 3); !m) return m;
    }
    return ok();
  });
  ASSERT_FALSE(t);
  EXPECT_FALSE(s->get(cfg({"k0"})).has_value());
  // Growth within the cap is fine; shrinking a store that is over the cap is fine too.
  ASSERT_TRUE(s->merge(cfg({"more"}), std::string(1000, 'm'), 4));
  auto bigger = open_ok(dir.path(), {});
  ASSERT_TRUE(bigger->merge(cfg({"big"}), std::string(5000, 'b'), 5));
  bigger.reset();
  auto capped = open_ok(dir.path(), options);
  ASSERT_TRUE(capped->reset(cfg({"big"}), 6));
  EXPECT_FALSE(capped->get(cfg({"big"})).has_value());
}

// ---- crash consistency ----------------------------------------------------------------------

// The child: continue the counter from what is on disk, merge it forever, and report each
// value on `fd` after merge() returned (that is, after it was committed).
[[noreturn]] void crash_child(const fs::path& dir, int fd) {
  auto opened = ConfigStore::open(dir);
  if (!opened) ::_exit(3);
  auto& s = *opened;
  auto cur = s->get(cfg({"counter"}));
  std::int64_t n = cur ? cur->get<std::int64_t>() : 0;
  const std::string pad(16 * 1024, 'x');
  for (;;) {
    ++n;
    if (!s->merge(cfg(), {{"counter", n}, {"pad", pad + std::to_string(n)}}, n)) ::_exit(4);
    char line[32];
    const int len = std::snprintf(line, sizeof line, "%lld\n", static_cast<long long>(n));
    if (::write(fd, line, static_cast<std::size_t>(len)) != len) ::_exit(5);
  }
}

TEST(ConfigStoreCrash, KillNineAtRandomMomentsLeavesTheLastCommitLoadable) {
  TempDir dir;
  const unsigned seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937 rng(seed);
  std::int64_t known = 0;  // the counter on disk before the round
  int rounds_with_commits = 0;
  for (int round = 0; round < 24; ++round) {
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      crash_child(dir.path(), fds[1]);
    }
    ::close(fds[1]);
    std::string out;
    char buf[4096];
    if (round % 2 == 1) {
      // Odd rounds: let the child get going first, so the kill lands among commits.
      while (out.find('\n') == std::string::npos) {
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
      }
    }
    std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 8000)(rng)));
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        << "child ended on its own, status " << status;
    for (;;) {
      const ssize_t n = ::read(fds[0], buf, sizeof buf);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fds[0]);

    std::int64_t reported = known;
    std::istringstream lines(out);
    for (std::string line; std::getline(lines, line);) reported = std::stoll(line);
    if (reported > known) ++rounds_with_commits;

    auto r = ConfigStore::open(dir.path());
    ASSERT_TRUE(r) << "round " << round << ": " << r.error().message;
    EXPECT_TRUE((*r)->open_warnings().empty()) << (*r)->open_warnings().front();
    auto counter = (*r)->get(cfg({"counter"}));
    const std::int64_t on_disk = counter ? counter->get<std::int64_t>() : 0;
    // Everything reported is there; at most the one merge in flight went further.
    EXPECT_GE(on_disk, reported) << "round " << round;
    EXPECT_LE(on_disk, reported + 1) << "round " << round;
    if (counter) {
      // The snapshot is one consistent write of the child's.
      EXPECT_EQ(*(*r)->get(cfg({"pad"})), json(std::string(16 * 1024, 'x') + std::to_string(on_disk)));
      EXPECT_EQ((*r)->timestamp(cfg({"counter"})), on_disk);
    }
    known = on_disk;
  }
  std::printf("crash test: %d of 24 rounds killed after commits, counter reached %lld\n", rounds_with_commits,
              static_cast<long long>(known));
}

}  // namespace
}  // namespace canopy::config
