#include "canopy/core/log.hpp"

#include <filesystem>
#include <string>
#include <thread>

#include <pthread.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "canopy/core/yaml_json.hpp"
#include "support/process.hpp"

namespace canopy {
namespace {
namespace fs = std::filesystem;

std::uintmax_t folder_bytes(const fs::path& dir) {
  std::uintmax_t total = 0;
  for (const auto& e : fs::directory_iterator(dir)) total += e.file_size();
  return total;
}

TEST(Logging, RotationCapHoldsUnderHeavyLogging) {
  test::TempDir dir;
  log::Settings s;
  s.console = false;
  s.file = dir.path() / "canopyd.log";
  s.max_file_bytes = 64 * 1024;
  s.max_files = 3;
  ASSERT_TRUE(log::configure(s));
  auto l = log::get("captest");
  const std::string line(200, 'x');
  for (int i = 0; i < 20000; ++i) l->info("line={} {}", i, line);  // about 4.5 MB
  log::flush();
  std::size_t files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++files;
  EXPECT_EQ(files, 3u);
  EXPECT_LE(folder_bytes(dir.path()), s.max_file_bytes * s.max_files);
  EXPECT_GT(folder_bytes(dir.path()), s.max_file_bytes);  // it really rotated
  ASSERT_TRUE(log::configure({}));
}

TEST(Logging, JsonLinesAreValidJsonWithEscapedMessages) {
  test::TempDir dir;
  log::Settings s;
  s.console = false;
  s.format = log::Format::json;
  s.file = dir.path() / "j.log";
  ASSERT_TRUE(log::configure(s));
  log::get("jsontest")->warn("quote\" backslash\\ newline\n tab\t component={}", "com.x");
  log::flush();
  const std::string text = test::read_file(s.file);
  ASSERT_FALSE(text.empty());
  auto j = nlohmann::json::parse(text.substr(0, text.find('\n')));
  EXPECT_EQ(j["level"], "warning");
  EXPECT_EQ(j["module"], "jsontest");
  EXPECT_EQ(j["msg"], "quote\" backslash\\ newline\n tab\t component=com.x");
  ASSERT_TRUE(log::configure({}));
}

TEST(Logging, LevelAppliesToExistingLoggers) {
  auto l = log::get("leveltest");
  log::Settings s;
  s.console = false;
  s.level = spdlog::level::err;
  ASSERT_TRUE(log::configure(s));
  EXPECT_FALSE(l->should_log(spdlog::level::info));
  s.level = spdlog::level::debug;
  ASSERT_TRUE(log::configure(s));
  EXPECT_TRUE(l->should_log(spdlog::level::debug));
  ASSERT_TRUE(log::configure({}));
}

TEST(Logging, UnwritableFileIsAnErrorAndKeepsThePreviousSetup) {
  log::Settings s;
  s.file = "/proc/no-such-dir/x.log";
  auto r = log::configure(s);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::io);
  EXPECT_NE(r.error().message.find("/proc/no-such-dir/x.log"), std::string::npos);
}

TEST(Logging, ParseLevel) {
  EXPECT_EQ(*log::parse_level("warn"), spdlog::level::warn);
  EXPECT_EQ(*log::parse_level("error"), spdlog::level::err);
  auto bad = log::parse_level("loud");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("expected one of trace, debug, info, warn, error"), std::string::npos);
}

TEST(Logging, NameThisThreadShowsInTheKernelsThreadNameCutTo15Characters) {
  std::string short_name, long_name;
  std::thread t([&] {
    char buf[32] = {};
    canopy::log::name_this_thread("spool");
    if (::pthread_getname_np(::pthread_self(), buf, sizeof buf) == 0) short_name = buf;
    canopy::log::name_this_thread("a-name-longer-than-fifteen");
    if (::pthread_getname_np(::pthread_self(), buf, sizeof buf) == 0) long_name = buf;
  });
  t.join();
  EXPECT_EQ(short_name, "spool");
  EXPECT_EQ(long_name, "a-name-longer-t");
}

TEST(YamlJson, ScalarsAreTypedAndQuotedStaysString) {
  auto j = parse_yaml_or_json("a: 42\nb: \"42\"\nc: true\nd: ~\ne: 1.5\nf: hello\ng: 0x1f\nh: [1, two]\ni: 'false'\n", "t");
  ASSERT_TRUE(j) << j.error().message;
  EXPECT_EQ((*j)["a"], 42);
  EXPECT_EQ((*j)["b"], "42");
  EXPECT_EQ((*j)["c"], true);
  EXPECT_TRUE((*j)["d"].is_null());
  EXPECT_DOUBLE_EQ((*j)["e"].get<double>(), 1.5);
  EXPECT_EQ((*j)["f"], "hello");
  EXPECT_EQ((*j)["g"], 31);
  EXPECT_EQ((*j)["h"][1], "two");
  EXPECT_EQ((*j)["i"], "false");
}

TEST(YamlJson, RecursiveAliasIsAnErrorNotACrash) {
  auto j = parse_yaml_or_json("a: &x {b: *x}\n", "r.yaml");
  ASSERT_FALSE(j);
  EXPECT_NE(j.error().message.find("recursive alias"), std::string::npos) << j.error().message;
}

TEST(YamlJson, SyntaxErrorNamesFileLineAndColumn) {
  auto j = parse_yaml_or_json("a: [1,\n", "r.yaml");
  ASSERT_FALSE(j);
  EXPECT_EQ(j.error().code, errc::parse);
  EXPECT_EQ(j.error().message.rfind("r.yaml:", 0), 0u) << j.error().message;
}

}  // namespace
}  // namespace canopy
