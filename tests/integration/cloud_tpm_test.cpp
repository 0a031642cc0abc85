// The cloud link with the device key in a TPM: a real software TPM (swtpm + dbus-daemon +
// tpm2-abrmd), a key created in it, its certificate signed by the test CA, and canopyd
// connecting to the TLS "cloud" with `handle:0x81000001` and with a TSS2 PEM key file.
#include <gmock/gmock.h>

#include "integration/cloud_fixture.hpp"
#include "support/tpm.hpp"

namespace canopy::test::cloud {
namespace {

using ::testing::HasSubstr;

class CloudTpm : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const auto why = SoftwareTpm::unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
  }
};

void connect_and_publish(const std::string& key_uri, bool key_is_file, const std::string& expect_key) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  SoftwareTpm tpm(dir.path() / "tpm");
  const auto crt = dir.path() / "device.crt";
  tpm.make_certificate(key_uri, "gw-tpm", cloud.pki, crt);
  if (key_is_file) fs::permissions(key_uri, fs::perms(0600));
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));

  auto cfg = cloud.config_for(cloud.broker.port());
  cfg.cert = crt;
  cfg.private_key_override = key_uri;
  Canopyd d(dir.path(), {.config_yaml = yaml(cfg), .extra_args = {}, .env = tpm.environment(), .foreground = true,
                         .notify = true});
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }))
      << status(d).dump(2);
  EXPECT_THAT(status(d)["cloud"]["key"].get<std::string>(), HasSubstr(expect_key));
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  for (int i = 0; i < 5; ++i)
    ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/tpm", "tele/tpm:" + std::to_string(i))));
  ASSERT_TRUE(watcher->wait_for(5, 20s));
  EXPECT_EQ(watcher->messages()[4].payload, "tele/tpm:4");
}

TEST_F(CloudTpm, ConnectsWithAPersistentHandle) {
  connect_and_publish("handle:0x81000001", false, "TPM handle 0x81000001");
}

TEST_F(CloudTpm, ConnectsWithATss2KeyFile) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  SoftwareTpm tpm(dir.path() / "tpm");
  const auto crt = dir.path() / "device.crt";
  const std::string key = tpm.tss2_key_path().string();
  tpm.make_certificate(key, "gw-tpm-file", cloud.pki, crt);
  fs::permissions(key, fs::perms(0600));
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));
  auto cfg = cloud.config_for(cloud.broker.port());
  cfg.cert = crt;
  cfg.private_key_override = key;
  Canopyd d(dir.path(), {.config_yaml = yaml(cfg), .extra_args = {}, .env = tpm.environment(), .foreground = true,
                         .notify = true});
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return cloud_state_is(s, "connected"); }))
      << status(d).dump(2);
  EXPECT_THAT(status(d)["cloud"]["key"].get<std::string>(), HasSubstr("TPM key file"));
  auto c = ipc_connect(d);
  ASSERT_TRUE(c);
  ASSERT_TRUE(c->call("aws.greengrass#PublishToIoTCore", publish_request("tele/tpm", "tele/tpm:1")));
  ASSERT_TRUE(watcher->wait_for(1, 20s));
}

TEST_F(CloudTpm, RefusesToStartWhenTheTpmCannotBeReached) {
  TempDir dir;
  CloudBroker cloud(dir.path());
  auto cfg = cloud.config_for(cloud.broker.port());
  cfg.private_key_override = "handle:0x81000001";
  // A TCTI pointing at a port where no TPM listens.
  const std::string tcti = "swtpm:host=127.0.0.1,port=" + std::to_string(free_port());
  Canopyd d(dir.path(), {.config_yaml = yaml(cfg), .extra_args = {}, .env = {{"TPM2OPENSSL_TCTI", tcti}},
                         .foreground = true, .notify = true});
  EXPECT_FALSE(d.wait_ready(15s));
  auto code = d.process().wait(15s);
  ASSERT_TRUE(code.has_value());
  EXPECT_NE(*code, 0);
  EXPECT_THAT(d.logs(), HasSubstr("cannot use the TPM for the device key handle:0x81000001"));
}

}  // namespace
}  // namespace canopy::test::cloud
