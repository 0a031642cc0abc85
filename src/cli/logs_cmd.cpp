// canopy logs NAME: reads <root>/logs/NAME.log straight from disk (no IPC, as greengrass-cli
// does), so it works while canopyd is down.
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "common.hpp"
#include "format.hpp"
#include "log_tail.hpp"

namespace canopy::cli {
namespace {

using namespace std::chrono_literals;

struct LogsArgs {
  std::string name;
  bool follow = false;
  long long lines = 50;  ///< signed so that -n -1 is reported, not wrapped
};

void write_out(const std::string& text) {
  if (text.empty()) return;
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

int cmd_logs(const Globals& g, const LogsArgs& a) {
  if (auto r = check_log_name(a.name); !r) return usage(r.error().message);
  if (a.lines < 0) return usage(fmt::format("--lines must be 0 or more, not {}", a.lines));
  const auto dir = std::filesystem::path(g.root) / "logs";
  auto log = LogFollower::open(dir / (a.name + ".log"));
  if (!log) {
    if (log.error().code != errc::not_found) return fail(log.error().message);
    const auto logs = list_logs(dir);
    if (logs.empty())
      return fail(fmt::format("there is no log for {}, and {} holds no logs (is {} canopyd's root?)", a.name,
                              dir.string(), g.root));
    return fail(fmt::format("there is no log for {} in {}; logs that exist: {}", a.name, dir.string(), join(logs, ", ")));
  }
  if (a.follow) catch_stop_signals();  // before the first read, so Ctrl-C always stops cleanly
  auto tail = log->tail(static_cast<std::size_t>(a.lines));
  if (!tail) return fail(tail.error().message);
  write_out(*tail);
  if (!a.follow) return kExitOk;
  while (!stop_requested()) {
    auto more = log->poll();
    if (!more) return fail(more.error().message);
    write_out(*more);
    if (more->empty()) sleep_unless_stopped(200ms);
  }
  return kExitOk;
}

}  // namespace

void add_logs_command(CLI::App& app, Globals& g, Action& action) {
  auto a = std::make_shared<LogsArgs>();
  auto* logs = app.add_subcommand("logs", "Print a component's log, or canopyd's own (read from <root>/logs)");
  logs->add_option("name", a->name, "Component name, or canopyd for the daemon's log")->required();
  logs->add_flag("-f,--follow", a->follow,
                 "Keep printing new lines as they are written, across log rotation, until Ctrl-C or SIGTERM");
  logs->add_option("-n,--lines", a->lines, "Print this many lines from the end first (default 50)")->type_name("N");
  logs->footer(
      "Examples:\n"
      "  canopy logs com.example.Hello\n"
      "  canopy logs com.example.Hello -n 200\n"
      "  canopy logs canopyd -f");
  logs->callback([&, a] { action = [&g, a] { return cmd_logs(g, *a); }; });
}

}  // namespace canopy::cli
