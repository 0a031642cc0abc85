#include "canopy/trust/signature.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <ctime>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "canopy/core/base64.hpp"

namespace canopy::trust {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

constexpr std::string_view kEcdsa = "ecdsa-p256-sha256";
constexpr std::string_view kEd25519 = "ed25519";

/// The first OpenSSL error on the queue as text (queue cleared), for appending to messages.
std::string openssl_reason() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  const char* r = ERR_reason_error_string(e);
  return r != nullptr ? r : fmt::format("OpenSSL error {:#x}", e);
}

BioPtr mem_bio(std::string_view text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

std::string bio_contents(BIO* bio) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

/// The algorithm a key signs with, or an errc::invalid sentence naming `what` and the key type.
result<Algorithm> key_algorithm(EVP_PKEY* key, std::string_view what) {
  if (EVP_PKEY_is_a(key, "ED25519") == 1) return Algorithm::ed25519;
  if (EVP_PKEY_is_a(key, "EC") == 1) {
    char group[64] = {};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) != 1) {
      ERR_clear_error();
      return make_error(errc::invalid, fmt::format("{} holds an EC key with explicit or unknown curve parameters; "
                                                   "only ECDSA P-256 and Ed25519 keys can sign recipes",
                                                   what));
    }
    const std::string_view g(group, len);
    if (g == "prime256v1" || g == "P-256") return Algorithm::ecdsa_p256_sha256;
    return make_error(errc::invalid, fmt::format("{} holds an EC key on curve {}; only ECDSA P-256 and Ed25519 keys "
                                                 "can sign recipes",
                                                 what, g));
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return make_error(errc::invalid, fmt::format("{} holds an {} key; only ECDSA P-256 and Ed25519 keys can sign recipes",
                                               what, type != nullptr ? type : "unsupported"));
}

std::string hex(const unsigned char* p, std::size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (std::size_t i = 0; i < n; ++i) {
    out.push_back(kDigits[p[i] >> 4]);
    out.push_back(kDigits[p[i] & 0xf]);
  }
  return out;
}

/// keyid and SPKI PEM of a (public or private) key.
result<PublicKey> describe(EVP_PKEY* key, Algorithm alg, std::string_view what) {
  unsigned char* der = nullptr;
  const int len = i2d_PUBKEY(key, &der);
  if (len <= 0) return make_error(errc::invalid, fmt::format("cannot encode the public key of {}: {}", what, openssl_reason()));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  const int ok = EVP_Digest(der, static_cast<std::size_t>(len), digest, &dlen, EVP_sha256(), nullptr);
  OPENSSL_free(der);
  if (ok != 1) return make_error(errc::invalid, fmt::format("cannot hash the public key of {}: {}", what, openssl_reason()));
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_PUBKEY(out.get(), key) != 1)
    return make_error(errc::invalid, fmt::format("cannot encode the public key of {}: {}", what, openssl_reason()));
  PublicKey pk;
  pk.pem = bio_contents(out.get());
  pk.keyid = hex(digest, dlen);
  pk.alg = alg;
  return pk;
}

result<PkeyPtr> read_private_key(std::string_view pem, std::string_view what) {
  BioPtr bio = mem_bio(pem);
  PkeyPtr key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!key) {
    ERR_clear_error();
    return make_error(errc::invalid, fmt::format("{} does not hold an unencrypted PEM private key", what));
  }
  return key;
}

result<PkeyPtr> read_public_key(std::string_view pem, std::string_view what) {
  BioPtr bio = mem_bio(pem);
  PkeyPtr key(bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (key) return key;
  ERR_clear_error();
  if (pem.find("PRIVATE KEY-----") != std::string_view::npos) {
    auto priv = read_private_key(pem, what);
    if (priv) return priv;
  }
  return make_error(errc::invalid, fmt::format("{} does not hold a PEM public key", what));
}

/// 1 valid, 0 invalid, negative: error (e.g. a malformed DER signature counts as invalid).
int verify_raw(EVP_PKEY* key, Algorithm alg, std::string_view data, std::string_view sig) {
  MdCtxPtr md(EVP_MD_CTX_new());
  if (!md) return -1;
  const char* mdname = alg == Algorithm::ed25519 ? nullptr : "SHA256";
  if (EVP_DigestVerifyInit_ex(md.get(), nullptr, mdname, nullptr, nullptr, key, nullptr) != 1) {
    ERR_clear_error();
    return -1;
  }
  const int rc = EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                                  reinterpret_cast<const unsigned char*>(data.data()), data.size());
  ERR_clear_error();
  return rc;
}

std::string short_id(std::string_view keyid) {
  return keyid.size() > 16 ? fmt::format("{}…", keyid.substr(0, 16)) : std::string(keyid);
}

bool is_hex_keyid(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

std::string join_ids(const std::vector<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) {
    if (!out.empty()) out += ", ";
    out += short_id(id);
  }
  return out;
}

}  // namespace

std::string_view to_string(Algorithm a) {
  return a == Algorithm::ed25519 ? kEd25519 : kEcdsa;
}

result<Algorithm> parse_algorithm(std::string_view text) {
  if (text == kEcdsa) return Algorithm::ecdsa_p256_sha256;
  if (text == kEd25519) return Algorithm::ed25519;
  return make_error(errc::invalid,
                    fmt::format("unknown signature algorithm '{}' (expected {} or {})", text, kEcdsa, kEd25519));
}

result<PublicKey> parse_public_key(std::string_view pem, std::string_view what) {
  auto key = read_public_key(pem, what);
  if (!key) return std::move(key).error();
  auto alg = key_algorithm(key->get(), what);
  if (!alg) return std::move(alg).error();
  return describe(key->get(), *alg, what);
}

result<std::vector<SignatureEntry>> parse_signature_file(std::string_view text, std::string_view what) {
  const auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return make_error(errc::invalid, fmt::format("{} is not valid JSON", what));
  if (!doc.is_object() || !doc.contains("signatures") || !doc["signatures"].is_array())
    return make_error(errc::invalid,
                      fmt::format("{} must be a JSON object with a \"signatures\" array", what));
  std::vector<SignatureEntry> out;
  std::size_t i = 0;
  for (const auto& e : doc["signatures"]) {
    const std::string where = fmt::format("{}: signatures[{}]", what, i++);
    if (!e.is_object()) return make_error(errc::invalid, fmt::format("{} is not an object", where));
    for (const char* field : {"keyid", "alg", "sig"})
      if (!e.contains(field) || !e[field].is_string())
        return make_error(errc::invalid, fmt::format("{} has no string \"{}\"", where, field));
    SignatureEntry entry;
    entry.keyid = e["keyid"].get<std::string>();
    std::transform(entry.keyid.begin(), entry.keyid.end(), entry.keyid.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!is_hex_keyid(entry.keyid))
      return make_error(errc::invalid, fmt::format("{}: keyid is not 64 hex digits (a SHA-256)", where));
    auto alg = parse_algorithm(e["alg"].get<std::string>());
    if (!alg) return make_error(errc::invalid, fmt::format("{}: {}", where, alg.error().message));
    entry.alg = *alg;
    auto sig = base64_decode(e["sig"].get<std::string>());
    if (!sig) return make_error(errc::invalid, fmt::format("{}: sig is {}", where, sig.error().message));
    if (sig->empty()) return make_error(errc::invalid, fmt::format("{}: sig is empty", where));
    entry.sig.assign(sig->begin(), sig->end());
    out.push_back(std::move(entry));
  }
  return out;
}

std::string to_signature_file(const std::vector<SignatureEntry>& entries) {
  nlohmann::json sigs = nlohmann::json::array();
  for (const auto& e : entries)
    sigs.push_back({{"keyid", e.keyid}, {"alg", std::string(to_string(e.alg))}, {"sig", base64_encode(e.sig)}});
  return nlohmann::json{{"signatures", sigs}}.dump(2) + "\n";
}

result<KeyPair> generate_key(Algorithm alg) {
  PkeyPtr key(alg == Algorithm::ed25519 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                                        : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key)
    return make_error(errc::io, fmt::format("cannot generate an {} key: {}", to_string(alg), openssl_reason()));
  BioPtr out(BIO_new(BIO_s_mem()));
  if (!out || PEM_write_bio_PrivateKey(out.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return make_error(errc::io, fmt::format("cannot encode the new {} key: {}", to_string(alg), openssl_reason()));
  auto pub = describe(key.get(), alg, "the new key");
  if (!pub) return std::move(pub).error();
  return KeyPair{bio_contents(out.get()), std::move(*pub)};
}

result<SignatureEntry> sign(std::string_view data, std::string_view private_pem) {
  auto key = read_private_key(private_pem, "the signing key");
  if (!key) return std::move(key).error();
  auto alg = key_algorithm(key->get(), "the signing key");
  if (!alg) return std::move(alg).error();
  auto pub = describe(key->get(), *alg, "the signing key");
  if (!pub) return std::move(pub).error();

  MdCtxPtr md(EVP_MD_CTX_new());
  const char* mdname = *alg == Algorithm::ed25519 ? nullptr : "SHA256";
  std::size_t len = 0;
  const auto* in = reinterpret_cast<const unsigned char*>(data.data());
  if (!md || EVP_DigestSignInit_ex(md.get(), nullptr, mdname, nullptr, nullptr, key->get(), nullptr) != 1 ||
      EVP_DigestSign(md.get(), nullptr, &len, in, data.size()) != 1)
    return make_error(errc::invalid, fmt::format("cannot sign with the {} key: {}", to_string(*alg), openssl_reason()));
  std::string sig(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &len, in, data.size()) != 1)
    return make_error(errc::invalid, fmt::format("cannot sign with the {} key: {}", to_string(*alg), openssl_reason()));
  sig.resize(len);
  return SignatureEntry{pub->keyid, *alg, std::move(sig)};
}

result<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text, std::string_view what) {
  const auto bad = [&] {
    return make_error(errc::invalid,
                      fmt::format("{} is not an RFC 3339 time like 2026-01-01T00:00:00Z: '{}'", what, text));
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, n = 0;
  const std::string str(text);
  if (std::sscanf(str.c_str(), "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6 || n != 19)
    return bad();
  std::size_t pos = 19;
  if (pos < str.size() && str[pos] == '.') {
    ++pos;
    const std::size_t start = pos;
    while (pos < str.size() && std::isdigit(static_cast<unsigned char>(str[pos])) != 0) ++pos;
    if (pos == start) return bad();  // fractions are accepted and ignored
  }
  long offset = 0;
  const std::string_view zone = std::string_view(str).substr(pos);
  if (zone == "Z" || zone == "z") {
  } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':') {
    int oh = 0, om = 0;
    if (std::sscanf(str.c_str() + pos + 1, "%2d:%2d", &oh, &om) != 2 || oh > 23 || om > 59) return bad();
    offset = (zone[0] == '+' ? 1 : -1) * (oh * 3600L + om * 60L);
  } else {
    return bad();
  }
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || s > 60) return bad();
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  const std::time_t t = timegm(&tm) - offset;
  // system_clock counts nanoseconds in 64 bits (until 2262): later times, such as a
  // notAfter of 9999-12-31, mean "never" rather than overflowing into the past.
  using Clock = std::chrono::system_clock;
  const auto limit = std::chrono::duration_cast<std::chrono::seconds>(Clock::duration::max()).count() - 1;
  if (t >= limit) return Clock::time_point::max();
  if (t <= -limit) return Clock::time_point::min();
  return Clock::from_time_t(t);
}

std::string format_rfc3339(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

result<void> verify_recipe(std::string_view recipe_bytes, const std::optional<std::string>& signature_file,
                           const TrustPolicy& policy, std::string_view what, std::chrono::system_clock::time_point now) {
  if (!policy.require_signatures) return ok();
  const std::string sig_name = fmt::format("{}.sig", what);
  const auto refuse = [&](std::string reason) {
    return make_error(errc::unauthorized, fmt::format("{} {}", what, reason));
  };
  if (!signature_file) return refuse(fmt::format("is not signed (no {})", sig_name));
  auto entries = parse_signature_file(*signature_file, sig_name);
  if (!entries)
    return make_error(errc::unauthorized, fmt::format("{} cannot be verified: {}", what, entries.error().message));
  if (entries->empty()) return refuse(fmt::format("is not signed ({} holds no signatures)", sig_name));

  const std::size_t threshold = std::max<std::size_t>(policy.threshold, 1);
  std::set<std::string> valid;
  // Reasons, most specific first; each holds the first sentence of its kind.
  std::optional<std::string> bad_sig, alg_mismatch, revoked, expired;
  std::vector<std::string> unknown;
  for (const auto& e : *entries) {
    if (valid.count(e.keyid) != 0) continue;
    if (std::find(policy.revoked_keyids.begin(), policy.revoked_keyids.end(), e.keyid) !=
        policy.revoked_keyids.end()) {
        if (!revoked) revoked = fmt::format("signer {} is revoked", short_id(e.keyid));
      continue;
    }
    const auto signer = std::find_if(policy.signers.begin(), policy.signers.end(),
                                     [&](const TrustedSigner& s) { return s.key.keyid == e.keyid; });
    if (signer == policy.signers.end()) {
      if (std::find(unknown.begin(), unknown.end(), e.keyid) == unknown.end()) unknown.push_back(e.keyid);
      continue;
    }
    if (signer->not_after && now > *signer->not_after) {
      if (!expired)
        expired = fmt::format("signer {} expired on {}", short_id(e.keyid), format_rfc3339(*signer->not_after));
      continue;
    }
    if (e.alg != signer->key.alg) {
      if (!alg_mismatch)
        alg_mismatch = fmt::format("signature of {} is marked {}, but that trusted key is an {} key",
                                   short_id(e.keyid), to_string(e.alg), to_string(signer->key.alg));
      continue;
    }
    auto key = read_public_key(signer->key.pem, signer->source.empty() ? "a trusted signer" : signer->source);
    if (!key) return make_error(errc::config, key.error().message);
    if (verify_raw(key->get(), e.alg, recipe_bytes, e.sig) == 1) {
      valid.insert(e.keyid);
    } else if (!bad_sig) {
      bad_sig = fmt::format("the signature of {} does not match the recipe (was it changed after signing?)",
                            short_id(e.keyid));
    }
  }
  if (valid.size() >= threshold) return ok();

  std::optional<std::string> reason = bad_sig ? bad_sig : alg_mismatch ? alg_mismatch : revoked ? revoked : expired;
  if (!valid.empty()) {
    std::string msg = fmt::format("has {} valid signature{}, {} are required", valid.size(),
                                  valid.size() == 1 ? "" : "s", threshold);
    if (reason) msg += fmt::format(" ({})", *reason);
    else if (!unknown.empty()) msg += fmt::format(" (also signed by untrusted keyid {})", join_ids(unknown));
    return refuse(std::move(msg));
  }
  if (reason) return make_error(errc::unauthorized, fmt::format("{}: {}", what, *reason));
  return refuse(fmt::format("is signed only by keys this device does not trust (keyid {})", join_ids(unknown)));
}

}  // namespace canopy::trust
