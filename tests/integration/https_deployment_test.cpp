// Deployments whose artifacts come over https:// from a local HTTPS server (the test PKI's CA
// trusted through deployment.downloadCaFile): a download with a dropped connection resumed,
// a wrong digest refused, a 404 named — each through the real canopyd and CLI.
#include <filesystem>
#include <random>

#include <pwd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/daemon.hpp"
#include "support/https_server.hpp"
#include "support/pki.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

class HttpsDeployments : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || !::getpwnam("ggc_user")) GTEST_SKIP() << "needs root and ggc_user (scripts/setup.d/users.sh)";
    if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 is missing: no HTTPS server to test against";
    pki_ = std::make_unique<TestPki>(dir_.path() / "pki");
    fs::create_directories(served());
    fs::create_directories(recipes());
    // 5 MiB of random bytes, so a dropped connection happens mid-file.
    std::string body(5u << 20, '\0');
    std::mt19937 rng(7);
    for (auto& c : body) c = static_cast<char>(rng());
    write_file(served() / "app.bin", body);
    server_ = std::make_unique<HttpsServer>(*pki_, served(), "server", dir_.path() / "server.log");
    Canopyd::Options o;
    o.config_yaml = "services:\n  canopy.Nucleus:\n    configuration:\n      deployment:\n        downloadCaFile: " +
                    pki_->ca().string() + "\n";
    daemon_ = std::make_unique<Canopyd>(dir_.path(), o);
    ASSERT_TRUE(daemon_->wait_ready()) << daemon_->logs();
  }

  fs::path served() const { return dir_.path() / "served"; }
  fs::path recipes() const { return dir_.path() / "recipes"; }
  fs::path root() const { return dir_.path() / "root"; }

  std::string digest_of(const fs::path& f) {
    return run_command({"/bin/sh", "-c", "openssl dgst -sha256 -binary '" + f.string() + "' | base64 -w0"}).output;
  }

  void recipe(const std::string& version, const std::string& url, const std::string& digest) {
    write_file(recipes() / ("com.test.Web-" + version + ".yaml"),
               "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Web\nComponentVersion: '" + version +
                   "'\nManifests:\n  - Lifecycle:\n      Run: wc -c {artifacts:path}/app.bin; exec sleep 3600\n"
                   "    Artifacts:\n      - URI: " + url + "\n        Digest: " + digest + "\n");
  }

  CommandResult deploy(const std::string& version) {
    return run_command({canopy_cli_path().string(), "--root", root().string(), "deployment", "create", "--recipeDir",
                        recipes().string(), "--merge", "com.test.Web=" + version, "--wait", "--timeout", "120"},
                       150s);
  }

  TempDir dir_;
  std::unique_ptr<TestPki> pki_;
  std::unique_ptr<HttpsServer> server_;
  std::unique_ptr<Canopyd> daemon_;
};

TEST_F(HttpsDeployments, AnArtifactIsDownloadedResumedAfterADropAndDigestChecked) {
  recipe("1.0.0", server_->url("/drop/app.bin"), digest_of(served() / "app.bin"));
  auto r = deploy("1.0.0");
  ASSERT_EQ(r.exit_code, 0) << r.output << daemon_->logs() << server_->log();
  const fs::path installed = root() / "packages" / "artifacts" / "com.test.Web" / "1.0.0" / "app.bin";
  ASSERT_TRUE(fs::exists(installed));
  EXPECT_EQ(fs::file_size(installed), 5u << 20);
  EXPECT_EQ(digest_of(installed), digest_of(served() / "app.bin"));
  EXPECT_THAT(server_->log(), HasSubstr("range=bytes="));  // resumed after the drop
  EXPECT_FALSE(fs::exists(root() / "packages" / "downloads"));  // the download cache is cleared after success
  EXPECT_THAT(daemon_->logs(), HasSubstr("downloading 1 artifact(s)"));
}

TEST_F(HttpsDeployments, AWrongDigestOrA404IsRefusedAndNothingChanges) {
  recipe("1.0.0", server_->url("/app.bin"), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
  auto bad = deploy("1.0.0");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_THAT(bad.output, HasSubstr("Manifests[0].Artifacts[0].Digest: expected the SHA-256 digest"));
  EXPECT_FALSE(fs::exists(root() / "packages" / "artifacts" / "com.test.Web"));

  recipe("1.0.0", server_->url("/missing.bin"), digest_of(served() / "app.bin"));
  auto missing = deploy("1.0.0");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_THAT(missing.output, HasSubstr("cannot download an artifact"));
  EXPECT_THAT(missing.output, HasSubstr("/missing.bin"));
  EXPECT_FALSE(fs::exists(root() / "packages" / "artifacts" / "com.test.Web"));
}

}  // namespace
}  // namespace canopy::test
