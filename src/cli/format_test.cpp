// [cli] text helpers: timestamps, indentation, greengrass-cli's -fp.
#include "format.hpp"

#include <cstdlib>
#include <ctime>

#include <gtest/gtest.h>

namespace canopy::cli {
namespace {

TEST(Timestamp, EpochSecondsAndMillisecondsBecomeLocalTime) {
  ::setenv("TZ", "UTC", 1);
  ::tzset();
  EXPECT_EQ(format_timestamp("1700000000"), "2023-11-14 22:13:20");
  EXPECT_EQ(format_timestamp("1700000000123"), "2023-11-14 22:13:20");
  EXPECT_EQ(format_timestamp("2024-01-02T03:04:05Z"), "2024-01-02T03:04:05Z");
  EXPECT_EQ(format_timestamp(""), "");
  EXPECT_EQ(format_timestamp("12abc"), "12abc");
}

TEST(Indent, PrefixesEveryNonEmptyLine) {
  EXPECT_EQ(indent("{\n  \"a\": 1\n}", 2), "  {\n    \"a\": 1\n  }");
  EXPECT_EQ(indent("a\n\nb\n", 1), " a\n\n b\n");
}

TEST(Field, TextOfAnyMember) {
  const nlohmann::json j = {{"s", "x"}, {"n", 3}, {"z", nullptr}, {"o", {{"k", 1}}}};
  EXPECT_EQ(field(j, "s"), "x");
  EXPECT_EQ(field(j, "n"), "3");
  EXPECT_EQ(field(j, "z"), "");
  EXPECT_EQ(field(j, "missing"), "");
  EXPECT_EQ(field(j, "o"), "{\"k\":1}");
  EXPECT_EQ(field(nlohmann::json::array(), "s"), "");
}

TEST(ShortOptions, FpIsRewrittenOnlyAfterDeploymentCreate) {
  using V = std::vector<std::string>;
  EXPECT_EQ(rewrite_greengrass_short_options(V{"deployment", "create", "-fp", "ROLLBACK", "-m", "a=1.0.0"}),
            (V{"deployment", "create", "--failure-handling-policy", "ROLLBACK", "-m", "a=1.0.0"}));
  EXPECT_EQ(rewrite_greengrass_short_options(V{"--root", "/r", "deployment", "create", "-fp=DO_NOTHING"}),
            (V{"--root", "/r", "deployment", "create", "--failure-handling-policy=DO_NOTHING"}));
  EXPECT_EQ(rewrite_greengrass_short_options(V{"config", "set", "com.x", "k", "-fp"}),
            (V{"config", "set", "com.x", "k", "-fp"}));
  EXPECT_EQ(rewrite_greengrass_short_options(V{"deployment", "create", "--", "-fp"}),
            (V{"deployment", "create", "--", "-fp"}));
}

}  // namespace
}  // namespace canopy::cli
