// Signed deployments against a real canopyd: keys made and recipes signed with the real
// `canopy keygen` / `canopy sign`, trusted signers in the nucleus configuration, and the
// signature matrix (valid ECDSA and Ed25519, unsigned, unknown, expired, revoked, one byte
// changed, artifact changed, 2-of-3 threshold met and not met, downgrade). After every
// rejection nothing changed: the running component keeps its pid and version.
#include <filesystem>
#include <set>
#include <thread>

#include <pwd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

// The keyid canopy uses: SHA-256 of the SubjectPublicKeyInfo DER, computed here with openssl.
std::string keyid_of(const fs::path& pub) {
  auto r = run_command({"/bin/sh", "-c", "openssl pkey -pubin -in '" + pub.string() + "' -outform DER | sha256sum | cut -d' ' -f1"});
  std::string id = r.output;
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

class SignedDeployments : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || !::getpwnam("ggc_user")) GTEST_SKIP() << "needs root and ggc_user (scripts/setup.d/users.sh)";
    fs::create_directories(keys());
    for (const char* name : {"ecdsa", "ed25519", "stranger", "expired", "revoked", "second", "third"}) {
      std::vector<std::string> args{"keygen", "--out", (keys() / name).string()};
      if (std::string(name) == "ed25519") args.insert(args.end(), {"--alg", "ed25519"});
      auto r = cli_offline(args);
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }

  fs::path keys() const { return dir_.path() / "keys"; }
  fs::path root() const { return dir_.path() / "root"; }

  // A nucleus configuration trusting `trusted` (key names in keys()).
  std::string config(const std::vector<std::string>& trusted, int threshold = 1) {
    std::string y = "services:\n  canopy.Nucleus:\n    configuration:\n      lifecycle:\n        stopGraceSeconds: 1\n"
                    "      deployment:\n        requireSignatures: true\n        signatureThreshold: " +
                    std::to_string(threshold) + "\n        revokedKeyIds:\n          - " + keyid_of(keys() / "revoked.pub") +
                    "\n        trustedSigners:\n";
    for (const auto& k : trusted) {
      y += "          - publicKeyPath: " + (keys() / (k + ".pub")).string() + "\n";
      if (k == "expired") y += "            notAfter: 2020-01-01T00:00:00Z\n";
    }
    return y;
  }

  void start(const std::string& yaml) {
    Canopyd::Options o;
    o.config_yaml = yaml;
    daemon_ = std::make_unique<Canopyd>(dir_.path(), o);
    ASSERT_TRUE(daemon_->wait_ready()) << daemon_->logs();
  }

  CommandResult cli_offline(std::vector<std::string> args) {
    args.insert(args.begin(), canopy_cli_path().string());
    return run_command(args, 60s);
  }

  CommandResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), {canopy_cli_path().string(), "--root", root().string()});
    return run_command(args, 90s);
  }

  // A recipe folder with one recipe (and its artifact), signed by `signers`.
  fs::path recipe_dir(const std::string& tag, const std::string& version, const std::vector<std::string>& signers,
                      const std::string& artifact = "echo hello\n") {
    const fs::path d = dir_.path() / ("r-" + tag);
    const fs::path a = dir_.path() / ("a-" + tag);
    fs::create_directories(d);
    fs::create_directories(a / "com.test.Signed" / version);
    write_file(a / "com.test.Signed" / version / "run.sh", artifact);
    const auto digest = run_command({"/bin/sh", "-c", "openssl dgst -sha256 -binary '" +
                                                     (a / "com.test.Signed" / version / "run.sh").string() +
                                                     "' | base64 -w0"});
    const fs::path recipe = d / ("com.test.Signed-" + version + ".yaml");
    write_file(recipe, "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Signed\nComponentVersion: '" + version +
                           "'\nManifests:\n  - Lifecycle:\n      Run: sh {artifacts:path}/run.sh; exec sleep 3600\n"
                           "    Artifacts:\n      - URI: s3://bucket/com.test.Signed/run.sh\n        Digest: " +
                           digest.output + "\n        Algorithm: SHA-256\n");
    for (const auto& s : signers) {
      auto r = cli_offline({"sign", recipe.string(), "--key", (keys() / (s + ".key")).string()});
      EXPECT_EQ(r.exit_code, 0) << r.output;
    }
    return d;
  }

  CommandResult deploy(const std::string& tag, const std::string& version, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"deployment", "create", "--recipeDir", (dir_.path() / ("r-" + tag)).string(),
                                  "--artifactDir", (dir_.path() / ("a-" + tag)).string(), "--merge",
                                  "com.test.Signed=" + version, "--wait", "--timeout", "60"};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(args);
  }

  nlohmann::json details() {
    auto r = cli({"component", "details", "com.test.Signed", "--json"});
    if (r.exit_code != 0) return nlohmann::json();
    return nlohmann::json::parse(r.output)["componentDetails"];
  }

  // Deploys a rejected variant and checks that the running 1.0.0 is untouched.
  void expect_rejected(const std::string& tag, const std::string& version, const std::string& reason) {
    const auto before = details();
    auto r = deploy(tag, version);
    EXPECT_NE(r.exit_code, 0) << tag << ": " << r.output;
    EXPECT_THAT(r.output, HasSubstr(reason)) << tag;
    EXPECT_THAT(r.output, HasSubstr("Nothing was changed")) << tag;
    const auto after = details();
    EXPECT_EQ(after["version"], before["version"]) << tag;
    EXPECT_EQ(after["pid"], before["pid"]) << tag;
    EXPECT_EQ(after["state"], "RUNNING") << tag;
    EXPECT_FALSE(fs::exists(root() / "packages" / "recipes" / ("com.test.Signed-" + version + ".yaml"))) << tag;
  }

  TempDir dir_;
  std::unique_ptr<Canopyd> daemon_;
};

TEST_F(SignedDeployments, TheSignatureMatrix) {
  start(config({"ecdsa", "ed25519", "expired", "revoked"}));
  // Valid ECDSA P-256: accepted, and the signature is kept beside the installed recipe.
  recipe_dir("ecdsa", "1.0.0", {"ecdsa"});
  auto ok = deploy("ecdsa", "1.0.0");
  ASSERT_EQ(ok.exit_code, 0) << ok.output << daemon_->logs();
  EXPECT_TRUE(fs::exists(root() / "packages" / "recipes" / "com.test.Signed-1.0.0.yaml.sig"));
  ASSERT_EQ(details()["state"], "RUNNING");

  recipe_dir("unsigned", "1.1.0", {});
  expect_rejected("unsigned", "1.1.0", "is not signed");
  recipe_dir("stranger", "1.1.0", {"stranger"});
  expect_rejected("stranger", "1.1.0", keyid_of(keys() / "stranger.pub").substr(0, 8));
  recipe_dir("expired", "1.1.0", {"expired"});
  expect_rejected("expired", "1.1.0", "expired");
  recipe_dir("revoked", "1.1.0", {"revoked"});
  expect_rejected("revoked", "1.1.0", "revoked");
  // One byte changed after signing.
  const fs::path tampered = recipe_dir("tampered", "1.1.0", {"ecdsa"}) / "com.test.Signed-1.1.0.yaml";
  auto text = read_file(tampered);
  text[text.find("exec sleep 3600")] = 'E';
  write_file(tampered, text);
  expect_rejected("tampered", "1.1.0", "does not match");
  // The artifact changed after the recipe pinned its digest.
  recipe_dir("artifact", "1.1.0", {"ecdsa"});
  write_file(dir_.path() / "a-artifact" / "com.test.Signed" / "1.1.0" / "run.sh", "echo evil\n");
  expect_rejected("artifact", "1.1.0", "digest");
  // A downgrade is refused unless asked for.
  recipe_dir("older", "0.9.0", {"ecdsa"});
  expect_rejected("older", "0.9.0", "is older than the installed 1.0.0");

  // Valid Ed25519: accepted.
  recipe_dir("ed", "1.2.0", {"ed25519"});
  auto ed = deploy("ed", "1.2.0");
  ASSERT_EQ(ed.exit_code, 0) << ed.output;
  EXPECT_EQ(details()["version"], "1.2.0");
  // And the downgrade when asked for.
  auto down = deploy("older", "0.9.0", {"--allow-downgrade"});
  ASSERT_EQ(down.exit_code, 0) << down.output;
  EXPECT_EQ(details()["version"], "0.9.0");
}

TEST_F(SignedDeployments, TwoOfThreeSignersAreNeeded) {
  start(config({"ecdsa", "second", "third"}, 2));
  recipe_dir("two", "1.0.0", {"ecdsa", "third"});
  auto ok = deploy("two", "1.0.0");
  ASSERT_EQ(ok.exit_code, 0) << ok.output << daemon_->logs();
  ASSERT_EQ(details()["state"], "RUNNING");
  recipe_dir("one", "1.1.0", {"second"});
  expect_rejected("one", "1.1.0", "2 are required");
  // The same key twice counts once.
  recipe_dir("twice", "1.1.0", {"second", "second"});
  expect_rejected("twice", "1.1.0", "2 are required");
}

TEST_F(SignedDeployments, WithoutTrustedSignersEveryDeploymentIsRejectedClearly) {
  start("services:\n  canopy.Nucleus:\n    configuration:\n      deployment:\n        requireSignatures: true\n");
  EXPECT_THAT(daemon_->logs(), HasSubstr("every deployment will be rejected until deployment.trustedSigners lists"));
  recipe_dir("ecdsa", "1.0.0", {"ecdsa"});
  auto r = deploy("ecdsa", "1.0.0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("trusts 0 signer(s) for a threshold of 1"));
  EXPECT_TRUE(details().is_null());
}

}  // namespace
}  // namespace canopy::test
