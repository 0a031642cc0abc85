#include "canopy/pubsub/topic_filter.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace canopy::pubsub {
namespace {
using ::testing::UnorderedElementsAreArray;

// ---------------------------------------------------------------------------------------------
// validate_topic

TEST(ValidateTopic, AcceptsConcreteTopics) {
  const std::vector<std::string> good = {
      "a", "a/b", "sensors/t1", "/", "//", "a//b", "a/", "/a", "$SYS/broker/load", "$aws/things/t/shadow",
      "a b", "*", "a/*", "caf\xc3\xa9/temp\xc3\xa9rature", "\xf0\x9f\x8c\xb2/canopy", std::string(kMaxTopicBytes, 'x'),
      "\x01control"};
  for (const auto& t : good) {
    auto r = validate_topic(t);
    EXPECT_TRUE(r) << "topic \"" << t.substr(0, 40) << "\": " << (r ? "" : r.error().message);
  }
}

TEST(ValidateTopic, RejectsWithMessagesNamingTopicAndRule) {
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "topic is empty"},
      {"a/+/b", R"(topic "a/+/b" contains the wildcard "+"; publish to a concrete topic)"},
      {"a/#", R"(topic "a/#" contains the wildcard "#"; publish to a concrete topic)"},
      {"#", R"(topic "#" contains the wildcard "#"; publish to a concrete topic)"},
      {"a+b", R"(topic "a+b" contains the wildcard "+"; publish to a concrete topic)"},
      {"x#/+", R"(topic "x#/+" contains the wildcard "#"; publish to a concrete topic)"},
      {"a\"b+", R"(topic "a\"b+" contains the wildcard "+"; publish to a concrete topic)"},
      {std::string("a\0b", 3), R"(topic "a\x00b" contains a NUL character at byte 1)"},
      {std::string("\0", 1), R"(topic "\x00" contains a NUL character at byte 0)"},
      {"a\xff", R"(topic "a\xff" is not valid UTF-8 (at byte 1))"},
      {"\xc0\xaf", R"(topic "\xc0\xaf" is not valid UTF-8 (at byte 0))"},          // overlong '/'
      {"ab\xe0\x80\xaf", R"(topic "ab\xe0\x80\xaf" is not valid UTF-8 (at byte 2))"},  // overlong
      {"\xed\xa0\x80", R"(topic "\xed\xa0\x80" is not valid UTF-8 (at byte 0))"},  // surrogate
      {"\xf4\x90\x80\x80", R"(topic "\xf4\x90\x80\x80" is not valid UTF-8 (at byte 0))"},  // > U+10FFFF
      {"ab\xe2\x82", R"(topic "ab\xe2\x82" is not valid UTF-8 (at byte 2))"},      // truncated
      {"\x80", R"(topic "\x80" is not valid UTF-8 (at byte 0))"},                  // lone continuation
  };
  for (const auto& [topic, message] : bad) {
    auto r = validate_topic(topic);
    ASSERT_FALSE(r) << message;
    EXPECT_EQ(r.error().code, errc::invalid);
    EXPECT_EQ(r.error().message, message);
  }
}

TEST(ValidateTopic, TooLongIsRejectedAndTheQuoteIsShortened) {
  const std::string topic(kMaxTopicBytes + 1, 'a');
  auto r = validate_topic(topic);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message,
            "topic \"" + std::string(96, 'a') + "\"... is 65536 bytes long; the limit is 65535 bytes");
}

TEST(ValidateTopic, ShortenedQuoteDoesNotSplitACharacter) {
  // 95 ASCII bytes then a 2-byte character straddling the 96-byte cut, then a wildcard.
  const std::string topic = std::string(95, 'a') + "\xc3\xa9" + "/+";
  auto r = validate_topic(topic);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "topic \"" + std::string(95, 'a') +
                                   "\"... contains the wildcard \"+\"; publish to a concrete topic");
}

// ---------------------------------------------------------------------------------------------
// validate_filter

TEST(ValidateFilter, AcceptsMqttFilters) {
  const std::vector<std::string> good = {"#",        "+",      "+/+",    "a/+/b",  "a/#",       "+/#",
                                         "/#",       "/+",     "a//b",   "/",      "$SYS/#",    "a/b/",
                                         "sport/tennis/+",     "+/tennis/#",       "a/+/+/#",   "*",
                                         "caf\xc3\xa9/+",      std::string(kMaxTopicBytes, '/')};
  for (const auto& f : good) {
    auto r = validate_filter(f);
    EXPECT_TRUE(r) << "filter \"" << f.substr(0, 40) << "\": " << (r ? "" : r.error().message);
  }
}

TEST(ValidateFilter, RejectsWithMessagesNamingFilterAndRule) {
  const std::string plus_rule = R"("+" must be a whole level, as in "a/+/c")";
  const std::string hash_rule = R"("#" must be the whole last level, as in "a/#")";
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "topic filter is empty"},
      {"a/b+", R"(topic filter "a/b+" has "+" inside a level (at byte 3); )" + plus_rule},
      {"+a", R"(topic filter "+a" has "+" inside a level (at byte 0); )" + plus_rule},
      {"a/++", R"(topic filter "a/++" has "+" inside a level (at byte 2); )" + plus_rule},
      {"a/b#", R"(topic filter "a/b#" has "#" inside a level (at byte 3); )" + hash_rule},
      {"##", R"(topic filter "##" has "#" inside a level (at byte 0); )" + hash_rule},
      {"a/#/c", R"(topic filter "a/#/c" has "#" before the last level (at byte 2); )" + hash_rule},
      {"#/", R"(topic filter "#/" has "#" before the last level (at byte 0); )" + hash_rule},
      {"a/#/", R"(topic filter "a/#/" has "#" before the last level (at byte 2); )" + hash_rule},
      {"+#", R"(topic filter "+#" has "+" inside a level (at byte 0); )" + plus_rule},
      {std::string("a/\0", 3), R"(topic filter "a/\x00" contains a NUL character at byte 2)"},
      {"a/\xfe", R"(topic filter "a/\xfe" is not valid UTF-8 (at byte 2))"},
      {std::string(kMaxTopicBytes + 1, '+'),
       "topic filter \"" + std::string(96, '+') + "\"... is 65536 bytes long; the limit is 65535 bytes"},
  };
  for (const auto& [filter, message] : bad) {
    auto r = validate_filter(filter);
    ASSERT_FALSE(r) << message;
    EXPECT_EQ(r.error().code, errc::invalid);
    EXPECT_EQ(r.error().message, message);
  }
}

TEST(HasWildcard, FindsPlusAndHash) {
  EXPECT_TRUE(has_wildcard("a/+"));
  EXPECT_TRUE(has_wildcard("#"));
  EXPECT_TRUE(has_wildcard("a/#"));
  EXPECT_FALSE(has_wildcard("a/b"));
  EXPECT_FALSE(has_wildcard("a/*"));
}

// ---------------------------------------------------------------------------------------------
// matches()

struct MatchCase {
  const char* filter;
  const char* topic;
  bool expected;
};

const std::vector<MatchCase>& match_table() {
  static const std::vector<MatchCase> table = {
      // literal levels
      {"a/b", "a/b", true},
      {"a/b", "a/c", false},
      {"a/b", "a/b/c", false},
      {"a/b/c", "a/b", false},
      {"A", "a", false},
      {"a", "ab", false},
      {"ab", "a", false},
      // `+`: exactly one level, possibly empty
      {"+", "a", true},
      {"+", "a/b", false},
      {"+", "/", false},
      {"+/+", "/", true},
      {"/+", "/a", true},
      {"/+", "a", false},
      {"a/+", "a/", true},
      {"a/+", "a", false},
      {"a/+", "a/b/c", false},
      {"a/+/b", "a//b", true},
      {"a/+/b", "a/x/b", true},
      {"a/+/b", "a/x/c", false},
      {"+/+/+", "a/b/c", true},
      {"+/+/+", "a/b", false},
      {"sport/+/player1", "sport/tennis/player1", true},
      // `#`: any number of levels, including none (the parent level)
      {"#", "a", true},
      {"#", "a/b/c", true},
      {"#", "/", true},
      {"#", "a/", true},
      {"a/#", "a", true},
      {"a/#", "a/", true},
      {"a/#", "a/b/c", true},
      {"a/#", "ab", false},
      {"a/#", "b/a", false},
      {"a/b/#", "a", false},
      {"sport/tennis/#", "sport/tennis", true},
      {"+/#", "a", true},
      {"+/#", "/a", true},
      {"/#", "/", true},
      {"/#", "a", false},
      {"a/+/#", "a", false},
      {"a/+/#", "a/b", true},
      {"a/+/#", "a/b/c/d", true},
      // empty levels and trailing slashes are levels like any other
      {"a//b", "a//b", true},
      {"a//b", "a/b", false},
      {"a/", "a/", true},
      {"a/", "a", false},
      {"a", "a/", false},
      {"/", "/", true},
      {"//", "/", false},
      // `$` topics: no wildcard at the first level matches them
      {"#", "$SYS", false},
      {"#", "$SYS/x", false},
      {"+", "$SYS", false},
      {"+/x", "$SYS/x", false},
      {"+/#", "$SYS/x", false},
      {"$SYS/#", "$SYS", true},
      {"$SYS/#", "$SYS/x", true},
      {"$SYS/+", "$SYS/x", true},
      {"$SYS", "$SYS", true},
      {"$aws/things/+/shadow/#", "$aws/things/t1/shadow/update", true},
      {"a/+", "a/$x", true},  // the rule is about the first level only
      {"a/#", "a/$x", true},
      {"#", "x$", true},
      // non-ASCII
      {"caf\xc3\xa9/+", "caf\xc3\xa9/t", true},
      {"caf\xc3\xa9/+", "cafe/t", false},
  };
  return table;
}

TEST(Matches, Table) {
  for (const auto& c : match_table()) {
    ASSERT_TRUE(validate_filter(c.filter)) << c.filter;
    ASSERT_TRUE(validate_topic(c.topic)) << c.topic;
    EXPECT_EQ(matches(c.filter, c.topic), c.expected) << "filter \"" << c.filter << "\" topic \"" << c.topic << "\"";
  }
}

TEST(Matches, InvalidInputIsSafe) {
  EXPECT_FALSE(matches("", "a"));
  EXPECT_FALSE(matches("a", ""));
  EXPECT_FALSE(matches("", ""));
  EXPECT_TRUE(matches("#", "a/+"));  // unspecified but must not crash
  static_cast<void>(matches("a/#/b", "a/x/b"));
  static_cast<void>(matches("a+/b", "a+/b"));
}

// ---------------------------------------------------------------------------------------------
// TopicTrie

std::vector<std::uint64_t> collect(const TopicTrie& trie, std::string_view topic) {
  std::vector<std::uint64_t> ids;
  trie.match(topic, [&](std::uint64_t id) { ids.push_back(id); });
  return ids;
}

TEST(TopicTrie, AgreesWithMatchesOnTheTableOneFilterAtATime) {
  for (const auto& c : match_table()) {
    TopicTrie trie;
    ASSERT_TRUE(trie.insert(c.filter, 7));
    const auto ids = collect(trie, c.topic);
    if (c.expected)
      EXPECT_EQ(ids, std::vector<std::uint64_t>{7}) << c.filter << " vs " << c.topic;
    else
      EXPECT_TRUE(ids.empty()) << c.filter << " vs " << c.topic;
  }
}

TEST(TopicTrie, AgreesWithMatchesWithEveryFilterLoaded) {
  std::vector<std::string> filters;
  std::vector<std::string> topics;
  for (const auto& c : match_table()) {
    filters.emplace_back(c.filter);
    topics.emplace_back(c.topic);
  }
  TopicTrie trie;
  for (std::size_t i = 0; i < filters.size(); ++i) ASSERT_TRUE(trie.insert(filters[i], i));
  EXPECT_EQ(trie.size(), filters.size());
  for (const auto& t : topics) {
    std::vector<std::uint64_t> expected;
    for (std::size_t i = 0; i < filters.size(); ++i)
      if (matches(filters[i], t)) expected.push_back(i);
    EXPECT_THAT(collect(trie, t), UnorderedElementsAreArray(expected)) << "topic " << t;
  }
}

TEST(TopicTrie, SeveralIdsOnOneFilterEachVisitedOnce) {
  TopicTrie trie;
  EXPECT_TRUE(trie.insert("a/+", 1));
  EXPECT_TRUE(trie.insert("a/+", 2));
  EXPECT_TRUE(trie.insert("a/b", 3));
  EXPECT_TRUE(trie.insert("#", 4));
  EXPECT_TRUE(trie.insert("a/#", 5));
  EXPECT_THAT(collect(trie, "a/b"), UnorderedElementsAreArray({1u, 2u, 3u, 4u, 5u}));
  EXPECT_THAT(collect(trie, "a"), UnorderedElementsAreArray({4u, 5u}));
  EXPECT_THAT(collect(trie, "b"), UnorderedElementsAreArray({4u}));
}

TEST(TopicTrie, DuplicateInsertAndUnknownEraseChangeNothing) {
  TopicTrie trie;
  EXPECT_TRUE(trie.insert("a/b", 1));
  EXPECT_FALSE(trie.insert("a/b", 1));
  EXPECT_EQ(trie.size(), 1u);
  EXPECT_FALSE(trie.erase("a/b", 2));
  EXPECT_FALSE(trie.erase("a/c", 1));
  EXPECT_FALSE(trie.erase("a/b/c", 1));
  EXPECT_FALSE(trie.erase("a/#", 1));
  EXPECT_FALSE(trie.erase("a/+", 1));
  EXPECT_EQ(trie.size(), 1u);
  EXPECT_TRUE(trie.erase("a/b", 1));
  EXPECT_FALSE(trie.erase("a/b", 1));
  EXPECT_TRUE(trie.empty());
}

TEST(TopicTrie, EraseKeepsOtherIdsAndPrunesEmptyNodes) {
  TopicTrie trie;
  EXPECT_EQ(trie.node_count(), 1u);
  ASSERT_TRUE(trie.insert("a/b/c", 1));
  EXPECT_EQ(trie.node_count(), 4u);  // root, a, b, c
  ASSERT_TRUE(trie.insert("a/b", 2));
  ASSERT_TRUE(trie.insert("a/+/#", 3));  // adds the + node under a; # lives on it
  ASSERT_TRUE(trie.insert("#", 4));      // lives on the root
  EXPECT_EQ(trie.node_count(), 5u);

  ASSERT_TRUE(trie.erase("a/b/c", 1));
  EXPECT_EQ(trie.node_count(), 4u);  // c pruned, b kept for id 2
  EXPECT_THAT(collect(trie, "a/b"), UnorderedElementsAreArray({2u, 3u, 4u}));
  EXPECT_THAT(collect(trie, "a/b/c"), UnorderedElementsAreArray({3u, 4u}));

  ASSERT_TRUE(trie.erase("a/+/#", 3));
  EXPECT_EQ(trie.node_count(), 3u);  // + pruned
  ASSERT_TRUE(trie.erase("a/b", 2));
  EXPECT_EQ(trie.node_count(), 1u);  // a and b pruned; root keeps id 4
  EXPECT_THAT(collect(trie, "x"), UnorderedElementsAreArray({4u}));
  ASSERT_TRUE(trie.erase("#", 4));
  EXPECT_EQ(trie.node_count(), 1u);
  EXPECT_TRUE(trie.empty());
  EXPECT_TRUE(collect(trie, "a/b").empty());
}

TEST(TopicTrie, ManyFiltersInsertedThenErasedLeaveOnlyTheRoot) {
  TopicTrie trie;
  std::vector<std::pair<std::string, std::uint64_t>> entries;
  std::uint64_t id = 1;
  for (int i = 0; i < 20; ++i)
    for (int j = 0; j < 20; ++j) {
      entries.emplace_back("site/" + std::to_string(i) + "/dev/" + std::to_string(j), id++);
      entries.emplace_back("site/" + std::to_string(i) + "/+/" + std::to_string(j), id++);
      entries.emplace_back("site/+/dev/" + std::to_string(j) + "/#", id++);
    }
  for (const auto& [f, i] : entries) ASSERT_TRUE(trie.insert(f, i));
  EXPECT_EQ(trie.size(), entries.size());
  // site/3/dev/4 matches its own literal filter, site/3/+/4 and the 20 copies of site/+/dev/4/#.
  EXPECT_EQ(collect(trie, "site/3/dev/4").size(), 22u);
  std::reverse(entries.begin(), entries.end());
  for (const auto& [f, i] : entries) ASSERT_TRUE(trie.erase(f, i));
  EXPECT_TRUE(trie.empty());
  EXPECT_EQ(trie.node_count(), 1u);
}

TEST(TopicTrie, VeryDeepFiltersAndTopicsDoNotRecurse) {
  // 65534 bytes of '/' is 65535 empty levels: recursion per level would blow the stack.
  const std::string deep(kMaxTopicBytes - 1, '/');
  ASSERT_TRUE(validate_topic(deep));
  TopicTrie trie;
  ASSERT_TRUE(trie.insert(deep, 1));
  ASSERT_TRUE(trie.insert(std::string(kMaxTopicBytes - 1, '/') + "+", 2));  // same depth, last level +
  ASSERT_TRUE(trie.insert("/#", 3));
  EXPECT_THAT(collect(trie, deep), UnorderedElementsAreArray({1u, 2u, 3u}));
  EXPECT_TRUE(matches(deep, deep));
  ASSERT_TRUE(trie.erase(deep, 1));
  // The other deep filter is left for the destructor, which must not recurse either.
}

TEST(TopicTrie, MovedFromTrieIsEmptyAndUsable) {
  TopicTrie a;
  ASSERT_TRUE(a.insert("x/+", 1));
  TopicTrie b(std::move(a));
  EXPECT_EQ(b.size(), 1u);
  EXPECT_EQ(collect(b, "x/y"), std::vector<std::uint64_t>{1});
  EXPECT_TRUE(a.empty());  // NOLINT(bugprone-use-after-move): documented state
  EXPECT_TRUE(a.insert("q", 2));
  TopicTrie c;
  c = std::move(b);
  EXPECT_EQ(collect(c, "x/y"), std::vector<std::uint64_t>{1});
  EXPECT_TRUE(collect(b, "x/y").empty());  // NOLINT(bugprone-use-after-move)
}

}  // namespace
}  // namespace canopy::pubsub
