// The persisted table of process groups canopyd started, and the start-up sweep that stops
// the groups a previous canopyd left behind (see process.hpp).
#include "canopy/lifecycle/process.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <thread>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "canopy/core/file.hpp"
#include "canopy/core/log.hpp"

namespace canopy::lifecycle {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr auto kPollInterval = 20ms;
constexpr auto kKillWait = 1s;

struct ProcStat {
  char state = '?';
  pid_t pgrp = 0;
  std::uint64_t start_time = 0;
};

// /proc/<pid>/stat is `pid (comm) state ppid pgrp ... starttime ...`. comm may hold spaces and
// ')' itself, so fields are counted from the LAST ')'.
std::optional<ProcStat> read_proc_stat(pid_t pid) {
  const auto read = read_file(fmt::format("/proc/{}/stat", pid));
  if (!read) return std::nullopt;
  const std::string& text = *read;
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  // Fields after ")": index 0 is field 3 (state), so field N is index N - 3.
  std::vector<std::string_view> fields;
  std::string_view rest = std::string_view(text).substr(paren + 1);
  while (!rest.empty()) {
    const auto start = rest.find_first_not_of(" \n");
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    const auto end = rest.find_first_of(" \n");
    fields.push_back(rest.substr(0, end));
    if (end == std::string_view::npos) break;
    rest.remove_prefix(end);
  }
  if (fields.size() < 20 || fields[0].empty()) return std::nullopt;
  ProcStat out;
  out.state = fields[0][0];
  long pgrp = 0;
  if (std::from_chars(fields[2].data(), fields[2].data() + fields[2].size(), pgrp).ec != std::errc{}) return std::nullopt;
  if (std::from_chars(fields[19].data(), fields[19].data() + fields[19].size(), out.start_time).ec != std::errc{})
    return std::nullopt;
  out.pgrp = static_cast<pid_t>(pgrp);
  return out;
}

// True while a process of the group exists that is not a zombie. Zombies count as gone: the
// group's processes are not our children, so we cannot reap them; their parent (or init)
// will. Falls back to kill(-pgid, 0) when /proc cannot be listed.
bool group_running(pid_t pgid) {
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return Launcher::group_alive(pgid);
  bool found = false;
  while (const dirent* e = ::readdir(dir)) {
    pid_t pid = 0;
    const std::string_view name = e->d_name;
    if (std::from_chars(name.data(), name.data() + name.size(), pid).ec != std::errc{} || pid <= 0) continue;
    const auto st = read_proc_stat(pid);
    if (st && st->pgrp == pgid && st->state != 'Z' && st->state != 'X') {
      found = true;
      break;
    }
  }
  ::closedir(dir);
  return found;
}

// Polls until none of `groups` runs or `limit` passes; returns those still running.
std::vector<const ProcessTable::Record*> wait_gone(std::vector<const ProcessTable::Record*> groups,
                                                   std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    std::erase_if(groups, [](const ProcessTable::Record* r) { return !group_running(r->pgid); });
    if (groups.empty() || std::chrono::steady_clock::now() >= deadline) return groups;
    std::this_thread::sleep_for(kPollInterval);
  }
}

std::optional<ProcessTable::Record> record_from_json(const nlohmann::json& j) {
  if (!j.is_object()) return std::nullopt;
  const auto pgid = j.find("pgid");
  const auto start = j.find("startTime");
  if (pgid == j.end() || !pgid->is_number_integer() || start == j.end() || !start->is_number_unsigned())
    return std::nullopt;
  ProcessTable::Record r;
  const auto v = pgid->get<std::int64_t>();
  if (v <= 1 || v > INT32_MAX) return std::nullopt;
  r.pgid = static_cast<pid_t>(v);
  r.start_time = start->get<std::uint64_t>();
  if (const auto c = j.find("component"); c != j.end() && c->is_string()) r.component = c->get<std::string>();
  if (const auto s = j.find("step"); s != j.end() && s->is_string()) r.step = s->get<std::string>();
  return r;
}


}  // namespace

ProcessTable::ProcessTable(std::filesystem::path file) : file_(std::move(file)) {
  // The previous run's records are kept (and written back by save()) until stop_leftovers()
  // has dealt with them, so an add() before it does not lose them.
  std::error_code ec;
  if (!fs::exists(file_, ec)) return;
  const auto read = read_file(file_);
  if (!read) {
    load_warnings_.push_back("cannot read the process table: " + read.error().message);
    return;
  }
  const std::string& text = *read;
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("processes") || !j["processes"].is_array()) {
    load_warnings_.push_back(
        fmt::format("the process table {} is not valid (expected {{\"version\":1,\"processes\":[...]}}); ignoring it",
                    file_.string()));
    return;
  }
  for (const auto& entry : j["processes"]) {
    if (auto r = record_from_json(entry)) {
      previous_.push_back(std::move(*r));
    } else {
      load_warnings_.push_back(
          fmt::format("the process table {} has an invalid record, skipped: {}", file_.string(), entry.dump()));
    }
  }
}

void ProcessTable::add(pid_t pgid, std::string component, std::string step) {
  if (pgid <= 1) return;
  Record r;
  r.pgid = pgid;
  // 0 when the leader is already gone: then only "the group still has members" identifies it.
  if (const auto st = read_proc_stat(pgid)) r.start_time = st->start_time;
  r.component = std::move(component);
  r.step = std::move(step);
  std::erase_if(records_, [&](const Record& x) { return x.pgid == pgid; });
  records_.push_back(std::move(r));
  save();
}

void ProcessTable::remove(pid_t pgid) {
  std::erase_if(records_, [&](const Record& x) { return x.pgid == pgid; });
  save();
}

ProcessTable::Cleanup ProcessTable::stop_leftovers(std::chrono::milliseconds grace) {
  Cleanup out;
  out.warnings = std::move(load_warnings_);
  load_warnings_.clear();

  std::vector<const Record*> ours;
  for (const Record& r : previous_) {
    if (const auto leader = read_proc_stat(r.pgid)) {
      // The leader's pid exists: it is ours only if it is the same process. A pid is never
      // reused while a group of that id exists, so a different process here means the whole
      // group is gone.
      if (leader->start_time != r.start_time) continue;
    } else if (!Launcher::group_alive(r.pgid)) {
      continue;
    }
    ours.push_back(&r);
  }

  for (const Record* r : ours) Launcher::signal_group(r->pgid, SIGTERM);
  auto left = wait_gone(ours, grace);
  for (const Record* r : left) Launcher::signal_group(r->pgid, SIGKILL);
  left = wait_gone(std::move(left), kKillWait);
  for (const Record* r : left)
    out.warnings.push_back(fmt::format("process group {} ({} {}) still has processes after SIGKILL", r->pgid,
                                       r->component, r->step));

  for (const Record* r : ours) out.stopped.push_back(*r);
  previous_.clear();
  save();
  return out;
}

void ProcessTable::save() {
  nlohmann::json processes = nlohmann::json::array();
  for (const auto* list : {&previous_, &records_}) {
    for (const Record& r : *list) {
      processes.push_back({{"pgid", r.pgid}, {"startTime", r.start_time}, {"component", r.component}, {"step", r.step}});
    }
  }
  const nlohmann::json doc = {{"version", 1}, {"processes", std::move(processes)}};
  if (auto r = write_file_atomically(file_, doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
      !r)
    log::get("lifecycle")->warn("process table not saved: {}", r.error().message);
}

}  // namespace canopy::lifecycle

namespace canopy::lifecycle {

std::vector<pid_t> ProcessTable::stop_marked(std::string_view marker, std::chrono::milliseconds grace) {
  std::vector<pid_t> groups;
  const pid_t self = ::getpid();
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (pid == self) continue;
    auto env = read_file(it->path() / "environ");
    if (!env) continue;
    // environ is NUL-separated; match a whole entry.
    std::size_t pos = 0;
    bool marked = false;
    while (pos < env->size()) {
      const auto end_pos = env->find('\0', pos);
      const std::string_view entry(env->data() + pos, (end_pos == std::string::npos ? env->size() : end_pos) - pos);
      if (entry == marker) {
        marked = true;
        break;
      }
      if (end_pos == std::string::npos) break;
      pos = end_pos + 1;
    }
    if (!marked) continue;
    const pid_t pgid = ::getpgid(pid);
    if (pgid > 0 && pgid != ::getpgrp() && std::find(groups.begin(), groups.end(), pgid) == groups.end())
      groups.push_back(pgid);
  }
  for (pid_t g : groups) Launcher::signal_group(g, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  auto alive = [&groups] {
    for (pid_t g : groups)
      if (Launcher::group_alive(g)) return true;
    return false;
  };
  while (alive() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (pid_t g : groups) Launcher::signal_group(g, SIGKILL);
  return groups;
}

}  // namespace canopy::lifecycle
