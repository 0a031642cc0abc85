// Proves that the test PKI (tests/pki/gen.sh) is what it says, against a real Mosquitto with
// `require_certificate true` and the real mosquitto_pub/mosquitto_sub clients: the valid client
// certificate gets in, every broken one is refused by the TLS handshake, and a server
// certificate for another host name fails the client's verification.
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "support/mosquitto.hpp"
#include "support/pki.hpp"
#include "support/process.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kPub = "/usr/bin/mosquitto_pub";
constexpr const char* kSub = "/usr/bin/mosquitto_sub";
constexpr const char* kTopic = "canopy/pki/test";

struct Client {
  std::string host = "127.0.0.1";
  fs::path cafile;
  std::string cert;  ///< pair name in the PKI ("client", ...); empty: no client certificate
  std::string id;
  std::vector<std::string> extra;
};

// (GCC 12 flags partial designated initializers under -Wextra, hence this helper.)
Client client(std::string cert, std::string id) {
  Client c;
  c.cert = std::move(cert);
  c.id = std::move(id);
  return c;
}

Client with_host(Client c, std::string host) {
  c.host = std::move(host);
  return c;
}

std::vector<std::string> client_args(const TestPki& pki, const Mosquitto& broker, const Client& c) {
  std::vector<std::string> a = {"-h", c.host, "-p", std::to_string(broker.port()), "--cafile",
                                (c.cafile.empty() ? pki.ca() : c.cafile).string(), "-i", c.id};
  if (!c.cert.empty()) {
    const auto p = pki.pair(c.cert);
    a.insert(a.end(), {"--cert", p.crt.string(), "--key", p.key.string()});
  }
  a.insert(a.end(), c.extra.begin(), c.extra.end());
  return a;
}

CommandResult publish(const TestPki& pki, const Mosquitto& broker, const Client& c, const std::string& message) {
  std::vector<std::string> argv = {kPub};
  const auto a = client_args(pki, broker, c);
  argv.insert(argv.end(), a.begin(), a.end());
  // -d: the client then also prints why TLS failed (e.g. "host name verification failed").
  argv.insert(argv.end(), {"-t", kTopic, "-m", message, "-q", "1", "-d"});
  return run_command(argv, 30s);
}

/// Polls the broker's log until it contains one of `texts` (Mosquitto writes its log line by line).
bool log_shows(const Mosquitto& broker, const std::vector<std::string>& texts, std::chrono::milliseconds deadline = 5s) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  do {
    const std::string log = broker.log();
    for (const auto& t : texts)
      if (log.find(t) != std::string::npos) return true;
    std::this_thread::sleep_for(10ms);
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

bool connected(const Mosquitto& broker, const std::string& client_id) {
  return broker.log().find(" as " + client_id + " (") != std::string::npos;
}

/// The refusal must come from the TLS handshake, not from a typo in a path.
void expect_refused_by_tls(const CommandResult& r, const Mosquitto& broker, const std::string& client_id) {
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.find("Problem setting TLS options"), std::string::npos) << r.output;
  EXPECT_TRUE(log_shows(broker, {"certificate verify failed", "peer did not return a certificate"}))
      << "the broker logged no TLS refusal";
  EXPECT_FALSE(connected(broker, client_id)) << "the broker accepted " << client_id;
}

class PkiTest : public ::testing::Test {
 protected:
  TempDir tmp_;
  TestPki pki_{tmp_.path() / "pki"};

  Mosquitto::Options tls_options(const std::string& server_cert = "server", bool with_crl = false) {
    Mosquitto::Options o;
    o.tls = pki_.broker_tls(server_cert, with_crl);
    return o;
  }
};

TEST_F(PkiTest, GenShWritesEveryDocumentedFileKeysPrivate) {
  const std::vector<std::string> pairs = {"ca",          "server",         "server-wrong-host",    "client",
                                          "client-expired", "client-not-yet-valid", "client-revoked", "client-wrong-ca",
                                          "client-fake-ca", "wrong-ca",       "fake-ca"};
  for (const auto& name : pairs) {
    SCOPED_TRACE(name);
    const auto p = pki_.pair(name);
    ASSERT_TRUE(fs::is_regular_file(p.crt));
    ASSERT_TRUE(fs::is_regular_file(p.key));
    struct stat st {};
    ASSERT_EQ(::stat(p.key.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u);
    ASSERT_EQ(::stat(p.crt.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0644u);
  }
  EXPECT_TRUE(fs::is_regular_file(pki_.crl()));
  EXPECT_TRUE(fs::is_regular_file(pki_.file("ca+crl.pem")));
  // The fake CA is an impostor: same subject as the real one, different key.
  const auto subject = [](const fs::path& crt) {
    return run_command({"/usr/bin/openssl", "x509", "-in", crt.string(), "-noout", "-subject"}).output;
  };
  EXPECT_EQ(subject(pki_.file("fake-ca.crt")), subject(pki_.ca()));
  EXPECT_NE(read_file(pki_.file("fake-ca.crt")), read_file(pki_.ca()));
  const auto end_date = run_command(
      {"/usr/bin/openssl", "x509", "-in", pki_.file("client-expired.crt").string(), "-noout", "-checkend", "0"});
  EXPECT_NE(end_date.exit_code, 0) << "client-expired.crt has not expired: " << end_date.output;
}

TEST_F(PkiTest, ValidClientCertificateConnectsAndPublishes) {
  Mosquitto broker(tmp_.path() / "broker", tls_options());

  // A subscriber with the valid certificate, waiting for exactly one message.
  std::vector<std::string> sub_argv = {kSub};
  const auto a = client_args(pki_, broker, client("client", "pki-sub"));
  sub_argv.insert(sub_argv.end(), a.begin(), a.end());
  sub_argv.insert(sub_argv.end(), {"-t", kTopic, "-q", "1", "-C", "1", "-W", "30"});
  Process sub({sub_argv, {}, tmp_.path() / "sub.out", true});
  ASSERT_TRUE(log_shows(broker, {"Sending SUBACK to pki-sub"}, 20s)) << sub.output();

  const auto r = publish(pki_, broker, client("client", "pki-valid"), "hello-over-mtls");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(connected(broker, "pki-valid"));

  const auto code = sub.wait(20s);
  ASSERT_TRUE(code.has_value()) << "mosquitto_sub received nothing: " << sub.output();
  EXPECT_EQ(*code, 0) << sub.output();
  EXPECT_EQ(sub.output(), "hello-over-mtls\n");
}

TEST_F(PkiTest, ServerCertificateNamesLocalhostToo) {
  Mosquitto broker(tmp_.path() / "broker", tls_options());
  const auto r = publish(pki_, broker, with_host(client("client", "pki-localhost"), "localhost"), "x");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(connected(broker, "pki-localhost"));
}

// Each of these client certificates (pair names in gen.sh; "" = none) must be refused.
class PkiRefusedClient : public PkiTest, public ::testing::WithParamInterface<std::string> {};

TEST_P(PkiRefusedClient, IsRefusedByTheBroker) {
  Mosquitto broker(tmp_.path() / "broker", tls_options());
  const std::string id = "pki-refused";
  const auto r = publish(pki_, broker, client(GetParam(), id), "must-not-arrive");
  expect_refused_by_tls(r, broker, id);
  // The same broker still lets the valid certificate in: the refusal is about the certificate.
  const auto ok = publish(pki_, broker, client("client", "pki-control"), "x");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

INSTANTIATE_TEST_SUITE_P(Certificates, PkiRefusedClient,
                         ::testing::Values("client-expired", "client-not-yet-valid", "client-wrong-ca",
                                           "client-fake-ca", "server", ""),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string n = param_info.param.empty() ? "no_certificate" : param_info.param;
                           for (auto& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

TEST_F(PkiTest, RevokedCertificateIsRefusedWhenTheBrokerChecksTheCrl) {
  {
    // Control: without the CRL the revoked certificate is otherwise valid.
    Mosquitto broker(tmp_.path() / "broker-no-crl", tls_options("server", false));
    const auto r = publish(pki_, broker, client("client-revoked", "pki-revoked-no-crl"), "x");
    EXPECT_EQ(r.exit_code, 0) << r.output;
  }
  Mosquitto broker(tmp_.path() / "broker-crl", tls_options("server", true));
  const auto r = publish(pki_, broker, client("client-revoked", "pki-revoked"), "x");
  expect_refused_by_tls(r, broker, "pki-revoked");
  const auto ok = publish(pki_, broker, client("client", "pki-control"), "x");
  EXPECT_EQ(ok.exit_code, 0) << ok.output;
}

TEST_F(PkiTest, HostNameNotInServerCertificateFailsVerification) {
  Mosquitto broker(tmp_.path() / "broker", tls_options("server-wrong-host"));
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    SCOPED_TRACE(host);
    const auto r = publish(pki_, broker, with_host(client("client", "pki-wrong-host"), host), "x");
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("host name verification failed"), std::string::npos) << r.output;
  }
  EXPECT_FALSE(connected(broker, "pki-wrong-host"));
  // Control: with host name checks off, the same certificate chain is accepted.
  Client insecure = client("client", "pki-insecure");
  insecure.extra = {"--insecure"};
  const auto r = publish(pki_, broker, insecure, "x");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

TEST_F(PkiTest, ClientTrustingAnotherCaRefusesTheServer) {
  Mosquitto broker(tmp_.path() / "broker", tls_options());
  for (const std::string ca : {"wrong-ca.crt", "fake-ca.crt"}) {
    SCOPED_TRACE(ca);
    Client c = client("client", "pki-distrust");
    c.cafile = pki_.file(ca);
    const auto r = publish(pki_, broker, c, "x");
    EXPECT_NE(r.exit_code, 0) << r.output;
    EXPECT_EQ(r.output.find("Problem setting TLS options"), std::string::npos) << r.output;
  }
  EXPECT_FALSE(connected(broker, "pki-distrust"));
}

}  // namespace
}  // namespace canopy::test
