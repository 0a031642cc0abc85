//! Topic names and MQTT topic filters: validation, matching, and a trie of filters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>

#include "canopy/core/error.hpp"

namespace canopy::pubsub {

/// The longest topic or filter accepted, in bytes of UTF-8: 65535, the MQTT 3.1.1/5 limit
/// (a topic is a length-prefixed UTF-8 string with a 16-bit length, [MQTT-1.5.3]). The
/// Greengrass Java nucleus sets no limit of its own for local pub/sub; Greengrass Lite caps
/// topics at 256 bytes and AWS IoT Core at 256 bytes (7 slashes), which the cloud link, not
/// local pub/sub, must enforce.
inline constexpr std::size_t kMaxTopicBytes = 65535;

/// Checks a topic to publish to. Rules, in the order checked: not empty; at most
/// kMaxTopicBytes bytes; no NUL character; valid UTF-8 (no overlong forms, surrogates or code
/// points above U+10FFFF); no wildcard character `+` or `#` anywhere. Empty levels (`a//b`,
/// `/a`, `a/`) are allowed, as in MQTT. Other control characters are allowed (MQTT says
/// "should not", the Greengrass nucleus accepts them).
/// Errors: errc::invalid, with a message that quotes the topic (escaped, shortened when long)
/// and names the rule, e.g. `topic "a/+/b" contains the wildcard "+"; publish to a concrete
/// topic`. Pure; thread-safe.
result<void> validate_topic(std::string_view topic);

/// Checks an MQTT topic filter to subscribe with. Rules: not empty; at most kMaxTopicBytes
/// bytes; no NUL; valid UTF-8; `+` only as a whole level (`a/+/b`, `+`, `+/#`); `#` only as
/// the whole last level (`#`, `a/#`). Errors: errc::invalid naming the filter and the rule.
/// Pure; thread-safe.
result<void> validate_filter(std::string_view filter);

/// True when `filter` contains a wildcard level (`+` or `#`). Decides Greengrass's default
/// receive mode. Meant for valid filters; pure.
bool has_wildcard(std::string_view filter) noexcept;

/// MQTT matching of a topic against a filter. `+` matches exactly one level, which may be
/// empty (`a/+/c` matches `a//c`; `a/+` matches `a/`); `#` matches any number of levels,
/// including none, so `a/#` matches `a` and `a/`, and `#` matches every topic. Levels compare
/// byte for byte (case-sensitive).
/// `$` topics: as in MQTT [MQTT-4.7.2-1], a filter whose first level is a wildcard (`#`,
/// `+`, `+/x`) does not match a topic that starts with `$` (`$SYS/x`, `$aws/things/t`); a
/// filter that names the `$` level literally (`$SYS/#`, `$aws/+/t`) does. (The Greengrass
/// Java nucleus's trie has no such rule; Canopy follows MQTT so that local pub/sub and the
/// managed Mosquitto agree.)
/// Both arguments are expected to be valid (validate_filter / validate_topic); with invalid
/// input the answer is unspecified but the call is safe. No allocation; pure; thread-safe.
bool matches(std::string_view filter, std::string_view topic) noexcept;

/// A trie of topic filters, each holding the subscription ids registered under it, that finds
/// every id whose filter matches a topic (same semantics as matches()).
///
/// Cost: insert and erase are O(levels of the filter); match is O(levels of the topic times
/// the number of `+` branches taken) with no allocation per level (one small explicit stack per
/// call, no recursion, so very deep topics cannot overflow the call stack).
///
/// @par Thread Safety
/// Not thread-safe: the owner (the Router, on its strand) serialises every call. const calls
/// may run concurrently with each other only.
class TopicTrie {
 public:
  TopicTrie();
  ~TopicTrie();
  TopicTrie(const TopicTrie&) = delete;
  TopicTrie& operator=(const TopicTrie&) = delete;
  TopicTrie(TopicTrie&&) noexcept;
  TopicTrie& operator=(TopicTrie&&) noexcept;

  /// Registers `id` under `filter`. Precondition: validate_filter(filter) succeeded (an
  /// invalid filter is stored level by level, literally, up to its first `#`). Returns false,
  /// changing nothing, when this exact (filter, id) pair is already present. The caller binds
  /// each id to one filter; an id inserted under two filters is visited once per filter.
  bool insert(std::string_view filter, std::uint64_t id);

  /// Removes `id` from `filter` and prunes the nodes left empty. Returns false when the pair is
  /// not present.
  bool erase(std::string_view filter, std::uint64_t id);

  /// Calls `visit(std::uint64_t id)` once for every (filter, id) pair whose filter matches
  /// `topic`, in no particular order. `visit` must not modify this trie. `topic` is expected
  /// to be valid (validate_topic).
  template <class F>
  void match(std::string_view topic, F&& visit) const {
    using Fn = std::remove_reference_t<F>;
    // Type-erased so the trie's internals stay in the .cpp; the pointer is cast back to its
    // original (possibly const) type before the call.
    match_impl(
        topic, [](void* ctx, std::uint64_t id) { (*static_cast<Fn*>(ctx))(id); },
        const_cast<void*>(static_cast<const void*>(std::addressof(visit))));
  }

  /// The number of (filter, id) pairs stored.
  std::size_t size() const noexcept { return size_; }
  /// True when size() == 0.
  bool empty() const noexcept { return size_ == 0; }
  /// The number of trie nodes, root included (1 when empty). For tests of pruning.
  std::size_t node_count() const noexcept;

 private:
  struct Node;
  using Visit = void (*)(void* ctx, std::uint64_t id);
  void match_impl(std::string_view topic, Visit visit, void* ctx) const;

  std::unique_ptr<Node> root_;
  std::size_t size_ = 0;
};

}  // namespace canopy::pubsub
