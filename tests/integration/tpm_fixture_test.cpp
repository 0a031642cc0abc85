// Proves the network/TPM test fixtures against real parts:
//  - SoftwareTpm: swtpm + tpm2-abrmd come up, the persistent handle key and the TSS2 PEM key
//    get certificates from the test CA, and `openssl s_client` with those TPM keys completes
//    mTLS (TLS 1.3) with a Mosquitto that requires client certificates (CONNACK 0, and the
//    broker logs the TPM certificate's CN as the username);
//  - TcpProxy: traffic passes, cut() breaks a live connection on both sides (RST or FIN),
//    refuses new connects, restore() accepts again on the same port;
//  - LegacyTlsServer: a TLS-1.1-only server is refused by default and TLS-1.2-minimum clients.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/mosquitto.hpp"
#include "support/pki.hpp"
#include "support/process.hpp"
#include "support/tcp_proxy.hpp"
#include "support/tls_legacy_server.hpp"
#include "support/tpm.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr const char* kOpenssl = "/usr/bin/openssl";

// Runs argv with stdin from `input` (run_command has no stdin; /bin/sh only redirects and
// execs, the arguments are passed as positional parameters, unquoted nowhere).
CommandResult run_with_stdin(const std::vector<std::string>& argv, const fs::path& input,
                             std::map<std::string, std::string> env = {}, std::chrono::seconds deadline = 60s) {
  std::vector<std::string> sh = {"/bin/sh", "-c", "exec \"$@\" < \"$CANOPY_TEST_STDIN\"", "sh"};
  sh.insert(sh.end(), argv.begin(), argv.end());
  env["CANOPY_TEST_STDIN"] = input.string();
  return run_command(sh, deadline, env);
}

// MQTT 3.1.1 CONNECT (clean session, keepalive 60) for `client_id`.
std::string mqtt_connect(const std::string& client_id) {
  std::string body = std::string("\x00\x04MQTT\x04\x02\x00\x3c", 10);
  body += static_cast<char>((client_id.size() >> 8) & 0xff);
  body += static_cast<char>(client_id.size() & 0xff);
  body += client_id;
  return std::string(1, '\x10') + static_cast<char>(body.size()) + body;
}
const std::string kConnackAccepted("\x20\x02\x00\x00", 4);
const std::string kDisconnect("\xe0\x00", 2);

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Waits until `text()` contains `needle` or the deadline passes.
template <typename F>
bool eventually_contains(F text, const std::string& needle, std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < until) {
    if (contains(text(), needle)) return true;
    std::this_thread::sleep_for(20ms);
  }
  return contains(text(), needle);
}

// ---------------------------------------------------------------------------------------------
// SoftwareTpm

TEST(SoftwareTpmTest, TpmKeysCompleteMutualTlsWithMosquitto) {
  if (const auto why = SoftwareTpm::unavailable_reason(); !why.empty()) GTEST_SKIP() << why;
  TempDir tmp;
  const TestPki pki(tmp.path() / "pki");
  SoftwareTpm tpm(tmp.path() / "tpm");
  std::printf("SoftwareTpm up and provisioned in %lld ms (swtpm ports %d/%d)\n",
              static_cast<long long>(tpm.startup_time().count()), tpm.swtpm_port(), tpm.swtpm_ctrl_port());
  RecordProperty("software_tpm_startup_ms", static_cast<int>(tpm.startup_time().count()));

  const auto env = tpm.environment();
  EXPECT_EQ(env.at("TPM2OPENSSL_TCTI"), "tabrmd:bus_type=session");
  EXPECT_EQ(env.at("DBUS_SESSION_BUS_ADDRESS"), "unix:path=" + (tpm.dir() / "dbus.sock").string());
  const auto handles = run_command({"/usr/bin/tpm2_getcap", "handles-persistent"}, 30s, env);
  ASSERT_EQ(handles.exit_code, 0) << handles.output;
  EXPECT_TRUE(contains(handles.output, "0x81000000")) << handles.output;
  EXPECT_TRUE(contains(handles.output, "0x81000001")) << handles.output;
  EXPECT_TRUE(contains(read_file(tpm.tss2_key_path()), "-----BEGIN TSS2 PRIVATE KEY-----"));
  // swtpm_setup's local CA stayed in the test folder (pitfall 13).
  EXPECT_TRUE(fs::exists(tpm.dir() / "localca" / "issuercert.pem"));

  struct Identity {
    std::string key, cn, client_id;
    fs::path crt;
  };
  const std::vector<Identity> ids = {
      {tpm.handle_uri(), "gw-tpm-1", "tpm-handle", tmp.path() / "tpm1.crt"},
      {tpm.tss2_key_path().string(), "gw-tpm-2", "tpm-tss2", tmp.path() / "tpm2.crt"},
  };
  for (const auto& id : ids) {
    ASSERT_NO_THROW(tpm.make_certificate(id.key, id.cn, pki, id.crt)) << id.key;
    const auto verify = run_command({kOpenssl, "verify", "-CAfile", pki.ca().string(), "-purpose", "sslclient", id.crt.string()});
    EXPECT_EQ(verify.exit_code, 0) << verify.output;
  }
  // The handle key's certificate holds the TPM's public key.
  const auto pub = run_command({kOpenssl, "x509", "-in", ids[0].crt.string(), "-noout", "-pubkey"});
  ASSERT_EQ(pub.exit_code, 0) << pub.output;
  EXPECT_EQ(pub.output, read_file(tpm.device_public_key_pem()));

  Mosquitto::Options options;
  options.allow_anonymous = false;
  options.tls = pki.broker_tls();
  options.tls->use_identity_as_username = true;
  Mosquitto broker(tmp.path() / "broker", options);

  for (const auto& id : ids) {
    SCOPED_TRACE(id.key);
    // CONNECT and DISCONNECT in one go: the broker answers CONNACK, then closes, and
    // s_client (-quiet keeps reading after stdin's end) exits. No sleeps.
    const fs::path input = tmp.path() / (id.client_id + ".in");
    write_file(input, mqtt_connect(id.client_id) + kDisconnect);
    const auto t0 = std::chrono::steady_clock::now();
    // Providers come from OPENSSL_CONF (tpm2, default, default_properties), NOT from
    // -provider options as well: both together break signing with "missing private key".
    const auto r = run_with_stdin({kOpenssl, "s_client", "-connect",
                                   "127.0.0.1:" + std::to_string(broker.port()), "-tls1_3", "-CAfile", pki.ca().string(),
                                   "-verify_return_error", "-verify_ip", "127.0.0.1", "-cert", id.crt.string(), "-key",
                                   id.key, "-quiet", "-brief"},
                                  input, tpm.openssl_environment());
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
    std::printf("s_client with %s: exit %d, %lld ms (process start + TLS 1.3 + CONNACK)\n", id.key.c_str(), r.exit_code,
                static_cast<long long>(ms.count()));
    EXPECT_TRUE(contains(r.output, kConnackAccepted)) << r.output;
    EXPECT_TRUE(contains(r.output, "TLSv1.3")) << r.output;
    // The broker saw this client with the TPM certificate's CN as its username.
    EXPECT_TRUE(eventually_contains([&] { return broker.log(); }, "as " + id.client_id + " ", 5s)) << broker.log();
    EXPECT_TRUE(contains(broker.log(), "u'" + id.cn + "'")) << broker.log();
  }
}

// ---------------------------------------------------------------------------------------------
// TcpProxy

int connect_loopback(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const int err = errno;
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

// Result of waiting for a read on a socket: bytes, end-of-file, an error (errno), or nothing.
struct ReadOutcome {
  enum Kind { data, eof, error, timeout } kind = timeout;
  int err = 0;
  std::string bytes;
};

ReadOutcome read_some(int fd, std::size_t max, std::chrono::milliseconds deadline) {
  ReadOutcome o;
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(deadline.count())) <= 0) return o;
  std::string buf(max, '\0');
  const ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
  if (n > 0) {
    o.kind = ReadOutcome::data;
    o.bytes = buf.substr(0, static_cast<std::size_t>(n));
  } else if (n == 0) {
    o.kind = ReadOutcome::eof;
  } else {
    o.kind = ReadOutcome::error;
    o.err = errno;
  }
  return o;
}

// Sends an MQTT CONNECT and expects CONNACK 0 within 5 s.
bool mqtt_handshake(int fd, const std::string& client_id) {
  const std::string c = mqtt_connect(client_id);
  if (::send(fd, c.data(), c.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(c.size())) return false;
  std::string got;
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (got.size() < 4 && std::chrono::steady_clock::now() < until) {
    const auto o = read_some(fd, 4 - got.size(), 1s);
    if (o.kind == ReadOutcome::data) got += o.bytes;
    if (o.kind == ReadOutcome::eof || o.kind == ReadOutcome::error) return false;
  }
  return got == kConnackAccepted;
}

TEST(TcpProxyTest, CutBreaksLiveConnectionsAndRestoreAcceptsAgain) {
  TempDir tmp;
  Mosquitto broker(tmp.path() / "broker", {});
  TcpProxy proxy(broker.port());
  ASSERT_NE(proxy.port(), broker.port());

  // 1. Traffic passes.
  int fd = connect_loopback(proxy.port());
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_TRUE(mqtt_handshake(fd, "proxy-client-1"));
  EXPECT_EQ(proxy.connections_accepted(), 1u);
  EXPECT_EQ(proxy.active_connections(), 1u);

  // 2. cut(reset): the live connection breaks on the client side (ECONNRESET) and on the
  //    broker side (it logs the client going away), and new connects are refused.
  proxy.cut(true);
  EXPECT_TRUE(proxy.is_cut());
  auto o = read_some(fd, 16, 5s);
  EXPECT_EQ(o.kind, ReadOutcome::error) << "kind " << o.kind;
  EXPECT_EQ(o.err, ECONNRESET) << std::strerror(o.err);
  ::close(fd);
  // (Mosquitto 2.0.11 logs a reset peer as "closed its connection" too.)
  EXPECT_TRUE(eventually_contains([&] { return broker.log(); }, "Client proxy-client-1 closed its connection", 5s))
      << broker.log();
  EXPECT_EQ(proxy.active_connections(), 0u);
  errno = 0;
  EXPECT_EQ(connect_loopback(proxy.port()), -1);
  EXPECT_EQ(errno, ECONNREFUSED) << std::strerror(errno);
  // Cutting twice is harmless.
  EXPECT_NO_THROW(proxy.cut(true));

  // 3. restore(): the same port accepts again and forwards.
  proxy.restore();
  EXPECT_FALSE(proxy.is_cut());
  fd = connect_loopback(proxy.port());
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_TRUE(mqtt_handshake(fd, "proxy-client-2"));
  EXPECT_EQ(proxy.connections_accepted(), 2u);

  // 4. cut(FIN): the client reads end-of-file; the broker sees the connection closed.
  proxy.cut(false);
  o = read_some(fd, 16, 5s);
  EXPECT_EQ(o.kind, ReadOutcome::eof) << "kind " << o.kind << " " << std::strerror(o.err);
  ::close(fd);
  EXPECT_TRUE(eventually_contains([&] { return broker.log(); }, "Client proxy-client-2 closed its connection", 5s))
      << broker.log();
  EXPECT_EQ(connect_loopback(proxy.port()), -1);

  // 5. Real MQTT clients through the restored proxy: a retained publish, then a subscriber
  //    that receives it.
  proxy.restore();
  const std::string port = std::to_string(proxy.port());
  const auto pub = run_command({"/usr/bin/mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-i", "proxy-pub", "-t",
                                "canopy/proxy", "-m", "through-the-proxy", "-r", "-q", "1"},
                               30s);
  EXPECT_EQ(pub.exit_code, 0) << pub.output;
  const auto sub = run_command({"/usr/bin/mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-i", "proxy-sub", "-t",
                                "canopy/proxy", "-C", "1", "-W", "10"},
                               30s);
  EXPECT_EQ(sub.exit_code, 0) << sub.output;
  EXPECT_EQ(sub.output, "through-the-proxy\n");
  EXPECT_EQ(proxy.connections_accepted(), 4u);
}

TEST(TcpProxyTest, TargetRefusingResetsTheClient) {
  // A port nothing listens on (free a moment ago).
  TcpProxy proxy(free_port());
  const int fd = connect_loopback(proxy.port());
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const auto o = read_some(fd, 16, 5s);
  EXPECT_TRUE(o.kind == ReadOutcome::error || o.kind == ReadOutcome::eof) << "kind " << o.kind;
  ::close(fd);
  EXPECT_EQ(proxy.connections_accepted(), 1u);
}

// ---------------------------------------------------------------------------------------------
// LegacyTlsServer

TEST(LegacyTlsServerTest, OnlyTls11ClientsAtSecurityLevelZeroGetIn) {
  TempDir tmp;
  const TestPki pki(tmp.path() / "pki");
  LegacyTlsServer server(pki, tmp.path() / "legacy");
  const std::string addr = "127.0.0.1:" + std::to_string(server.port());
  const fs::path no_input = "/dev/null";

  // Control: a client that explicitly allows TLS 1.1 at security level 0 connects.
  const auto legacy = run_with_stdin({kOpenssl, "s_client", "-connect", addr, "-CAfile", pki.ca().string(), "-tls1_1",
                                      "-cipher", "DEFAULT:@SECLEVEL=0", "-brief"},
                                     no_input);
  EXPECT_EQ(legacy.exit_code, 0) << legacy.output;
  EXPECT_TRUE(contains(legacy.output, "Protocol version: TLSv1.1")) << legacy.output;

  // A default OpenSSL 3 client is refused.
  const auto modern = run_with_stdin({kOpenssl, "s_client", "-connect", addr, "-CAfile", pki.ca().string(), "-brief"},
                                     no_input);
  EXPECT_NE(modern.exit_code, 0) << modern.output;
  EXPECT_FALSE(contains(modern.output, "CONNECTION ESTABLISHED")) << modern.output;
  std::printf("default client against TLS 1.1 server: exit %d\n%s\n", modern.exit_code, modern.output.c_str());

  // A client with a TLS 1.2 minimum (as Canopy configures its SSL_CTX) offers nothing the
  // server accepts: the server answers with a protocol_version alert (70).
  const auto min12 = run_with_stdin(
      {kOpenssl, "s_client", "-connect", addr, "-CAfile", pki.ca().string(), "-min_protocol", "TLSv1.2", "-brief"},
      no_input);
  EXPECT_NE(min12.exit_code, 0) << min12.output;
  EXPECT_TRUE(contains(min12.output, "alert protocol version")) << min12.output;
  EXPECT_TRUE(eventually_contains([&] { return server.log(); }, "unsupported protocol", 5s)) << server.log();

  // TLS 1.3 only: same.
  const auto tls13 = run_with_stdin({kOpenssl, "s_client", "-connect", addr, "-CAfile", pki.ca().string(), "-tls1_3"},
                                    no_input);
  EXPECT_NE(tls13.exit_code, 0) << tls13.output;
  EXPECT_TRUE(contains(tls13.output, "alert protocol version")) << tls13.output;
  std::printf("server log:\n%s\n", server.log().c_str());
}

}  // namespace
}  // namespace canopy::test
