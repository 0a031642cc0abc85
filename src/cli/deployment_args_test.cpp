// [cli] deployment create: validation of --merge, --update-config, --runWith, --systemLimits and
// the CreateLocalDeployment request they build.
#include "deployment_args.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "support/process.hpp"

namespace canopy::cli {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using json = nlohmann::json;

TEST(Merge, AcceptsNameEqualsSemanticVersion) {
  auto r = parse_merge("com.example.Hello=1.2.3-rc.1");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->first, "com.example.Hello");
  EXPECT_EQ(r->second, "1.2.3-rc.1");
}

TEST(Merge, RejectsMalformedValuesWithASentenceNamingThem) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"com.example.Hello", "is not of the form name=version"},
      {"=1.0.0", "has no component name"},
      {"com.example.Hello=", "has no version"},
      {"com.example.Hello=1.0", "1.0 is not a semantic version"},
      {"com.example.Hello=latest", "latest is not a semantic version"},
      {"com example=1.0.0", "cannot contain spaces"},
  };
  for (const auto& c : cases) {
    auto r = parse_merge(c.text);
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.error().code, errc::invalid);
    EXPECT_THAT(r.error().message, HasSubstr(c.says)) << c.text;
    EXPECT_THAT(r.error().message, HasSubstr("--merge")) << c.text;
  }
}

TEST(UpdateConfig, AcceptsGreengrassCliShapeInlineFromAtFileAndFromAPath) {
  canopy::test::TempDir dir;
  const std::string text = R"({"com.x": {"MERGE": {"a": {"b": 1}}, "RESET": ["/c", ""]}, "com.y": {"RESET": []}})";
  canopy::test::write_file(dir.path() / "update.json", text);
  const auto expected = json::parse(text);
  for (const std::string& arg : {text, std::string("@update.json"), std::string("update.json"),
                                (dir.path() / "update.json").string()}) {
    auto r = parse_update_config(arg, dir.path());
    ASSERT_TRUE(r) << arg << ": " << r.error().message;
    EXPECT_EQ(*r, expected) << arg;
  }
}

TEST(UpdateConfig, RejectsBadInputBeforeAnythingIsSent) {
  canopy::test::TempDir dir;
  struct Case {
    std::string text;
    const char* says;
  } cases[] = {
      {"{not json", "is not valid JSON"},
      {"[1, 2]", "must be a JSON object, not array"},
      {"{}", "names no component"},
      {R"({"com.x": 5})", "must be an object with MERGE and/or RESET"},
      {R"({"com.x": {}})", "must be an object with MERGE and/or RESET"},
      {R"({"com.x": {"MERGE": [1]}})", "MERGE for com.x must be a JSON object"},
      {R"({"com.x": {"RESET": "/a"}})", "RESET for com.x must be a list"},
      {R"({"com.x": {"RESET": [1]}})", "must hold only strings"},
      {R"({"com.x": {"RESET": ["a/b"]}})", "must be a JSON pointer starting with /"},
      {R"({"com.x": {"UPDATE": {}}})", "unknown key \"UPDATE\""},
      {"missing.json", "is neither a JSON object nor an existing file"},
      {"@missing.json", "cannot read"},
  };
  for (const auto& c : cases) {
    auto r = parse_update_config(c.text, dir.path());
    ASSERT_FALSE(r) << c.text;
    EXPECT_EQ(r.error().code, errc::invalid);
    EXPECT_THAT(r.error().message, HasSubstr(c.says)) << c.text;
    EXPECT_THAT(r.error().message, HasSubstr("--update-config")) << c.text;
  }
}

TEST(RunWith, PosixUserWithAndWithoutGroup) {
  json run_with = json::object();
  ASSERT_TRUE(add_run_with("com.x:posixUser=app", run_with));
  ASSERT_TRUE(add_run_with("com.y:posixUser=app:staff", run_with));
  EXPECT_EQ(run_with, (json{{"com.x", {{"posixUser", "app"}}}, {"com.y", {{"posixUser", "app:staff"}}}}));
}

TEST(RunWith, RejectsMalformedValues) {
  for (const char* text : {"com.x", "com.x=app", ":posixUser=app", "com.x:user=app", "com.x:posixUser=",
                           "com.x:posixUser=app:", "com.x:posixUser=:g", "com.x:posixUser=a:b:c"}) {
    json run_with = json::object();
    auto r = add_run_with(text, run_with);
    ASSERT_FALSE(r) << text;
    EXPECT_THAT(r.error().message, HasSubstr("--runWith")) << text;
  }
}

TEST(SystemLimits, InlineFormSetsMemoryAndCpus) {
  json run_with = json::object();
  ASSERT_TRUE(add_run_with("com.x:posixUser=app", run_with));
  auto r = add_system_limits("com.x:memory=102400,cpus=0.5", "/", run_with);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_TRUE(add_system_limits("com.y:cpus=2", "/", run_with));
  EXPECT_EQ(run_with["com.x"]["posixUser"], "app");
  EXPECT_EQ(run_with["com.x"]["systemResourceLimits"], (json{{"memory", 102400}, {"cpus", 0.5}}));
  EXPECT_EQ(run_with["com.y"]["systemResourceLimits"], (json{{"cpus", 2.0}}));
}

TEST(SystemLimits, GreengrassCliJsonFormInlineAndFromAFile) {
  canopy::test::TempDir dir;
  canopy::test::write_file(dir.path() / "limits.json", R"({"com.z": {"memory": 2048}})");
  json run_with = json::object();
  ASSERT_TRUE(add_system_limits(R"({"com.x": {"memory": 1024, "cpus": 1.5}})", dir.path(), run_with));
  ASSERT_TRUE(add_system_limits("limits.json", dir.path(), run_with));
  EXPECT_EQ(run_with["com.x"]["systemResourceLimits"], (json{{"memory", 1024}, {"cpus", 1.5}}));
  EXPECT_EQ(run_with["com.z"]["systemResourceLimits"], (json{{"memory", 2048}}));
}

TEST(SystemLimits, RejectsMalformedValues) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"com.x:", "sets no limit"},
      {"com.x:memory", "is not of the form key=value"},
      {"com.x:memory=lots", "whole number of kilobytes"},
      {"com.x:memory=-1", "whole number of kilobytes"},
      {"com.x:memory=1.5", "whole number of kilobytes"},
      {"com.x:cpus=0", "positive number"},
      {"com.x:cpus=abc", "positive number"},
      {"com.x:disk=5", "unknown limit \"disk\""},
      {R"({"com.x": {"memory": -5}})", "whole number of kilobytes"},
      {R"({"com.x": {"swap": 1}})", "unknown limit \"swap\""},
      {R"({"com.x": 3})", "must be an object"},
      {"nonsense", "neither a JSON object nor an existing file"},
  };
  for (const auto& c : cases) {
    json run_with = json::object();
    auto r = add_system_limits(c.text, "/nonexistent-cwd", run_with);
    ASSERT_FALSE(r) << c.text;
    EXPECT_THAT(r.error().message, HasSubstr(c.says)) << c.text;
    EXPECT_THAT(r.error().message, HasSubstr("--systemLimits")) << c.text;
  }
}

TEST(CreateRequest, BuildsTheGreengrassShapeWithAbsoluteFolders) {
  canopy::test::TempDir dir;
  fs::create_directories(dir.path() / "recipes");
  fs::create_directories(dir.path() / "art");
  CreateArgs a;
  a.recipe_dir = "recipes";
  a.artifact_dir = "./art/";
  a.merge = {"com.x=1.0.0", "com.y=2.0.0", "com.x=1.0.0"};
  a.remove = {"com.old"};
  a.update_config = R"({"com.x": {"MERGE": {"k": "v"}}})";
  a.group_id = "thinggroup/Line1";
  a.failure_policy = "do_nothing";
  a.run_with = {"com.x:posixUser=app:app"};
  a.system_limits = {"com.x:memory=1024"};
  auto r = build_create_request(a, dir.path());
  ASSERT_TRUE(r) << r.error().message;
  const json expected = {
      {"groupName", "thinggroup/Line1"},
      {"rootComponentVersionsToAdd", {{"com.x", "1.0.0"}, {"com.y", "2.0.0"}}},
      {"rootComponentsToRemove", {"com.old"}},
      {"componentToConfiguration", {{"com.x", {{"MERGE", {{"k", "v"}}}}}}},
      {"componentToRunWithInfo", {{"com.x", {{"posixUser", "app:app"}, {"systemResourceLimits", {{"memory", 1024}}}}}}},
      {"recipeDirectoryPath", (dir.path() / "recipes").string()},
      {"artifactsDirectoryPath", (dir.path() / "art/").lexically_normal().string()},
      {"failureHandlingPolicy", "DO_NOTHING"},
  };
  EXPECT_EQ(*r, expected);
  EXPECT_TRUE(fs::path(r->at("recipeDirectoryPath").get<std::string>()).is_absolute());
}

TEST(CreateRequest, LeavesOutWhatWasNotGiven) {
  CreateArgs a;
  a.merge = {"com.x=1.0.0"};
  auto r = build_create_request(a, "/");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, (json{{"rootComponentVersionsToAdd", {{"com.x", "1.0.0"}}}}));
}

TEST(CreateRequest, RejectsContradictionsAndMissingFolders) {
  canopy::test::TempDir dir;
  canopy::test::write_file(dir.path() / "file", "x");
  const auto check = [&](CreateArgs a, const char* says) {
    auto r = build_create_request(a, dir.path());
    ASSERT_FALSE(r) << says;
    EXPECT_EQ(r.error().code, errc::invalid);
    EXPECT_THAT(r.error().message, HasSubstr(says));
  };
  CreateArgs twice;
  twice.merge = {"com.x=1.0.0", "com.x=2.0.0"};
  check(twice, "names com.x twice, with versions 1.0.0 and 2.0.0");
  CreateArgs both;
  both.merge = {"com.x=1.0.0"};
  both.remove = {"com.x"};
  check(both, "com.x is given both to --merge and to --remove");
  CreateArgs missing;
  missing.recipe_dir = "nope";
  check(missing, "does not exist");
  CreateArgs not_dir;
  not_dir.artifact_dir = "file";
  check(not_dir, "is not a folder");
  CreateArgs policy;
  policy.failure_policy = "RETRY";
  check(policy, "must be ROLLBACK or DO_NOTHING");
}

TEST(CreateRequest, TildeIsTheHomeFolder) {
  canopy::test::TempDir dir;
  fs::create_directories(dir.path() / "recipes");
  ::setenv("HOME", dir.path().c_str(), 1);
  auto r = absolute_directory("~/recipes", "/somewhere/else", "--recipeDir");
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, (dir.path() / "recipes").string());
}

}  // namespace
}  // namespace canopy::cli
