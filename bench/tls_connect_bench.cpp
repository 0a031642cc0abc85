// TLS connect time with the SSL_CTX canopyd uses (canopy::trust::TlsIdentity, file key or TPM
// key): K times a fresh TCP connection, a full TLS handshake (no session reuse, as in canopyd's
// link) and an MQTT 3.1.1 CONNECT/CONNACK (clean session), then DISCONNECT. Prints avg/p50/p99
// of "TCP connect -> handshake done" and "TCP connect -> CONNACK". Asserts nothing.
// Run through bench/tls_connect.sh.
//
//   tls_connect_bench PORT CERT KEY CA K [TPM_TCTI]
//     KEY: a PEM key file or handle:0x81xxxxxx (then the tpm2 provider, TPM_TCTI or
//     TPM2OPENSSL_TCTI from the environment).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "canopy/trust/tls_identity.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

struct Stats {
  std::vector<double> v;
  void print(const char* what) {
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    auto pct = [&](double p) { return v.empty() ? 0.0 : v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))]; };
    std::printf("  %-26s avg=%.2f ms p50=%.2f ms p99=%.2f ms min=%.2f ms max=%.2f ms\n", what,
                v.empty() ? 0.0 : sum / static_cast<double>(v.size()), pct(0.5), pct(0.99), pct(0.0), pct(1.0));
  }
};

// One connection: TCP, TLS (verifying the server for IP 127.0.0.1, as canopyd does), CONNECT,
// CONNACK. Returns false with a message on any failure.
bool connect_once(SSL_CTX* ctx, int port, int i, double& tls_ms, double& connack_ms, std::string& version,
                  std::string& why) {
  const auto t0 = Clock::now();
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return why = "socket", false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // A 10 s deadline on every read and write.
  timeval tv{10, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd, static_cast<sockaddr*>(static_cast<void*>(&a)), sizeof a) != 0) {
    ::close(fd);
    return why = "TCP connect failed", false;
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), "127.0.0.1");
  bool ok = false;
  if (SSL_connect(ssl) != 1) {
    why = "TLS handshake: " + canopy::trust::last_tls_error();
  } else {
    tls_ms = ms_since(t0);
    version = SSL_get_version(ssl);
    // MQTT 3.1.1 CONNECT: clean session, keep-alive 60 s, client id "tlsbench-<i>".
    const std::string id = "tlsbench-" + std::to_string(i);
    std::string vh = std::string("\x00\x04MQTT\x04\x02\x00\x3c", 10);
    vh += static_cast<char>(id.size() >> 8);
    vh += static_cast<char>(id.size() & 0xff);
    vh += id;
    std::string pkt = "\x10";
    pkt += static_cast<char>(vh.size());
    pkt += vh;
    unsigned char ack[4] = {};
    if (SSL_write(ssl, pkt.data(), static_cast<int>(pkt.size())) != static_cast<int>(pkt.size())) {
      why = "CONNECT write failed";
    } else {
      int got = 0;
      while (got < 4) {
        const int r = SSL_read(ssl, ack + got, 4 - got);
        if (r <= 0) break;
        got += r;
      }
      if (got == 4 && ack[0] == 0x20 && ack[1] == 0x02 && ack[3] == 0x00) {
        connack_ms = ms_since(t0);
        ok = true;
        const unsigned char disc[2] = {0xe0, 0x00};
        SSL_write(ssl, disc, 2);
      } else {
        why = "no CONNACK (accepted) from the broker";
      }
    }
  }
  SSL_shutdown(ssl);
  SSL_free(ssl);
  ::close(fd);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: tls_connect_bench PORT CERT KEY CA K [TPM_TCTI]\n");
    return 2;
  }
  const int port = std::stoi(argv[1]);
  const int k = std::stoi(argv[5]);
  canopy::trust::TlsIdentityOptions o;
  o.certificate_path = argv[2];
  o.private_key = argv[3];
  o.root_ca_path = argv[4];
  if (argc > 6) o.tpm_tcti = argv[6];
  const auto load_t0 = Clock::now();
  auto id = canopy::trust::TlsIdentity::load(o);
  const double load_ms = ms_since(load_t0);
  if (!id) {
    std::fprintf(stderr, "TlsIdentity::load: %s\n", id.error().message.c_str());
    return 1;
  }
  Stats tls, connack;
  std::string version, why;
  int failed = 0;
  for (int i = 0; i < k; ++i) {
    double t = 0, c = 0;
    if (connect_once((*id)->ssl_context(), port, i, t, c, version, why)) {
      tls.v.push_back(t);
      connack.v.push_back(c);
    } else {
      ++failed;
      std::fprintf(stderr, "connect %d failed: %s\n", i, why.c_str());
    }
  }
  std::printf("key: %s  K=%d  %s  failed=%d  TlsIdentity::load %.1f ms\n", (*id)->key_description().c_str(), k,
              version.c_str(), failed, load_ms);
  tls.print("TCP+TLS handshake:");
  connack.print("TCP+TLS+MQTT CONNACK:");
  return failed == 0 ? 0 : 1;
}
