// Artifacts against a real canopyd: ZIP archives (a good one, zip slip, a zip bomb, a symbolic
// link, odd permission bits), file:// URIs, s3:// URIs that would need a download, and stale
// versions removed after a successful deployment.
#include <filesystem>

#include <pwd.h>
#include <sys/stat.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

const fs::path kPython = "/usr/bin/python3";

class Artifacts : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0 || !::getpwnam("ggc_user")) GTEST_SKIP() << "needs root and ggc_user (scripts/setup.d/users.sh)";
    if (!fs::exists(kPython)) GTEST_SKIP() << "python3 is needed to build the test archives";
    fs::create_directories(recipes());
    fs::create_directories(artifacts());
    Canopyd::Options o;
    o.config_yaml = "services:\n  canopy.Nucleus:\n    configuration:\n      lifecycle:\n        stopGraceSeconds: 1\n";
    daemon_ = std::make_unique<Canopyd>(dir_.path(), o);
    ASSERT_TRUE(daemon_->wait_ready()) << daemon_->logs();
  }

  fs::path recipes() const { return dir_.path() / "recipes"; }
  fs::path artifacts() const { return dir_.path() / "artifacts"; }
  fs::path root() const { return dir_.path() / "root"; }

  // Builds a ZIP with Python's zipfile. `entries` is Python code adding entries to `z`.
  fs::path make_zip(const std::string& name, const std::string& version, const std::string& entries) {
    const fs::path dir = artifacts() / "com.test.Zip" / version;
    fs::create_directories(dir);
    const fs::path file = dir / (name + ".zip");
    auto r = run_command({kPython.string(), "-c",
                          "import zipfile, sys\nz = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n" + entries +
                              "\nz.close()\n",
                          file.string()});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return file;
  }

  void zip_recipe(const std::string& name, const std::string& version) {
    write_file(recipes() / ("com.test.Zip-" + version + ".yaml"),
               "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Zip\nComponentVersion: '" + version +
                   "'\nManifests:\n  - Lifecycle:\n      Run: ls -l {artifacts:decompressedPath}/" + name +
                   "/; cat {artifacts:decompressedPath}/" + name + "/hello.txt; exec sleep 3600\n"
                   "    Artifacts:\n      - URI: s3://bucket/" + name + ".zip\n        Unarchive: ZIP\n");
  }

  CommandResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), {canopy_cli_path().string(), "--root", root().string()});
    return run_command(args, 90s);
  }

  CommandResult deploy(const std::string& component, const std::string& version, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"deployment", "create", "--recipeDir", recipes().string(), "--artifactDir",
                                  artifacts().string(), "--merge", component + "=" + version, "--wait", "--timeout", "60"};
    args.insert(args.end(), extra.begin(), extra.end());
    return cli(args);
  }

  std::string log_of(const std::string& name) {
    std::error_code ec;
    return fs::exists(root() / "logs" / (name + ".log"), ec) ? read_file(root() / "logs" / (name + ".log")) : "";
  }

  void expect_rejected_zip(const std::string& name, const std::string& reason) {
    auto r = deploy("com.test.Zip", "1.0.0");
    EXPECT_NE(r.exit_code, 0) << name;
    EXPECT_THAT(r.output, HasSubstr(reason)) << name;
    EXPECT_THAT(r.output, HasSubstr("Nothing was changed")) << name;
    EXPECT_FALSE(fs::exists(root() / "packages" / "artifacts-unarchived" / "com.test.Zip")) << name;
    EXPECT_FALSE(fs::exists(root() / "packages" / "artifacts" / "com.test.Zip")) << name;
  }

  TempDir dir_;
  std::unique_ptr<Canopyd> daemon_;
};

TEST_F(Artifacts, AGoodArchiveUnpacksWithSafeModes) {
  make_zip("bundle", "1.0.0",
           "z.writestr('hello.txt', 'hello from the archive\\n')\n"
           "i = zipfile.ZipInfo('tool.sh'); i.external_attr = (0o104777 << 16); z.writestr(i, 'echo tool\\n')\n"
           "i = zipfile.ZipInfo('sub/data.bin'); i.external_attr = (0o100600 << 16); z.writestr(i, 'x' * 10)\n");
  zip_recipe("bundle", "1.0.0");
  auto r = deploy("com.test.Zip", "1.0.0");
  ASSERT_EQ(r.exit_code, 0) << r.output << daemon_->logs();
  const fs::path out = root() / "packages" / "artifacts-unarchived" / "com.test.Zip" / "1.0.0" / "bundle";
  ASSERT_TRUE(fs::exists(out / "hello.txt"));
  struct stat st {};
  ASSERT_EQ(::stat((out / "tool.sh").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u) << "setuid and world-write bits must be dropped";
  ASSERT_EQ(::stat((out / "sub" / "data.bin").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_EQ(st.st_uid, ::getpwnam("ggc_user")->pw_uid);
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < until && log_of("com.test.Zip").find("hello from the archive") == std::string::npos)
    std::this_thread::sleep_for(50ms);
  EXPECT_THAT(log_of("com.test.Zip"), HasSubstr("hello from the archive"));
}

TEST_F(Artifacts, ZipSlipIsRefused) {
  make_zip("slip", "1.0.0", "z.writestr('hello.txt', 'hi')\nz.writestr('../../../../evil.txt', 'pwned')\n");
  zip_recipe("slip", "1.0.0");
  expect_rejected_zip("slip", "points outside the archive (zip slip)");
  EXPECT_FALSE(fs::exists(dir_.path() / "evil.txt"));
  EXPECT_FALSE(fs::exists(root() / "evil.txt"));
}

TEST_F(Artifacts, AZipBombIsRefused) {
  make_zip("bomb", "1.0.0", "z.writestr('hello.txt', 'hi')\nz.writestr('zeros.bin', b'\\0' * (64 * 1024 * 1024))\n");
  zip_recipe("bomb", "1.0.0");
  expect_rejected_zip("bomb", "looks like a zip bomb");
}

TEST_F(Artifacts, ASymbolicLinkInAnArchiveIsRefused) {
  make_zip("link", "1.0.0",
           "z.writestr('hello.txt', 'hi')\n"
           "i = zipfile.ZipInfo('passwd'); i.external_attr = (0o120777 << 16); z.writestr(i, '/etc/passwd')\n");
  zip_recipe("link", "1.0.0");
  expect_rejected_zip("link", "is a symbolic link");
}

TEST_F(Artifacts, FileUrisAreCopiedAndS3UrisThatNeedADownloadAreRefusedClearly) {
  const fs::path elsewhere = dir_.path() / "elsewhere" / "tool.sh";
  write_file(elsewhere, "echo from-a-file-uri\n");
  write_file(recipes() / "com.test.File-1.0.0.yaml",
             "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.File\nComponentVersion: '1.0.0'\n"
             "Manifests:\n  - Lifecycle:\n      Run: sh {artifacts:path}/tool.sh; exec sleep 3600\n"
             "    Artifacts:\n      - URI: file://" + elsewhere.string() + "\n");
  auto r = deploy("com.test.File", "1.0.0");
  ASSERT_EQ(r.exit_code, 0) << r.output << daemon_->logs();
  EXPECT_TRUE(fs::exists(root() / "packages" / "artifacts" / "com.test.File" / "1.0.0" / "tool.sh"));

  write_file(recipes() / "com.test.S3-1.0.0.yaml",
             "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.S3\nComponentVersion: '1.0.0'\n"
             "Manifests:\n  - Lifecycle:\n      Run: exec sleep 3600\n"
             "    Artifacts:\n      - URI: s3://bucket/com.test.S3/app.bin\n");
  auto s3 = deploy("com.test.S3", "1.0.0");
  EXPECT_NE(s3.exit_code, 0);
  EXPECT_THAT(s3.output, HasSubstr("downloading s3:// artifacts is not supported yet; put app.bin in"));
}

TEST_F(Artifacts, StaleVersionsAreRemovedAfterASuccessfulDeployment) {
  for (const std::string v : {"1.0.0", "2.0.0"}) {
    fs::create_directories(artifacts() / "com.test.Ver" / v);
    write_file(artifacts() / "com.test.Ver" / v / "app.sh", "echo " + v + "\n");
    write_file(recipes() / ("com.test.Ver-" + v + ".yaml"),
               "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Ver\nComponentVersion: '" + v +
                   "'\nManifests:\n  - Lifecycle:\n      Run: sh {artifacts:path}/app.sh; exec sleep 3600\n"
                   "    Artifacts:\n      - URI: s3://bucket/app.sh\n");
  }
  ASSERT_EQ(deploy("com.test.Ver", "1.0.0").exit_code, 0) << daemon_->logs();
  ASSERT_EQ(deploy("com.test.Ver", "2.0.0").exit_code, 0) << daemon_->logs();
  EXPECT_TRUE(fs::exists(root() / "packages" / "artifacts" / "com.test.Ver" / "2.0.0"));
  EXPECT_FALSE(fs::exists(root() / "packages" / "artifacts" / "com.test.Ver" / "1.0.0"));
  EXPECT_FALSE(fs::exists(root() / "packages" / "recipes" / "com.test.Ver-1.0.0.yaml"));
  EXPECT_TRUE(fs::exists(root() / "packages" / "recipes" / "com.test.Ver-2.0.0.yaml"));
}

TEST(ArtifactsStoreCap, ADeploymentThatWouldOverfillTheStoreIsRefused) {
  if (::geteuid() != 0 || !::getpwnam("ggc_user")) GTEST_SKIP() << "needs root and ggc_user (scripts/setup.d/users.sh)";
  TempDir dir;
  Canopyd::Options o;
  o.config_yaml = "services:\n  canopy.Nucleus:\n    configuration:\n      deployment:\n        componentStoreMaxSizeBytes: 100000\n";
  Canopyd d(dir.path(), o);
  ASSERT_TRUE(d.wait_ready()) << d.logs();
  fs::create_directories(dir.path() / "a" / "com.test.Big" / "1.0.0");
  write_file(dir.path() / "a" / "com.test.Big" / "1.0.0" / "big.bin", std::string(200000, 'x'));
  fs::create_directories(dir.path() / "r");
  write_file(dir.path() / "r" / "com.test.Big-1.0.0.yaml",
             "RecipeFormatVersion: '2020-01-25'\nComponentName: com.test.Big\nComponentVersion: '1.0.0'\n"
             "Manifests:\n  - Lifecycle:\n      Run: exec sleep 3600\n    Artifacts:\n      - URI: s3://b/big.bin\n");
  auto r = run_command({canopy_cli_path().string(), "--root", (dir.path() / "root").string(), "deployment", "create",
                        "--recipeDir", (dir.path() / "r").string(), "--artifactDir", (dir.path() / "a").string(),
                        "--merge", "com.test.Big=1.0.0", "--wait", "--timeout", "60"},
                       90s);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_THAT(r.output, HasSubstr("above deployment.componentStoreMaxSizeBytes"));
  EXPECT_FALSE(fs::exists(dir.path() / "root" / "packages" / "artifacts" / "com.test.Big"));
}

}  // namespace
}  // namespace canopy::test
