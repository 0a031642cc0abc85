// The cloud link with the device key in a TPM: a real software TPM (swtpm + dbus-daemon +
// tpm2-abrmd), a key created in it, its certificate signed by the test CA, and canopyd
// connecting to the TLS "cloud" with `handle:0x81000001` and with a TSS2 PEM key file.
#include <fstream>

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

// The local CA's key in the TPM (canopy.LocalBroker caKey): no ca.key file is written, the CA
// certificate holds the TPM key, and a client device certificate it signs is accepted by the
// managed broker's TLS listener.
TEST_F(CloudTpm, TheLocalCaKeyCanLiveInTheTpm) {
  TempDir dir;
  SoftwareTpm tpm(dir.path() / "tpm");
  const int local_port = free_port(), tls_port = free_port();
  const std::string y = "services:\n  canopy.LocalBroker:\n    configuration:\n      localPort: " +
                        std::to_string(local_port) + "\n      tlsPort: " + std::to_string(tls_port) +
                        "\n      caKey: \"" + tpm.handle_uri() +
                        "\"\n      clientDevices:\n        dev1:\n          publish: ['dev/#']\n          subscribe: ['dev/#']\n";
  Canopyd d(dir.path(), {.config_yaml = y, .extra_args = {}, .env = tpm.environment(), .foreground = true,
                         .notify = true});
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["broker"].value("state", "") == "RUNNING"; }))
      << status(d).dump(2);
  const fs::path ca_dir = d.root() / "broker" / "ca";
  EXPECT_FALSE(fs::exists(ca_dir / "ca.key"));
  // The CA certificate carries the TPM key's public half.
  auto pub = run_command({"/usr/bin/openssl", "x509", "-in", (ca_dir / "ca.crt").string(), "-noout", "-pubkey"});
  std::ifstream in(tpm.device_public_key_pem());
  const std::string tpm_pub((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(pub.output, tpm_pub);

  const fs::path out = dir.path() / "dev1";
  fs::create_directories(out);
  auto issued = run_command({canopy_cli_path().string(), "--root", d.root().string(), "client-device", "issue", "dev1",
                             "--out", out.string()});
  ASSERT_EQ(issued.exit_code, 0) << issued.output;
  auto verify = run_command({"/usr/bin/openssl", "verify", "-CAfile", (out / "ca.crt").string(), (out / "dev1.crt").string()});
  EXPECT_EQ(verify.exit_code, 0) << verify.output;
  MqttClient dev({tls_port, "dev1", out / "ca.crt", out / "dev1.crt", out / "dev1.key", true});
  ASSERT_TRUE(dev.subscribe("dev/#", 1));
  ASSERT_TRUE(dev.publish("dev/x", "signed in the TPM", 1));
  ASSERT_TRUE(dev.wait_for(1, 10s));
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
  EXPECT_THAT(d.logs(), HasSubstr("cannot use the TPM for the key handle:0x81000001 (system.privateKeyPath)"));
}

}  // namespace
}  // namespace canopy::test::cloud
