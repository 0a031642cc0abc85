#include "canopy/config/store.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iterator>
#include <system_error>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "canopy/core/log.hpp"

namespace canopy::config {

using nlohmann::json;

namespace detail {

/// ASCII case-insensitive ordering: Greengrass config keys are case-insensitive.
struct KeyLess {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept {
    return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](char x, char y) {
      return lower(x) < lower(y);
    });
  }
  static unsigned char lower(char c) noexcept {
    const auto u = static_cast<unsigned char>(c);
    return (u >= 'A' && u <= 'Z') ? static_cast<unsigned char>(u + ('a' - 'A')) : u;
  }
};

/// A node of the tree. Nodes are immutable once shared: a write copies the nodes on the way
/// from the root to what it changes, so the committed tree stays intact until the new one is
/// on disk (rollback is dropping the copy).
struct Node {
  std::int64_t ts = 0;
  bool container = false;
  json value;                                       ///< leaf only
  std::map<std::string, NodePtr, KeyLess> children;  ///< container only
};

}  // namespace detail

namespace {

using detail::Change;
using detail::KeyLess;
using detail::Node;
using detail::NodePtr;
using detail::Pending;

constexpr const char* kSnapshot = "store.json";
constexpr const char* kBackup = "store.json.bak";
constexpr const char* kTemp = "store.json.tmp";
constexpr const char* kFormat = "canopy-config";
constexpr std::int64_t kFormatVersion = 1;
// Recursion guard when loading: deeper than any tree the limits let a writer build.
constexpr std::size_t kLoadDepthCap = 4096;

bool key_equal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && !KeyLess{}(a, b) && !KeyLess{}(b, a);
}

bool is_prefix(const KeyPath& prefix, const KeyPath& path) {
  if (prefix.size() > path.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (!key_equal(prefix[i], path[i])) return false;
  }
  return true;
}

bool is_component_config_root(const KeyPath& at) {
  return at.size() == 3 && key_equal(at[0], "services") && key_equal(at[2], "configuration");
}

std::shared_ptr<Node> new_container(std::int64_t ts) {
  auto n = std::make_shared<Node>();
  n->container = true;
  n->ts = ts;
  return n;
}

const Node* find(const Node* node, const KeyPath& at) {
  for (const auto& key : at) {
    if (node == nullptr || !node->container) return nullptr;
    auto it = node->children.find(key);
    node = it == node->children.end() ? nullptr : it->second.get();
  }
  return node;
}

json to_value(const Node& node) {
  if (!node.container) return node.value;
  json out = json::object();
  for (const auto& [key, child] : node.children) out[key] = to_value(*child);
  return out;
}

// ---- validation of incoming values ---------------------------------------------------------

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07u;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
    if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

struct Invalid {
  std::string what;  ///< empty: valid
};

// Depth of `v` (scalars 0, containers 1 + deepest child), giving up once it exceeds `budget`;
// also rejects what the snapshot could not store faithfully (NaN/Inf, invalid UTF-8).
std::size_t check_value(const json& v, std::size_t budget, Invalid& bad) {
  if (v.is_number_float() && !std::isfinite(v.get<double>())) {
    bad.what = "a number that is NaN or infinite";
    return 0;
  }
  if (v.is_string() && !valid_utf8(v.get_ref<const std::string&>())) {
    bad.what = "a string that is not valid UTF-8";
    return 0;
  }
  if (!v.is_structured()) return 0;
  if (budget == 0) return 1;
  std::size_t deepest = 0;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (v.is_object() && !valid_utf8(it.key())) {
      bad.what = "a key that is not valid UTF-8";
      return 0;
    }
    deepest = std::max(deepest, check_value(it.value(), budget - 1, bad));
    if (!bad.what.empty() || deepest + 1 > budget) break;
  }
  return deepest + 1;
}

// ---- the write algorithms (copy on write; see Node) ----------------------------------------

struct Ctx {
  std::int64_t t;
  Pending& pending;
  void changed(const KeyPath& path, bool subtree) const { pending.changes.push_back({path, subtree}); }
};

// Merges `v` into `node` (may be null). Returns `node` itself when nothing changed.
// `record`: report changed leaves; off below a node whose replacement was already reported.
NodePtr merge_value(const NodePtr& node, const json& v, Ctx& ctx, KeyPath& path, bool record) {
  if (!v.is_object()) {
    if (node) {
      if (ctx.t < node->ts) return node;
      if (!node->container && node->value == v) {
        if (ctx.t == node->ts) return node;
        auto n = std::make_shared<Node>(*node);  // same value, newer time: no notification
        n->ts = ctx.t;
        ctx.pending.dirty = true;
        return n;
      }
    }
    auto n = std::make_shared<Node>();
    n->ts = ctx.t;
    n->value = v;
    ctx.pending.dirty = true;
    if (record) ctx.changed(path, node && node->container);
    return n;
  }

  std::shared_ptr<Node> out;
  if (!node || !node->container) {
    if (node && ctx.t < node->ts) return node;
    out = new_container(ctx.t);
    ctx.pending.dirty = true;
    if (record && (node || v.empty())) ctx.changed(path, node != nullptr);
    if (node) record = false;
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    const Node& cur = out ? *out : *node;
    auto found = cur.children.find(it.key());
    const NodePtr child = found == cur.children.end() ? nullptr : found->second;
    const std::string name = found == cur.children.end() ? it.key() : found->first;
    path.push_back(name);
    NodePtr merged = merge_value(child, it.value(), ctx, path, record);
    path.pop_back();
    if (merged == child) continue;
    if (!out) out = std::make_shared<Node>(*node);
    out->children[name] = std::move(merged);
    out->ts = std::max(out->ts, ctx.t);
  }
  return out ? out : node;
}

NodePtr merge_at(const NodePtr& node, const KeyPath& at, std::size_t i, const json& v, Ctx& ctx,
                 KeyPath& path, bool record) {
  if (i == at.size()) return merge_value(node, v, ctx, path, record);
  std::shared_ptr<Node> out;
  if (!node || !node->container) {
    if (node && ctx.t < node->ts) return node;  // an older write cannot turn a leaf into an object
    out = new_container(ctx.t);
    ctx.pending.dirty = true;
    if (node && record) {
      ctx.changed(path, true);
      record = false;
    }
  }
  const Node& cur = out ? *out : *node;
  auto found = cur.children.find(at[i]);
  const NodePtr child = found == cur.children.end() ? nullptr : found->second;
  const std::string name = found == cur.children.end() ? at[i] : found->first;
  path.push_back(name);
  NodePtr merged = merge_at(child, at, i + 1, v, ctx, path, record);
  path.pop_back();
  if (merged == child) return out ? out : node;
  if (!out) out = std::make_shared<Node>(*node);
  out->children[name] = std::move(merged);
  out->ts = std::max(out->ts, ctx.t);
  return out;
}

NodePtr clear_children(const NodePtr& node, Ctx& ctx, KeyPath& path);

// Removes `node` if it is not newer than the reset, else what under it is not; null if gone.
NodePtr remove_older(const NodePtr& node, Ctx& ctx, KeyPath& path) {
  if (node->ts <= ctx.t) {
    ctx.changed(path, true);
    ctx.pending.dirty = true;
    return nullptr;
  }
  if (!node->container) return node;
  return clear_children(node, ctx, path);
}

NodePtr clear_children(const NodePtr& node, Ctx& ctx, KeyPath& path) {
  std::shared_ptr<Node> out;
  for (const auto& [name, child] : node->children) {
    path.push_back(name);
    NodePtr r = remove_older(child, ctx, path);
    path.pop_back();
    if (r == child) continue;
    if (!out) out = std::make_shared<Node>(*node);
    if (r) {
      out->children[name] = std::move(r);
    } else {
      out->children.erase(name);
    }
  }
  if (!out) return node;
  out->ts = std::max(out->ts, ctx.t);
  return out;
}

// `keep`: the target is emptied (and created if missing) rather than removed.
NodePtr reset_at(const NodePtr& node, const KeyPath& at, std::size_t i, Ctx& ctx, KeyPath& path,
                 bool keep) {
  if (i == at.size()) {
    if (!keep) return node ? remove_older(node, ctx, path) : nullptr;
    if (node && node->container) return clear_children(node, ctx, path);
    if (node && node->ts > ctx.t) return node;
    ctx.changed(path, node != nullptr);
    ctx.pending.dirty = true;
    return new_container(ctx.t);
  }
  if (node && !node->container) return node;  // the path runs through a leaf: nothing there
  if (!node && !keep) return nullptr;
  NodePtr child;
  std::string name = at[i];
  if (node) {
    auto found = node->children.find(at[i]);
    if (found != node->children.end()) {
      child = found->second;
      name = found->first;
    }
  }
  path.push_back(name);
  NodePtr r = reset_at(child, at, i + 1, ctx, path, keep);
  path.pop_back();
  if (r == child) return node;
  auto out = node ? std::make_shared<Node>(*node) : new_container(ctx.t);
  if (r) {
    out->children[name] = std::move(r);
  } else {
    out->children.erase(name);
  }
  out->ts = std::max(out->ts, ctx.t);
  return out;
}

// ---- snapshot format -----------------------------------------------------------------------
// {"format":"canopy-config","version":1,"root":NODE}
// NODE = {"t":<ms>,"c":{key:NODE,...}} for an object, {"t":<ms>,"v":<value>} for a leaf.

json to_snapshot(const Node& node) {
  json out = json::object();
  out["t"] = node.ts;
  if (node.container) {
    json c = json::object();
    for (const auto& [key, child] : node.children) c[key] = to_snapshot(*child);
    out["c"] = std::move(c);
  } else {
    out["v"] = node.value;
  }
  return out;
}

result<NodePtr> from_snapshot(const json& j, KeyPath& path, std::size_t depth) {
  auto bad = [&](const std::string& what) {
    return make_error(errc::corrupt, "node " + (path.empty() ? std::string("(root)") : to_pointer(path)) + ": " + what);
  };
  if (depth > kLoadDepthCap) return bad("nested too deep");
  if (!j.is_object()) return bad("expected an object");
  auto t = j.find("t");
  if (t == j.end() || !t->is_number_integer()) return bad("missing integer timestamp \"t\"");
  const bool has_c = j.contains("c");
  const bool has_v = j.contains("v");
  if (has_c == has_v || j.size() != 2) return bad("expected exactly \"t\" and one of \"c\" or \"v\"");
  auto n = std::make_shared<Node>();
  n->ts = t->get<std::int64_t>();
  if (has_v) {
    n->value = j.at("v");
    return NodePtr(std::move(n));
  }
  const json& c = j.at("c");
  if (!c.is_object()) return bad("\"c\" is not an object");
  n->container = true;
  for (auto it = c.begin(); it != c.end(); ++it) {
    path.push_back(it.key());
    auto child = from_snapshot(it.value(), path, depth + 1);
    path.pop_back();
    if (!child) return std::move(child).error();
    if (!n->children.emplace(it.key(), std::move(*child)).second) {
      return bad("keys differing only in case: \"" + it.key() + "\"");
    }
  }
  return NodePtr(std::move(n));
}

struct Loaded {
  NodePtr root;
  std::size_t bytes = 0;
};

result<Loaded> read_snapshot(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return errno_error("cannot open configuration snapshot " + file.string(), errno);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return errno_error("cannot read configuration snapshot " + file.string(), errno);
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    return make_error(errc::corrupt, file.string() + ": not valid JSON (" + e.what() + ")");
  }
  if (!doc.is_object() || doc.value("format", std::string()) != kFormat) {
    return make_error(errc::corrupt, file.string() + ": not a canopy configuration snapshot (\"format\" is not \"" +
                                         kFormat + "\")");
  }
  auto version = doc.find("version");
  if (version == doc.end() || !version->is_number_integer()) {
    return make_error(errc::corrupt, file.string() + ": missing integer \"version\"");
  }
  if (version->get<std::int64_t>() != kFormatVersion) {
    return make_error(errc::unsupported, file.string() + ": snapshot format version " + version->dump() +
                                             " is not supported (this canopyd reads version 1)");
  }
  auto root = doc.find("root");
  if (root == doc.end()) return make_error(errc::corrupt, file.string() + ": missing \"root\"");
  KeyPath path;
  auto node = from_snapshot(*root, path, 0);
  if (!node) return make_error(errc::corrupt, file.string() + ": " + node.error().message);
  if (!(*node)->container) return make_error(errc::corrupt, file.string() + ": the root is not an object");
  return Loaded{std::move(*node), text.size()};
}

// Renames a corrupt file to `<name>.corrupt-<unix time>[-N]`; returns the new path.
result<std::filesystem::path> move_aside(const std::filesystem::path& file) {
  const std::string base = file.string() + ".corrupt-" + std::to_string(std::time(nullptr));
  std::filesystem::path target = base;
  std::error_code ec;
  for (int n = 2; std::filesystem::exists(target, ec); ++n) target = base + "-" + std::to_string(n);
  if (::rename(file.c_str(), target.c_str()) != 0) {
    return errno_error("cannot move corrupt " + file.string() + " aside to " + target.string(), errno);
  }
  return target;
}

result<void> fsync_path(const std::filesystem::path& p, int flags) {
  const int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return errno_error("cannot open " + p.string(), errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return errno_error("cannot fsync " + p.string(), err);
  return ok();
}

}  // namespace

// ---- key paths ---------------------------------------------------------------------------

result<KeyPath> parse_pointer(std::string_view pointer) {
  KeyPath out;
  if (pointer.empty()) return out;
  if (pointer.front() != '/') {
    return make_error(errc::invalid, "JSON pointer \"" + std::string(pointer) + "\" does not start with '/'");
  }
  std::string key;
  for (std::size_t i = 1; i <= pointer.size(); ++i) {
    if (i == pointer.size() || pointer[i] == '/') {
      out.push_back(std::move(key));
      key.clear();
    } else if (pointer[i] == '~') {
      if (i + 1 >= pointer.size() || (pointer[i + 1] != '0' && pointer[i + 1] != '1')) {
        return make_error(errc::invalid, "JSON pointer \"" + std::string(pointer) +
                                             "\": '~' must be followed by 0 or 1");
      }
      key += pointer[i + 1] == '0' ? '~' : '/';
      ++i;
    } else {
      key += pointer[i];
    }
  }
  return out;
}

std::string to_pointer(const KeyPath& path) {
  std::string out;
  for (const auto& key : path) {
    out += '/';
    for (char c : key) {
      if (c == '~') {
        out += "~0";
      } else if (c == '/') {
        out += "~1";
      } else {
        out += c;
      }
    }
  }
  return out;
}

KeyPath component_config_path(std::string_view component) {
  return {"services", std::string(component), "configuration"};
}

// ---- Transaction -------------------------------------------------------------------------

result<void> Transaction::merge(const KeyPath& at, const json& value, std::int64_t timestamp_ms) {
  return store_.stage_merge(pending_, at, value, timestamp_ms);
}

result<void> Transaction::reset(const KeyPath& at, std::int64_t timestamp_ms) {
  store_.stage_reset(pending_, at, timestamp_ms);
  return ok();
}

std::optional<json> Transaction::get(const KeyPath& at) const {
  const Node* n = find(pending_.root.get(), at);
  if (n == nullptr) return std::nullopt;
  return to_value(*n);
}

std::int64_t Transaction::timestamp(const KeyPath& at) const {
  const Node* n = find(pending_.root.get(), at);
  return n == nullptr ? 0 : n->ts;
}

// ---- ConfigStore ---------------------------------------------------------------------------

ConfigStore::ConfigStore(std::filesystem::path dir, const StoreOptions& options)
    : dir_(std::move(dir)), options_(options), root_(new_container(0)) {}

ConfigStore::~ConfigStore() = default;

result<std::unique_ptr<ConfigStore>> ConfigStore::open(const std::filesystem::path& dir) {
  return open(dir, StoreOptions{});
}

result<std::unique_ptr<ConfigStore>> ConfigStore::open(const std::filesystem::path& dir,
                                                       const StoreOptions& options) {
  std::unique_ptr<ConfigStore> store(new ConfigStore(dir, options));
  if (auto r = store->load(); !r) return std::move(r).error();
  return store;
}

result<void> ConfigStore::load() {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) return make_error(errc::io, "cannot create configuration folder " + dir_.string() + ": " + ec.message());
  // A leftover temporary file is a write that never committed.
  std::filesystem::remove(dir_ / kTemp, ec);

  const auto current = dir_ / kSnapshot;
  const auto backup = dir_ / kBackup;
  auto present = [](const std::filesystem::path& p) {
    std::error_code e;
    return std::filesystem::exists(p, e);
  };
  std::string problem;  // what was wrong with the current snapshot, for the warning
  if (present(current)) {
    auto r = read_snapshot(current);
    if (r) {
      root_ = std::move(r->root);
      snapshot_bytes_ = r->bytes;
      return ok();
    }
    if (r.error().code != errc::corrupt) return std::move(r).error();
    auto moved = move_aside(current);
    if (!moved) return std::move(moved).error();
    problem = r.error().message + "; moved aside to " + moved->string();
  } else if (present(backup)) {
    problem = current.string() + " is missing";
  } else {
    return ok();  // a new store: an empty tree
  }

  if (!present(backup)) {
    return make_error(errc::corrupt, "configuration snapshot is corrupt and there is no backup: " + problem);
  }
  auto b = read_snapshot(backup);
  if (!b) {
    if (b.error().code != errc::corrupt) return std::move(b).error();
    auto moved = move_aside(backup);
    std::string where = moved ? "; moved aside to " + moved->string() : "; " + moved.error().message;
    return make_error(errc::corrupt, "configuration snapshot is unusable: " + problem + "; and the backup is corrupt too: " +
                                         b.error().message + where);
  }
  root_ = std::move(b->root);
  warnings_.push_back(problem + "; loaded the previous snapshot " + backup.string() +
                      " instead (the last committed change may be lost)");
  // Make the recovered tree the current snapshot again.
  std::string text;
  try {
    text = json{{"format", kFormat}, {"version", kFormatVersion}, {"root", to_snapshot(*root_)}}.dump();
  } catch (const json::exception& e) {
    return make_error(errc::corrupt, backup.string() + ": cannot re-serialize: " + e.what());
  }
  if (auto w = write_snapshot(text); !w) return w;
  snapshot_bytes_ = text.size();
  return ok();
}

std::optional<json> ConfigStore::get(const KeyPath& at) const {
  const Node* n = find(root_.get(), at);
  if (n == nullptr) return std::nullopt;
  return to_value(*n);
}

std::int64_t ConfigStore::timestamp(const KeyPath& at) const {
  const Node* n = find(root_.get(), at);
  return n == nullptr ? 0 : n->ts;
}

result<void> ConfigStore::stage_merge(Pending& pending, const KeyPath& at, const json& value,
                                      std::int64_t timestamp_ms) const {
  if (at.empty() && !value.is_object()) {
    return make_error(errc::invalid, "configuration update rejected: only an object can be merged at the root, got " +
                                         std::string(value.type_name()));
  }
  for (const auto& key : at) {
    if (!valid_utf8(key)) {
      return make_error(errc::invalid, "configuration update rejected: key path " + to_pointer(at) +
                                           " has a key that is not valid UTF-8");
    }
  }
  if (at.size() > options_.max_depth) {
    return make_error(errc::invalid, "configuration update rejected: key path " + to_pointer(at) + " has " +
                                         std::to_string(at.size()) + " levels, over the limit of " +
                                         std::to_string(options_.max_depth));
  }
  Invalid bad;
  const std::size_t depth = at.size() + check_value(value, options_.max_depth - at.size(), bad);
  if (!bad.what.empty()) {
    return make_error(errc::invalid, "configuration update rejected: the value at " + to_pointer(at) +
                                         " contains " + bad.what);
  }
  if (depth > options_.max_depth) {
    return make_error(errc::invalid, "configuration update rejected: the value at " + to_pointer(at) +
                                         " is nested more than " + std::to_string(options_.max_depth) +
                                         " levels deep (key path included)");
  }
  Ctx ctx{timestamp_ms, pending};
  KeyPath path;
  pending.root = merge_at(pending.root, at, 0, value, ctx, path, true);
  return ok();
}

void ConfigStore::stage_reset(Pending& pending, const KeyPath& at, std::int64_t timestamp_ms) const {
  Ctx ctx{timestamp_ms, pending};
  KeyPath path;
  const bool keep = at.empty() || is_component_config_root(at);
  pending.root = reset_at(pending.root, at, 0, ctx, path, keep);
}

result<void> ConfigStore::merge(const KeyPath& at, const json& value, std::int64_t timestamp_ms) {
  if (open_transaction_ != nullptr) {
    return make_error(errc::conflict, "ConfigStore::merge called inside a transaction body; use the Transaction");
  }
  Pending pending{root_, {}, false};
  if (auto r = stage_merge(pending, at, value, timestamp_ms); !r) return r;
  return commit(pending);
}

result<void> ConfigStore::reset(const KeyPath& at, std::int64_t timestamp_ms) {
  if (open_transaction_ != nullptr) {
    return make_error(errc::conflict, "ConfigStore::reset called inside a transaction body; use the Transaction");
  }
  Pending pending{root_, {}, false};
  stage_reset(pending, at, timestamp_ms);
  return commit(pending);
}

result<void> ConfigStore::transaction(const std::function<result<void>(Transaction&)>& body) {
  if (open_transaction_ != nullptr) {
    return make_error(errc::conflict, "ConfigStore::transaction called inside a transaction body");
  }
  Pending pending{root_, {}, false};
  Transaction txn(*this, pending);
  open_transaction_ = &pending;
  result<void> r = ok();
  try {
    r = body(txn);
  } catch (...) {
    open_transaction_ = nullptr;
    throw;
  }
  open_transaction_ = nullptr;
  if (!r) return r;
  return commit(pending);
}

result<void> ConfigStore::commit(Pending& pending) {
  if (!pending.dirty) return ok();
  std::string text;
  try {
    text = json{{"format", kFormat}, {"version", kFormatVersion}, {"root", to_snapshot(*pending.root)}}.dump();
  } catch (const json::exception& e) {
    return make_error(errc::invalid, std::string("configuration update rejected: cannot serialize: ") + e.what());
  }
  if (text.size() > options_.max_bytes && text.size() > snapshot_bytes_) {
    return make_error(errc::invalid, "configuration update rejected: the configuration would grow to " +
                                         std::to_string(text.size()) + " bytes, over the limit of " +
                                         std::to_string(options_.max_bytes) + " bytes");
  }
  if (auto w = write_snapshot(text); !w) return w;
  root_ = std::move(pending.root);
  snapshot_bytes_ = text.size();
  notify(std::move(pending.changes));
  return ok();
}

result<void> ConfigStore::write_snapshot(const std::string& text) {
  const auto tmp = dir_ / kTemp;
  const auto current = dir_ / kSnapshot;
  const auto backup = dir_ / kBackup;

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_error("cannot create " + tmp.string(), errno);
  auto fail = [&](const std::string& what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return errno_error(what + " " + tmp.string(), err);
  };
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("cannot write", errno);
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0) return fail("cannot fsync", errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return errno_error("cannot close " + tmp.string(), err);
  }

  // The backup is a second name for the current snapshot, so at every instant store.json is
  // either the previous or the new committed state, never missing.
  struct stat st{};
  if (::lstat(current.c_str(), &st) == 0) {
    if (::unlink(backup.c_str()) != 0 && errno != ENOENT) {
      const int err = errno;
      ::unlink(tmp.c_str());
      return errno_error("cannot remove old backup " + backup.string(), err);
    }
    if (::link(current.c_str(), backup.c_str()) != 0) {
      // No hard links on this file system: fall back to a copy (best effort).
      std::error_code ec;
      std::filesystem::copy_file(current, backup, std::filesystem::copy_options::overwrite_existing, ec);
    }
  }
  if (::rename(tmp.c_str(), current.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    return errno_error("cannot rename " + tmp.string() + " to " + current.string(), err);
  }
  // The rename is visible from here on, so the change counts as committed even if making the
  // folder entry durable fails; say so loudly.
  if (auto r = fsync_path(dir_, O_RDONLY | O_DIRECTORY); !r) {
    log::get("config")->error("configuration committed but not durable: {}", r.error().message);
  }
  return ok();
}

SubscriptionId ConfigStore::subscribe(const KeyPath& at, ChangeCallback callback) {
  const SubscriptionId id = next_id_++;
  subscriptions_.emplace(id, detail::Subscription{at, std::make_shared<ChangeCallback>(std::move(callback))});
  return id;
}

void ConfigStore::unsubscribe(SubscriptionId id) { subscriptions_.erase(id); }

void ConfigStore::notify(std::vector<Change> changes) {
  const SubscriptionId newest = next_id_ - 1;
  for (auto& c : changes) queue_.push_back(Queued{std::move(c), newest});
  if (delivering_) return;  // the outer notify() delivers these after the current callback
  delivering_ = true;
  struct Reset {
    ConfigStore& s;
    ~Reset() {
      s.delivering_ = false;
      s.queue_.clear();
    }
  } reset{*this};
  while (!queue_.empty()) {
    const Queued q = std::move(queue_.front());
    queue_.pop_front();
    // Look the next subscription up afresh each time: callbacks may (un)subscribe.
    for (auto it = subscriptions_.begin(); it != subscriptions_.end() && it->first <= q.newest;) {
      const SubscriptionId id = it->first;
      const KeyPath& at = it->second.path;  // not used after the callback: it may unsubscribe
      const bool match = is_prefix(at, q.change.path) || (q.change.subtree && is_prefix(q.change.path, at));
      if (match) {
        const std::shared_ptr<ChangeCallback> cb = it->second.callback;
        try {
          (*cb)(q.change.path);
        } catch (const std::exception& e) {
          log::get("config")->error("configuration subscriber {} threw on change at {}: {}", id,
                                    to_pointer(q.change.path), e.what());
        } catch (...) {
          log::get("config")->error("configuration subscriber {} threw on change at {}", id,
                                    to_pointer(q.change.path));
        }
      }
      it = subscriptions_.upper_bound(id);
    }
  }
}

}  // namespace canopy::config
