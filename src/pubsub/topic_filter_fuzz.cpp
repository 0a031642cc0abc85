// Fuzz target for topic validation and matching.
// Input: "<filter>\n<topic>" (or NUL instead of the newline). Validation must never crash;
// when both halves are valid, matches() and TopicTrie::match() must agree with a deliberately
// naive reference matcher written from the MQTT text.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "canopy/pubsub/topic_filter.hpp"

namespace {

using canopy::pubsub::TopicTrie;

std::vector<std::string> split_levels(std::string_view s) {
  std::vector<std::string> out;
  std::string cur;
  for (const char c : s) {
    if (c == '/') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(c);
    }
  }
  out.push_back(cur);
  return out;
}

// MQTT 3.1.1 section 4.7, level by level.
bool reference_matches(std::string_view filter, std::string_view topic) {
  const auto f = split_levels(filter);
  const auto t = split_levels(topic);
  if (!topic.empty() && topic[0] == '$' && (f[0] == "+" || f[0] == "#")) return false;
  for (std::size_t i = 0; i < f.size(); ++i) {
    if (f[i] == "#") return true;
    if (i >= t.size()) return false;
    if (f[i] != "+" && f[i] != t[i]) return false;
  }
  return f.size() == t.size();
}

[[noreturn]] void fail(const char* what, std::string_view filter, std::string_view topic) {
  std::fprintf(stderr, "%s\nfilter (%zu bytes): %.*s\ntopic (%zu bytes): %.*s\n", what, filter.size(),
               static_cast<int>(std::min<std::size_t>(filter.size(), 200)), filter.data(), topic.size(),
               static_cast<int>(std::min<std::size_t>(topic.size(), 200)), topic.data());
  std::abort();
}

std::vector<std::uint64_t> trie_ids(const TopicTrie& trie, std::string_view topic) {
  std::vector<std::uint64_t> ids;
  trie.match(topic, [&](std::uint64_t id) { ids.push_back(id); });
  std::sort(ids.begin(), ids.end());
  return ids;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // Whole input through both validators: they must not crash on anything.
  static_cast<void>(canopy::pubsub::validate_topic(input));
  static_cast<void>(canopy::pubsub::validate_filter(input));

  const std::size_t cut = input.find_first_of(std::string_view("\0\n", 2));
  if (cut == std::string_view::npos) return 0;
  const std::string_view filter = input.substr(0, cut);
  const std::string_view topic = input.substr(cut + 1);

  const bool filter_ok = static_cast<bool>(canopy::pubsub::validate_filter(filter));
  const bool topic_ok = static_cast<bool>(canopy::pubsub::validate_topic(topic));
  const bool got = canopy::pubsub::matches(filter, topic);  // must be safe even when invalid
  if (!filter_ok || !topic_ok) return 0;

  const bool want = reference_matches(filter, topic);
  if (got != want) fail(want ? "matches() missed a match" : "matches() matched wrongly", filter, topic);

  // The trie: the fuzzed filter plus fixed wildcard filters and the topic itself (a valid topic
  // is a valid filter), checked against the reference for each.
  const std::vector<std::string_view> filters = {filter, "#", "+", "+/#", "+/+", topic, filter};
  TopicTrie trie;
  for (std::size_t i = 0; i < filters.size(); ++i)
    if (!trie.insert(filters[i], i + 1)) fail("insert refused a fresh id", filters[i], topic);
  if (trie.insert(filter, 1)) fail("insert accepted a duplicate", filter, topic);
  std::vector<std::uint64_t> expected;
  for (std::size_t i = 0; i < filters.size(); ++i)
    if (reference_matches(filters[i], topic)) expected.push_back(i + 1);
  if (trie_ids(trie, topic) != expected) fail("TopicTrie::match disagrees with the reference", filter, topic);

  // Erasing everything must prune the trie back to its root.
  for (std::size_t i = 0; i < filters.size(); ++i)
    if (!trie.erase(filters[i], i + 1)) fail("erase missed an entry", filters[i], topic);
  if (!trie.empty() || trie.node_count() != 1) fail("erase left nodes behind", filter, topic);
  if (!trie_ids(trie, topic).empty()) fail("empty trie matched", filter, topic);
  return 0;
}
