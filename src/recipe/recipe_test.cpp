#include "canopy/recipe/recipe.hpp"

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

namespace canopy::recipe {
namespace {

constexpr const char* kFile = "hello-1.0.0.yaml";
const std::string kHead =
    "RecipeFormatVersion: 2020-01-25\nComponentName: com.example.Hello\nComponentVersion: 1.0.0\n";

Recipe parse_ok(const std::string& text) {
  auto r = parse_recipe(text, kFile);
  EXPECT_TRUE(r) << r.error().message;
  return r ? *r : Recipe{};
}

TEST(Recipe, EveryFieldIsParsed) {
  const Recipe r = parse_ok(R"(
RecipeFormatVersion: '2020-01-25'
ComponentName: com.example.Full
ComponentVersion: 2.3.4-rc.1+build.5
ComponentDescription: Does everything.
ComponentPublisher: Example Corp
ComponentSource: arn:aws:greengrass:eu-west-1:123:components:com.example.Full
ComponentType: aws.greengrass.plugin
ComponentConfiguration:
  DefaultConfiguration:
    name: world
    nested: {list: [1, 2], flag: true}
ComponentDependencies:
  com.example.Hard:
    VersionRequirement: '>=1.0.0 <2.0.0'
    DependencyType: HARD
  com.example.Soft:
    VersionRequirement: ^3.1.0
    DependencyType: SOFT
  com.example.Default: {}
Manifests:
  - Name: linux-x86
    Platform:
      os: linux
      architecture: /amd64|x86_64/
      architecture.detail: '*'
      custom: gpu
    Lifecycle:
      Setenv:
        LEVEL: debug
        COUNT: 3
      Bootstrap:
        Script: ./bootstrap.sh
        RequiresPrivilege: true
        Timeout: 60
      Install:
        Script: pip install -r requirements.txt
        SkipIf: onpath pip3
        Setenv: {PIP_NO_CACHE_DIR: 'off'}
        Timeout: '{configuration:/installTimeout}'
      Run:
        Script: python3 main.py
        RequiresPrivilege: 'false'
      Shutdown: ./stop.sh
      Recover:
        Script: ./recover.sh
        SkipIf: exists /tmp/no recover
    Artifacts:
      - URI: s3://bucket/com.example.Full/2.3.4/app.zip
        Digest: n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=
        Algorithm: SHA-256
        Unarchive: ZIP
        Permission:
          Read: ALL
          Execute: OWNER
      - URI: docker:example/image:latest
  - Platform:
      os: windows
    Selections: [windows, extra]
Lifecycle:
  Install: echo global
  windows:
    Startup: start.cmd
)");
  EXPECT_EQ(r.format_version, "2020-01-25");
  EXPECT_EQ(r.name, "com.example.Full");
  EXPECT_EQ(r.version.to_string(), "2.3.4-rc.1+build.5");
  EXPECT_EQ(r.description, "Does everything.");
  EXPECT_EQ(r.publisher, "Example Corp");
  EXPECT_EQ(r.source, "arn:aws:greengrass:eu-west-1:123:components:com.example.Full");
  EXPECT_EQ(r.type, ComponentType::plugin);
  EXPECT_EQ(r.default_configuration, nlohmann::json::parse(R"({"name":"world","nested":{"list":[1,2],"flag":true}})"));

  ASSERT_EQ(r.dependencies.size(), 3u);
  EXPECT_EQ(r.dependencies[0].name, "com.example.Default");
  EXPECT_EQ(r.dependencies[0].requirement.text(), "*");
  EXPECT_EQ(r.dependencies[0].type, DependencyType::hard);
  EXPECT_EQ(r.dependencies[1].name, "com.example.Hard");
  EXPECT_EQ(r.dependencies[1].requirement.text(), ">=1.0.0 <2.0.0");
  EXPECT_EQ(r.dependencies[1].type, DependencyType::hard);
  EXPECT_EQ(r.dependencies[2].name, "com.example.Soft");
  EXPECT_EQ(r.dependencies[2].type, DependencyType::soft);
  EXPECT_TRUE(r.dependencies[2].requirement.satisfies(*parse_version("3.9.0")));
  EXPECT_FALSE(r.dependencies[2].requirement.satisfies(*parse_version("4.0.0")));

  ASSERT_EQ(r.manifests.size(), 2u);
  const Manifest& m = r.manifests[0];
  EXPECT_EQ(m.name, "linux-x86");
  EXPECT_EQ(m.platform, (std::map<std::string, std::string>{
                            {"os", "linux"}, {"architecture", "/amd64|x86_64/"}, {"architecture.detail", "*"},
                            {"custom", "gpu"}}));
  ASSERT_TRUE(m.lifecycle);
  const Lifecycle& lc = *m.lifecycle;
  EXPECT_EQ(lc.setenv, (std::map<std::string, std::string>{{"LEVEL", "debug"}, {"COUNT", "3"}}));
  ASSERT_TRUE(lc.bootstrap);
  EXPECT_EQ(lc.bootstrap->script, "./bootstrap.sh");
  EXPECT_TRUE(lc.bootstrap->requires_privilege);
  EXPECT_EQ(lc.bootstrap->timeout, "60");
  ASSERT_TRUE(lc.install);
  EXPECT_EQ(lc.install->timeout, "{configuration:/installTimeout}");
  ASSERT_TRUE(lc.install->skip_if);
  EXPECT_EQ(lc.install->skip_if->kind, SkipIf::Kind::onpath);
  EXPECT_EQ(lc.install->skip_if->target, "pip3");
  EXPECT_EQ(lc.install->setenv, (std::map<std::string, std::string>{{"PIP_NO_CACHE_DIR", "off"}}));
  EXPECT_FALSE(lc.startup);
  ASSERT_TRUE(lc.run);
  EXPECT_EQ(lc.run->script, "python3 main.py");
  EXPECT_FALSE(lc.run->requires_privilege);
  EXPECT_FALSE(lc.run->timeout);
  EXPECT_FALSE(lc.run->skip_if);
  ASSERT_TRUE(lc.shutdown);
  EXPECT_EQ(lc.shutdown->script, "./stop.sh");
  ASSERT_TRUE(lc.recover);
  ASSERT_TRUE(lc.recover->skip_if);
  EXPECT_EQ(lc.recover->skip_if->kind, SkipIf::Kind::exists);
  EXPECT_EQ(lc.recover->skip_if->target, "/tmp/no recover");

  ASSERT_EQ(m.artifacts.size(), 2u);
  EXPECT_EQ(m.artifacts[0].uri, "s3://bucket/com.example.Full/2.3.4/app.zip");
  EXPECT_EQ(m.artifacts[0].digest, "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=");
  EXPECT_EQ(m.artifacts[0].algorithm, "SHA-256");
  EXPECT_EQ(m.artifacts[0].unarchive, Unarchive::zip);
  EXPECT_EQ(m.artifacts[0].permission.read, Access::all);
  EXPECT_EQ(m.artifacts[0].permission.execute, Access::owner);
  EXPECT_EQ(m.artifacts[1].uri, "docker:example/image:latest");
  EXPECT_EQ(m.artifacts[1].digest, "");
  EXPECT_EQ(m.artifacts[1].algorithm, "");
  EXPECT_EQ(m.artifacts[1].unarchive, Unarchive::none);
  EXPECT_EQ(m.artifacts[1].permission.read, Access::owner);
  EXPECT_EQ(m.artifacts[1].permission.execute, Access::none);

  EXPECT_FALSE(r.manifests[1].lifecycle);
  EXPECT_EQ(r.manifests[1].selections, (std::vector<std::string>{"windows", "extra"}));
  ASSERT_TRUE(r.lifecycle.install);
  EXPECT_EQ(r.lifecycle.install->script, "echo global");
  ASSERT_EQ(r.lifecycle_selections.count("windows"), 1u);
  ASSERT_TRUE(r.lifecycle_selections.at("windows").startup);
  EXPECT_EQ(r.lifecycle_selections.at("windows").startup->script, "start.cmd");
}

TEST(Recipe, MinimalRecipeGetsTheDefaults) {
  const Recipe r = parse_ok(kHead);
  EXPECT_EQ(r.type, ComponentType::generic);
  EXPECT_EQ(r.description, "");
  EXPECT_EQ(r.default_configuration, nlohmann::json::object());
  EXPECT_TRUE(r.dependencies.empty());
  EXPECT_TRUE(r.manifests.empty());
  EXPECT_TRUE(r.lifecycle_selections.empty());
  EXPECT_FALSE(r.lifecycle.run);
}

TEST(Recipe, JsonAndYamlGiveTheSameRecipe) {
  const Recipe y = parse_ok(kHead + "Manifests:\n  - Platform: {os: linux}\n    Lifecycle: {Run: {Script: go, Timeout: 5}}\n");
  const Recipe j = parse_ok(R"({"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Hello",
    "ComponentVersion": "1.0.0", "Manifests": [{"Platform": {"os": "linux"},
    "Lifecycle": {"Run": {"Script": "go", "Timeout": 5}}}]})");
  EXPECT_EQ(y.name, j.name);
  EXPECT_EQ(y.version, j.version);
  ASSERT_EQ(j.manifests.size(), 1u);
  ASSERT_TRUE(j.manifests[0].lifecycle && j.manifests[0].lifecycle->run);
  EXPECT_EQ(j.manifests[0].lifecycle->run->script, "go");
  EXPECT_EQ(j.manifests[0].lifecycle->run->timeout, "5");
  EXPECT_EQ(y.manifests[0].lifecycle->run->timeout, "5");
}

TEST(Recipe, LifecycleKeysAreCaseInsensitive) {
  const Recipe r = parse_ok(kHead + R"(Manifests:
  - Lifecycle:
      setenv: {A: b}
      INSTALL: {script: make, requiresprivilege: TRUE, TIMEOUT: 7, skipif: ONPATH make}
      startup: {Script: start}
      SHUTDOWN: stop
Lifecycle:
  run: global
)");
  const Lifecycle& lc = *r.manifests[0].lifecycle;
  EXPECT_EQ(lc.setenv.at("A"), "b");
  ASSERT_TRUE(lc.install);
  EXPECT_EQ(lc.install->script, "make");
  EXPECT_TRUE(lc.install->requires_privilege);
  EXPECT_EQ(lc.install->timeout, "7");
  EXPECT_EQ(lc.install->skip_if->kind, SkipIf::Kind::onpath);
  ASSERT_TRUE(lc.startup);
  ASSERT_TRUE(lc.shutdown);
  ASSERT_TRUE(r.lifecycle.run);
  EXPECT_EQ(r.lifecycle.run->script, "global");
  EXPECT_TRUE(r.lifecycle_selections.empty());
}

TEST(Recipe, TimeoutKeepsItsTextUntilInterpolation) {
  const Recipe r = parse_ok(kHead + "Lifecycle:\n  Run: {Script: a, Timeout: '30'}\n  Install: {Script: b, Timeout: "
                                    "'{configuration:/t}'}\n  Startup_: {}\n");
  EXPECT_EQ(r.lifecycle.run->timeout, "30");
  EXPECT_EQ(r.lifecycle.install->timeout, "{configuration:/t}");
  EXPECT_EQ(r.lifecycle_selections.count("Startup_"), 1u);
}

TEST(Recipe, JsonFilesAreStrictJson) {
  // YAML accepts a trailing comma in a flow mapping; the nucleus reads .json recipes as JSON.
  const std::string text = "{\"RecipeFormatVersion\": \"2020-01-25\", \"ComponentName\": \"com.example.Hello\",\n"
                           "  \"ComponentVersion\": \"1.0.0\",\n}\n";
  EXPECT_TRUE(parse_recipe(text, "hello-1.0.0.yaml"));
  auto r = parse_recipe(text, "hello-1.0.0.json");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::parse);
  EXPECT_EQ(r.error().message.rfind("hello-1.0.0.json:3:1: not valid JSON: ", 0), 0u) << r.error().message;
  auto comment = parse_recipe("// a comment\n{}", "hello-1.0.0.json");
  ASSERT_FALSE(comment);
  EXPECT_EQ(comment.error().message.rfind("hello-1.0.0.json:1:1: not valid JSON: ", 0), 0u) << comment.error().message;
  auto deep = parse_recipe(std::string(200, '[') + std::string(200, ']'), "hello-1.0.0.json");
  ASSERT_FALSE(deep);
  EXPECT_EQ(deep.error().message, "hello-1.0.0.json: not valid JSON: nested more than 128 levels deep");
  auto ok = parse_recipe(R"({"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.Hello",
    "ComponentVersion": "1.0.0", "Manifests": [{"Lifecycle": {"Run": {"Script": "go", "Timeout": 5}}}]})",
                         "hello-1.0.0.json");
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(ok->manifests[0].lifecycle->run->timeout, "5");
}

TEST(Recipe, SyntaxErrorsCarryFileLineAndColumn) {
  auto r = parse_recipe("a: [1, 2\n", kFile);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::parse);
  EXPECT_EQ(r.error().message.rfind("hello-1.0.0.yaml:", 0), 0u) << r.error().message;
}

struct BadCase {
  const char* name;
  std::string text;
  std::string message;
};

class BadRecipe : public ::testing::TestWithParam<BadCase> {};

TEST_P(BadRecipe, IsRejectedWithFileFieldPathAndExpectation) {
  auto r = parse_recipe(GetParam().text, kFile);
  ASSERT_FALSE(r) << GetParam().name;
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(r.error().message, std::string(kFile) + ": " + GetParam().message);
}

std::string manifest(const std::string& body) { return kHead + "Manifests:\n  - " + body + "\n"; }
std::string run(const std::string& step) { return manifest("Lifecycle:\n      Run: " + step); }
std::string artifact(const std::string& a) { return manifest("Artifacts: [" + a + "]"); }

const std::string kAllTopKeys =
    "RecipeFormatVersion, ComponentName, ComponentVersion, ComponentDescription, ComponentPublisher, "
    "ComponentSource, ComponentType, ComponentConfiguration, ComponentDependencies, Manifests, Lifecycle";
const std::string kStepNames = "Setenv, Bootstrap, Install, Startup, Run, Shutdown, Recover";

INSTANTIATE_TEST_SUITE_P(
    Table, BadRecipe,
    ::testing::Values(
        BadCase{"topLevelList", "- a\n", "expected a mapping of recipe keys, got a list"},
        BadCase{"emptyDocument", "", "expected a mapping of recipe keys, got nothing"},
        BadCase{"missingFormat", "ComponentName: a\nComponentVersion: 1.0.0\n",
                "RecipeFormatVersion: expected 2020-01-25, got nothing"},
        BadCase{"wrongFormat", "RecipeFormatVersion: 2021-01-25\n",
                "RecipeFormatVersion: expected 2020-01-25, got \"2021-01-25\""},
        BadCase{"unknownTopKey", kHead + "ComponentNmae: x\n",
                "expected only the keys " + kAllTopKeys + ", got \"ComponentNmae\""},
        BadCase{"missingName", "RecipeFormatVersion: 2020-01-25\nComponentVersion: 1.0.0\n",
                "ComponentName: expected a component name, got nothing"},
        BadCase{"nameTooLong", "RecipeFormatVersion: 2020-01-25\nComponentName: " + std::string(129, 'a') + "\n",
                "ComponentName: expected a component name of at most 128 characters, got 129 characters"},
        BadCase{"nameSlash", "RecipeFormatVersion: 2020-01-25\nComponentName: a/b\n",
                "ComponentName: expected a component name of letters, digits, '.', '-' and '_', got \"a/b\""},
        BadCase{"nameDotDot", "RecipeFormatVersion: 2020-01-25\nComponentName: '..'\n",
                "ComponentName: expected a component name of letters, digits, '.', '-' and '_', got \"..\""},
        BadCase{"nameNumber", "RecipeFormatVersion: 2020-01-25\nComponentName: 5\n",
                "ComponentName: expected a component name, got 5"},
        BadCase{"missingVersion", "RecipeFormatVersion: 2020-01-25\nComponentName: a\n",
                "ComponentVersion: expected a semantic version MAJOR.MINOR.PATCH, got nothing"},
        BadCase{"versionFloat", "RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: 1.5\n",
                "ComponentVersion: expected a semantic version MAJOR.MINOR.PATCH, got 1.5"},
        BadCase{"versionFourParts", "RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: 1.0.0.0\n",
                "ComponentVersion: expected a semantic version MAJOR.MINOR.PATCH, got \"1.0.0.0\" (expected "
                "MAJOR.MINOR.PATCH)"},
        BadCase{"versionTooBig", "RecipeFormatVersion: 2020-01-25\nComponentName: a\nComponentVersion: 1.1000000.0\n",
                "ComponentVersion: expected a semantic version MAJOR.MINOR.PATCH, got \"1.1000000.0\" (the number "
                "1000000 is larger than 999999)"},
        BadCase{"descriptionList", kHead + "ComponentDescription: [a]\n",
                "ComponentDescription: expected a text, got a list"},
        BadCase{"publisherMap", kHead + "ComponentPublisher: {a: b}\n",
                "ComponentPublisher: expected a text, got a mapping"},
        BadCase{"componentType", kHead + "ComponentType: aws.greengrass.docker\n",
                "ComponentType: expected one of aws.greengrass.generic, aws.greengrass.plugin, aws.greengrass.lambda, "
                "aws.greengrass.nucleus, got \"aws.greengrass.docker\""},
        BadCase{"configNotMap", kHead + "ComponentConfiguration: 5\n",
                "ComponentConfiguration: expected a mapping with DefaultConfiguration, got 5"},
        BadCase{"configUnknownKey", kHead + "ComponentConfiguration: {Default: {}}\n",
                "ComponentConfiguration: expected only the keys DefaultConfiguration, got \"Default\""},
        BadCase{"defaultConfigList", kHead + "ComponentConfiguration: {DefaultConfiguration: [1]}\n",
                "ComponentConfiguration.DefaultConfiguration: expected a mapping, got a list"},
        BadCase{"depsList", kHead + "ComponentDependencies: [a]\n",
                "ComponentDependencies: expected a mapping of component names to dependency settings, got a list"},
        BadCase{"depNotMap", kHead + "ComponentDependencies: {com.a: '1.0.0'}\n",
                "ComponentDependencies.com.a: expected a mapping with VersionRequirement and DependencyType, got "
                "\"1.0.0\""},
        BadCase{"depUnknownKey", kHead + "ComponentDependencies: {com.a: {Version: 1.0.0}}\n",
                "ComponentDependencies.com.a: expected only the keys VersionRequirement, DependencyType, got "
                "\"Version\""},
        BadCase{"depRange", kHead + "ComponentDependencies: {com.a: {VersionRequirement: '>=1.0.0 <'}}\n",
                "ComponentDependencies.com.a.VersionRequirement: expected a version range, got \">=1.0.0 <\" (\"<\" is "
                "missing a version)"},
        BadCase{"depRangeNumber", kHead + "ComponentDependencies: {com.a: {VersionRequirement: 1}}\n",
                "ComponentDependencies.com.a.VersionRequirement: expected a version range, got 1"},
        BadCase{"depType", kHead + "ComponentDependencies: {com.a: {DependencyType: MEDIUM}}\n",
                "ComponentDependencies.com.a.DependencyType: expected one of HARD, SOFT, got \"MEDIUM\""},
        BadCase{"depSelf", kHead + "ComponentDependencies: {com.example.Hello: {}}\n",
                "ComponentDependencies.com.example.Hello: expected another component, got \"com.example.Hello\" itself"},
        BadCase{"depBadName", kHead + "ComponentDependencies: {'a b': {}}\n",
                "ComponentDependencies: expected a component name of letters, digits, '.', '-' and '_', got \"a b\""},
        BadCase{"manifestsMap", kHead + "Manifests: {a: 1}\n", "Manifests: expected a list of manifests, got a mapping"},
        BadCase{"manifestNotMap", kHead + "Manifests: [5]\n",
                "Manifests[0]: expected a mapping with Platform and Lifecycle or Selections, got 5"},
        BadCase{"manifestUnknownKey", manifest("Platfrom: {}"),
                "Manifests[0]: expected only the keys Name, Platform, Lifecycle, Selections, Artifacts, got "
                "\"Platfrom\""},
        BadCase{"manifestName", manifest("Name: [x]"), "Manifests[0].Name: expected a text, got a list"},
        BadCase{"platformList", manifest("Platform: [linux]"),
                "Manifests[0].Platform: expected a mapping of platform attributes, got a list"},
        BadCase{"platformNumber", manifest("Platform: {os: 5}"),
                "Manifests[0].Platform.os: expected an exact value, \"*\" or \"/regex/\", got 5"},
        BadCase{"badRegex", manifest("Platform: {os: '/[a/'}"),
                "Manifests[0].Platform.os: expected a valid regular expression, got \"/[a/\""},
        BadCase{"longRegex", manifest("Platform: {os: '/" + std::string(257, 'a') + "/'}"),
                "Manifests[0].Platform.os: expected a regular expression of at most 256 characters, got 257 "
                "characters"},
        BadCase{"regexCountedRepetition", manifest("Platform: {os: '/((a{1000}){1000}){1000}/'}"),
                "Manifests[0].Platform.os: expected a regular expression without {n,m} repetition, got "
                "\"/((a{1000}){1000}){1000}/\""},
        BadCase{"regexNestedRepetition", manifest("Platform: {os: '/(a+)+b/'}"),
                "Manifests[0].Platform.os: expected a regular expression without a repeated group that itself "
                "repeats or alternates, got \"/(a+)+b/\""},
        BadCase{"regexRepeatedAlternation", manifest("Platform: {os: '/(a|aa)*b/'}"),
                "Manifests[0].Platform.os: expected a regular expression without a repeated group that itself "
                "repeats or alternates, got \"/(a|aa)*b/\""},
        BadCase{"regexTooManyQuantifiers", manifest("Platform: {os: '/.*a.*b.*c.*d.*/'}"),
                "Manifests[0].Platform.os: expected a regular expression with at most 4 repetition operators, got "
                "\"/.*a.*b.*c.*d.*/\""},
        BadCase{"lifecycleAndSelections", manifest("Lifecycle: {Run: a}\n    Selections: [linux]"),
                "Manifests[0]: expected either Lifecycle or Selections, got both"},
        BadCase{"selectionsNotList", manifest("Selections: linux"),
                "Manifests[0].Selections: expected a list of selection keys, got \"linux\""},
        BadCase{"selectionEmpty", manifest("Selections: ['']"),
                "Manifests[0].Selections[0]: expected a selection key, got \"\""},
        BadCase{"lifecycleList", manifest("Lifecycle: [a]"),
                "Manifests[0].Lifecycle: expected a mapping of lifecycle steps, got a list"},
        BadCase{"unknownStep", manifest("Lifecycle: {Start: x}"),
                "Manifests[0].Lifecycle: expected only the keys " + kStepNames + ", got \"Start\""},
        BadCase{"startupAndRun",
                kHead + "Manifests:\n  - Platform: {os: windows}\n  - Lifecycle: {Startup: a, run: b}\n",
                "Manifests[1].Lifecycle: expected either Startup or Run, got both"},
        BadCase{"startupAndRunGlobal", kHead + "Lifecycle:\n  linux: {Startup: a, Run: b}\n",
                "Lifecycle.linux: expected either Startup or Run, got both"},
        BadCase{"stepTwiceInOtherCase", manifest("Lifecycle: {run: a, Run: b}"),
                "Manifests[0].Lifecycle: expected Run once, got \"Run\" and \"run\""},
        BadCase{"stepNumber", run("5"),
                "Manifests[0].Lifecycle.Run: expected a script or a mapping with Script, got 5"},
        BadCase{"stepNull", run(""), "Manifests[0].Lifecycle.Run: expected a script or a mapping with Script, got nothing"},
        BadCase{"stepNoScript", run("{Timeout: 5}"), "Manifests[0].Lifecycle.Run.Script: expected a script, got nothing"},
        BadCase{"scriptList", run("{Script: [a]}"), "Manifests[0].Lifecycle.Run.Script: expected a script, got a list"},
        BadCase{"unknownStepKey", run("{Script: a, Retries: 3}"),
                "Manifests[0].Lifecycle.Run: expected only the keys Script, RequiresPrivilege, Setenv, Timeout, "
                "SkipIf, got \"Retries\""},
        BadCase{"stepKeyTwice", run("{Script: a, script: b}"),
                "Manifests[0].Lifecycle.Run: expected Script once, got \"Script\" and \"script\""},
        BadCase{"timeoutText",
                kHead + "Manifests:\n  - Platform: {os: windows}\n  - Lifecycle: {Run: {Script: a, Timeout: abc}}\n",
                "Manifests[1].Lifecycle.Run.Timeout: expected a number of seconds, got \"abc\""},
        BadCase{"timeoutNegative", run("{Script: a, Timeout: -5}"),
                "Manifests[0].Lifecycle.Run.Timeout: expected a non-negative number of seconds, got -5"},
        BadCase{"timeoutFloat", run("{Script: a, Timeout: 1.5}"),
                "Manifests[0].Lifecycle.Run.Timeout: expected a number of seconds, got 1.5"},
        BadCase{"timeoutHuge", run("{Script: a, Timeout: 99999999999}"),
                "Manifests[0].Lifecycle.Run.Timeout: expected a number of seconds up to 2147483647, got 99999999999"},
        BadCase{"timeoutUnits", run("{Script: a, Timeout: '30s'}"),
                "Manifests[0].Lifecycle.Run.Timeout: expected a number of seconds, got \"30s\""},
        BadCase{"requiresPrivilegeYes", run("{Script: a, RequiresPrivilege: yes}"),
                "Manifests[0].Lifecycle.Run.RequiresPrivilege: expected true or false, got \"yes\""},
        BadCase{"requiresPrivilegeNumber", run("{Script: a, RequiresPrivilege: 1}"),
                "Manifests[0].Lifecycle.Run.RequiresPrivilege: expected true or false, got 1"},
        BadCase{"skipIfUnknown", run("{Script: a, SkipIf: missing /x}"),
                "Manifests[0].Lifecycle.Run.SkipIf: expected \"onpath <executable>\" or \"exists <file>\", got "
                "\"missing /x\""},
        BadCase{"skipIfNoTarget", run("{Script: a, SkipIf: onpath}"),
                "Manifests[0].Lifecycle.Run.SkipIf: expected \"onpath <executable>\" or \"exists <file>\", got "
                "\"onpath\""},
        BadCase{"setenvList", manifest("Lifecycle: {Setenv: [a]}"),
                "Manifests[0].Lifecycle.Setenv: expected a mapping of environment variable names to values, got a "
                "list"},
        BadCase{"setenvNested", run("{Script: a, Setenv: {A: {b: 1}}}"),
                "Manifests[0].Lifecycle.Run.Setenv.A: expected a text, number or boolean value, got a mapping"},
        BadCase{"setenvEquals", manifest("Lifecycle: {Setenv: {'A=B': x}}"),
                "Manifests[0].Lifecycle.Setenv: expected environment variable names without '=', got \"A=B\""},
        BadCase{"artifactsMap", manifest("Artifacts: {URI: x}"),
                "Manifests[0].Artifacts: expected a list of artifacts, got a mapping"},
        BadCase{"artifactNotMap", artifact("s3://a/b"),
                "Manifests[0].Artifacts[0]: expected a mapping with URI, got \"s3://a/b\""},
        BadCase{"artifactNoUri", artifact("{Digest: AAAA}"),
                "Manifests[0].Artifacts[0].URI: expected a URI, got nothing"},
        BadCase{"artifactEmptyUri", artifact("{URI: ''}"), "Manifests[0].Artifacts[0].URI: expected a URI, got \"\""},
        BadCase{"artifactUnknownKey", artifact("{URI: s3://a/b, Checksum: x}"),
                "Manifests[0].Artifacts[0]: expected only the keys URI, Digest, Algorithm, Unarchive, Permission, "
                "got \"Checksum\""},
        BadCase{"artifactDigest", artifact("{URI: s3://a/b, Digest: 'not base64!'}"),
                "Manifests[0].Artifacts[0].Digest: expected a Base64 digest, got \"not base64!\""},
        BadCase{"artifactAlgorithm", artifact("{URI: s3://a/b, Digest: AAAA, Algorithm: CRC32}"),
                "Manifests[0].Artifacts[0].Algorithm: expected one of SHA-256, SHA-384, SHA-512, SHA-224, SHA-1, MD5, "
                "got \"CRC32\""},
        BadCase{"unarchive", artifact("{URI: s3://a/b, Unarchive: TAR}"),
                "Manifests[0].Artifacts[0].Unarchive: expected one of NONE, ZIP, got \"TAR\""},
        BadCase{"permissionValue", artifact("{URI: s3://a/b, Permission: {Read: EVERYONE}}"),
                "Manifests[0].Artifacts[0].Permission.Read: expected one of NONE, OWNER, ALL, got \"EVERYONE\""},
        BadCase{"permissionExecuteBool", artifact("{URI: s3://a/b, Permission: {Execute: true}}"),
                "Manifests[0].Artifacts[0].Permission.Execute: expected one of NONE, OWNER, ALL, got true"},
        BadCase{"permissionKey", artifact("{URI: s3://a/b, Permission: {Write: ALL}}"),
                "Manifests[0].Artifacts[0].Permission: expected only the keys Read, Execute, got \"Write\""},
        BadCase{"globalSectionTypo", kHead + "Lifecycle:\n  linux: {Instal: x}\n",
                "Lifecycle.linux: expected only the keys " + kStepNames + ", got \"Instal\""},
        BadCase{"globalStepTypo", kHead + "Lifecycle:\n  Instal: echo\n",
                "Lifecycle.Instal: expected a mapping of lifecycle steps, got \"echo\""}),
    [](const ::testing::TestParamInfo<BadCase>& p) { return std::string(p.param.name); });

// ---- platform matching and selection ----

TEST(Platform, ValueMatching) {
  EXPECT_TRUE(platform_value_matches("linux", std::string("linux")));
  EXPECT_FALSE(platform_value_matches("linux", std::string("Linux")));
  EXPECT_FALSE(platform_value_matches("linux", std::nullopt));
  EXPECT_TRUE(platform_value_matches("*", std::string("anything")));
  EXPECT_TRUE(platform_value_matches("*", std::nullopt));
  EXPECT_TRUE(platform_value_matches("/amd64|x86_64/", std::string("x86_64")));
  EXPECT_FALSE(platform_value_matches("/amd64|x86_64/", std::string("x86_64v2")));  // whole value
  EXPECT_TRUE(platform_value_matches("/arm.*/", std::string("armv7l")));
  EXPECT_FALSE(platform_value_matches("/arm.*/", std::nullopt));
  EXPECT_FALSE(platform_value_matches("/[/", std::string("[")));  // invalid: no match, no throw
  EXPECT_FALSE(platform_value_matches("/", std::string("x")));
  EXPECT_TRUE(platform_value_matches("/", std::string("/")));  // too short for a regex: exact
  EXPECT_FALSE(platform_value_matches("/a+/", std::string(65, 'a')));  // too long for a regex
  EXPECT_TRUE(platform_value_matches("/a+/", std::string(64, 'a')));
  EXPECT_FALSE(platform_value_matches("/(a+)+b/", std::string(30, 'a')));  // refused shape: no backtracking storm
  EXPECT_TRUE(platform_value_matches("/(?:arm|aarch)[a-z0-9]*?/", std::string("armv7l")));
  EXPECT_TRUE(platform_value_matches("/[{(|]+x/", std::string("{(|x")));  // specials inside a class are plain
  EXPECT_FALSE(platform_value_matches("/a{3}/", std::string("aaa")));  // counted repetition refused
  EXPECT_TRUE(platform_value_matches("/a\\{3}/", std::string("a{3}")));  // an escaped brace is a brace
}

const char* kSelectRecipe = R"(
RecipeFormatVersion: 2020-01-25
ComponentName: com.example.Select
ComponentVersion: 1.2.3
Manifests:
  - Name: arm
    Platform: {os: linux, architecture: /aarch64|armv.*/}
    Lifecycle: {Run: arm}
    Artifacts: [{URI: s3://b/arm.bin}]
  - Name: linux-any
    Platform: {os: linux, architecture: '*'}
    Selections: [debian, linux]
  - Name: windows
    Platform: {os: windows}
    Selections: [windows]
  - Name: mac
    Platform: {os: darwin}
    Selections: [nothing-here]
  - Name: other-custom
    Platform: {os: freebsd, gpu: 'yes'}
    Lifecycle: {Run: gpu}
Lifecycle:
  Run: flat
  linux: {Run: linux}
  debian: {Run: debian}
  windows: {Run: windows}
  all: {Run: all}
)";

std::string selected_run(const Recipe& r, const Platform& p, std::size_t* index = nullptr) {
  auto s = select_manifest(r, p);
  EXPECT_TRUE(s) << s.error().message;
  if (!s) return "";
  if (index) *index = s->manifest_index;
  return s->lifecycle.run ? s->lifecycle.run->script : "<none>";
}

TEST(Select, FirstMatchingManifestWinsAndSelectionsPickSections) {
  const Recipe r = parse_ok(kSelectRecipe);
  std::size_t i = 99;
  EXPECT_EQ(selected_run(r, {{"os", "linux"}, {"architecture", "aarch64"}}, &i), "arm");
  EXPECT_EQ(i, 0u);
  auto s = select_manifest(r, {{"os", "linux"}, {"architecture", "armv7l"}});
  ASSERT_TRUE(s);
  ASSERT_EQ(s->artifacts.size(), 1u);
  EXPECT_EQ(s->artifacts[0].uri, "s3://b/arm.bin");
  EXPECT_EQ(selected_run(r, {{"os", "linux"}, {"architecture", "amd64"}}, &i), "debian");  // first selection present
  EXPECT_EQ(i, 1u);
  EXPECT_EQ(selected_run(r, {{"os", "linux"}}, &i), "debian");  // '*' accepts a missing key
  EXPECT_EQ(selected_run(r, {{"os", "windows"}, {"architecture", "amd64"}}, &i), "windows");
  EXPECT_EQ(i, 2u);
  EXPECT_EQ(selected_run(r, {{"os", "darwin"}}, &i), "all");  // `all` is implied
  EXPECT_EQ(i, 3u);
  EXPECT_EQ(selected_run(r, {{"os", "freebsd"}, {"gpu", "yes"}}, &i), "gpu");  // custom keys
  EXPECT_EQ(i, 4u);
  auto none = select_manifest(r, {{"os", "freebsd"}, {"architecture", "amd64"}});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, errc::not_found);
  EXPECT_EQ(none.error().message,
            "com.example.Select 1.2.3: Manifests: expected one whose Platform matches this device "
            "(architecture=amd64, os=freebsd), got none");
  auto named = select_manifest(r, {{"os", "freebsd"}}, "select-1.2.3.yaml");
  ASSERT_FALSE(named);
  EXPECT_EQ(named.error().message,
            "select-1.2.3.yaml: Manifests: expected one whose Platform matches this device (os=freebsd), got none");
}

TEST(Select, TheSelectionSaysWhereItsLifecycleIsWritten) {
  const Recipe r = parse_ok(kSelectRecipe);
  const auto path = [&](const Platform& p) {
    auto s = select_manifest(r, p);
    EXPECT_TRUE(s) << s.error().message;
    return s ? s->lifecycle_path : std::string();
  };
  EXPECT_EQ(path({{"os", "linux"}, {"architecture", "aarch64"}}), "Manifests[0].Lifecycle");
  EXPECT_EQ(path({{"os", "linux"}, {"architecture", "amd64"}}), "Lifecycle.debian");
  EXPECT_EQ(path({{"os", "darwin"}}), "Lifecycle.all");
  EXPECT_EQ(select_manifest(parse_ok(kHead + "Lifecycle:\n  Run: flat\n"), {})->lifecycle_path, "Lifecycle");
}

TEST(Select, WithoutAnAllSectionTheFlatGlobalLifecycleApplies) {
  const Recipe r = parse_ok(kHead + "Manifests:\n  - Selections: [x]\n  - Platform: {os: y}\nLifecycle:\n  Run: flat\n");
  EXPECT_EQ(selected_run(r, {{"os", "linux"}}), "flat");
}

TEST(Select, RecipeWithoutManifestsRunsEverywhere) {
  const Recipe r = parse_ok(kHead + "Lifecycle:\n  Run: flat\n");
  std::size_t i = 0;
  EXPECT_EQ(selected_run(r, {{"os", "anything"}}, &i), "flat");
  EXPECT_EQ(i, Selection::npos);
  const Recipe r2 = parse_ok(kHead + "Lifecycle:\n  all: {Run: everywhere}\n");
  EXPECT_EQ(selected_run(r2, {}), "everywhere");
}

// ---- the sample recipes in recipes/ ----

std::string read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Samples, EverySampleRecipeParsesAndSelectsOnLinux) {
  const std::string dir = std::string(CANOPY_SOURCE_DIR) + "/recipes/";
  for (const char* file : {"com.example.HelloWorld-1.0.0.yaml", "com.example.Sensor-1.0.0.json",
                           "com.example.Subscriber-1.0.0.yaml"}) {
    auto r = parse_recipe(read(dir + file), file);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(std::string(file).rfind(r->name + "-" + r->version.to_string(), 0), 0u) << file;
    auto s = select_manifest(*r, {{"os", "linux"}, {"architecture", "amd64"}});
    ASSERT_TRUE(s) << s.error().message;
    ASSERT_TRUE(s->lifecycle.run) << file;
  }
}

TEST(Samples, HelloWorldHasLinuxAndWindowsLifecycles) {
  const std::string dir = std::string(CANOPY_SOURCE_DIR) + "/recipes/";
  for (const char* file : {"com.example.HelloWorld-1.0.0.yaml"}) {
    auto r = parse_recipe(read(dir + file), file);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(r->default_configuration.at("Message"), "world");
    auto linux_sel = select_manifest(*r, {{"os", "linux"}});
    auto windows_sel = select_manifest(*r, {{"os", "windows"}});
    ASSERT_TRUE(linux_sel && windows_sel);
    EXPECT_NE(linux_sel->lifecycle.run->script, windows_sel->lifecycle.run->script);
    EXPECT_FALSE(select_manifest(*r, {{"os", "darwin"}})) << file;
  }
}

}  // namespace
}  // namespace canopy::recipe
