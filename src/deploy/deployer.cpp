// Local deployments. A deployment is applied in this order, so that a kill -9 at any point
// leaves something start() can turn back into the old set:
//   1. resolve and validate everything (recipes, versions, artifacts, configuration, users);
//      nothing on disk changes until all of it passed;
//   2. write deployments/<id>/rollback.json (the old deployed set, the old configuration of
//      every component it touches, the old recipe texts), fsynced;
//   3. install recipes and artifacts (new version folders; a same-version redeploy swaps the
//      folder by rename, so running executables keep their inode);
//   4. one configuration-store transaction;
//   5. deployed.json with `pending: <id>`;
//   6. the lifecycle manager applies the set; success when every component is RUNNING or
//      FINISHED, failure on BROKEN or the deployment timeout;
//   7. deployed.json without `pending` (or the rollback: configuration, recipes, deployed.json
//      from rollback.json, then the old set is applied again).
// start() finding `pending` does step 7's rollback before starting anything.
#include "canopy/deploy/deployer.hpp"

#include <algorithm>
#include <deque>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <zip.h>

#include "canopy/config/store.hpp"
#include "canopy/core/base64.hpp"
#include "canopy/core/file.hpp"
#include "canopy/core/log.hpp"
#include "canopy/deploy/fetch.hpp"

namespace canopy::deploy {
namespace net = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using recipe::Version;

namespace {

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

result<void> write_atomic(const fs::path& p, std::string_view text, mode_t mode = 0600) {
  return write_file_atomically(p, text, mode);
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string out;
  for (unsigned int i = 0; i < len; ++i) out += fmt::format("{:02x}", md[i]);
  return out;
}

// Base64 of the file's digest with `algorithm` (SHA-256, SHA-384, SHA-512, SHA-1, MD5...).
result<std::string> file_digest(const fs::path& p, const std::string& algorithm) {
  std::string name = algorithm;
  const EVP_MD* md = EVP_get_digestbyname(name.c_str());
  if (!md) {
    std::erase(name, '-');
    md = EVP_get_digestbyname(name.c_str());
  }
  if (!md) return make_error(errc::invalid, fmt::format("digest algorithm \"{}\" is not supported", algorithm));
  std::ifstream in(p, std::ios::binary);
  if (!in) return errno_error(fmt::format("cannot read {}", p.string()), errno);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, md, nullptr);
  char buf[65536];
  while (in) {
    in.read(buf, sizeof buf);
    if (in.gcount() > 0) EVP_DigestUpdate(ctx, buf, static_cast<std::size_t>(in.gcount()));
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, out, &len);
  EVP_MD_CTX_free(ctx);
  return base64_encode(std::string_view(reinterpret_cast<const char*>(out), len));
}

// The file name of an artifact: the last segment of its URI, whatever the scheme.
std::string artifact_file_name(const std::string& uri) {
  std::string u = uri;
  if (auto q = u.find_first_of("?#"); q != std::string::npos) u.resize(q);
  const auto slash = u.find_last_of('/');
  std::string name = slash == std::string::npos ? u : u.substr(slash + 1);
  if (auto colon = name.find(':'); slash == std::string::npos && colon != std::string::npos) name = name.substr(colon + 1);
  return name;
}

mode_t artifact_mode(const recipe::Permission& p) {
  mode_t m = 0;
  if (p.read == recipe::Access::owner) m |= 0400;
  if (p.read == recipe::Access::all) m |= 0444;
  if (p.execute == recipe::Access::owner) m |= 0100;
  if (p.execute == recipe::Access::all) m |= 0111;
  return m | 0200;  // the owner may replace its own files (Greengrass leaves write to the owner)
}

// Zip-bomb limits: archives may unpack to at most this many bytes, at most this many times
// their own size.
constexpr std::uint64_t kMaxUnarchivedBytes = 1ull << 30;
constexpr std::uint64_t kMaxCompressionRatio = 200;

// Refuses archives that could escape their folder or exhaust the disk: entries with absolute
// or `..` paths, symbolic links, more than kMaxUnarchivedBytes in all, or a compression ratio
// above kMaxCompressionRatio. Checked before anything is written; unzip() enforces the byte limit
// again while writing (declared sizes can lie).
result<void> check_zip(zip_t* z, const fs::path& file) {
  const zip_int64_t n = zip_get_num_entries(z, 0);
  std::uint64_t total = 0;
  std::uint64_t packed = 0;
  for (zip_int64_t i = 0; i < n; ++i) {
    const auto idx = static_cast<zip_uint64_t>(i);
    const char* raw = zip_get_name(z, idx, 0);
    if (!raw) return make_error(errc::invalid, fmt::format("{}: entry {} has no readable name", file.string(), i));
    const fs::path rel = fs::path(raw).lexically_normal();
    if (rel.is_absolute() || rel.empty() || *rel.begin() == "..")
      return make_error(errc::invalid, fmt::format("{}: entry \"{}\" points outside the archive (zip slip)", file.string(), raw));
    zip_uint8_t opsys = 0;
    zip_uint32_t attr = 0;
    zip_file_get_external_attributes(z, idx, 0, &opsys, &attr);
    if (opsys == ZIP_OPSYS_UNIX && S_ISLNK(static_cast<mode_t>(attr >> 16)))
      return make_error(errc::invalid, fmt::format("{}: entry \"{}\" is a symbolic link; archives with links are refused", file.string(), raw));
    zip_stat_t st;
    zip_stat_init(&st);
    if (zip_stat_index(z, idx, 0, &st) == 0) {
      if (st.valid & ZIP_STAT_SIZE) total += st.size;
      if (st.valid & ZIP_STAT_COMP_SIZE) packed += st.comp_size;
    }
    if (total > kMaxUnarchivedBytes)
      return make_error(errc::invalid, fmt::format("{} would unpack to more than {} MiB; refused", file.string(),
                                                   kMaxUnarchivedBytes >> 20));
  }
  if (total > (1u << 20) && total > std::max<std::uint64_t>(packed, 1) * kMaxCompressionRatio)
    return make_error(errc::invalid, fmt::format("{} unpacks to {} bytes from {} ({} times its size, more than {}): it "
                                                 "looks like a zip bomb; refused",
                                                 file.string(), total, packed, total / std::max<std::uint64_t>(packed, 1),
                                                 kMaxCompressionRatio));
  return ok();
}

// fsyncs every file under `dir` and then the folders, so copied artifacts survive a power loss.
result<void> sync_tree(const fs::path& dir) {
  std::error_code ec;
  std::vector<fs::path> dirs{dir};
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_directory()) {
      dirs.push_back(it->path());
      continue;
    }
    if (!it->is_regular_file()) continue;
    const int fd = ::open(it->path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno_error(fmt::format("cannot sync {}", it->path().string()), errno);
    const int rc = ::fsync(fd);
    const int err = errno;
    ::close(fd);
    if (rc != 0) return errno_error(fmt::format("cannot sync {}", it->path().string()), err);
  }
  for (const auto& d : dirs)
    if (const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC); fd >= 0) {
      ::fsync(fd);
      ::close(fd);
    }
  return ok();
}

// Bytes used by regular files under `dir` (0 when it does not exist).
std::uint64_t tree_size(const fs::path& dir) {
  std::error_code ec;
  std::uint64_t total = 0;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file(ec)) total += it->file_size(ec);
  return total;
}

// An https:// artifact to fetch into packages/downloads/ before the deployment can go on.
struct Download {
  std::string url;
  fs::path dest;
};

struct LoadedRecipe {
  std::string text;
  std::string extension;  // ".yaml" or ".json"
  fs::path source;
  recipe::Recipe recipe;
};

using Catalog = std::map<std::string, std::map<Version, LoadedRecipe>>;

bool is_recipe_file(const fs::path& p) {
  const auto ext = p.extension().string();
  return ext == ".yaml" || ext == ".yml" || ext == ".json";
}

// Adds every recipe in `dir` to `catalog`. A defective recipe is an error naming the file.
result<void> load_recipes(const fs::path& dir, Catalog& catalog, bool strict) {
  std::error_code ec;
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_regular_file() && is_recipe_file(it->path())) files.push_back(it->path());
  if (ec) return make_error(errc::io, fmt::format("cannot list recipe folder {}: {}", dir.string(), ec.message()));
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    auto text = read_file(f);
    if (!text) return text.error();
    auto r = recipe::parse_recipe(*text, f.filename().string());
    if (!r) {
      if (!strict) continue;
      return make_error(r.error().code, fmt::format("recipe {} is not valid: {}", f.string(), r.error().message));
    }
    LoadedRecipe lr{*text, f.extension() == ".json" ? ".json" : ".yaml", f, std::move(*r)};
    auto& slot = catalog[lr.recipe.name];
    auto it = slot.find(lr.recipe.version);
    if (it != slot.end() && strict && it->second.source.parent_path() == dir && it->second.text != lr.text)
      return make_error(errc::invalid, fmt::format("recipes {} and {} both define {} {} differently; keep one",
                                                   it->second.source.string(), f.string(), lr.recipe.name,
                                                   lr.recipe.version.to_string()));
    slot.insert_or_assign(lr.recipe.version, std::move(lr));
  }
  return ok();
}

// The deployed set on disk (deployments/deployed.json).
struct DeployedState {
  std::map<std::string, std::map<std::string, std::string>> groups;  // group -> root name -> version
  struct Entry {
    std::string version;
    std::string recipe_file;  // in packages/recipes
    RunWith run_with;
  };
  std::map<std::string, Entry> components;
  std::string pending;

  nlohmann::json to_json() const {
    nlohmann::json j{{"version", 1}, {"groups", groups}, {"pending", pending}};
    auto& cs = j["components"] = nlohmann::json::object();
    for (const auto& [name, e] : components) {
      nlohmann::json rw{{"posixUser", e.run_with.posix_user}};
      if (e.run_with.limits.memory_bytes) rw["memoryBytes"] = *e.run_with.limits.memory_bytes;
      if (e.run_with.limits.cpus) rw["cpus"] = *e.run_with.limits.cpus;
      cs[name] = {{"version", e.version}, {"recipe", e.recipe_file}, {"runWith", rw}};
    }
    return j;
  }
  static result<DeployedState> from_json(const nlohmann::json& j) {
    try {
      DeployedState s;
      s.groups = j.at("groups").get<decltype(s.groups)>();
      s.pending = j.value("pending", std::string());
      for (const auto& [name, e] : j.at("components").items()) {
        Entry en;
        en.version = e.at("version").get<std::string>();
        en.recipe_file = e.at("recipe").get<std::string>();
        const auto& rw = e.at("runWith");
        en.run_with.posix_user = rw.value("posixUser", std::string());
        if (rw.contains("memoryBytes")) en.run_with.limits.memory_bytes = rw.at("memoryBytes").get<std::uint64_t>();
        if (rw.contains("cpus")) en.run_with.limits.cpus = rw.at("cpus").get<double>();
        s.components[name] = std::move(en);
      }
      return s;
    } catch (const std::exception& e) {
      return make_error(errc::corrupt, e.what());
    }
  }
};

}  // namespace

// ---- request parsing -------------------------------------------------------------------

result<Request> parse_request(const nlohmann::json& body) {
  Request r;
  if (!body.is_object()) return make_error(errc::invalid, "CreateLocalDeployment: the request must be a JSON object");
  auto str_member = [&](const char* key, std::string& out) -> result<void> {
    auto it = body.find(key);
    if (it == body.end() || it->is_null()) return ok();
    if (!it->is_string()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: \"{}\" must be a string", key));
    out = it->get<std::string>();
    return ok();
  };
  std::string s;
  if (auto e = str_member("groupName", s); !e) return e.error();
  if (!s.empty()) r.group = s;
  s.clear();
  if (auto e = str_member("recipeDirectoryPath", s); !e) return e.error();
  r.recipe_dir = s;
  s.clear();
  if (auto e = str_member("artifactsDirectoryPath", s); !e) return e.error();
  r.artifact_dir = s;
  s.clear();
  if (auto e = str_member("failureHandlingPolicy", s); !e) return e.error();
  if (s == "DO_NOTHING") r.failure_policy = FailurePolicy::do_nothing;
  else if (!s.empty() && s != "ROLLBACK")
    return make_error(errc::invalid, fmt::format("CreateLocalDeployment: \"failureHandlingPolicy\" must be ROLLBACK or DO_NOTHING, got \"{}\"", s));
  if (auto it = body.find("rootComponentVersionsToAdd"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return make_error(errc::invalid, "CreateLocalDeployment: \"rootComponentVersionsToAdd\" must map component names to versions");
    for (const auto& [name, v] : it->items()) {
      if (!v.is_string()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: the version of {} must be a string", name));
      if (auto pv = recipe::parse_version(v.get<std::string>()); !pv)
        return make_error(errc::invalid, fmt::format("CreateLocalDeployment: {}: {}", name, pv.error().message));
      r.add[name] = v.get<std::string>();
    }
  }
  if (auto it = body.find("rootComponentsToRemove"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return make_error(errc::invalid, "CreateLocalDeployment: \"rootComponentsToRemove\" must be a list of component names");
    for (const auto& n : *it) {
      if (!n.is_string()) return make_error(errc::invalid, "CreateLocalDeployment: \"rootComponentsToRemove\" must be a list of component names");
      r.remove.push_back(n.get<std::string>());
    }
  }
  if (auto it = body.find("componentToConfiguration"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return make_error(errc::invalid, "CreateLocalDeployment: \"componentToConfiguration\" must be an object");
    for (const auto& [name, v] : it->items()) {
      if (!v.is_object()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: the configuration update of {} must be an object with MERGE and/or RESET", name));
      ConfigUpdate u;
      const bool shaped = v.contains("MERGE") || v.contains("RESET");
      if (!shaped) {
        u.merge = v;  // a bare object is a MERGE, as the Greengrass IPC model sends it
      } else {
        for (const auto& [k, val] : v.items())
          if (k != "MERGE" && k != "RESET")
            return make_error(errc::invalid, fmt::format("CreateLocalDeployment: the configuration update of {} has an unknown key \"{}\"; expected MERGE or RESET", name, k));
        if (v.contains("MERGE")) {
          if (!v["MERGE"].is_object()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: {}.MERGE must be an object", name));
          u.merge = v["MERGE"];
        }
        if (v.contains("RESET")) {
          if (!v["RESET"].is_array()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: {}.RESET must be a list of JSON pointers", name));
          for (const auto& p : v["RESET"]) {
            if (!p.is_string()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: {}.RESET must be a list of JSON pointers", name));
            if (auto pp = config::parse_pointer(p.get<std::string>()); !pp)
              return make_error(errc::invalid, fmt::format("CreateLocalDeployment: {}.RESET: {}", name, pp.error().message));
            u.reset.push_back(p.get<std::string>());
          }
        }
      }
      r.configuration[name] = std::move(u);
    }
  }
  if (auto it = body.find("componentToRunWithInfo"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) return make_error(errc::invalid, "CreateLocalDeployment: \"componentToRunWithInfo\" must be an object");
    for (const auto& [name, v] : it->items()) {
      if (!v.is_object()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: the RunWith of {} must be an object", name));
      RunWith rw;
      if (v.contains("posixUser")) {
        if (!v["posixUser"].is_string()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: {}.posixUser must be a string", name));
        rw.posix_user = v["posixUser"].get<std::string>();
      }
      if (auto lim = v.find("systemResourceLimits"); lim != v.end() && lim->is_object()) {
        if (auto m = lim->find("memory"); m != lim->end()) {
          if (!m->is_number_unsigned()) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: {}.systemResourceLimits.memory must be a number of kilobytes", name));
          rw.limits.memory_bytes = m->get<std::uint64_t>() * 1024;
        }
        if (auto c = lim->find("cpus"); c != lim->end()) {
          if (!c->is_number() || c->get<double>() <= 0) return make_error(errc::invalid, fmt::format("CreateLocalDeployment: {}.systemResourceLimits.cpus must be a positive number", name));
          rw.limits.cpus = c->get<double>();
        }
      }
      r.run_with[name] = std::move(rw);
    }
  }
  if (auto it = body.find("allowDowngrade"); it != body.end() && !it->is_null()) {
    if (!it->is_boolean()) return make_error(errc::invalid, "CreateLocalDeployment: \"allowDowngrade\" must be true or false");
    r.allow_downgrade = it->get<bool>();
  }
  if (auto it = body.find("componentUpdatePolicy"); it != body.end() && it->is_object()) {
    r.notify_components = it->value("action", std::string("SKIP_NOTIFY_COMPONENTS")) == "NOTIFY_COMPONENTS";
    r.notify_timeout = std::chrono::seconds(it->value("timeoutInSeconds", 60));
  }
  return r;
}

nlohmann::json Record::to_json() const {
  nlohmann::json comps = nlohmann::json::array();
  for (const auto& [n, v] : components) comps.push_back({{"componentName", n}, {"version", v}});
  return {{"deploymentId", id},
          {"status", status},
          {"detailed", detailed},
          {"message", message},
          {"createdMs", created_ms},
          {"updatedMs", updated_ms},
          {"request", request},
          {"components", components}};
}

Record Record::from_json(const nlohmann::json& j) {
  Record r;
  r.id = j.value("deploymentId", std::string());
  r.status = j.value("status", std::string("FAILED"));
  r.detailed = j.value("detailed", std::string());
  r.message = j.value("message", std::string());
  r.created_ms = j.value("createdMs", std::int64_t{0});
  r.updated_ms = j.value("updatedMs", std::int64_t{0});
  r.request = j.value("request", nlohmann::json::object());
  if (j.contains("components") && j["components"].is_object())
    r.components = j["components"].get<std::map<std::string, std::string>>();
  return r;
}

recipe::Platform detect_platform() {
  recipe::Platform p{{"os", "linux"}};
  utsname u{};
  if (::uname(&u) == 0) {
    const std::string m = u.machine;
    std::string arch = m;
    if (m == "x86_64") arch = "amd64";
    else if (m == "i386" || m == "i686") arch = "x86";
    else if (m == "aarch64" || m == "arm64") arch = "aarch64";
    else if (m.rfind("arm", 0) == 0) arch = "arm";
    p["architecture"] = arch;
    p["architecture.detail"] = m;
  }
  return p;
}

// ---- the deployer ----------------------------------------------------------------------

struct Deployer::Impl {
  Impl(net::any_io_executor ex, Settings s, config::ConfigStore& st, lifecycle::Manager& m, Hooks h)
      : executor(std::move(ex)), settings(std::move(s)), store(st), manager(m), hooks(std::move(h)),
        log(log::get("deploy")), default_user(settings.default_posix_user) {}

  net::any_io_executor executor;
  Settings settings;
  config::ConfigStore& store;
  lifecycle::Manager& manager;
  Hooks hooks;
  std::shared_ptr<spdlog::logger> log;
  std::string default_user;
  std::thread downloader;  // the running download batch, if any (joined before the next one and at exit)

  ~Impl() {
    if (downloader.joinable()) downloader.join();
  }

  DeployedState deployed;
  std::vector<Record> history;  // oldest first
  std::deque<std::string> queue;
  std::map<std::string, Request> requests;  // queued/in-progress requests by id
  std::uint64_t sequence = 0;

  // The deployment being applied.
  struct Active {
    std::string id;
    Request request;
    DeployedState before;
    DeployedState after;
    std::set<std::string> target;
    bool applying = false;       // lifecycle is applying; watch states
    bool rolling_back = false;
    bool validated = false;  // the components that validate configuration accepted it
    std::string failure;
    std::unique_ptr<net::steady_timer> timer;
  };
  std::unique_ptr<Active> active;

  fs::path dir() const { return settings.layout.deployments_dir(); }
  fs::path state_file() const { return dir() / "deployed.json"; }
  fs::path history_file() const { return dir() / "history.json"; }
  fs::path rollback_file(const std::string& id) const { return dir() / id / "rollback.json"; }

  Record* record(const std::string& id) {
    for (auto& r : history)
      if (r.id == id) return &r;
    return nullptr;
  }

  void save_history() {
    // Keep every unfinished record and the newest `history` finished ones.
    std::size_t finished = 0;
    for (const auto& r : history)
      if (r.status != "QUEUED" && r.status != "IN_PROGRESS") ++finished;
    while (finished > settings.history) {
      auto it = std::find_if(history.begin(), history.end(),
                             [](const Record& r) { return r.status != "QUEUED" && r.status != "IN_PROGRESS"; });
      if (it == history.end()) break;
      history.erase(it);
      --finished;
    }
    nlohmann::json j = nlohmann::json::array();
    for (const auto& r : history) j.push_back(r.to_json());
    if (auto w = write_atomic(history_file(), j.dump()); !w) log->error("cannot save deployment history: {}", w.error().message);
  }

  // deployed.json.bak keeps the previous good version (a hard link made before the replace), so
  // a damaged deployed.json is recovered at start-up rather than leaving the device empty.
  result<void> save_state(const DeployedState& s) {
    const fs::path bak = state_file().string() + ".bak";
    std::error_code ec;
    if (fs::exists(state_file(), ec)) {
      fs::remove(bak, ec);
      fs::create_hard_link(state_file(), bak, ec);
    }
    return write_atomic(state_file(), s.to_json().dump(2));
  }

  // Reads deployed.json (or, when `file` is damaged, says why).
  static result<DeployedState> load_state(const fs::path& file) {
    auto text = read_file(file);
    if (!text) return text.error();
    nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded()) return make_error(errc::corrupt, fmt::format("{} is not valid JSON", file.string()));
    auto st = DeployedState::from_json(j);
    if (!st) return make_error(errc::corrupt, fmt::format("{} does not have the expected shape: {}", file.string(), st.error().message));
    return st;
  }

  void finish(const std::string& id, const std::string& status, const std::string& detailed, const std::string& message) {
    if (auto* r = record(id)) {
      r->status = status;
      r->detailed = detailed;
      r->message = message;
      r->updated_ms = now_ms();
    }
    requests.erase(id);
    save_history();
    if (status == "SUCCEEDED") log->info("deployment={} succeeded: {}", id, message);
    else log->error("deployment={} {}: {}", id, status == "CANCELED" ? "cancelled" : "failed", message);
  }

  // Builds the lifecycle specs of a deployed set.
  result<std::vector<lifecycle::ComponentSpec>> specs_of(const DeployedState& s, const std::map<std::string, nlohmann::json>* configs) {
    std::vector<lifecycle::ComponentSpec> out;
    for (const auto& [name, e] : s.components) {
      auto text = read_file(settings.layout.recipes_dir() / e.recipe_file);
      if (!text) return text.error();
      auto r = recipe::parse_recipe(*text, e.recipe_file);
      if (!r) return r.error();
      auto sel = recipe::select_manifest(*r, settings.platform);
      if (!sel) return sel.error();
      lifecycle::ComponentSpec spec;
      spec.name = name;
      spec.version = e.version;
      spec.lifecycle = sel->lifecycle;
      spec.dependencies = r->dependencies;
      // Only dependencies that are part of the set count (SOFT ones may be absent).
      std::erase_if(spec.dependencies, [&](const recipe::Dependency& d) { return !s.components.count(d.name); });
      spec.posix_user = e.run_with.posix_user;
      spec.limits = e.run_with.limits;
      std::string fp = *text + "\n" + spec.posix_user + "\n" +
                       std::to_string(spec.limits.memory_bytes.value_or(0)) + "/" + std::to_string(spec.limits.cpus.value_or(0));
      // A lifecycle that reads configuration is reinstalled when that configuration changes.
      if (text->find("configuration:") != std::string::npos) {
        nlohmann::json cfg;
        if (configs) {
          if (auto it = configs->find(name); it != configs->end()) cfg = it->second;
        } else if (auto c = store.get(config::component_config_path(name))) {
          cfg = *c;
        }
        fp += cfg.dump();
      }
      spec.fingerprint = sha256_hex(fp);
      out.push_back(std::move(spec));
    }
    return out;
  }

  // ---- start-up ----------------------------------------------------------------------

  result<void> start() {
    std::error_code ec;
    fs::create_directories(dir(), ec);
    if (fs::exists(history_file())) {
      auto text = read_file(history_file());
      if (!text) return text.error();
      try {
        for (const auto& j : nlohmann::json::parse(*text)) history.push_back(Record::from_json(j));
      } catch (const std::exception& e) {
        const auto aside = history_file().string() + ".corrupt";
        fs::rename(history_file(), aside, ec);
        log->error("deployment history {} is damaged ({}); moved aside to {} and starting a new history",
                   history_file().string(), e.what(), aside);
        history.clear();
      }
    }
    if (fs::exists(state_file())) {
      auto st = load_state(state_file());
      if (!st && st.error().code == errc::corrupt) {
        const fs::path bak = state_file().string() + ".bak";
        const fs::path aside = fmt::format("{}.corrupt-{}", state_file().string(), now_ms() / 1000);
        fs::rename(state_file(), aside, ec);
        auto previous = fs::exists(bak) ? load_state(bak) : result<DeployedState>(make_error(errc::not_found, "no backup"));
        if (!previous)
          return make_error(errc::corrupt,
                            fmt::format("the deployed set is damaged ({}) and there is no intact backup ({}); the damaged "
                                        "file was moved to {}. Remove {} to start with no components, or restore one",
                                        st.error().message, previous.error().message, aside.string(), bak.string()));
        log->error("the deployed set was damaged ({}); moved it to {} and recovered the previous one from {}. The last "
                   "deployment may have to be repeated",
                   st.error().message, aside.string(), bak.string());
        st = std::move(previous);
        if (auto w = save_state(*st); !w) return w;
      }
      if (!st) return st.error();
      deployed = std::move(*st);
    }
    // An interrupted deployment: roll back to the set before it.
    std::string interrupted = deployed.pending;
    for (auto& r : history)
      if (r.status == "IN_PROGRESS" && interrupted.empty()) interrupted = r.id;
    const Record* interrupted_record = interrupted.empty() ? nullptr : record(interrupted);
    const bool already_finished = interrupted_record && interrupted_record->status != "IN_PROGRESS" &&
                                  interrupted_record->status != "QUEUED";  // a recovered backup's leftover mark
    if (!interrupted.empty() && already_finished) {
      deployed.pending.clear();
      if (auto w = save_state(deployed); !w) return w;
    } else if (!interrupted.empty()) {
      if (fs::exists(rollback_file(interrupted))) {
        if (auto r = restore(interrupted); !r) return r;
      }
      deployed.pending.clear();
      if (auto w = save_state(deployed); !w) return w;
      if (record(interrupted))
        finish(interrupted, "FAILED", "FAILED_ROLLBACK_COMPLETE",
               "canopyd stopped while this deployment was being applied; the components, versions and configuration "
               "from before it were restored");
    }
    for (auto& r : history) {
      if (r.status == "IN_PROGRESS") {
        r.status = "FAILED";
        r.detailed = "FAILED_NO_STATE_CHANGE";
        r.message = "canopyd stopped before this deployment changed anything";
      }
      if (r.status == "QUEUED") {
        auto req = parse_request(r.request);
        if (req) {
          requests[r.id] = std::move(*req);
          queue.push_back(r.id);
        } else {
          r.status = "FAILED";
          r.detailed = "REJECTED";
          r.message = req.error().message;
        }
      }
    }
    save_history();
    auto specs = specs_of(deployed, nullptr);
    if (!specs) return make_error(specs.error().code, "cannot start the deployed components: " + specs.error().message);
    if (!specs->empty())
      log->info("starting {} deployed component(s)", specs->size());
    if (auto u = manager.update(std::move(*specs), [] {}, false); !u)
      log->error("the deployed components cannot start: {}", u.error().message);
    net::post(executor, [this] { run_next(); });
    return ok();
  }

  // Restores configuration, recipes and the deployed set from rollback.json. Used both for a
  // failed deployment and at start-up after a crash.
  result<void> restore(const std::string& id) {
    auto text = read_file(rollback_file(id));
    if (!text) return text.error();
    nlohmann::json snap;
    try {
      snap = nlohmann::json::parse(*text);
    } catch (const std::exception& e) {
      return make_error(errc::corrupt, fmt::format("rollback snapshot {} is damaged: {}", rollback_file(id).string(), e.what()));
    }
    auto before = DeployedState::from_json(snap.at("state"));
    if (!before) return before.error();
    for (const auto& [file, body] : snap.at("recipes").items())
      if (auto w = write_atomic(settings.layout.recipes_dir() / file, body.get<std::string>(), 0644); !w) return w;
    const auto ts = now_ms();
    auto r = store.transaction([&](config::Transaction& tx) -> result<void> {
      for (const auto& [name, cfg] : snap.at("configuration").items()) {
        if (auto x = tx.reset({"services", name}, ts); !x) return x;
        if (!cfg.is_null())
          if (auto x = tx.merge({"services", name}, cfg, ts); !x) return x;
      }
      return ok();
    });
    if (!r) return make_error(r.error().code, "cannot restore the configuration: " + r.error().message);
    before->pending.clear();
    deployed = std::move(*before);
    return save_state(deployed);
  }

  // ---- the queue -----------------------------------------------------------------------

  void run_next() {
    if (active || queue.empty()) return;
    const std::string id = queue.front();
    queue.pop_front();
    auto rit = requests.find(id);
    if (rit == requests.end()) return run_next();
    active = std::make_unique<Active>();
    active->id = id;
    active->request = rit->second;
    if (auto* r = record(id)) {
      r->status = "IN_PROGRESS";
      r->updated_ms = now_ms();
    }
    save_history();
    log->info("deployment={} started", id);
    if (active->request.notify_components && hooks.pre_update) {
      notify_then_apply(id);
      return;
    }
    prepare_and_apply();
  }

  void notify_then_apply(const std::string& id) {
    hooks.pre_update(id, active->request.notify_timeout, [this, id](std::int64_t defer_ms) {
      if (!active || active->id != id) return;
      if (defer_ms <= 0) return prepare_and_apply();
      log->info("deployment={} deferred by a component for {} ms", id, defer_ms);
      if (auto* r = record(id)) r->message = fmt::format("deferred by a component for {} ms", defer_ms);
      active->timer = std::make_unique<net::steady_timer>(executor, std::chrono::milliseconds(defer_ms));
      active->timer->async_wait([this, id](const boost::system::error_code& ec) {
        if (!ec && active && active->id == id) notify_then_apply(id);
      });
    });
  }

  void reject(const std::string& message) {
    const std::string id = active->id;
    active.reset();
    finish(id, "FAILED", "REJECTED", message + ". Nothing was changed");
    net::post(executor, [this] { run_next(); });
  }

  void prepare_and_apply() {
    auto& a = *active;
    const Request& req = a.request;
    a.before = deployed;
    a.before.pending.clear();

    // 1. Recipes: the request's folder (every file must be valid) and the installed ones.
    Catalog catalog;
    if (auto r = load_recipes(settings.layout.recipes_dir(), catalog, false); !r) return reject(r.error().message);
    if (!req.recipe_dir.empty())
      if (auto r = load_recipes(req.recipe_dir, catalog, true); !r) return reject(r.error().message);

    // 2. Root components of the group.
    auto roots = deployed.groups[req.group];
    for (const auto& n : req.remove) {
      if (!roots.erase(n))
        return reject(fmt::format("{} is not a root component of group {}, so it cannot be removed", n, req.group));
    }
    for (const auto& [n, v] : req.add) roots[n] = v;
    auto groups = deployed.groups;
    groups[req.group] = roots;
    if (groups[req.group].empty()) groups.erase(req.group);

    // 3. Versions across every group's roots and their dependencies.
    std::map<std::string, Version> pinned;
    for (const auto& [g, rs] : groups)
      for (const auto& [n, v] : rs) {
        auto pv = recipe::parse_version(v);
        if (!pv) return reject(fmt::format("{}: {}", n, pv.error().message));
        if (auto it = pinned.find(n); it != pinned.end() && !(it->second == *pv))
          return reject(fmt::format("group {} wants {} {}, but another group wants {}", g, n, v, it->second.to_string()));
        pinned[n] = *pv;
      }
    for (const auto& [n, v] : pinned)
      if (!catalog.count(n) || !catalog[n].count(v))
        return reject(fmt::format("no recipe for {} {} in {} or among the installed recipes", n, v.to_string(),
                                  req.recipe_dir.empty() ? std::string("(no recipe folder given)") : req.recipe_dir.string()));
    auto resolved = resolve(pinned, catalog);
    if (!resolved) return reject(resolved.error().message);

    // 3b. Signatures and downgrades, before anything is written.
    if (settings.trust.require_signatures && settings.trust.signers.size() < settings.trust.threshold)
      return reject(fmt::format("this device requires recipe signatures but trusts {} signer(s) for a threshold of {}; "
                                "add keys to deployment.trustedSigners in the nucleus configuration (make one with "
                                "`canopy keygen`, sign recipes with `canopy sign`)",
                                settings.trust.signers.size(), settings.trust.threshold));
    for (const auto& [n, v] : *resolved) {
      const LoadedRecipe& lr = catalog[n][v];
      if (auto d = deployed.components.find(n); d != deployed.components.end() && !req.allow_downgrade) {
        if (auto installed = recipe::parse_version(d->second.version); installed && v < *installed)
          return reject(fmt::format("{} {} is older than the installed {}; deploy it with --allow-downgrade if that "
                                    "is intended",
                                    n, v.to_string(), d->second.version));
      }
      // Recipes already in packages/recipes were checked when they were installed.
      if (lr.source.parent_path() == settings.layout.recipes_dir()) continue;
      const fs::path sig_file = lr.source.string() + ".sig";
      std::optional<std::string> sig;
      if (auto t = read_file(sig_file)) sig = std::move(*t);
      if (auto ok_sig = trust::verify_recipe(lr.text, sig, settings.trust, lr.source.filename().string()); !ok_sig)
        return reject(ok_sig.error().message);
    }

    // 4. Per component: manifest, artifacts, run-as user.
    DeployedState after;
    after.groups = groups;
    struct Install {
      const LoadedRecipe* recipe;
      recipe::Selection selection;
      fs::path artifact_source;  // empty: keep what is installed
      std::map<std::string, fs::path> extra_files;  // artifacts from file:// URIs, relative paths or downloads
    };
    std::vector<Download> downloads;  // https:// artifacts not downloaded yet
    std::map<std::string, Install> installs;
    for (const auto& [n, v] : *resolved) {
      const LoadedRecipe& lr = catalog[n][v];
      // Errors name the recipe file and the field, as recipe parsing errors do.
      const std::string where = lr.source.filename().string();
      auto sel = recipe::select_manifest(lr.recipe, settings.platform, where);
      if (!sel) return reject(sel.error().message);
      Install inst{&lr, std::move(*sel), {}, {}};
      const fs::path src = req.artifact_dir.empty() ? fs::path() : req.artifact_dir / n / v.to_string();
      const fs::path installed = settings.layout.artifacts_dir() / n / v.to_string();
      std::error_code ec;
      const bool have_src = !src.empty() && fs::is_directory(src, ec);
      for (std::size_t i = 0; i < inst.selection.artifacts.size(); ++i) {
        const auto& art = inst.selection.artifacts[i];
        const std::string at = fmt::format("{}: Manifests[{}].Artifacts[{}]", where, inst.selection.manifest_index, i);
        if (art.uri.rfind("docker:", 0) == 0)
          return reject(fmt::format("{}.URI: expected the URI of a file, got \"{}\" (docker images are not supported by "
                                    "Canopy)", at, art.uri));
        const std::string file = artifact_file_name(art.uri);
        if (file.empty() || file == "." || file == "..")
          return reject(fmt::format("{}.URI: expected a URI that ends in a file name, got \"{}\"", at, art.uri));
        fs::path p = have_src ? src / file : installed / file;
        // Not in the artifact folder and not installed: where the URI says, if Canopy can get it.
        if (!fs::is_regular_file(p, ec) && !(have_src && fs::is_regular_file(installed / file, ec))) {
          const auto colon = art.uri.find("://");
          const std::string scheme = colon == std::string::npos ? std::string() : art.uri.substr(0, colon);
          if (scheme == "file") {
            p = art.uri.substr(colon + 3);
            if (!fs::is_regular_file(p, ec))
              return reject(fmt::format("{}.URI: expected the file {}, got no such file", at, p.string()));
            inst.extra_files[file] = p;
          } else if (scheme.empty() && !req.artifact_dir.empty() && fs::is_regular_file(req.artifact_dir / art.uri, ec)) {
            p = req.artifact_dir / art.uri;
            inst.extra_files[file] = p;
          } else if (scheme == "https") {
            p = settings.layout.root / "packages" / "downloads" / n / v.to_string() / file;
            if (!fs::is_regular_file(p, ec)) {
              downloads.push_back({art.uri, p});
              continue;  // checked once downloaded, when this runs again
            }
            inst.extra_files[file] = p;
          } else if (scheme == "s3" || scheme == "greengrass") {
            return reject(fmt::format("{}.URI: {} must be downloaded, and downloading {}:// artifacts is not supported "
                                      "yet; put {} in {}",
                                      at, art.uri, scheme, file,
                                      ((req.artifact_dir.empty() ? fs::path("<artifactDir>") : req.artifact_dir) / n /
                                       v.to_string())
                                          .string()));
          }
        } else if (!fs::is_regular_file(p, ec)) {
          p = installed / file;
        }
        if (!fs::is_regular_file(p, ec))
          return reject(fmt::format("{}.URI: expected the file {} in {}, got no such file", at, file,
                                    have_src ? src.string()
                                             : (req.artifact_dir.empty() ? installed.string()
                                                                         : (req.artifact_dir / n / v.to_string()).string())));
        if (!art.digest.empty()) {
          auto d = file_digest(p, art.algorithm.empty() ? "SHA-256" : art.algorithm);
          if (!d) return reject(fmt::format("{}.Algorithm: {}", at, d.error().message));
          if (*d != art.digest)
            return reject(fmt::format("{}.Digest: expected the {} digest of {} ({}), got \"{}\"", at, art.algorithm,
                                      p.string(), *d, art.digest));
        }
        if (art.unarchive == recipe::Unarchive::zip) {  // checked now: unpacking happens after changes start
          int zerr = 0;
          zip_t* z = zip_open(p.c_str(), ZIP_RDONLY, &zerr);
          if (!z) {
            zip_error_t ze;
            zip_error_init_with_code(&ze, zerr);
            const std::string why = zip_error_strerror(&ze);
            zip_error_fini(&ze);
            return reject(fmt::format("{}.Unarchive: expected {} to be a ZIP archive, got a file libzip cannot open "
                                      "({})", at, p.string(), why));
          }
          auto safe = check_zip(z, p);
          zip_discard(z);
          if (!safe) return reject(fmt::format("{}.Unarchive: {}", at, safe.error().message));
        }
      }
      if (have_src || !inst.extra_files.empty()) inst.artifact_source = have_src ? src : installed;
      DeployedState::Entry e;
      e.version = v.to_string();
      e.recipe_file = n + "-" + e.version + lr.extension;
      if (auto rw = req.run_with.find(n); rw != req.run_with.end()) e.run_with = rw->second;
      else if (auto old = deployed.components.find(n); old != deployed.components.end()) e.run_with = old->second.run_with;
      after.components[n] = std::move(e);
      installs.emplace(n, std::move(inst));
    }
    // https:// artifacts are fetched off the event loop; then this runs again from the top and
    // finds them in packages/downloads/ (digests are checked then, before anything is installed).
    if (!downloads.empty()) return start_downloads(a.id, std::move(downloads));

    // The component store's size cap: what is installed plus what this deployment adds.
    if (settings.store_max_bytes > 0) {
      std::uint64_t incoming = 0;
      for (const auto& [n, inst] : installs) {
        const fs::path dest = settings.layout.artifacts_dir() / n / after.components[n].version;
        if (inst.artifact_source.empty() || inst.artifact_source == dest) continue;
        incoming += tree_size(inst.artifact_source);
        for (const auto& [f, from] : inst.extra_files) { std::error_code fec; incoming += fs::file_size(from, fec); }
      }
      const std::uint64_t current = tree_size(settings.layout.root / "packages");
      if (current + incoming > settings.store_max_bytes)
        return reject(fmt::format("the component store would grow to {:.1f} MiB ({:.1f} MiB installed, {:.1f} MiB new), "
                                  "above deployment.componentStoreMaxSizeBytes ({:.1f} MiB); remove components or raise "
                                  "the cap",
                                  (current + incoming) / 1048576.0, current / 1048576.0, incoming / 1048576.0,
                                  settings.store_max_bytes / 1048576.0));
    }

    for (const auto& [n, u] : req.configuration)
      if (!after.components.count(n))
        return reject(fmt::format("the configuration update names {}, which is not part of the deployment", n));

    // 5. Configuration as it would be (computed in a transaction that is then abandoned).
    const auto ts = now_ms();
    std::set<std::string> touched;
    for (const auto& [n, e] : after.components) touched.insert(n);
    for (const auto& [n, e] : deployed.components) touched.insert(n);
    std::map<std::string, nlohmann::json> proposed;
    auto config_ops = [&](config::Transaction& tx) -> result<void> {
      for (const auto& n : touched) {
        if (!after.components.count(n)) {
          if (auto x = tx.reset({"services", n}, ts); !x) return x;
          continue;
        }
        const auto base = config::component_config_path(n);
        if (auto u = req.configuration.find(n); u != req.configuration.end()) {
          for (const auto& p : u->second.reset) {
            auto kp = config::parse_pointer(p);
            if (!kp) return kp.error();
            config::KeyPath full = base;
            full.insert(full.end(), kp->begin(), kp->end());
            if (auto x = tx.reset(full, ts); !x) return x;
          }
        }
        const auto& defaults = installs.at(n).recipe->recipe.default_configuration;
        if (auto x = tx.merge(base, defaults.is_object() ? defaults : nlohmann::json::object(), 1); !x)
          return make_error(x.error().code, fmt::format("{}: DefaultConfiguration: {}", n, x.error().message));
        if (auto u = req.configuration.find(n); u != req.configuration.end() && u->second.merge.is_object())
          if (auto x = tx.merge(base, u->second.merge, ts); !x)
            return make_error(x.error().code, fmt::format("{}: MERGE: {}", n, x.error().message));
      }
      return ok();
    };
    {
      auto r = store.transaction([&](config::Transaction& tx) -> result<void> {
        if (auto x = config_ops(tx); !x) return x;
        for (const auto& [n, e] : after.components)
          proposed[n] = tx.get(config::component_config_path(n)).value_or(nlohmann::json::object());
        return make_error(errc::conflict, "preview only");
      });
      if (!r && r.error().message != "preview only") return reject(r.error().message);
    }

    // 6. The lifecycle's checks (users, cycles, interpolation) on the specs as they will be.
    std::vector<lifecycle::ComponentSpec> specs;
    for (const auto& [n, inst] : installs) {
      lifecycle::ComponentSpec spec;
      spec.name = n;
      spec.version = after.components[n].version;
      spec.lifecycle = inst.selection.lifecycle;
      spec.dependencies = inst.recipe->recipe.dependencies;
      std::erase_if(spec.dependencies, [&](const recipe::Dependency& d) { return !after.components.count(d.name); });
      spec.posix_user = after.components[n].run_with.posix_user;
      specs.push_back(std::move(spec));
    }
    if (auto c = manager.check(specs, proposed); !c) {
      // The lifecycle errors of check() ("<name>: Lifecycle.Run.Timeout: ...", from
      // recipe::interpolate) name the component; name the recipe file and the field instead.
      std::string why = c.error().message;
      for (const auto& [n, inst] : installs)
        if (const std::string prefix = n + ": Lifecycle."; why.rfind(prefix, 0) == 0) {
          why = fmt::format("{}: {}.{}", inst.recipe->source.filename().string(), inst.selection.lifecycle_path,
                            why.substr(prefix.size()));
          break;
        }
      return reject(why);
    }

    // 6b. Components that validate their configuration (SubscribeToValidateConfigurationUpdates)
    // are asked about the configuration they would get, one at a time; then this function runs
    // again from the top with `validated` set (the preparation is cheap and has no side effects).
    if (!a.validated && hooks.validate) {
      auto pending = std::make_shared<std::vector<std::pair<std::string, nlohmann::json>>>();
      for (const auto& [n, cfg] : proposed)
        if (deployed.components.count(n) && store.get(config::component_config_path(n)).value_or(nlohmann::json::object()) != cfg)
          pending->emplace_back(n, cfg);
      if (!pending->empty()) return validate_next(a.id, pending);
    }

    // ---- from here on the device changes ----
    // 7. Rollback snapshot.
    nlohmann::json snap{{"state", a.before.to_json()}, {"configuration", nlohmann::json::object()},
                        {"recipes", nlohmann::json::object()}};
    for (const auto& n : touched) snap["configuration"][n] = store.get({"services", n}).value_or(nlohmann::json());
    for (const auto& [n, e] : a.before.components)
      if (auto t = read_file(settings.layout.recipes_dir() / e.recipe_file)) snap["recipes"][e.recipe_file] = *t;
    std::error_code ec;
    fs::create_directories(rollback_file(a.id).parent_path(), ec);
    if (auto w = write_atomic(rollback_file(a.id), snap.dump()); !w) return reject(w.error().message);

    // 8. Recipes and artifacts.
    for (const auto& [n, inst] : installs) {
      const auto& e = after.components[n];
      if (auto w = write_atomic(settings.layout.recipes_dir() / e.recipe_file, inst.recipe->text, 0644); !w)
        return fail_and_restore(w.error().message);
      // Keep the signature beside the installed recipe, for audits.
      if (auto sig = read_file(inst.recipe->source.string() + ".sig"))
        if (auto w = write_atomic(settings.layout.recipes_dir() / (e.recipe_file + ".sig"), *sig, 0644); !w)
          return fail_and_restore(w.error().message);
      if (!inst.artifact_source.empty())
        if (auto r = install_artifacts(n, e, inst.selection, inst.artifact_source, inst.extra_files); !r)
          return fail_and_restore(r.error().message);
    }
    // 9. Configuration.
    if (auto r = store.transaction(config_ops); !r) return fail_and_restore("cannot update the configuration: " + r.error().message);
    // 10. The new set, marked pending.
    after.pending = a.id;
    if (auto w = save_state(after); !w) return fail_and_restore(w.error().message);
    deployed = after;
    a.after = after;
    if (auto* rec = record(a.id))
      for (const auto& [n, e] : after.components) rec->components[n] = e.version;
    save_history();
    // 11. Apply.
    auto final_specs = specs_of(after, nullptr);
    if (!final_specs) return fail_and_restore(final_specs.error().message);
    for (const auto& s : *final_specs) a.target.insert(s.name);
    const std::string id = a.id;
    if (auto u = manager.update(std::move(*final_specs), [this, id] {
          if (!active || active->id != id) return;
          active->applying = true;
          evaluate();
        });
        !u)
      return fail_and_restore(u.error().message);
    a.timer = std::make_unique<net::steady_timer>(executor, settings.deployment_timeout);
    a.timer->async_wait([this, id](const boost::system::error_code& e) {
      if (e || !active || active->id != id || active->rolling_back) return;
      std::string waiting;
      for (const auto& n : active->target) {
        auto st = manager.state(n);
        if (st && *st != lifecycle::State::running && *st != lifecycle::State::finished)
          waiting += fmt::format("{}{} is {}", waiting.empty() ? "" : ", ", n, lifecycle::to_string(*st));
      }
      failed(fmt::format("the components did not all reach RUNNING or FINISHED within {} s ({})",
                         settings.deployment_timeout.count(), waiting));
    });
  }

  // Fetches every download on a worker thread (one at a time, streamed to disk, resumable),
  // reporting progress in the deployment's message, then continues the deployment on the strand.
  void start_downloads(const std::string& id, std::vector<Download> list) {
    if (downloader.joinable()) downloader.join();
    auto* rec = record(id);
    if (rec) rec->message = fmt::format("downloading {} artifact(s)", list.size());
    log->info("deployment={} downloading {} artifact(s)", id, list.size());
    FetchOptions fo;
    fo.ca_file = settings.download_ca_file;
    fo.max_bytes = settings.max_download_bytes;
    downloader = std::thread([this, id, list = std::move(list), fo]() mutable {
      log::name_this_thread("download");
      result<void> outcome = ok();
      for (const auto& d : list) {
        std::error_code ec;
        fs::create_directories(d.dest.parent_path(), ec);
        const std::string name = d.dest.filename().string();
        // The status message changes at most every 10% (or 10 MiB without a known size), so a
        // `--wait` that prints each change stays readable.
        auto last_step = std::make_shared<std::int64_t>(-1);
        fo.progress = [this, id, name, last_step](std::uint64_t got, std::optional<std::uint64_t> total) {
          const std::int64_t step = total && *total > 0 ? static_cast<std::int64_t>(got * 10 / *total)
                                                        : static_cast<std::int64_t>(got / (10u << 20));
          if (step == *last_step) return;
          *last_step = step;
          const std::string msg = total ? fmt::format("downloading {}: {:.1f} of {:.1f} MiB", name, got / 1048576.0,
                                                      *total / 1048576.0)
                                        : fmt::format("downloading {}: {:.1f} MiB", name, got / 1048576.0);
          net::post(executor, [this, id, msg] {
            if (auto* r = record(id)) r->message = msg;
          });
        };
        outcome = fetch_https(d.url, d.dest, fo);
        if (!outcome) break;
      }
      net::post(executor, [this, id, outcome] {
        if (!active || active->id != id) return;
        if (!outcome) return reject("cannot download an artifact: " + outcome.error().message);
        log->info("deployment={} downloads complete", id);
        prepare_and_apply();
      });
    });
  }

  void validate_next(const std::string& id,
                     std::shared_ptr<std::vector<std::pair<std::string, nlohmann::json>>> pending) {
    if (!active || active->id != id) return;
    if (pending->empty()) {
      active->validated = true;
      return prepare_and_apply();
    }
    auto [component, cfg] = std::move(pending->back());
    pending->pop_back();
    log->info("deployment={} asks component={} to validate its new configuration", id, component);
    hooks.validate(component, cfg, id, [this, id, component, pending](bool accepted, std::string message) {
      if (!active || active->id != id) return;
      if (!accepted) {
        if (message.rfind(component + ": ", 0) == 0) message.erase(0, component.size() + 2);
        return reject(fmt::format("{} rejected its new configuration: {}", component,
                                  message.empty() ? std::string("no reason given") : message));
      }
      validate_next(id, pending);
    });
  }

  // Copies <artifactDir>/<name>/<version>/ into packages/artifacts/<name>/<version>/ (staged,
  // then swapped in by rename), sets owners and modes, unpacks ZIP archives.
  result<void> install_artifacts(const std::string& name, const DeployedState::Entry& e, const recipe::Selection& sel,
                                 const fs::path& src, const std::map<std::string, fs::path>& extra_files) {
    const fs::path dest = settings.layout.artifacts_dir() / name / e.version;
    const fs::path staging = settings.layout.artifacts_dir() / name / (".staging-" + e.version);
    std::error_code ec;
    fs::remove_all(staging, ec);
    fs::create_directories(staging.parent_path(), ec);
    ::chmod(staging.parent_path().c_str(), 0755);  // components running as other users traverse it
    if (fs::is_directory(src, ec)) fs::copy(src, staging, fs::copy_options::recursive, ec);
    else fs::create_directories(staging, ec);
    if (ec) return make_error(errc::io, fmt::format("{} {}: cannot copy artifacts from {}: {}", name, e.version, src.string(), ec.message()));
    for (const auto& [file, from] : extra_files) {
      fs::copy_file(from, staging / file, fs::copy_options::overwrite_existing, ec);
      if (ec)
        return make_error(errc::io, fmt::format("{} {}: cannot copy artifact {}: {}", name, e.version, from.string(), ec.message()));
    }
    uid_t uid = ::geteuid();
    gid_t gid = ::getegid();
    if (::geteuid() == 0) {
      auto u = lifecycle::resolve_user(e.run_with.posix_user.empty() ? default_user : e.run_with.posix_user);
      if (u) {
        uid = u->uid;
        gid = u->gid;
      }
    }
    for (auto it = fs::recursive_directory_iterator(staging, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (::lchown(it->path().c_str(), uid, gid) != 0 && ::geteuid() == 0)
        return errno_error(fmt::format("cannot set the owner of {}", it->path().string()), errno);
      if (it->is_directory()) ::chmod(it->path().c_str(), 0755);
    }
    [[maybe_unused]] const int owned = ::chown(staging.c_str(), uid, gid);
    ::chmod(staging.c_str(), 0755);
    for (const auto& art : sel.artifacts) {
      const fs::path f = staging / artifact_file_name(art.uri);
      ::chmod(f.c_str(), artifact_mode(art.permission));
    }
    // Durable before deployed.json names this version: after a power loss the files are whole.
    if (auto r = sync_tree(staging); !r) return make_error(r.error().code, fmt::format("{} {}: {}", name, e.version, r.error().message));
    // Swap: running processes keep the old files' inodes.
    const fs::path old = settings.layout.artifacts_dir() / name / (".old-" + e.version);
    fs::remove_all(old, ec);
    if (fs::exists(dest)) fs::rename(dest, old, ec);
    fs::rename(staging, dest, ec);
    if (ec) return make_error(errc::io, fmt::format("{} {}: cannot install artifacts into {}: {}", name, e.version, dest.string(), ec.message()));
    fs::remove_all(old, ec);
    for (const auto& art : sel.artifacts) {
      if (art.unarchive != recipe::Unarchive::zip) continue;
      const fs::path zipf = dest / artifact_file_name(art.uri);
      const fs::path out = settings.layout.unarchived_dir() / name / e.version / zipf.stem();
      if (auto r = unzip(zipf, out, uid, gid); !r) return make_error(r.error().code, fmt::format("{} {}: {}", name, e.version, r.error().message));
    }
    return ok();
  }

  static result<void> unzip(const fs::path& file, const fs::path& out, uid_t uid, gid_t gid) {
    int err = 0;
    zip_t* z = zip_open(file.c_str(), ZIP_RDONLY, &err);
    if (!z) return make_error(errc::invalid, fmt::format("{} is not a readable ZIP archive (libzip error {})", file.string(), err));
    std::error_code ec;
    fs::remove_all(out, ec);
    fs::create_directories(out, ec);
    for (fs::path p = out.parent_path(); p.filename() != "artifacts-unarchived" && p.has_relative_path(); p = p.parent_path())
      ::chmod(p.c_str(), 0755);
    result<void> res = check_zip(z, file);
    const zip_int64_t n = res ? zip_get_num_entries(z, 0) : 0;
    std::uint64_t written = 0;
    for (zip_int64_t i = 0; i < n && res; ++i) {
      const char* raw = zip_get_name(z, static_cast<zip_uint64_t>(i), 0);
      if (!raw) continue;
      const fs::path rel = fs::path(raw).lexically_normal();
      const fs::path target = out / rel;
      if (std::string_view(raw).ends_with("/")) {
        fs::create_directories(target, ec);
        continue;
      }
      fs::create_directories(target.parent_path(), ec);
      zip_file_t* zf = zip_fopen_index(z, static_cast<zip_uint64_t>(i), 0);
      if (!zf) {
        res = make_error(errc::invalid, fmt::format("{}: cannot read entry {}", file.string(), raw));
        break;
      }
      zip_uint8_t opsys = 0;
      zip_uint32_t attr = 0;
      zip_file_get_external_attributes(z, static_cast<zip_uint64_t>(i), 0, &opsys, &attr);
      const bool exec = opsys == ZIP_OPSYS_UNIX && ((attr >> 16) & 0111);
      std::ofstream o(target, std::ios::binary);
      char buf[65536];
      zip_int64_t got;
      while ((got = zip_fread(zf, buf, sizeof buf)) > 0) {
        written += static_cast<std::uint64_t>(got);
        if (written > kMaxUnarchivedBytes) {
          res = make_error(errc::invalid, fmt::format("{} unpacks to more than {} MiB; stopped", file.string(),
                                                      kMaxUnarchivedBytes >> 20));
          break;
        }
        o.write(buf, got);
      }
      zip_fclose(zf);
      if (!o) res = make_error(errc::io, fmt::format("cannot write {}", target.string()));
      o.close();
      ::chmod(target.c_str(), exec ? 0755 : 0644);
    }
    zip_close(z);
    for (auto it = fs::recursive_directory_iterator(out, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
      [[maybe_unused]] auto r = ::lchown(it->path().c_str(), uid, gid);
    [[maybe_unused]] auto r = ::chown(out.c_str(), uid, gid);
    return res;
  }


  result<std::map<std::string, Version>> resolve(const std::map<std::string, Version>& pinned, Catalog& catalog) {
    std::map<std::string, Version> chosen = pinned;
    for (int round = 0; round < 64; ++round) {
      std::map<std::string, std::vector<std::pair<std::string, const recipe::Dependency*>>> reqs;
      for (const auto& [n, v] : chosen)
        for (const auto& d : catalog[n][v].recipe.dependencies) reqs[d.name].push_back({n, &d});
      auto describe = [&](const std::string& dep) {
        std::string s;
        for (const auto& [who, d] : reqs[dep])
          s += fmt::format("{}{} requires {} {}", s.empty() ? "" : ", ", who, dep, d->requirement.text());
        return s;
      };
      std::map<std::string, Version> next = pinned;
      for (const auto& [dep, list] : reqs) {
        auto all_ok = [&](const Version& v) {
          for (const auto& [who, d] : list)
            if (!d->requirement.satisfies(v)) return false;
          return true;
        };
        if (auto p = pinned.find(dep); p != pinned.end()) {
          if (!all_ok(p->second))
            return make_error(errc::conflict, fmt::format("version conflict: {}, but the deployment asks for {} {}",
                                                          describe(dep), dep, p->second.to_string()));
          continue;
        }
        std::optional<Version> pick;
        if (auto d = deployed.components.find(dep); d != deployed.components.end())
          if (auto dv = recipe::parse_version(d->second.version); dv && catalog[dep].count(*dv) && all_ok(*dv)) pick = *dv;
        if (!pick)
          for (auto it = catalog[dep].rbegin(); it != catalog[dep].rend(); ++it)
            if (all_ok(it->first)) {
              pick = it->first;
              break;
            }
        if (!pick) {
          if (catalog[dep].empty())
            return make_error(errc::not_found, fmt::format("{}, but no recipe of {} is in the recipe folder or installed", describe(dep), dep));
          std::string have;
          for (const auto& [v, lr] : catalog[dep]) have += (have.empty() ? "" : ", ") + v.to_string();
          return make_error(errc::conflict, fmt::format("version conflict: {}; no version satisfies all of them (available: {})",
                                                        describe(dep), have));
        }
        next[dep] = *pick;
      }
      if (next.size() == chosen.size() && std::equal(next.begin(), next.end(), chosen.begin(), [](const auto& x, const auto& y) {
            return x.first == y.first && x.second == y.second;
          }))
        return chosen;
      chosen = std::move(next);
    }
    return make_error(errc::conflict, "dependency resolution did not settle; check the version requirements for a loop");
  }

  // ---- watching the apply --------------------------------------------------------------

  void evaluate() {
    if (!active || !active->applying) return;
    auto& a = *active;
    bool all_done = true;
    for (const auto& n : a.target) {
      auto st = manager.state(n);
      if (!st) continue;
      if (*st == lifecycle::State::broken) {
        auto info = manager.get(n);
        const std::string why = info ? info->status_reason : "it is BROKEN";
        if (a.rolling_back) {
          log->error("deployment={} rollback: {} is BROKEN again: {}", a.id, n, why);
          continue;
        }
        return failed(fmt::format("{} {} is BROKEN: {}", n, info ? info->version : "", why));
      }
      if (*st != lifecycle::State::running && *st != lifecycle::State::finished) all_done = false;
    }
    if (!all_done) return;
    if (a.rolling_back) return complete_rollback();
    succeed();
  }

  // After a successful deployment: versions, recipes and downloads the deployed set does not
  // use any more are removed (the rollback of a later deployment needs only the current set).
  void remove_stale_versions() {
    std::error_code ec;
    for (const fs::path& base : {settings.layout.artifacts_dir(), settings.layout.unarchived_dir()}) {
      for (fs::directory_iterator c(base, ec), end; !ec && c != end; c.increment(ec)) {
        const std::string name = c->path().filename().string();
        auto dep = deployed.components.find(name);
        std::vector<fs::path> stale;
        for (fs::directory_iterator v(c->path(), ec), vend; !ec && v != vend; v.increment(ec))
          if (dep == deployed.components.end() || v->path().filename() != dep->second.version) stale.push_back(v->path());
        ec.clear();
        for (const auto& p : stale) {
          std::error_code rec;
          fs::remove_all(p, rec);
          if (!rec) log->info("removed stale {}", p.string());
        }
        if (dep == deployed.components.end()) fs::remove(c->path(), ec);
        ec.clear();
      }
      ec.clear();
    }
    std::set<std::string> keep;
    for (const auto& [n, e] : deployed.components) {
      keep.insert(e.recipe_file);
      keep.insert(e.recipe_file + ".sig");
    }
    std::vector<fs::path> stale_recipes;
    for (fs::directory_iterator it(settings.layout.recipes_dir(), ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file() && !keep.count(it->path().filename().string())) stale_recipes.push_back(it->path());
    for (const auto& p : stale_recipes) fs::remove(p, ec);
    fs::remove_all(settings.layout.root / "packages" / "downloads", ec);
  }

  void succeed() {
    auto& a = *active;
    deployed.pending.clear();
    if (auto w = save_state(deployed); !w) log->error("deployment={} cannot save the deployed set: {}", a.id, w.error().message);
    remove_stale_versions();
    std::error_code ec;
    fs::remove_all(rollback_file(a.id).parent_path(), ec);
    const std::string id = a.id;
    std::string summary;
    for (const auto& [n, e] : deployed.components) summary += fmt::format("{}{} {}", summary.empty() ? "" : ", ", n, e.version);
    if (hooks.post_update && a.request.notify_components) hooks.post_update(id);
    active.reset();
    finish(id, "SUCCEEDED", "SUCCESSFUL",
           summary.empty() ? "no components are deployed now" : "every component is RUNNING or FINISHED: " + summary);
    net::post(executor, [this] { run_next(); });
  }

  void failed(const std::string& why) {
    auto& a = *active;
    if (a.timer) a.timer->cancel();
    a.failure = why;
    if (a.request.failure_policy == FailurePolicy::do_nothing) {
      deployed.pending.clear();
      if (auto w = save_state(deployed); !w) log->error("deployment={}: {}", a.id, w.error().message);
      std::error_code ec;
      fs::remove_all(rollback_file(a.id).parent_path(), ec);
      const std::string id = a.id;
      active.reset();
      finish(id, "FAILED", "FAILED_ROLLBACK_NOT_REQUESTED",
             why + ". The failure handling policy is DO_NOTHING, so the components stay as they are");
      net::post(executor, [this] { run_next(); });
      return;
    }
    log->warn("deployment={} failed ({}); rolling back to the previous set", a.id, why);
    if (auto r = restore(a.id); !r) {
      const std::string id = a.id;
      active.reset();
      finish(id, "FAILED", "FAILED_UNABLE_TO_ROLLBACK", why + ". The rollback failed too: " + r.error().message);
      net::post(executor, [this] { run_next(); });
      return;
    }
    a.rolling_back = true;
    a.applying = false;
    auto specs = specs_of(deployed, nullptr);
    if (!specs) {
      const std::string id = a.id;
      active.reset();
      finish(id, "FAILED", "FAILED_UNABLE_TO_ROLLBACK", why + ". The rollback failed too: " + specs.error().message);
      return;
    }
    a.target.clear();
    for (const auto& s : *specs) a.target.insert(s.name);
    const std::string id = a.id;
    (void)manager.update(
        std::move(*specs),
        [this, id] {
          if (!active || active->id != id) return;
          active->applying = true;
          evaluate();
        },
        false);  // the previous set was installed before: no Bootstrap again
    a.timer = std::make_unique<net::steady_timer>(executor, settings.deployment_timeout);
    a.timer->async_wait([this, id](const boost::system::error_code& e) {
      if (!e && active && active->id == id) complete_rollback();
    });
  }

  void fail_and_restore(const std::string& why) {
    // Something failed while installing: undo what was written, then report.
    auto& a = *active;
    if (auto r = restore(a.id); !r) log->error("deployment={} cannot restore: {}", a.id, r.error().message);
    std::error_code ec;
    fs::remove_all(rollback_file(a.id).parent_path(), ec);
    const std::string id = a.id;
    active.reset();
    finish(id, "FAILED", "FAILED_NO_STATE_CHANGE", why + ". The previous files and configuration were restored");
    net::post(executor, [this] { run_next(); });
  }

  void complete_rollback() {
    auto& a = *active;
    if (a.timer) a.timer->cancel();
    std::error_code ec;
    fs::remove_all(rollback_file(a.id).parent_path(), ec);
    const std::string id = a.id;
    const std::string why = a.failure;
    active.reset();
    finish(id, "FAILED", "FAILED_ROLLBACK_COMPLETE",
           why + ". Rolled back: the previous components, versions and configuration are back");
    net::post(executor, [this] { run_next(); });
  }
};

Deployer::Deployer(net::any_io_executor executor, Settings settings, config::ConfigStore& store,
                   lifecycle::Manager& manager, Hooks hooks)
    : impl_(std::make_unique<Impl>(std::move(executor), std::move(settings), store, manager, std::move(hooks))) {}

Deployer::~Deployer() = default;

result<void> Deployer::start() { return impl_->start(); }

result<std::string> Deployer::submit(const Request& request, nlohmann::json raw) {
  auto& d = *impl_;
  if (request.add.empty() && request.remove.empty() && request.configuration.empty() && request.run_with.empty())
    return make_error(errc::invalid, "the deployment changes nothing: give components to add (--merge), to remove "
                                     "(--remove) or a configuration update");
  std::error_code ec;
  if (!request.recipe_dir.empty() && (!request.recipe_dir.is_absolute() || !fs::is_directory(request.recipe_dir, ec)))
    return make_error(errc::invalid, fmt::format("recipe folder {} does not exist or is not an absolute path to a folder",
                                                 request.recipe_dir.string()));
  if (!request.artifact_dir.empty() && (!request.artifact_dir.is_absolute() || !fs::is_directory(request.artifact_dir, ec)))
    return make_error(errc::invalid, fmt::format("artifact folder {} does not exist or is not an absolute path to a folder",
                                                 request.artifact_dir.string()));
  Record r;
  r.id = fmt::format("local-{}-{}", now_ms(), ++d.sequence);
  r.created_ms = r.updated_ms = now_ms();
  r.request = std::move(raw);
  d.history.push_back(r);
  d.requests[r.id] = request;
  d.queue.push_back(r.id);
  d.save_history();
  d.log->info("deployment={} queued (group {}, {} to add, {} to remove)", r.id, request.group, request.add.size(),
              request.remove.size());
  net::post(d.executor, [this] { impl_->run_next(); });
  return r.id;
}

std::optional<Record> Deployer::get(const std::string& id) const {
  for (const auto& r : impl_->history)
    if (r.id == id) return r;
  return std::nullopt;
}

std::vector<Record> Deployer::list() const { return impl_->history; }

result<std::string> Deployer::cancel(const std::string& id) {
  auto& d = *impl_;
  auto* r = d.record(id);
  if (!r) return make_error(errc::not_found, fmt::format("there is no deployment {}", id));
  if (r->status == "QUEUED") {
    std::erase(d.queue, id);
    d.finish(id, "CANCELED", "", "cancelled before it started; nothing was changed");
    return std::string("the deployment was cancelled before it started");
  }
  if (r->status == "IN_PROGRESS")
    return make_error(errc::conflict, fmt::format("deployment {} is already being applied and cannot be cancelled; "
                                                  "deploy again to change the result", id));
  return make_error(errc::conflict, fmt::format("deployment {} has already finished ({})", id, r->status));
}

void Deployer::on_component_state(const std::string&, lifecycle::State) {
  net::post(impl_->executor, [this] { impl_->evaluate(); });
}

std::map<std::string, std::string> Deployer::deployed() const {
  std::map<std::string, std::string> out;
  for (const auto& [n, e] : impl_->deployed.components) out[n] = e.version;
  return out;
}

bool Deployer::busy() const { return impl_->active != nullptr; }

}  // namespace canopy::deploy
