// Settings validation, the generated mosquitto.conf and ACL, and the local CA.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <unistd.h>

#include "canopy/broker/local_ca.hpp"
#include "canopy/broker/settings.hpp"

namespace canopy::broker {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(BrokerSettings, DefaultsWhenAbsent) {
  auto s = parse_settings(nlohmann::json::object());
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->enabled);
  EXPECT_EQ(s->local_port, 1883);
  EXPECT_EQ(s->tls_port, 8883);
  EXPECT_EQ(s->tls_bind_address, "0.0.0.0");
  EXPECT_EQ(s->max_queued_messages, 10000u);
  EXPECT_EQ(s->max_queued_bytes, 64ull << 20);
  EXPECT_EQ(s->max_inflight_messages, 1000u);
  EXPECT_TRUE(s->persistence);
  EXPECT_TRUE(s->client_devices.empty());
  EXPECT_TRUE(parse_settings(nullptr));
}

TEST(BrokerSettings, AcceptsStringsFromYamlAndTheCli) {
  auto s = parse_settings({{"localPort", "2883"}, {"persistence", "false"}, {"unknownKeyOfTheBridge", 1}});
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->local_port, 2883);
  EXPECT_FALSE(s->persistence);
}

void expect_error(const nlohmann::json& c, const std::string& part) {
  auto s = parse_settings(c);
  ASSERT_FALSE(s) << c.dump();
  EXPECT_EQ(s.error().code, errc::config);
  EXPECT_THAT(s.error().message, HasSubstr(part)) << c.dump();
}

TEST(BrokerSettings, ErrorsNameTheKey) {
  expect_error({{"localPort", 70000}}, "services.canopy.LocalBroker.configuration.localPort must be an integer from 0");
  expect_error({{"localPort", "abc"}}, "localPort must be");
  expect_error({{"tlsPort", -1}}, "configuration.tlsPort must be");
  expect_error({{"tlsBindAddress", "example.com"}}, "tlsBindAddress must be an IPv4 or IPv6 address");
  expect_error({{"maxQueuedMessages", 0}}, "maxQueuedMessages must be an integer from 1");
  expect_error({{"maxInflightMessages", true}}, "maxInflightMessages must be");
  expect_error({{"maxQueuedBytes", -5}}, "maxQueuedBytes must be");
  expect_error({{"persistence", "yes"}}, "persistence must be true or false");
  expect_error({{"enabled", 1}}, "enabled must be true or false");
  expect_error({{"localPort", 0}, {"tlsPort", 0}}, "are both 0");
  expect_error({{"localPort", 5000}, {"tlsPort", 5000}}, "need different ports");
  expect_error({{"clientDevices", {"a", "b"}}}, "clientDevices must be a mapping");
  expect_error({{"clientDevices", {{"bad name", nullptr}}}}, "invalid device name \"bad name\"");
  expect_error({{"clientDevices", {{"d", {{"publish", "x"}}}}}}, "clientDevices.d.publish must be a list");
  expect_error({{"clientDevices", {{"d", {{"publish", {"a/#/b"}}}}}}}, "clientDevices.d.publish[0] is not a valid topic filter");
  expect_error({{"clientDevices", {{"d", {{"subscribe", {"ok", "a+"}}}}}}}, "clientDevices.d.subscribe[1]");
  expect_error({{"clientDevices", {{"d", {{"subscribe", {""}}}}}}}, "it is empty");
  expect_error({{"clientDevices", {{"d", {{"subscribe", {"a\nb"}}}}}}}, "NUL, CR or LF");
  EXPECT_TRUE(parse_settings({{"localPort", 0}, {"tlsPort", 0}, {"enabled", false}}));
}

TEST(BrokerSettings, DeviceNames) {
  EXPECT_TRUE(valid_device_name("dev-1.a_B"));
  EXPECT_TRUE(valid_device_name(std::string(64, 'a')));
  EXPECT_FALSE(valid_device_name(std::string(65, 'a')));
  EXPECT_FALSE(valid_device_name(""));
  EXPECT_FALSE(valid_device_name("a/b"));
  EXPECT_FALSE(valid_device_name("a b"));
}

bool has_line(const std::string& text, const std::string& line) {
  return ("\n" + text).find("\n" + line + "\n") != std::string::npos;
}

TEST(BrokerConfig, ListenersAndTheirSecurity) {
  auto s = parse_settings({{"localPort", 1884},
                           {"tlsPort", 8884},
                           {"clientDevices", {{"dev1", {{"publish", {"dev/dev1/#"}}, {"subscribe", {"cmd/dev1"}}}}}}});
  ASSERT_TRUE(s);
  const auto files = BrokerFiles::under("/var/lib/canopy");
  const std::string c = render_mosquitto_conf(*s, files, "mosquitto");
  // General options first, then listeners, each with its own security settings.
  EXPECT_EQ(c.find("per_listener_settings true\n"), c.find('\n', c.find('\n', 0) + 1) + 1);
  EXPECT_LT(c.find("per_listener_settings true"), c.find("listener "));
  EXPECT_LT(c.find("log_dest stdout"), c.find("listener "));
  EXPECT_LT(c.find("max_inflight_messages"), c.find("listener "));
  EXPECT_TRUE(has_line(c, "user mosquitto"));
  EXPECT_TRUE(has_line(c, "log_dest stdout"));
  EXPECT_TRUE(has_line(c, "log_timestamp true"));
  EXPECT_TRUE(has_line(c, "set_tcp_nodelay true"));
  EXPECT_TRUE(has_line(c, "max_queued_messages 10000"));
  EXPECT_TRUE(has_line(c, "max_queued_bytes 67108864"));
  EXPECT_TRUE(has_line(c, "max_inflight_messages 1000"));
  EXPECT_TRUE(has_line(c, "persistence true"));
  EXPECT_TRUE(has_line(c, "persistence_location /var/lib/canopy/broker/data/"));
  EXPECT_TRUE(has_line(c, "autosave_interval 60"));
  const auto local = c.find("listener 1884 127.0.0.1\n");
  const auto tls = c.find("listener 8884 0.0.0.0\n");
  ASSERT_NE(local, std::string::npos) << c;
  ASSERT_NE(tls, std::string::npos) << c;
  ASSERT_LT(local, tls);
  const std::string local_block = c.substr(local, tls - local);
  const std::string tls_block = c.substr(tls);
  EXPECT_TRUE(has_line(local_block, "allow_anonymous true"));
  EXPECT_THAT(local_block, Not(HasSubstr("acl_file")));
  EXPECT_TRUE(has_line(tls_block, "allow_anonymous false"));
  EXPECT_TRUE(has_line(tls_block, "require_certificate true"));
  EXPECT_TRUE(has_line(tls_block, "use_identity_as_username true"));
  EXPECT_TRUE(has_line(tls_block, "cafile /var/lib/canopy/broker/ca/ca.crt"));
  EXPECT_TRUE(has_line(tls_block, "certfile /var/lib/canopy/broker/server.crt"));
  EXPECT_TRUE(has_line(tls_block, "keyfile /var/lib/canopy/broker/server.key"));
  EXPECT_TRUE(has_line(tls_block, "acl_file /var/lib/canopy/broker/acl"));
  EXPECT_THAT(tls_block, Not(HasSubstr("allow_anonymous true")));
  // Comments only on their own lines: no line has a value followed by '#'.
  std::size_t start = 0;
  while (start < c.size()) {
    const auto end = c.find('\n', start);
    const std::string line = c.substr(start, end - start);
    if (!line.empty() && line[0] != '#') {
      EXPECT_EQ(line.find('#'), std::string::npos) << line;
    }
    start = end + 1;
  }
  const std::string acl = render_acl(*s);
  EXPECT_THAT(acl, HasSubstr("\nuser dev1\ntopic write dev/dev1/#\ntopic read cmd/dev1\n"));
}

TEST(BrokerConfig, NoAnonymousListenerBeyondLoopback) {
  auto s = parse_settings({{"localPort", 0}, {"tlsBindAddress", "::"}, {"persistence", false}});
  ASSERT_TRUE(s);
  const std::string c = render_mosquitto_conf(*s, BrokerFiles::under("/r"), "");
  EXPECT_THAT(c, Not(HasSubstr("allow_anonymous true")));
  EXPECT_THAT(c, Not(HasSubstr("\nuser ")));
  EXPECT_TRUE(has_line(c, "listener 8883 ::"));
  EXPECT_TRUE(has_line(c, "persistence false"));
  EXPECT_THAT(c, Not(HasSubstr("persistence_location")));
}

TEST(LocalCa, CreatesKeepsAndIssues) {
  char tmpl[] = "/tmp/canopy-ca-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  const std::filesystem::path dir = tmpl;
  {
    auto ca = LocalCa::open_or_create(dir / "ca");
    ASSERT_TRUE(ca) << ca.error().message;
    EXPECT_EQ(std::filesystem::status(dir / "ca" / "ca.key").permissions(), std::filesystem::perms::owner_read |
                                                                             std::filesystem::perms::owner_write);
    auto again = LocalCa::open_or_create(dir / "ca");
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_EQ(again->certificate_pem(), ca->certificate_pem());

    auto bad = ca->issue_client("no/slash", 30);
    ASSERT_FALSE(bad);
    EXPECT_EQ(bad.error().code, errc::invalid);
    EXPECT_FALSE(ca->issue_client("dev1", 0));

    auto dev = ca->issue_client("dev1", 30);
    ASSERT_TRUE(dev) << dev.error().message;
    BIO* b = BIO_new_mem_buf(dev->certificate_pem.data(), static_cast<int>(dev->certificate_pem.size()));
    X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    ASSERT_NE(x, nullptr);
    b = BIO_new_mem_buf(ca->certificate_pem().data(), static_cast<int>(ca->certificate_pem().size()));
    X509* cax = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
    BIO_free(b);
    ASSERT_NE(cax, nullptr);
    EXPECT_EQ(X509_verify(x, X509_get0_pubkey(cax)), 1);
    EXPECT_TRUE(X509_get_extended_key_usage(x) & XKU_SSL_CLIENT);
    EXPECT_EQ(X509_check_ca(cax), 1);
    char cn[80] = {};
    X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof cn);
    EXPECT_STREQ(cn, "dev1");
    X509_free(x);
    X509_free(cax);

    auto first = ca->ensure_server_certificate(dir / "server.crt", dir / "server.key", {"localhost"}, {"127.0.0.1"}, 825,
                                               std::chrono::hours(24 * 30));
    ASSERT_TRUE(first) << first.error().message;
    EXPECT_TRUE(*first);
    auto second = ca->ensure_server_certificate(dir / "server.crt", dir / "server.key", {"localhost"}, {"127.0.0.1"},
                                                825, std::chrono::hours(24 * 30));
    ASSERT_TRUE(second);
    EXPECT_FALSE(*second);
    // Expiring within the renewal window: renewed.
    auto renew = ca->ensure_server_certificate(dir / "server.crt", dir / "server.key", {"localhost"}, {"127.0.0.1"}, 825,
                                               std::chrono::hours(24 * 900));
    ASSERT_TRUE(renew);
    EXPECT_TRUE(*renew);
  }
  std::filesystem::remove(dir / "ca" / "ca.crt");
  auto incomplete = LocalCa::open_or_create(dir / "ca");
  ASSERT_FALSE(incomplete);
  EXPECT_EQ(incomplete.error().code, errc::corrupt);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace canopy::broker
