#include "canopy/pubsub/topic_filter.hpp"

#include <algorithm>
#include <array>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

namespace canopy::pubsub {
namespace {

constexpr std::size_t npos = std::string_view::npos;

// Longest part of a topic quoted in an error message; the rest is replaced by "...".
constexpr std::size_t kQuoteBytes = 96;

// Index of the first byte that starts an invalid UTF-8 sequence, or npos. Rejects overlong
// forms, UTF-16 surrogates and code points above U+10FFFF (RFC 3629).
std::size_t find_invalid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80;  // allowed range of the second byte
    unsigned char hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return npos;
}

// The string in double quotes for an error message: quotes, backslashes and control bytes
// escaped, bytes >= 0x80 escaped too unless the text is valid UTF-8, shortened when long.
std::string quote(std::string_view s) {
  const bool utf8 = find_invalid_utf8(s) == npos;
  std::size_t take = std::min(s.size(), kQuoteBytes);
  if (utf8) {
    // Do not cut a multi-byte character in half.
    while (take < s.size() && take > 0 && (static_cast<unsigned char>(s[take]) & 0xC0) == 0x80)
      --take;
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(take + 8);
  out += '"';
  for (std::size_t i = 0; i < take; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '"';
  if (take < s.size()) out += "...";
  return out;
}

// Checks shared by topics and filters: emptiness, length, NUL, UTF-8. `what` is "topic" or
// "topic filter".
result<void> validate_text(std::string_view s, std::string_view what) {
  if (s.empty()) return make_error(errc::invalid, std::string(what) + " is empty");
  if (s.size() > kMaxTopicBytes)
    return make_error(errc::invalid, std::string(what) + " " + quote(s) + " is " +
                                         std::to_string(s.size()) + " bytes long; the limit is " +
                                         std::to_string(kMaxTopicBytes) + " bytes");
  if (const auto nul = s.find('\0'); nul != npos)
    return make_error(errc::invalid, std::string(what) + " " + quote(s) +
                                         " contains a NUL character at byte " + std::to_string(nul));
  if (const auto bad = find_invalid_utf8(s); bad != npos)
    return make_error(errc::invalid, std::string(what) + " " + quote(s) +
                                         " is not valid UTF-8 (at byte " + std::to_string(bad) + ")");
  return ok();
}

// The level of `s` that starts at `pos`; `next` becomes the start of the following level, or
// npos when this was the last one.
std::string_view level_at(std::string_view s, std::size_t pos, std::size_t& next) noexcept {
  const std::size_t slash = s.find('/', pos);
  if (slash == npos) {
    next = npos;
    return s.substr(pos);
  }
  next = slash + 1;
  return s.substr(pos, slash - pos);
}

bool is_dollar_topic(std::string_view topic) noexcept { return !topic.empty() && topic.front() == '$'; }

}  // namespace

result<void> validate_topic(std::string_view topic) {
  if (auto r = validate_text(topic, "topic"); !r) return r;
  if (const auto w = topic.find_first_of("+#"); w != npos)
    return make_error(errc::invalid, "topic " + quote(topic) + " contains the wildcard \"" +
                                         std::string(1, topic[w]) + "\"; publish to a concrete topic");
  return ok();
}

result<void> validate_filter(std::string_view filter) {
  if (auto r = validate_text(filter, "topic filter"); !r) return r;
  std::size_t pos = 0;
  while (pos != npos) {
    std::size_t next = 0;
    const std::string_view level = level_at(filter, pos, next);
    if (const auto plus = level.find('+'); plus != npos && level != "+")
      return make_error(errc::invalid, "topic filter " + quote(filter) +
                                           " has \"+\" inside a level (at byte " +
                                           std::to_string(pos + plus) +
                                           "); \"+\" must be a whole level, as in \"a/+/c\"");
    if (const auto hash = level.find('#'); hash != npos) {
      if (level != "#")
        return make_error(errc::invalid, "topic filter " + quote(filter) +
                                             " has \"#\" inside a level (at byte " +
                                             std::to_string(pos + hash) +
                                             "); \"#\" must be the whole last level, as in \"a/#\"");
      if (next != npos)
        return make_error(errc::invalid, "topic filter " + quote(filter) +
                                             " has \"#\" before the last level (at byte " +
                                             std::to_string(pos) +
                                             "); \"#\" must be the whole last level, as in \"a/#\"");
    }
    pos = next;
  }
  return ok();
}

bool has_wildcard(std::string_view filter) noexcept { return filter.find_first_of("+#") != npos; }

bool matches(std::string_view filter, std::string_view topic) noexcept {
  if (filter.empty() || topic.empty()) return false;
  if (is_dollar_topic(topic) && (filter.front() == '+' || filter.front() == '#')) return false;
  std::size_t fpos = 0;
  std::size_t tpos = 0;
  for (;;) {
    std::size_t fnext = 0;
    const std::string_view flevel = level_at(filter, fpos, fnext);
    if (flevel == "#") return true;  // the rest of the topic, including nothing
    if (tpos == npos) return false;  // the filter has a level the topic lacks
    std::size_t tnext = 0;
    const std::string_view tlevel = level_at(topic, tpos, tnext);
    if (flevel != "+" && flevel != tlevel) return false;
    fpos = fnext;
    tpos = tnext;
    if (fpos == npos) return tpos == npos;
  }
}

// ---------------------------------------------------------------------------------------------
// TopicTrie

namespace {
struct LevelHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
}  // namespace

struct TopicTrie::Node {
  // Literal levels; transparent so match() looks levels up by string_view without copying.
  std::unordered_map<std::string, std::unique_ptr<Node>, LevelHash, std::equal_to<>> children;
  std::unique_ptr<Node> plus;          // the `+` level
  std::vector<std::uint64_t> ids;      // filters that end at this node
  std::vector<std::uint64_t> hash_ids; // filters that continue with a final `#` below this node

  bool empty() const noexcept { return children.empty() && !plus && ids.empty() && hash_ids.empty(); }
};

namespace {

// Destroys a subtree without recursion: a filter may have tens of thousands of levels, and the
// nested unique_ptr destructors would otherwise recurse once per level.
template <class NodeT>
void destroy_iteratively(std::unique_ptr<NodeT> root) {
  std::vector<std::unique_ptr<NodeT>> work;
  if (root) work.push_back(std::move(root));
  while (!work.empty()) {
    std::unique_ptr<NodeT> n = std::move(work.back());
    work.pop_back();
    for (auto& [level, child] : n->children)
      if (child) work.push_back(std::move(child));
    if (n->plus) work.push_back(std::move(n->plus));
    // n now owns no children; its destructor is shallow.
  }
}

}  // namespace

TopicTrie::TopicTrie() : root_(std::make_unique<Node>()) {}

TopicTrie::~TopicTrie() { destroy_iteratively(std::move(root_)); }

TopicTrie::TopicTrie(TopicTrie&& other) noexcept
    : root_(std::exchange(other.root_, nullptr)), size_(std::exchange(other.size_, 0)) {
  // Leave `other` usable: a moved-from trie is an empty trie. Allocation failure here would
  // terminate, which is acceptable for a one-node allocation.
  other.root_ = std::make_unique<Node>();
}

TopicTrie& TopicTrie::operator=(TopicTrie&& other) noexcept {
  if (this != &other) {
    destroy_iteratively(std::exchange(root_, std::exchange(other.root_, nullptr)));
    size_ = std::exchange(other.size_, 0);
    other.root_ = std::make_unique<Node>();
  }
  return *this;
}

bool TopicTrie::insert(std::string_view filter, std::uint64_t id) {
  Node* n = root_.get();
  std::vector<std::uint64_t>* slot = nullptr;
  std::size_t pos = 0;
  while (slot == nullptr) {
    std::size_t next = 0;
    const std::string_view level = level_at(filter, pos, next);
    if (level == "#") {
      slot = &n->hash_ids;
      break;
    }
    if (level == "+") {
      if (!n->plus) n->plus = std::make_unique<Node>();
      n = n->plus.get();
    } else {
      auto it = n->children.find(level);
      if (it == n->children.end()) it = n->children.emplace(std::string(level), std::make_unique<Node>()).first;
      n = it->second.get();
    }
    if (next == npos) slot = &n->ids;
    pos = next;
  }
  if (std::find(slot->begin(), slot->end(), id) != slot->end()) return false;
  slot->push_back(id);
  ++size_;
  return true;
}

bool TopicTrie::erase(std::string_view filter, std::uint64_t id) {
  struct Step {
    Node* parent;
    Node* child;             // parent's child along the filter; never null
    std::string_view level;  // "+" means the plus edge
  };
  std::vector<Step> path;
  Node* n = root_.get();
  std::vector<std::uint64_t>* slot = nullptr;
  std::size_t pos = 0;
  while (slot == nullptr) {
    std::size_t next = 0;
    const std::string_view level = level_at(filter, pos, next);
    if (level == "#") {
      slot = &n->hash_ids;
      break;
    }
    Node* child = nullptr;
    if (level == "+") {
      child = n->plus.get();
    } else if (auto it = n->children.find(level); it != n->children.end()) {
      child = it->second.get();
    }
    if (child == nullptr) return false;
    path.push_back({n, child, level});
    n = child;
    if (next == npos) slot = &n->ids;
    pos = next;
  }
  const auto it = std::find(slot->begin(), slot->end(), id);
  if (it == slot->end()) return false;
  // Order inside a node does not matter (the Router orders deliveries itself).
  *it = slot->back();
  slot->pop_back();
  --size_;

  // Prune from the bottom up while nodes are empty.
  for (auto step = path.rbegin(); step != path.rend(); ++step) {
    if (!step->child->empty()) break;
    if (step->level == "+") {
      step->parent->plus.reset();
    } else if (const auto edge = step->parent->children.find(step->level); edge != step->parent->children.end()) {
      step->parent->children.erase(edge);
    }
  }
  return true;
}

std::size_t TopicTrie::node_count() const noexcept {
  std::size_t count = 0;
  std::vector<const Node*> work{root_.get()};
  while (!work.empty()) {
    const Node* n = work.back();
    work.pop_back();
    ++count;
    for (const auto& [level, child] : n->children) work.push_back(child.get());
    if (n->plus) work.push_back(n->plus.get());
  }
  return count;
}

void TopicTrie::match_impl(std::string_view topic, Visit visit, void* ctx) const {
  struct Frame {
    const Node* node;
    std::size_t pos;  // start of the next topic level; npos once every level is consumed
  };
  // Depth-first with an explicit stack. Frames live in a fixed array and spill into a vector
  // only for unusually deep or branchy matches, so a typical match allocates nothing.
  constexpr std::size_t kInline = 32;
  std::array<Frame, kInline> inline_frames{};
  std::size_t inline_count = 0;
  std::vector<Frame> spill;
  auto push = [&](Frame f) {
    if (spill.empty() && inline_count < kInline)
      inline_frames[inline_count++] = f;
    else
      spill.push_back(f);
  };

  const bool dollar = is_dollar_topic(topic);
  push({root_.get(), 0});
  while (inline_count > 0 || !spill.empty()) {
    Frame f{};
    if (!spill.empty()) {
      f = spill.back();
      spill.pop_back();
    } else {
      f = inline_frames[--inline_count];
    }
    // MQTT: wildcards in the first filter level do not match `$` topics.
    const bool wildcards_allowed = !(dollar && f.node == root_.get());
    if (wildcards_allowed)
      for (const std::uint64_t id : f.node->hash_ids) visit(ctx, id);
    if (f.pos == npos) {
      for (const std::uint64_t id : f.node->ids) visit(ctx, id);
      continue;
    }
    std::size_t next = 0;
    const std::string_view level = level_at(topic, f.pos, next);
    if (const auto it = f.node->children.find(level); it != f.node->children.end())
      push({it->second.get(), next});
    if (f.node->plus && wildcards_allowed) push({f.node->plus.get(), next});
  }
}

}  // namespace canopy::pubsub
