#include "canopy/trust/signature.hpp"

#include <memory>

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

namespace canopy::trust {
namespace {

using namespace std::chrono_literals;

constexpr std::string_view kRecipe =
    "RecipeFormatVersion: '2020-01-25'\nComponentName: com.x\nComponentVersion: 1.0.0\n";
constexpr std::string_view kWhat = "com.x-1.0.0.yaml";

KeyPair make_key(Algorithm alg) {
  auto k = generate_key(alg);
  EXPECT_TRUE(k) << k.error().message;
  return *k;
}

SignatureEntry sign_ok(std::string_view data, const KeyPair& k) {
  auto s = sign(data, k.private_pem);
  EXPECT_TRUE(s) << s.error().message;
  return *s;
}

TrustedSigner signer(const KeyPair& k) { return TrustedSigner{k.public_key, std::nullopt, "test"}; }

TrustPolicy policy_for(std::initializer_list<const KeyPair*> keys, std::size_t threshold = 1) {
  TrustPolicy p;
  p.require_signatures = true;
  p.threshold = threshold;
  for (const auto* k : keys) p.signers.push_back(signer(*k));
  return p;
}

std::string sig_file(std::initializer_list<SignatureEntry> entries) { return to_signature_file(entries); }

/// A PEM private key of another kind, made with OpenSSL directly.
std::string other_private_pem(const char* type, const char* param) {
  EVP_PKEY* key = param != nullptr ? EVP_PKEY_Q_keygen(nullptr, nullptr, type, param)
                                   : EVP_PKEY_Q_keygen(nullptr, nullptr, type, static_cast<size_t>(2048));
  EXPECT_NE(key, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  EVP_PKEY_free(key);
  return pem;
}

/// sha256 of `openssl pkey -pubin -outform DER`, computed independently of the library.
std::string openssl_keyid(const std::string& pub_pem) {
  BIO* bio = BIO_new_mem_buf(pub_pem.data(), static_cast<int>(pub_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  EXPECT_NE(key, nullptr);
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest(der, static_cast<std::size_t>(len), md, &mdlen, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  EVP_PKEY_free(key);
  std::string out;
  for (unsigned i = 0; i < mdlen; ++i) {
    char b[3];
    std::snprintf(b, sizeof b, "%02x", md[i]);
    out += b;
  }
  return out;
}

void expect_refused(const result<void>& r, std::string_view needle) {
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unauthorized);
  EXPECT_NE(r.error().message.find(kWhat), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(needle), std::string::npos) << r.error().message;
}

class BothAlgs : public ::testing::TestWithParam<Algorithm> {};

TEST_P(BothAlgs, KeygenGivesAParseableKeyWithStableKeyid) {
  const KeyPair k = make_key(GetParam());
  EXPECT_EQ(k.public_key.alg, GetParam());
  EXPECT_NE(k.private_pem.find("BEGIN PRIVATE KEY"), std::string::npos);
  EXPECT_NE(k.public_key.pem.find("BEGIN PUBLIC KEY"), std::string::npos);
  EXPECT_EQ(k.public_key.keyid.size(), 64u);
  EXPECT_EQ(k.public_key.keyid, openssl_keyid(k.public_key.pem));
  auto again = parse_public_key(k.public_key.pem, "signer.pub");
  ASSERT_TRUE(again) << again.error().message;
  EXPECT_EQ(again->keyid, k.public_key.keyid);
  EXPECT_EQ(again->alg, GetParam());
  auto from_private = parse_public_key(k.private_pem, "signer.key");
  ASSERT_TRUE(from_private) << from_private.error().message;
  EXPECT_EQ(from_private->keyid, k.public_key.keyid);
  EXPECT_EQ(from_private->pem, k.public_key.pem);
}

TEST_P(BothAlgs, SignThenVerify) {
  const KeyPair k = make_key(GetParam());
  const SignatureEntry e = sign_ok(kRecipe, k);
  EXPECT_EQ(e.keyid, k.public_key.keyid);
  EXPECT_EQ(e.alg, GetParam());
  if (GetParam() == Algorithm::ed25519) {
    EXPECT_EQ(e.sig.size(), 64u);
  }
  auto r = verify_recipe(kRecipe, sig_file({e}), policy_for({&k}), kWhat);
  EXPECT_TRUE(r) << r.error().message;
}

TEST_P(BothAlgs, OneByteChangedIsRefused) {
  const KeyPair k = make_key(GetParam());
  std::string tampered(kRecipe);
  tampered[tampered.size() - 2] = '1';
  expect_refused(verify_recipe(tampered, sig_file({sign_ok(kRecipe, k)}), policy_for({&k}), kWhat),
                 "does not match the recipe");
}

INSTANTIATE_TEST_SUITE_P(Signature, BothAlgs, ::testing::Values(Algorithm::ecdsa_p256_sha256, Algorithm::ed25519),
                         [](const ::testing::TestParamInfo<Algorithm>& p) {
                           return p.param == Algorithm::ed25519 ? std::string("ed25519") : std::string("ecdsa");
                         });

TEST(Signature, AlgorithmNames) {
  EXPECT_EQ(to_string(Algorithm::ecdsa_p256_sha256), "ecdsa-p256-sha256");
  EXPECT_EQ(*parse_algorithm("ed25519"), Algorithm::ed25519);
  EXPECT_FALSE(parse_algorithm("rsa-pss-sha256"));
}

TEST(Signature, UnsignedIsRefused) {
  const KeyPair k = make_key(Algorithm::ed25519);
  expect_refused(verify_recipe(kRecipe, std::nullopt, policy_for({&k}), kWhat),
                 "is not signed (no com.x-1.0.0.yaml.sig)");
  expect_refused(verify_recipe(kRecipe, sig_file({}), policy_for({&k}), kWhat), "is not signed");
}

TEST(Signature, RequireSignaturesFalseAcceptsEverything) {
  TrustPolicy p;
  EXPECT_TRUE(verify_recipe(kRecipe, std::nullopt, p, kWhat));
  EXPECT_TRUE(verify_recipe(kRecipe, std::string("garbage"), p, kWhat));
}

TEST(Signature, UnknownKeyIsRefused) {
  const KeyPair trusted = make_key(Algorithm::ed25519);
  const KeyPair stranger = make_key(Algorithm::ed25519);
  expect_refused(verify_recipe(kRecipe, sig_file({sign_ok(kRecipe, stranger)}), policy_for({&trusted}), kWhat),
                 "is signed only by keys this device does not trust (keyid " +
                     stranger.public_key.keyid.substr(0, 16));
}

TEST(Signature, ExpiredSignerIsRefused) {
  const KeyPair k = make_key(Algorithm::ecdsa_p256_sha256);
  TrustPolicy p = policy_for({&k});
  p.signers[0].not_after = *parse_rfc3339("2026-01-01T00:00:00Z", "notAfter");
  const auto sig = sig_file({sign_ok(kRecipe, k)});
  EXPECT_TRUE(verify_recipe(kRecipe, sig, p, kWhat, *parse_rfc3339("2025-12-31T23:59:59Z", "now")));
  expect_refused(verify_recipe(kRecipe, sig, p, kWhat, *parse_rfc3339("2026-01-01T00:00:01Z", "now")),
                 "expired on 2026-01-01T00:00:00Z");
}

TEST(Signature, RevokedSignerIsRefused) {
  const KeyPair k = make_key(Algorithm::ed25519);
  TrustPolicy p = policy_for({&k});
  p.revoked_keyids.push_back(k.public_key.keyid);
  expect_refused(verify_recipe(kRecipe, sig_file({sign_ok(kRecipe, k)}), p, kWhat), "is revoked");
}

TEST(Signature, AlgorithmMismatchIsRefused) {
  const KeyPair k = make_key(Algorithm::ecdsa_p256_sha256);
  SignatureEntry e = sign_ok(kRecipe, k);
  e.alg = Algorithm::ed25519;
  expect_refused(verify_recipe(kRecipe, sig_file({e}), policy_for({&k}), kWhat), "is marked ed25519");
}

TEST(Signature, BadSignatureFromTrustedKeyBeatsUnknownKey) {
  const KeyPair trusted = make_key(Algorithm::ed25519);
  const KeyPair stranger = make_key(Algorithm::ed25519);
  const auto sig = sig_file({sign_ok("something else", trusted), sign_ok(kRecipe, stranger)});
  expect_refused(verify_recipe(kRecipe, sig, policy_for({&trusted}), kWhat), "does not match the recipe");
}

TEST(Signature, TwoOfThreeThreshold) {
  const KeyPair a = make_key(Algorithm::ed25519);
  const KeyPair b = make_key(Algorithm::ecdsa_p256_sha256);
  const KeyPair c = make_key(Algorithm::ed25519);
  const TrustPolicy p = policy_for({&a, &b, &c}, 2);
  EXPECT_TRUE(verify_recipe(kRecipe, sig_file({sign_ok(kRecipe, a), sign_ok(kRecipe, c)}), p, kWhat));
  EXPECT_TRUE(verify_recipe(kRecipe, sig_file({sign_ok(kRecipe, a), sign_ok(kRecipe, b), sign_ok(kRecipe, c)}), p,
                            kWhat));
  expect_refused(verify_recipe(kRecipe, sig_file({sign_ok(kRecipe, b)}), p, kWhat),
                 "has 1 valid signature, 2 are required");
  // The same key twice counts once.
  expect_refused(verify_recipe(kRecipe, sig_file({sign_ok(kRecipe, a), sign_ok(kRecipe, a)}), p, kWhat),
                 "has 1 valid signature, 2 are required");
}

TEST(Signature, MalformedSignatureFiles) {
  const KeyPair k = make_key(Algorithm::ed25519);
  const std::string id(64, 'a');
  for (const std::string& bad : std::vector<std::string>{
           std::string("not json"),
           std::string("[]"),
           std::string(R"({"signatures": {}})"),
           std::string(R"({"signatures": [1]})"),
           R"({"signatures": [{"keyid": ")" + id + R"(", "alg": "ed25519"}]})",
           std::string(R"({"signatures": [{"keyid": "abc", "alg": "ed25519", "sig": "AAAA"}]})"),
           R"({"signatures": [{"keyid": ")" + id + R"(", "alg": "rsa", "sig": "AAAA"}]})",
           R"({"signatures": [{"keyid": ")" + id + R"(", "alg": "ed25519", "sig": "!!"}]})",
           R"({"signatures": [{"keyid": ")" + id + R"(", "alg": "ed25519", "sig": ""}]})",
       }) {
    auto parsed = parse_signature_file(bad, "x.yaml.sig");
    ASSERT_FALSE(parsed) << bad;
    EXPECT_EQ(parsed.error().code, errc::invalid);
    EXPECT_NE(parsed.error().message.find("x.yaml.sig"), std::string::npos) << parsed.error().message;
    expect_refused(verify_recipe(kRecipe, bad, policy_for({&k}), kWhat), "cannot be verified");
  }
}

TEST(Signature, SignatureFileRoundTrips) {
  const KeyPair a = make_key(Algorithm::ed25519);
  const KeyPair b = make_key(Algorithm::ecdsa_p256_sha256);
  const std::vector<SignatureEntry> in{sign_ok(kRecipe, a), sign_ok(kRecipe, b)};
  auto out = parse_signature_file(to_signature_file(in), "x.sig");
  ASSERT_TRUE(out) << out.error().message;
  ASSERT_EQ(out->size(), 2u);
  EXPECT_EQ((*out)[1].keyid, b.public_key.keyid);
  EXPECT_EQ((*out)[1].alg, Algorithm::ecdsa_p256_sha256);
  EXPECT_EQ((*out)[1].sig, in[1].sig);
}

TEST(Signature, OtherKeyTypesAreRefusedClearly) {
  const std::string rsa = other_private_pem("RSA", nullptr);
  const std::string p384 = other_private_pem("EC", "P-384");
  auto s = sign(kRecipe, rsa);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::invalid);
  EXPECT_NE(s.error().message.find("RSA key; only ECDSA P-256 and Ed25519"), std::string::npos) << s.error().message;
  s = sign(kRecipe, p384);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message.find("curve secp384r1"), std::string::npos) << s.error().message;
  auto pk = parse_public_key(rsa, "rsa.pem");
  ASSERT_FALSE(pk);
  EXPECT_NE(pk.error().message.find("rsa.pem holds an RSA key"), std::string::npos) << pk.error().message;
  EXPECT_FALSE(parse_public_key("junk", "junk.pem"));
}

TEST(Signature, Rfc3339) {
  const auto z = parse_rfc3339("2026-01-01T00:00:00Z", "t");
  ASSERT_TRUE(z);
  EXPECT_EQ(format_rfc3339(*z), "2026-01-01T00:00:00Z");
  EXPECT_EQ(*parse_rfc3339("2026-01-01T02:00:00.5+02:00", "t"), *z);
  const auto far = parse_rfc3339("9999-12-31T23:59:59Z", "t");
  ASSERT_TRUE(far);
  EXPECT_GT(*far, std::chrono::system_clock::now() + std::chrono::hours(24 * 365 * 200));
  EXPECT_FALSE(parse_rfc3339("2026-01-01", "t"));
  EXPECT_FALSE(parse_rfc3339("2026-13-01T00:00:00Z", "t"));
  EXPECT_FALSE(parse_rfc3339("2026-01-01T00:00:00", "t"));
}

}  // namespace
}  // namespace canopy::trust
