#include "canopy/core/log.hpp"

#include <chrono>
#include <ctime>
#include <mutex>
#include <string>

#include <pthread.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/details/os.h>
#include <spdlog/formatter.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>

namespace canopy::log {
namespace {

// One JSON object per line: {"time","level","module","msg"}. Values are escaped by nlohmann.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    const auto tp = msg.time;
    const auto secs = std::chrono::system_clock::to_time_t(tp);
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(tp.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&secs, &tm);
    nlohmann::json line = {
        {"time", fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms)},
        {"level", std::string(spdlog::level::to_string_view(msg.level).data(),
                              spdlog::level::to_string_view(msg.level).size())},
        {"module", std::string(msg.logger_name.data(), msg.logger_name.size())},
        {"msg", std::string(msg.payload.data(), msg.payload.size())},
    };
    const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    dest.append(text.data(), text.data() + text.size());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

std::unique_ptr<spdlog::formatter> make_formatter(Format format) {
  if (format == Format::json) return std::make_unique<JsonFormatter>();
  return std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%eZ %-5l [%n] %v",
                                                     spdlog::pattern_time_type::utc);
}

struct State {
  std::mutex mutex;
  std::shared_ptr<spdlog::sinks::dist_sink_mt> dist = std::make_shared<spdlog::sinks::dist_sink_mt>();
  spdlog::level::level_enum level = spdlog::level::info;
  bool configured = false;
};

State& state() {
  static State s;
  return s;
}

}  // namespace

result<void> configure(const Settings& settings) {
  std::vector<spdlog::sink_ptr> sinks;
  if (settings.console) sinks.push_back(std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  if (!settings.file.empty()) {
    const std::size_t rotated = settings.max_files > 1 ? settings.max_files - 1 : 0;
    try {
      sinks.push_back(std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
          settings.file.string(), settings.max_file_bytes, rotated));
    } catch (const spdlog::spdlog_ex& e) {
      return make_error(errc::io, fmt::format("cannot open log file {}: {}", settings.file.string(), e.what()));
    }
  }
  for (auto& sink : sinks) sink->set_formatter(make_formatter(settings.format));

  State& s = state();
  std::lock_guard lock(s.mutex);
  s.dist->set_sinks(std::move(sinks));
  s.level = settings.level;
  s.configured = true;
  spdlog::apply_all([&](const std::shared_ptr<spdlog::logger>& l) { l->set_level(settings.level); });
  return ok();
}

std::shared_ptr<spdlog::logger> get(std::string_view module) {
  State& s = state();
  std::lock_guard lock(s.mutex);
  if (!s.configured) {
    // Before configure(): plain stderr so that early errors are never lost.
    auto console = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    console->set_formatter(make_formatter(Format::text));
    s.dist->set_sinks({console});
    s.configured = true;
  }
  const std::string name(module);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = std::make_shared<spdlog::logger>(name, s.dist);
  logger->set_level(s.level);
  logger->flush_on(spdlog::level::info);
  spdlog::register_logger(logger);
  return logger;
}

void flush() {
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->flush(); });
}

result<spdlog::level::level_enum> parse_level(std::string_view name) {
  static constexpr std::pair<std::string_view, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},       {"info", spdlog::level::info},
      {"warn", spdlog::level::warn},   {"error", spdlog::level::err},         {"critical", spdlog::level::critical},
      {"off", spdlog::level::off},
  };
  for (const auto& [n, l] : kLevels)
    if (n == name) return l;
  return make_error(errc::invalid,
                    fmt::format("unknown log level \"{}\": expected one of trace, debug, info, warn, error", name));
}

void name_this_thread(std::string_view name) {
  const std::string cut(name.substr(0, 15));  // the kernel's limit, without the terminating NUL
  (void)::pthread_setname_np(::pthread_self(), cut.c_str());
}

}  // namespace canopy::log
