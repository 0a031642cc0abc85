// Defective recipes against a real canopyd, deployed with the real canopy CLI: each one is
// rejected with a message naming the file, the field path and what was expected, and nothing on
// the device changes (the running component keeps its process, version and configuration; no
// component, recipe, artifact or configuration is added).
#include <filesystem>
#include <map>
#include <ostream>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include <pwd.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <openssl/evp.h>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

constexpr const char* kGood = "com.test.Good";
constexpr const char* kBad = "com.test.Bad";

// ---- recipe text helpers ------------------------------------------------------------------

std::string head(const std::string& name, const std::string& version = "1.0.0") {
  return "RecipeFormatVersion: '2020-01-25'\nComponentName: " + name + "\nComponentVersion: '" + version + "'\n";
}

// A recipe of com.test.Bad 1.0.0 with one Linux manifest; `manifest_extra` is added to the
// manifest (indented 4 spaces), `run` is the Run step.
std::string bad(const std::string& manifest_extra = "", const std::string& run = "sleep 3600",
                const std::string& top_extra = "") {
  return head(kBad) + top_extra + "Manifests:\n  - Platform: {os: linux}\n" + manifest_extra +
         "    Lifecycle:\n      Run: " + run + "\n";
}

std::string artifact(const std::string& fields) { return "    Artifacts:\n      - " + fields + "\n"; }

std::string sha256_base64(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  std::string out(4 * ((len + 2) / 3), '\0');
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), md, static_cast<int>(len));
  return out;
}

const std::string kFile = "com.test.Bad-1.0.0.yaml";
const std::string kArtifactText = "#!/bin/sh\necho hi\n";

// ---- the table ----------------------------------------------------------------------------

struct Defect {
  std::string name;
  std::map<std::string, std::string> recipes;    ///< file name -> text, in the --recipeDir
  std::map<std::string, std::string> artifacts;  ///< path under --artifactDir -> text
  std::vector<std::string> args;                 ///< --merge and friends
  std::vector<std::string> expected;             ///< fragments of the failure message
  std::string detailed = "REJECTED";
};

// Test names in ctest's list instead of the bytes of the parameter.
void PrintTo(const Defect& d, std::ostream* os) { *os << d.name; }

std::vector<std::string> merge(const std::string& what = std::string(kBad) + "=1.0.0") { return {"--merge", what}; }

std::vector<Defect> defects() {
  std::vector<Defect> t;
  const auto one = [&](std::string name, std::string text, std::vector<std::string> expected,
                       std::string file = kFile) {
    t.push_back(Defect{std::move(name), {{std::move(file), std::move(text)}}, {}, merge(), std::move(expected)});
  };
  // -- text and document shape
  one("NotYaml", head(kBad) + "Manifests: [{Lifecycle: {Run: sleep 1}\n",
      {kFile + ":", "not valid YAML"});
  one("NotAMapping", "- RecipeFormatVersion: '2020-01-25'\n- ComponentName: com.test.Bad\n",
      {kFile + ": expected a mapping of recipe keys, got a list"});
  one("JsonTrailingComma",
      R"({"RecipeFormatVersion": "2020-01-25", "ComponentName": "com.test.Bad", "ComponentVersion": "1.0.0",
  "Manifests": [{"Lifecycle": {"Run": "sleep 3600"}}],
})",
      {"com.test.Bad-1.0.0.json:3:1", "not valid JSON"}, "com.test.Bad-1.0.0.json");
  // -- top-level keys
  one("WrongRecipeFormatVersion",
      "RecipeFormatVersion: '2021-01-25'\nComponentName: com.test.Bad\nComponentVersion: '1.0.0'\n",
      {kFile + ": RecipeFormatVersion: expected 2020-01-25, got \"2021-01-25\""});
  one("MissingComponentName", "RecipeFormatVersion: '2020-01-25'\nComponentVersion: '1.0.0'\n",
      {kFile + ": ComponentName: expected a component name, got nothing"});
  one("ComponentNameTooLong", head(std::string(129, 'n')),
      {kFile + ": ComponentName: expected a component name of at most 128 characters, got 129 characters"});
  one("ComponentVersionTwoNumbers", head(kBad, "1.0"),
      {kFile + ": ComponentVersion: expected a semantic version MAJOR.MINOR.PATCH, got \"1.0\""});
  one("ComponentVersionLeadingZero", head(kBad, "01.0.0"),
      {kFile + ": ComponentVersion: expected a semantic version MAJOR.MINOR.PATCH, got \"01.0.0\""});
  one("ComponentVersionTooLong", head(kBad, "1.0.0-" + std::string(60, 'r')),
      {kFile + ": ComponentVersion: expected a semantic version MAJOR.MINOR.PATCH, got \"1.0.0-rrr", "64"});
  one("UnknownComponentType", head(kBad) + "ComponentType: aws.greengrass.docker\n",
      {kFile + ": ComponentType: expected one of aws.greengrass.generic, aws.greengrass.plugin, "
               "aws.greengrass.lambda, aws.greengrass.nucleus, got \"aws.greengrass.docker\""});
  one("UnknownTopLevelKey", "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Bad\nComponentVersoin: '1.0.0'\n",
      {kFile + ": expected only the keys RecipeFormatVersion, ComponentName, ComponentVersion",
       "got \"ComponentVersoin\""});
  one("DefaultConfigurationNotAMap", bad("", "sleep 3600", "ComponentConfiguration:\n  DefaultConfiguration: [1, 2]\n"),
      {kFile + ": ComponentConfiguration.DefaultConfiguration: expected a mapping, got a list"});
  // -- dependencies
  one("BadVersionRequirement",
      bad("", "sleep 3600", "ComponentDependencies:\n  com.test.Good:\n    VersionRequirement: '>=1.0.0 <'\n"),
      {kFile + ": ComponentDependencies.com.test.Good.VersionRequirement: expected a version range, got \">=1.0.0 <\""});
  one("BadDependencyType",
      bad("", "sleep 3600", "ComponentDependencies:\n  com.test.Good:\n    DependencyType: MEDIUM\n"),
      {kFile + ": ComponentDependencies.com.test.Good.DependencyType: expected one of HARD, SOFT, got \"MEDIUM\""});
  // -- manifests and platforms
  one("ManifestsNotAList", head(kBad) + "Manifests:\n  Platform: {os: linux}\n",
      {kFile + ": Manifests: expected a list of manifests, got a mapping"});
  one("PlatformInvalidRegex", head(kBad) + "Manifests:\n  - Platform: {os: '/[lin/'}\n    Lifecycle: {Run: sleep 3600}\n",
      {kFile + ": Manifests[0].Platform.os: expected a valid regular expression, got \"/[lin/\""});
  one("PlatformUnsafeRegex", head(kBad) + "Manifests:\n  - Platform: {os: '/(l+)+x/'}\n    Lifecycle: {Run: sleep 3600}\n",
      {kFile + ": Manifests[0].Platform.os: expected a regular expression without a repeated group that itself "
               "repeats or alternates, got \"/(l+)+x/\""});
  one("NoManifestForThisPlatform",
      head(kBad) + "Manifests:\n  - Platform: {os: windows}\n    Lifecycle: {Run: ping -t localhost}\n",
      {kFile + ": Manifests: expected one whose Platform matches this device (", "os=linux", "got none"});
  // -- lifecycle steps
  one("LifecycleStepWrongType", bad("", "[sleep, 3600]"),
      {kFile + ": Manifests[0].Lifecycle.Run: expected a script or a mapping with Script, got a list"});
  one("StepWithoutScript", bad("", "{Timeout: 5}"),
      {kFile + ": Manifests[0].Lifecycle.Run.Script: expected a script, got nothing"});
  one("StartupAndRun", head(kBad) + "Manifests:\n  - Lifecycle: {Startup: 'true', Run: sleep 3600}\n",
      {kFile + ": Manifests[0].Lifecycle: expected either Startup or Run, got both"});
  one("LifecycleKeysDifferingOnlyInCase", head(kBad) + "Manifests:\n  - Lifecycle: {run: sleep 1, Run: sleep 3600}\n",
      {kFile + ": Manifests[0].Lifecycle: expected Run once, got \"Run\" and \"run\""});
  t.push_back(Defect{"TimeoutNotANumber",
                     {{"hello-1.0.0.yaml", head("hello") + "Manifests:\n  - Platform: {os: windows}\n"
                                                           "    Lifecycle: {Run: ping -t localhost}\n"
                                                           "  - Platform: {os: linux}\n"
                                                           "    Lifecycle:\n      Run: {Script: sleep 3600, Timeout: abc}\n"}},
                     {},
                     merge("hello=1.0.0"),
                     {"hello-1.0.0.yaml: Manifests[1].Lifecycle.Run.Timeout: expected a number of seconds, got \"abc\""}});
  one("TimeoutNegative", bad("", "{Script: sleep 3600, Timeout: -5}"),
      {kFile + ": Manifests[0].Lifecycle.Run.Timeout: expected a non-negative number of seconds, got -5"});
  one("TimeoutFromConfigurationNotANumber",
      bad("", "{Script: sleep 3600, Timeout: '{configuration:/timeout}'}",
          "ComponentConfiguration:\n  DefaultConfiguration:\n    timeout: soon\n"),
      {kFile + ": Manifests[0].Lifecycle.Run.Timeout: expected a number of seconds, got \"soon\""});
  {
    Defect d{"TimeoutFromConfigurationUpdateNotANumber",
             {{kFile, bad("", "{Script: sleep 3600, Timeout: '{configuration:/timeout}'}",
                          "ComponentConfiguration:\n  DefaultConfiguration:\n    timeout: 30\n")}},
             {},
             merge(),
             {kFile + ": Manifests[0].Lifecycle.Run.Timeout: expected a number of seconds, got \"[1,2]\""}};
    d.args.insert(d.args.end(), {"--update-config", R"({"com.test.Bad": {"MERGE": {"timeout": [1, 2]}}})"});
    t.push_back(std::move(d));
  }
  one("RequiresPrivilegeYes", bad("", "{Script: sleep 3600, RequiresPrivilege: 'yes'}"),
      {kFile + ": Manifests[0].Lifecycle.Run.RequiresPrivilege: expected true or false, got \"yes\""});
  one("SkipIfUnknownKind", bad("", "{Script: sleep 3600, SkipIf: 'missing /usr/bin/x'}"),
      {kFile + ": Manifests[0].Lifecycle.Run.SkipIf: expected \"onpath <executable>\" or \"exists <file>\", got "
               "\"missing /usr/bin/x\""});
  one("SetenvNotAMap", bad("", "{Script: sleep 3600, Setenv: [A=1]}"),
      {kFile + ": Manifests[0].Lifecycle.Run.Setenv: expected a mapping of environment variable names to values, "
               "got a list"});
  // -- artifacts
  one("ArtifactUriMissing", bad(artifact("{Permission: {Read: ALL}}")),
      {kFile + ": Manifests[0].Artifacts[0].URI: expected a URI, got nothing"});
  one("UnarchiveRar", bad(artifact("{URI: 's3://bucket/run.rar', Unarchive: RAR}")),
      {kFile + ": Manifests[0].Artifacts[0].Unarchive: expected one of NONE, ZIP, got \"RAR\""});
  one("PermissionReadEveryone", bad(artifact("{URI: 's3://bucket/run.sh', Permission: {Read: EVERYONE}}")),
      {kFile + ": Manifests[0].Artifacts[0].Permission.Read: expected one of NONE, OWNER, ALL, got \"EVERYONE\""});
  one("DigestNotBase64", bad(artifact("{URI: 's3://bucket/run.sh', Digest: 'not base64!'}")),
      {kFile + ": Manifests[0].Artifacts[0].Digest: expected a Base64 digest, got \"not base64!\""});
  t.push_back(Defect{"DigestDoesNotMatchTheFile",
                     {{kFile, bad(artifact("{URI: 's3://bucket/run.sh', Digest: '" + sha256_base64("other text") + "'}"))}},
                     {{"com.test.Bad/1.0.0/run.sh", kArtifactText}},
                     merge(),
                     {kFile + ": Manifests[0].Artifacts[0].Digest: expected the SHA-256 digest of ",
                      "run.sh (" + sha256_base64(kArtifactText) + "), got \"" + sha256_base64("other text") + "\""}});
  t.push_back(Defect{"ArtifactMissingFromArtifactDir",
                     {{kFile, bad(artifact("{URI: 's3://bucket/run.sh'}"))}},
                     {{"com.test.Bad/1.0.0/other.sh", kArtifactText}},
                     merge(),
                     {kFile + ": Manifests[0].Artifacts[0].URI: s3://bucket/run.sh must be downloaded",
                      "downloading s3:// artifacts is not supported yet; put run.sh in ", "com.test.Bad/1.0.0"}});
  t.push_back(Defect{"UnarchiveZipOfAFileThatIsNoZip",
                     {{kFile, bad(artifact("{URI: 's3://bucket/app.zip', Unarchive: ZIP}"))}},
                     {{"com.test.Bad/1.0.0/app.zip", kArtifactText}},
                     merge(),
                     {kFile + ": Manifests[0].Artifacts[0].Unarchive: expected ", "app.zip to be a ZIP archive"}});
  one("DockerArtifact", bad(artifact("{URI: 'docker:public.ecr.aws/example/app:latest'}")),
      {kFile + ": Manifests[0].Artifacts[0].URI: expected", "got \"docker:public.ecr.aws/example/app:latest\"",
       "docker images are not supported"});
  // -- across recipes and the request
  t.push_back(Defect{"DependencyWithoutRecipe",
                     {{kFile, bad("", "sleep 3600",
                                  "ComponentDependencies:\n  com.test.Missing:\n    VersionRequirement: '>=1.0.0'\n")}},
                     {},
                     merge(),
                     {"com.test.Bad requires com.test.Missing >=1.0.0",
                      "no recipe of com.test.Missing is in the recipe folder or installed"}});
  t.push_back(Defect{
      "VersionConflictBetweenTwoRequirers",
      {{"com.test.A-1.0.0.yaml",
        head("com.test.A") + "ComponentDependencies:\n  com.test.C: {VersionRequirement: '>=2.0.0'}\n"
                             "Lifecycle: {Run: sleep 3600}\n"},
       {"com.test.B-1.0.0.yaml",
        head("com.test.B") + "ComponentDependencies:\n  com.test.C: {VersionRequirement: '<2.0.0'}\n"
                             "Lifecycle: {Run: sleep 3600}\n"},
       {"com.test.C-1.0.0.yaml", head("com.test.C", "1.0.0") + "Lifecycle: {Run: sleep 3600}\n"},
       {"com.test.C-2.0.0.yaml", head("com.test.C", "2.0.0") + "Lifecycle: {Run: sleep 3600}\n"}},
      {},
      {"--merge", "com.test.A=1.0.0", "--merge", "com.test.B=1.0.0"},
      {"version conflict", "com.test.A requires com.test.C >=2.0.0", "com.test.B requires com.test.C <2.0.0"}});
  t.push_back(Defect{
      "DependencyCycle",
      {{"com.test.A-1.0.0.yaml", head("com.test.A") + "ComponentDependencies:\n  com.test.B: {}\nLifecycle: {Run: sleep 3600}\n"},
       {"com.test.B-1.0.0.yaml", head("com.test.B") + "ComponentDependencies:\n  com.test.A: {}\nLifecycle: {Run: sleep 3600}\n"}},
      {},
      {"--merge", "com.test.A=1.0.0"},
      {"dependency cycle: com.test.A -> com.test.B -> com.test.A"}});
  {
    Defect d{"RunWithUserThatDoesNotExist", {{kFile, bad()}}, {}, merge(), {"com.test.Bad", "nosuchuser"}};
    d.args.insert(d.args.end(), {"--runWith", "com.test.Bad:posixUser=nosuchuser"});
    t.push_back(std::move(d));
  }
  t.push_back(Defect{"TwoFilesDefineTheSameVersionDifferently",
                     {{kFile, bad()}, {"com.test.Bad-copy.yaml", bad("", "sleep 7200")}},
                     {},
                     merge(),
                     {"com.test.Bad-1.0.0.yaml and ", "com.test.Bad-copy.yaml both define com.test.Bad 1.0.0 differently"}});
  t.push_back(Defect{"MergeOfAVersionWithoutRecipe",
                     {{kFile, bad()}},
                     {},
                     merge(std::string(kBad) + "=2.0.0"),
                     {"no recipe for com.test.Bad 2.0.0 in "}});
  // A defective new version of the running component: the old version keeps running.
  t.push_back(Defect{"DefectiveUpgradeOfTheRunningComponent",
                     {{"com.test.Good-2.0.0.yaml",
                       head(kGood, "2.0.0") + "Manifests:\n  - Lifecycle:\n      Run: {Script: sleep 3600, Timeout: 1h}\n"}},
                     {},
                     merge(std::string(kGood) + "=2.0.0"),
                     {"com.test.Good-2.0.0.yaml: Manifests[0].Lifecycle.Run.Timeout: expected a number of seconds, "
                      "got \"1h\""}});
  // A broken recipe in the folder rejects the deployment even when another component is merged.
  t.push_back(Defect{"DefectiveRecipeNextToTheMergedOne",
                     {{"com.test.Ok-1.0.0.yaml", head("com.test.Ok") + "Lifecycle: {Run: sleep 3600}\n"},
                      {kFile, bad("", "{Script: sleep 3600, Timeout: abc}")}},
                     {},
                     merge("com.test.Ok=1.0.0"),
                     {kFile + ": Manifests[0].Lifecycle.Run.Timeout: expected a number of seconds, got \"abc\""}});
  return t;
}

// ---- the fixture: one canopyd for the whole table ---------------------------------------

std::string config_yaml() {
  return "services:\n"
         "  canopy.Nucleus:\n"
         "    configuration:\n"
         "      lifecycle:\n"
         "        stopGraceSeconds: 1\n"
         "        deploymentTimeoutSeconds: 60\n"
         "system:\n  thingName: defective-recipes-test\n";
}

// What must not change: file names, sizes and modification times under these folders.
std::map<std::string, std::string> tree(const fs::path& dir) {
  std::map<std::string, std::string> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    const auto rel = fs::relative(it->path(), dir, ec).string();
    std::string what = it->is_directory(ec) ? "dir" : std::to_string(it->file_size(ec));
    what += "@" + std::to_string(fs::last_write_time(it->path(), ec).time_since_epoch().count());
    out[rel] = what;
  }
  return out;
}

struct Snapshot {
  nlohmann::json components;  // componentName -> {version, state}
  pid_t pid = 0;
  std::string version;
  std::string state;
  nlohmann::json configuration;
  std::map<std::string, std::string> packages, work;
  std::string deployed;
  std::set<std::string> deployment_folders;  // deployments/<id>/ (rollback snapshots)
};

class DefectiveRecipes : public ::testing::TestWithParam<Defect> {
 public:
  static void SetUpTestSuite() {
    if (::geteuid() != 0 || !::getpwnam("ggc_user")) return;  // each test skips itself
    dir_ = new TempDir();
    Canopyd::Options o;
    o.config_yaml = config_yaml();
    daemon_ = new Canopyd(dir_->path(), o);
    if (!daemon_->wait_ready()) {
      setup_error_ = "canopyd did not become ready:\n" + daemon_->logs();
      return;
    }
    const fs::path recipes = dir_->path() / "good-recipes";
    fs::create_directories(recipes);
    write_file(recipes / "com.test.Good-1.0.0.yaml",
               head(kGood) + "ComponentConfiguration:\n  DefaultConfiguration:\n    greeting: hello\n"
                             "Manifests:\n  - Platform: {os: linux}\n    Lifecycle:\n      Run: sleep 3600\n");
    auto r = cli({"deployment", "create", "--recipeDir", recipes.string(), "--merge", "com.test.Good=1.0.0", "--wait",
                  "--timeout", "60"});
    if (r.exit_code != 0) setup_error_ = "the good component was not deployed: " + r.output + "\n" + daemon_->logs();
  }

  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }

 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (components run as ggc_user)";
    if (!::getpwnam("ggc_user")) GTEST_SKIP() << "user ggc_user is missing; run scripts/setup.d/users.sh";
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
    ASSERT_NE(daemon_, nullptr);
  }

  static CommandResult cli(std::vector<std::string> args, std::chrono::seconds deadline = 90s) {
    args.insert(args.begin(), {canopy_cli_path().string(), "--root", daemon_->root().string()});
    return run_command(args, deadline);
  }

  static nlohmann::json json_of(const CommandResult& r) {
    try {
      return nlohmann::json::parse(r.output);
    } catch (...) {
      ADD_FAILURE() << "not JSON (exit " << r.exit_code << "): " << r.output;
      return nlohmann::json();
    }
  }

  Snapshot snapshot() {
    Snapshot s;
    const auto list = json_of(cli({"component", "list", "--json"}));
    s.components = nlohmann::json::object();
    if (list.is_object() && list.contains("components"))
      for (const auto& c : list["components"])
        s.components[c.value("componentName", "")] = {{"version", c.value("version", "")},
                                                      {"state", c.value("state", "")}};
    const auto details = json_of(cli({"component", "details", kGood, "--json"})).value("componentDetails",
                                                                                       nlohmann::json::object());
    s.pid = details.value("pid", 0);
    s.version = details.value("version", "");
    s.state = details.value("state", "");
    s.configuration = json_of(cli({"config", "get", kGood, "--json"}));
    const fs::path root = daemon_->root();
    s.packages = tree(root / "packages");
    s.work = tree(root / "work");
    std::error_code ec;
    if (fs::exists(root / "deployments" / "deployed.json", ec)) s.deployed = read_file(root / "deployments" / "deployed.json");
    for (const auto& e : fs::directory_iterator(root / "deployments", ec))
      if (e.is_directory()) s.deployment_folders.insert(e.path().filename().string());
    return s;
  }

  static inline TempDir* dir_ = nullptr;
  static inline Canopyd* daemon_ = nullptr;
  static inline std::string setup_error_;
};

std::string describe(const Snapshot& s) {
  std::string out = "components " + s.components.dump() + "\n" + kGood + " pid " + std::to_string(s.pid) + " " +
                    s.version + " " + s.state + " configuration " + s.configuration.dump() + "\npackages:";
  for (const auto& [p, w] : s.packages) out += "\n  " + p + " " + w;
  out += "\nwork:";
  for (const auto& [p, w] : s.work) out += "\n  " + p + " " + w;
  return out + "\ndeployed.json " + s.deployed;
}

TEST_P(DefectiveRecipes, IsRejectedPreciselyAndNothingChanges) {
  const Defect& d = GetParam();
  const Snapshot before = snapshot();
  ASSERT_EQ(before.state, "RUNNING") << describe(before);
  ASSERT_GT(before.pid, 0);
  ASSERT_EQ(before.version, "1.0.0");
  ASSERT_EQ(before.packages.count("recipes/com.test.Good-1.0.0.yaml"), 1u) << describe(before);
  ASSERT_EQ(before.configuration.value("value", nlohmann::json()), (nlohmann::json{{"greeting", "hello"}}));

  TempDir work;
  const fs::path recipes = work.path() / "recipes";
  const fs::path artifacts = work.path() / "artifacts";
  fs::create_directories(recipes);
  fs::create_directories(artifacts);
  for (const auto& [file, text] : d.recipes) write_file(recipes / file, text);
  for (const auto& [file, text] : d.artifacts) {
    fs::create_directories((artifacts / file).parent_path());
    write_file(artifacts / file, text);
  }
  std::vector<std::string> args{"deployment", "create", "--recipeDir", recipes.string(), "--artifactDir",
                                artifacts.string(), "--wait", "--timeout", "60"};
  args.insert(args.end(), d.args.begin(), d.args.end());
  const auto r = cli(args);

  // The CLI fails and says why.
  EXPECT_NE(r.exit_code, 0) << r.output;
  for (const auto& fragment : d.expected) EXPECT_THAT(r.output, HasSubstr(fragment));

  // The deployment's status says the same, and that it was rejected.
  std::smatch m;
  const std::regex id_re("deployment (local-[0-9]+-[0-9]+) FAILED");
  ASSERT_TRUE(std::regex_search(r.output, m, id_re)) << r.output;
  const auto status = json_of(cli({"deployment", "status", m[1].str(), "--json"}));
  const auto deployment = status.value("deployment", nlohmann::json::object());
  EXPECT_EQ(deployment.value("status", ""), "FAILED") << status.dump(2);
  const auto details = deployment.value("deploymentStatusDetails", nlohmann::json::object());
  EXPECT_EQ(details.value("detailedDeploymentStatus", ""), d.detailed) << status.dump(2);
  const std::string message = deployment.value("message", "");
  RecordProperty("message", message);
  for (const auto& fragment : d.expected) EXPECT_THAT(message, HasSubstr(fragment));
  EXPECT_THAT(message, HasSubstr("Nothing was changed"));
  ASSERT_TRUE(details.contains("failureCauses")) << status.dump(2);
  EXPECT_EQ(details["failureCauses"][0].value("errorMessage", ""), message);

  // Nothing changed: same components, same process, same version, same configuration, same
  // files under packages/ and work/, same deployed set.
  const Snapshot after = snapshot();
  EXPECT_EQ(after.pid, before.pid);
  EXPECT_EQ(after.version, "1.0.0");
  EXPECT_EQ(after.state, "RUNNING");
  EXPECT_EQ(after.components, before.components);
  EXPECT_EQ(after.configuration, before.configuration);
  EXPECT_EQ(after.packages, before.packages) << describe(before) << "\n---- after ----\n" << describe(after);
  EXPECT_EQ(after.work, before.work);
  EXPECT_EQ(after.deployed, before.deployed);
  EXPECT_EQ(after.deployment_folders, before.deployment_folders);
  // No configuration appeared for a component the defective deployment named.
  std::set<std::string> named;
  for (std::size_t i = 0; i + 1 < d.args.size(); ++i)
    if (d.args[i] == "--merge") named.insert(d.args[i + 1].substr(0, d.args[i + 1].find('=')));
  for (const auto& [file, text] : d.recipes)
    if (auto p = text.find("ComponentName: "); p != std::string::npos)
      named.insert(text.substr(p + 15, text.find('\n', p) - p - 15));
  named.erase(kGood);
  for (const auto& n : named) {
    auto cfg = cli({"config", "get", n});
    EXPECT_NE(cfg.exit_code, 0) << n << " has configuration now: " << cfg.output;
  }
  if (::testing::Test::HasFailure()) {
    const std::string logs = daemon_->logs();
    ADD_FAILURE() << "the end of canopyd's logs:\n" << logs.substr(logs.size() > 6000 ? logs.size() - 6000 : 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Table, DefectiveRecipes, ::testing::ValuesIn(defects()),
                         [](const ::testing::TestParamInfo<Defect>& p) { return p.param.name; });

TEST(DefectiveRecipesTable, HasAtLeast35DistinctDefects) {
  const auto table = defects();
  std::set<std::string> names;
  for (const auto& d : table) names.insert(d.name);
  EXPECT_EQ(names.size(), table.size());
  EXPECT_GE(table.size(), 35u);
}

}  // namespace
}  // namespace canopy::test
