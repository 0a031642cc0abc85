// canopy keygen, sign and verify run as the real binary on files (no canopyd).
#include <filesystem>
#include <regex>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::HasSubstr;

CommandResult cli(std::vector<std::string> args) {
  args.insert(args.begin(), canopy_cli_path().string());
  return run_command(args, 60s);
}

/// The keyid printed by keygen or sign.
std::string keyid_in(const std::string& output) {
  std::smatch m;
  static const std::regex kKeyid("keyid ([0-9a-f]{64})");
  return std::regex_search(output, m, kKeyid) ? m[1].str() : std::string();
}

class SignCli : public ::testing::Test {
 protected:
  void SetUp() override {
    recipe_ = (dir_.path() / "com.example.Hello-1.0.0.yaml").string();
    write_file(recipe_,
               "RecipeFormatVersion: '2020-01-25'\nComponentName: com.example.Hello\nComponentVersion: 1.0.0\n");
  }
  std::string key(const std::string& name) const { return (dir_.path() / name).string(); }

  TempDir dir_;
  std::string recipe_;
};

TEST_F(SignCli, KeygenSignVerify) {
  for (const std::string alg : {"ecdsa-p256", "ed25519"}) {
    SCOPED_TRACE(alg);
    const std::string prefix = key("signer-" + alg);
    auto g = cli({"keygen", "--out", prefix, "--alg", alg});
    ASSERT_EQ(g.exit_code, 0) << g.output;
    const std::string id = keyid_in(g.output);
    ASSERT_FALSE(id.empty()) << g.output;

    struct stat st {};
    ASSERT_EQ(::stat((prefix + ".key").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_TRUE(fs::exists(prefix + ".pub"));

    auto s = cli({"sign", recipe_, "--key", prefix + ".key"});
    ASSERT_EQ(s.exit_code, 0) << s.output;
    EXPECT_EQ(keyid_in(s.output), id);

    auto v = cli({"verify", recipe_, "--trust", prefix + ".pub"});
    ASSERT_EQ(v.exit_code, 0) << v.output;
    EXPECT_THAT(v.output, HasSubstr(recipe_ + ": signed by 1 trusted key (" + id + ")"));
  }
  // Both signatures are in the one .sig; signing again replaces an entry rather than adding one.
  auto again = cli({"sign", recipe_, "--key", key("signer-ed25519.key")});
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_THAT(again.output, HasSubstr("holds 2 signatures"));
  auto both = cli({"verify", recipe_, "--trust", key("signer-ecdsa-p256.pub"), "--trust", key("signer-ed25519.pub")});
  ASSERT_EQ(both.exit_code, 0) << both.output;
  EXPECT_THAT(both.output, HasSubstr("signed by 2 trusted keys"));
}

TEST_F(SignCli, TamperedRecipeFailsWithTheReason) {
  ASSERT_EQ(cli({"keygen", "--out", key("k")}).exit_code, 0);
  ASSERT_EQ(cli({"sign", recipe_, "--key", key("k.key")}).exit_code, 0);
  write_file(recipe_, read_file(recipe_) + "# changed\n");
  auto v = cli({"verify", recipe_, "--trust", key("k.pub")});
  EXPECT_EQ(v.exit_code, 1) << v.output;
  EXPECT_THAT(v.output, HasSubstr("does not match the recipe (was it changed after signing?)"));
}

TEST_F(SignCli, UnsignedAndUntrustedAreRefused) {
  ASSERT_EQ(cli({"keygen", "--out", key("a")}).exit_code, 0);
  ASSERT_EQ(cli({"keygen", "--out", key("b"), "--alg", "ed25519"}).exit_code, 0);
  auto unsigned_ = cli({"verify", recipe_, "--trust", key("a.pub")});
  EXPECT_EQ(unsigned_.exit_code, 1);
  EXPECT_THAT(unsigned_.output, HasSubstr("is not signed (no " + recipe_ + ".sig)"));
  ASSERT_EQ(cli({"sign", recipe_, "--key", key("b.key")}).exit_code, 0);
  auto untrusted = cli({"verify", recipe_, "--trust", key("a.pub")});
  EXPECT_EQ(untrusted.exit_code, 1);
  EXPECT_THAT(untrusted.output, HasSubstr("is signed only by keys this device does not trust"));
}

TEST_F(SignCli, VerifyAppliesTheConfigurationPolicy) {
  ASSERT_EQ(cli({"keygen", "--out", key("a")}).exit_code, 0);
  ASSERT_EQ(cli({"keygen", "--out", key("b"), "--alg", "ed25519"}).exit_code, 0);
  ASSERT_EQ(cli({"sign", recipe_, "--key", key("a.key")}).exit_code, 0);
  const auto config = dir_.path() / "config.yaml";
  const auto write_config = [&](const std::string& extra) {
    write_file(config,
               "services:\n  canopy.Nucleus:\n    configuration:\n      deployment:\n"
               "        requireSignatures: false\n" +
                   extra +
                   "        trustedSigners:\n"
                   "          - publicKeyPath: a.pub\n"
                   "            notAfter: 9999-12-31T23:59:59Z\n"
                   "          - publicKeyPath: b.pub\n");
  };
  write_config("");
  auto ok = cli({"verify", recipe_, "--config", config.string()});
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
  write_config("        signatureThreshold: 2\n");
  auto two = cli({"verify", recipe_, "--config", config.string()});
  EXPECT_EQ(two.exit_code, 1) << two.output;
  EXPECT_THAT(two.output, HasSubstr("has 1 valid signature, 2 are required"));
  ASSERT_EQ(cli({"sign", recipe_, "--key", key("b.key")}).exit_code, 0);
  two = cli({"verify", recipe_, "--config", config.string()});
  EXPECT_EQ(two.exit_code, 0) << two.output;
}

TEST_F(SignCli, KeygenRefusesToOverwriteUnlessForced) {
  auto first = cli({"keygen", "--out", key("k")});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const std::string before = read_file(key("k.key"));
  auto second = cli({"keygen", "--out", key("k")});
  EXPECT_EQ(second.exit_code, 1);
  EXPECT_THAT(second.output, HasSubstr("already exists"));
  EXPECT_EQ(read_file(key("k.key")), before);
  auto forced = cli({"keygen", "--out", key("k"), "--force"});
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_NE(read_file(key("k.key")), before);
  struct stat st {};
  ASSERT_EQ(::stat(key("k.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(SignCli, SignRefusesAnRsaKey) {
  const auto rsa = key("rsa.key");
  if (!fs::exists("/usr/bin/openssl")) GTEST_SKIP() << "no /usr/bin/openssl";
  auto gen = run_command({"/usr/bin/openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa});
  if (gen.exit_code != 0) GTEST_SKIP() << "openssl genpkey failed: " << gen.output;
  auto s = cli({"sign", recipe_, "--key", rsa});
  EXPECT_EQ(s.exit_code, 1);
  EXPECT_THAT(s.output, HasSubstr("RSA key; only ECDSA P-256 and Ed25519 keys can sign recipes"));
  EXPECT_FALSE(fs::exists(recipe_ + ".sig"));
}

}  // namespace
}  // namespace canopy::test
