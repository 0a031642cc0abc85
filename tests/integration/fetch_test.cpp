// canopy::deploy::fetch_https against a real local HTTPS server (tests/support/https_server.py)
// using the test PKI (tests/pki/gen.sh).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include <unistd.h>

#include "canopy/deploy/fetch.hpp"
#include "support/https_server.hpp"
#include "support/pki.hpp"
#include "support/process.hpp"

namespace fs = std::filesystem;
using canopy::errc;
using canopy::deploy::fetch_https;
using canopy::deploy::FetchOptions;
using namespace canopy::test;

namespace {

constexpr const char* kPython = "/usr/bin/python3";

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    auto v = gen();
    for (std::size_t j = 0; j < 8 && i + j < n; ++j) s[i + j] = static_cast<char>((v >> (8 * j)) & 0xff);
  }
  return s;
}

class FetchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is missing: no HTTPS server to test against";
    pki_ = std::make_unique<TestPki>(tmp_.path() / "pki");
    fs::create_directories(root());
    fs::create_directories(out());
    content_ = random_bytes(300 * 1024 + 17, 1);
    write_file(root() / "artifact.bin", content_);
    server_ = std::make_unique<HttpsServer>(*pki_, root(), "server", tmp_.path() / "server.log");
    options_.ca_file = pki_->ca();
    options_.connect_timeout = std::chrono::seconds(10);
    options_.idle_timeout = std::chrono::seconds(10);
  }

  void TearDown() override {
    if (HasFailure() && server_) std::cerr << "--- server log ---\n" << server_->log();
  }

  fs::path root() const { return tmp_.path() / "www"; }
  fs::path out() const { return tmp_.path() / "out"; }

  TempDir tmp_;
  std::unique_ptr<TestPki> pki_;
  std::unique_ptr<HttpsServer> server_;
  std::string content_;
  FetchOptions options_;
};

TEST_F(FetchTest, DownloadsAFile) {
  const fs::path dest = out() / "artifact.bin";
  std::uint64_t last_received = 0;
  std::optional<std::uint64_t> last_total;
  int calls = 0;
  options_.progress = [&](std::uint64_t received, std::optional<std::uint64_t> total) {
    ++calls;
    last_received = received;
    last_total = total;
  };
  auto r = fetch_https(server_->url("/artifact.bin"), dest, options_);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(read_file(dest), content_);
  EXPECT_FALSE(fs::exists(out() / "artifact.bin.part"));
  EXPECT_GE(calls, 1);
  EXPECT_EQ(last_received, content_.size());
  ASSERT_TRUE(last_total.has_value());
  EXPECT_EQ(*last_total, content_.size());
}

TEST_F(FetchTest, DownloadsByHostNameWithSni) {
  const fs::path dest = out() / "by-name.bin";
  auto r = fetch_https(server_->url("/artifact.bin", "localhost"), dest, options_);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(read_file(dest), content_);
}

TEST_F(FetchTest, ResumesWithRangeAfterTheServerDropsTheConnection) {
  const fs::path dest = out() / "artifact.bin";
  auto r = fetch_https(server_->url("/drop/artifact.bin"), dest, options_);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(read_file(dest), content_);
  EXPECT_FALSE(fs::exists(out() / "artifact.bin.part"));
  const std::string log = server_->log();
  EXPECT_NE(log.find("DROPPED /drop/artifact.bin"), std::string::npos) << log;
  const std::string resumed = "REQUEST /drop/artifact.bin range=bytes=" + std::to_string(content_.size() / 2) + "-";
  EXPECT_NE(log.find(resumed), std::string::npos) << log;
}

TEST_F(FetchTest, ResumesAPartFileLeftByAnEarlierRun) {
  const fs::path dest = out() / "artifact.bin";
  write_file(out() / "artifact.bin.part", content_.substr(0, 1000));
  auto r = fetch_https(server_->url("/artifact.bin"), dest, options_);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(read_file(dest), content_);
  EXPECT_NE(server_->log().find("REQUEST /artifact.bin range=bytes=1000-"), std::string::npos) << server_->log();
}

TEST_F(FetchTest, RestartsFromZeroWhenTheServerIgnoresRange) {
  const fs::path dest = out() / "artifact.bin";
  write_file(out() / "artifact.bin.part", std::string(1000, 'x'));  // not a prefix of the file
  auto r = fetch_https(server_->url("/norange/artifact.bin"), dest, options_);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(read_file(dest), content_);
  EXPECT_NE(server_->log().find("REQUEST /norange/artifact.bin range=bytes=1000-"), std::string::npos) << server_->log();
}

TEST_F(FetchTest, TimesOutWhenTheServerStalls) {
  options_.idle_timeout = std::chrono::seconds(1);
  options_.max_attempts = 2;
  const std::string url = server_->url("/stall/artifact.bin");
  const auto start = std::chrono::steady_clock::now();
  auto r = fetch_https(url, out() / "artifact.bin", options_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::timeout) << r.error().message;
  EXPECT_NE(r.error().message.find(url), std::string::npos) << r.error().message;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  // The second attempt resumed from what the first one received.
  EXPECT_NE(server_->log().find("REQUEST /stall/artifact.bin range=bytes=" + std::to_string(content_.size() / 2) + "-"),
            std::string::npos)
      << server_->log();
  EXPECT_FALSE(fs::exists(out() / "artifact.bin"));
}

TEST_F(FetchTest, FollowsARedirect) {
  const fs::path dest = out() / "artifact.bin";
  auto r = fetch_https(server_->url("/redirect/artifact.bin"), dest, options_);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(read_file(dest), content_);
  const std::string log = server_->log();
  EXPECT_NE(log.find("REQUEST /redirect/artifact.bin"), std::string::npos) << log;
  EXPECT_NE(log.find("REQUEST /artifact.bin"), std::string::npos) << log;
}

TEST_F(FetchTest, RefusesAServerCertificateFromAnotherCa) {
  options_.ca_file = pki_->file("wrong-ca.crt");  // server.crt is from ca, which is not trusted
  const std::string url = server_->url("/artifact.bin");
  auto r = fetch_https(url, out() / "artifact.bin", options_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unauthorized) << r.error().message;
  EXPECT_NE(r.error().message.find(url), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("the server's certificate is not trusted: "), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(out() / "artifact.bin"));
}

TEST_F(FetchTest, RefusesACertificateForAnotherHost) {
  HttpsServer wrong(*pki_, root(), "server-wrong-host", tmp_.path() / "wrong-host.log");
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    SCOPED_TRACE(host);
    const std::string url = wrong.url("/artifact.bin", host);
    auto r = fetch_https(url, out() / "artifact.bin", options_);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::unauthorized) << r.error().message;
    EXPECT_NE(r.error().message.find(url), std::string::npos) << r.error().message;
    EXPECT_NE(r.error().message.find("the certificate is for another host"), std::string::npos) << r.error().message;
  }
  EXPECT_FALSE(fs::exists(out() / "artifact.bin"));
}

TEST_F(FetchTest, Reports404NamingTheUrl) {
  const std::string url = server_->url("/missing.bin");
  auto r = fetch_https(url, out() / "missing.bin", options_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::not_found) << r.error().message;
  EXPECT_NE(r.error().message.find(url), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("404"), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(out() / "missing.bin"));
}

TEST_F(FetchTest, RefusesABodyOverMaxBytes) {
  options_.max_bytes = 1000;
  auto r = fetch_https(server_->url("/artifact.bin"), out() / "artifact.bin", options_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid) << r.error().message;
  EXPECT_NE(r.error().message.find("limit of 1000"), std::string::npos) << r.error().message;
  EXPECT_FALSE(fs::exists(out() / "artifact.bin"));
}

TEST_F(FetchTest, RefusesNonHttpsUrls) {
  for (const std::string& url : {"http://127.0.0.1:" + std::to_string(server_->port()) + "/artifact.bin",
                                std::string("ftp://example.com/a"), std::string("https://"),
                                std::string("https://user@example.com/a"), std::string("https://example.com:99999/a")}) {
    SCOPED_TRACE(url);
    auto r = fetch_https(url, out() / "artifact.bin", options_);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code, errc::invalid) << r.error().message;
  }
  EXPECT_EQ(server_->log().find("REQUEST"), std::string::npos) << "no request may reach the server";
}

TEST_F(FetchTest, ReportsNoConnectionWhenNothingListens) {
  options_.max_attempts = 2;
  const std::string url = "https://127.0.0.1:" + std::to_string(free_port()) + "/artifact.bin";
  auto r = fetch_https(url, out() / "artifact.bin", options_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::no_connection) << r.error().message;
  EXPECT_NE(r.error().message.find(url), std::string::npos) << r.error().message;
}

TEST_F(FetchTest, Downloads50MiB) {
  const std::string big = random_bytes(50u << 20, 2);
  write_file(root() / "big.bin", big);
  const fs::path dest = out() / "big.bin";
  auto r = fetch_https(server_->url("/big.bin"), dest, options_);
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(fs::file_size(dest), big.size());
  EXPECT_TRUE(read_file(dest) == big) << "the downloaded bytes differ";
  EXPECT_FALSE(fs::exists(out() / "big.bin.part"));
}

}  // namespace
