#include "canopy/recipe/interpolate.hpp"

#include <gtest/gtest.h>

namespace canopy::recipe {
namespace {

Variables sample() {
  Variables v;
  v.thing_name = "gw-7";
  v.root_path = "/var/lib/canopy";
  v.artifacts_path = "/var/lib/canopy/packages/artifacts/com.a/1.0.0";
  v.artifacts_decompressed_path = "/var/lib/canopy/packages/artifacts-unarchived/com.a/1.0.0";
  v.work_path = "/var/lib/canopy/work/com.a";
  v.configuration = nlohmann::json::parse(
      R"({"s": "text", "n": 5, "f": 1.5, "b": true, "z": null, "o": {"k": [1, "x"]}, "a": [1, 2], "t": "30",
          "a~b": "tilde", "sl/ash": "slash"})");
  v.dependencies["com.dep"] = DependencyVariables{"/art/dep", "/unz/dep", nlohmann::json::parse(R"({"port": 8080})")};
  return v;
}

struct Case {
  const char* in;
  const char* out;
};

class Interpolate : public ::testing::TestWithParam<Case> {};

TEST_P(Interpolate, FollowsGreengrassRules) { EXPECT_EQ(interpolate(GetParam().in, sample()), GetParam().out); }

INSTANTIATE_TEST_SUITE_P(
    Table, Interpolate,
    ::testing::Values(
        Case{"no variables", "no variables"}, Case{"", ""},
        Case{"{iot:thingName}", "gw-7"}, Case{"{kernel:rootPath}/x", "/var/lib/canopy/x"},
        Case{"cd {work:path} && run", "cd /var/lib/canopy/work/com.a && run"},
        Case{"{artifacts:path}/app.py", "/var/lib/canopy/packages/artifacts/com.a/1.0.0/app.py"},
        Case{"{artifacts:decompressedPath}/app", "/var/lib/canopy/packages/artifacts-unarchived/com.a/1.0.0/app"},
        Case{"{configuration:/s}", "text"}, Case{"{configuration:/n}", "5"}, Case{"{configuration:/f}", "1.5"},
        Case{"{configuration:/b}", "true"},
        Case{"{configuration:/z}", "null"},                       // null becomes the text null
        Case{"{configuration:/o}", R"({"k":[1,"x"]})"},          // a container becomes JSON
        Case{"{configuration:/a}", "[1,2]"}, Case{"{configuration:/o/k/1}", "x"},
        Case{"{configuration:/a~0b}", "tilde"}, Case{"{configuration:/sl~1ash}", "slash"},
        Case{"{configuration:/missing}", "{configuration:/missing}"},  // missing: placeholder stays
        Case{"{configuration:/s/deeper}", "{configuration:/s/deeper}"},
        Case{"{configuration:no-slash}", "{configuration:no-slash}"},  // invalid pointer: stays
        Case{"{configuration:}", R"({"a":[1,2],"a~b":"tilde","b":true,"f":1.5,"n":5,"o":{"k":[1,"x"]},"s":"text","sl/ash":"slash","t":"30","z":null})"},
        Case{"{com.dep:artifacts:path}/lib", "/art/dep/lib"}, Case{"{com.dep:artifacts:decompressedPath}", "/unz/dep"},
        Case{"{com.dep:configuration:/port}", "8080"},
        Case{"{com.dep:configuration:/nope}", "{com.dep:configuration:/nope}"},
        Case{"{com.other:artifacts:path}", "{com.other:artifacts:path}"},  // not a direct dependency
        Case{"{com.dep:work:path}", "{com.dep:work:path}"}, Case{"{iot:thing}", "{iot:thing}"},
        Case{"{unknown}", "{unknown}"}, Case{"{", "{"}, Case{"}", "}"}, Case{"{iot:thingName", "{iot:thingName"},
        Case{"{{iot:thingName}}", "{gw-7}"}, Case{"a{iot:thingName}b{work:path}c", "agw-7b/var/lib/canopy/work/com.ac"},
        Case{"echo '{\"json\": 1}'", "echo '{\"json\": 1}'"}));

TEST(InterpolateSinglePass, ReplacedTextIsNotScannedAgain) {
  Variables v;
  v.configuration = nlohmann::json::parse(R"({"x": "{iot:thingName}"})");
  v.thing_name = "t";
  EXPECT_EQ(interpolate("{configuration:/x}", v), "{iot:thingName}");
}

TEST(InterpolateLifecycle, EveryStringFieldTimeoutIncluded) {
  Lifecycle lc;
  lc.setenv["ROOT"] = "{kernel:rootPath}";
  Step run;
  run.script = "run {configuration:/s}";
  run.setenv["T"] = "{iot:thingName}";
  run.timeout = "{configuration:/t}";
  run.skip_if = SkipIf{SkipIf::Kind::exists, "{work:path}/done"};
  lc.run = run;
  Step install;
  install.script = "make";
  install.timeout = "{configuration:/n}";
  lc.install = install;
  auto r = interpolate(lc, sample(), "com.a 1.0.0");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->setenv.at("ROOT"), "/var/lib/canopy");
  EXPECT_EQ(r->run->script, "run text");
  EXPECT_EQ(r->run->setenv.at("T"), "gw-7");
  EXPECT_EQ(r->run->timeout, "30");
  EXPECT_EQ(r->run->skip_if->target, "/var/lib/canopy/work/com.a/done");
  EXPECT_EQ(timeout_seconds(*r->run), std::chrono::seconds(30));
  EXPECT_EQ(timeout_seconds(*r->install), std::chrono::seconds(5));
  EXPECT_EQ(timeout_seconds(Step{}), std::nullopt);
}

struct BadTimeout {
  const char* timeout;
  const char* message;
};

class InterpolateBadTimeout : public ::testing::TestWithParam<BadTimeout> {};

TEST_P(InterpolateBadTimeout, IsRejectedAfterInterpolation) {
  Lifecycle lc;
  Step s;
  s.script = "x";
  s.timeout = GetParam().timeout;
  lc.shutdown = s;
  auto r = interpolate(lc, sample(), "com.a 1.0.0");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(r.error().message, GetParam().message);
}

INSTANTIATE_TEST_SUITE_P(
    Table, InterpolateBadTimeout,
    ::testing::Values(
        BadTimeout{"{configuration:/missing}",
                   "com.a 1.0.0: Lifecycle.Shutdown.Timeout: expected a number of seconds, got "
                   "\"{configuration:/missing}\""},
        BadTimeout{"{configuration:/s}",
                   "com.a 1.0.0: Lifecycle.Shutdown.Timeout: expected a number of seconds, got \"text\" (from "
                   "\"{configuration:/s}\")"},
        BadTimeout{"{configuration:/f}",
                   "com.a 1.0.0: Lifecycle.Shutdown.Timeout: expected a number of seconds, got \"1.5\" (from "
                   "\"{configuration:/f}\")"},
        BadTimeout{"{configuration:/z}",
                   "com.a 1.0.0: Lifecycle.Shutdown.Timeout: expected a number of seconds, got \"null\" (from "
                   "\"{configuration:/z}\")"}));

TEST(InterpolateRecipe, SampleRecipeTimeoutFromConfiguration) {
  auto r = parse_recipe(R"(
RecipeFormatVersion: 2020-01-25
ComponentName: com.a
ComponentVersion: 1.0.0
ComponentConfiguration:
  DefaultConfiguration: {t: 45}
Lifecycle:
  Run: {Script: 'echo {iot:thingName}', Timeout: '{configuration:/t}'}
)",
                        "a.yaml");
  ASSERT_TRUE(r) << r.error().message;
  auto sel = select_manifest(*r, {{"os", "linux"}});
  ASSERT_TRUE(sel);
  Variables v = sample();
  v.configuration = r->default_configuration;
  auto lc = interpolate(sel->lifecycle, v, "com.a 1.0.0");
  ASSERT_TRUE(lc) << lc.error().message;
  EXPECT_EQ(lc->run->script, "echo gw-7");
  EXPECT_EQ(timeout_seconds(*lc->run), std::chrono::seconds(45));
}

}  // namespace
}  // namespace canopy::recipe
