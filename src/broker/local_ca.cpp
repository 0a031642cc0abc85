// The local CA with OpenSSL 3's EVP and X509 APIs.
#include "canopy/broker/local_ca.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <ctime>

#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "canopy/broker/settings.hpp"
#include "canopy/core/file.hpp"
#include "canopy/trust/tls_identity.hpp"

namespace canopy::broker {
namespace fs = std::filesystem;
namespace {

struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using BioPtr = std::unique_ptr<BIO, BioFree>;

std::string ssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

std::string host_name() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

result<KeyPtr> new_p256_key() {
  KeyPtr k(EVP_EC_gen("P-256"));
  if (!k) return make_error(errc::io, "cannot generate an EC P-256 key: " + ssl_error());
  return k;
}

result<std::string> key_pem(EVP_PKEY* k) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_PrivateKey(b.get(), k, nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return make_error(errc::io, "cannot encode a private key: " + ssl_error());
  char* data = nullptr;
  const long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

result<std::string> cert_pem(X509* x) {
  BioPtr b(BIO_new(BIO_s_mem()));
  if (!b || PEM_write_bio_X509(b.get(), x) != 1) return make_error(errc::io, "cannot encode a certificate: " + ssl_error());
  char* data = nullptr;
  const long n = BIO_get_mem_data(b.get(), &data);
  return std::string(data, static_cast<std::size_t>(n));
}

X509Ptr parse_cert(const std::string& pem) {
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return X509Ptr(b ? PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr) : nullptr);
}

KeyPtr parse_key(const std::string& pem) {
  BioPtr b(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return KeyPtr(b ? PEM_read_bio_PrivateKey(b.get(), nullptr, nullptr, nullptr) : nullptr);
}

bool add_ext(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  if (ext == nullptr) return false;
  const bool done = X509_add_ext(cert, ext, -1) == 1;
  X509_EXTENSION_free(ext);
  return done;
}

// Builds and signs a certificate for `key` (subject CN = cn). `issuer`/`issuer_key` null:
// self-signed. Starts one hour in the past, to tolerate small clock differences between peers.
result<X509Ptr> make_cert(EVP_PKEY* key, const std::string& cn, int days, X509* issuer, EVP_PKEY* issuer_key,
                          const std::vector<std::pair<int, std::string>>& extensions,
                          OSSL_LIB_CTX* signing_libctx = nullptr) {
  X509Ptr x(X509_new());
  if (!x) return make_error(errc::io, "cannot allocate a certificate: " + ssl_error());
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof serial) != 1) return make_error(errc::io, "no random serial number: " + ssl_error());
  serial[0] &= 0x7f;  // positive
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  const bool serial_ok = bn != nullptr && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x.get())) != nullptr;
  BN_free(bn);
  X509_NAME* name = X509_get_subject_name(x.get());
  if (!serial_ok || X509_set_version(x.get(), 2) != 1 ||
      X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(x.get()), days, 0, nullptr) == nullptr ||
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1 ||
      X509_set_issuer_name(x.get(), issuer ? X509_get_subject_name(issuer) : name) != 1 ||
      X509_set_pubkey(x.get(), key) != 1)
    return make_error(errc::io, fmt::format("cannot build the certificate for {}: {}", cn, ssl_error()));
  for (const auto& [nid, value] : extensions)
    if (!add_ext(x.get(), issuer ? issuer : x.get(), nid, value))
      return make_error(errc::io, fmt::format("cannot add the extension {} to the certificate for {}: {}", value, cn,
                                              ssl_error()));
  // Signed in the signing key's own library context: a TPM key signs inside the TPM.
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  const bool signed_ok = md != nullptr &&
                         EVP_DigestSignInit_ex(md, nullptr, "SHA256", signing_libctx, nullptr,
                                               issuer_key ? issuer_key : key, nullptr) == 1 &&
                         X509_sign_ctx(x.get(), md) > 0;
  EVP_MD_CTX_free(md);
  if (!signed_ok) return make_error(errc::io, fmt::format("cannot sign the certificate for {}: {}", cn, ssl_error()));
  return x;
}

result<void> write_with_mode(const fs::path& file, const std::string& text, mode_t mode) {
  if (auto r = write_file_atomically(file, text, mode); !r) return r;
  // write_file_atomically's mode goes through canopyd's umask (0027): set it exactly.
  if (::chmod(file.c_str(), mode) != 0) return errno_error(fmt::format("cannot set the mode of {}", file.string()), errno);
  return ok();
}

// A self-signed CA certificate for `key`, valid 10 years.
result<X509Ptr> make_ca_cert(EVP_PKEY* key, OSSL_LIB_CTX* libctx) {
  return make_cert(key, "Canopy local CA " + host_name(), 3650, nullptr, nullptr,
                   {{NID_basic_constraints, "critical,CA:TRUE"},
                    {NID_key_usage, "critical,keyCertSign,cRLSign"},
                    {NID_subject_key_identifier, "hash"}},
                   libctx);
}

struct PemPair {
  std::string key, cert;
};

result<PemPair> to_pem(EVP_PKEY* key, X509* cert) {
  auto kp = key_pem(key);
  if (!kp) return kp.error();
  auto cp = cert_pem(cert);
  if (!cp) return cp.error();
  return PemPair{std::move(*kp), std::move(*cp)};
}

// The key first (0600), then the certificate (0644): a crash in between leaves a key without
// certificate, which the next start reports (or replaces) instead of pairing it wrongly.
result<void> write_pair(const PemPair& pem, const fs::path& key_file, const fs::path& crt_file) {
  if (auto r = write_with_mode(key_file, pem.key, 0600); !r) return r;
  return write_with_mode(crt_file, pem.cert, 0644);
}

}  // namespace

struct LocalCa::Impl {
  KeyPtr key;                                   // a key file's key
  std::shared_ptr<trust::PrivateKey> external;  // or a TPM key
  X509Ptr cert;
  EVP_PKEY* signing_key() const { return external ? external->get() : key.get(); }
  OSSL_LIB_CTX* libctx() const { return external ? external->library_context() : nullptr; }
};

namespace {
// True when `cert` holds the public half of `key` (compared as DER: a TPM key lives in another
// provider, where EVP_PKEY_eq may refuse to compare).
bool cert_matches_key(X509* cert, EVP_PKEY* key) {
  EVP_PKEY* pub = X509_get0_pubkey(cert);
  if (pub == nullptr) return false;
  unsigned char* a = nullptr;
  unsigned char* b = nullptr;
  const int na = i2d_PUBKEY(pub, &a), nb = i2d_PUBKEY(key, &b);
  const bool same = na > 0 && na == nb && std::memcmp(a, b, static_cast<std::size_t>(na)) == 0;
  OPENSSL_free(a);
  OPENSSL_free(b);
  ERR_clear_error();
  return same;
}
}  // namespace

LocalCa::LocalCa(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LocalCa::LocalCa(LocalCa&&) noexcept = default;
LocalCa& LocalCa::operator=(LocalCa&&) noexcept = default;
LocalCa::~LocalCa() = default;

result<LocalCa> LocalCa::open_or_create(const fs::path& dir, std::shared_ptr<trust::PrivateKey> external) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return make_error(errc::io, fmt::format("cannot create {}: {}", dir.string(), ec.message()));
  if (::chmod(dir.c_str(), 0755) != 0) return errno_error(fmt::format("cannot set the mode of {}", dir.string()), errno);
  const fs::path key_file = dir / "ca.key";
  const fs::path crt_file = dir / "ca.crt";
  const bool have_key = fs::exists(key_file), have_crt = fs::exists(crt_file);
  auto impl = std::make_unique<Impl>();
  std::string pem;
  if (external) {
    // The key is in the TPM: only the certificate lives here.
    if (have_key)
      return make_error(errc::corrupt, fmt::format("caKey names a TPM key ({}) but {} exists too: remove the file (and "
                                                   "ca.crt, to make a new CA with the TPM key; every client device "
                                                   "certificate must then be issued again), or drop caKey",
                                                   external->description(), key_file.string()));
    impl->external = std::move(external);
    if (have_crt) {
      auto ct = read_file(crt_file);
      if (!ct) return ct.error();
      impl->cert = parse_cert(*ct);
      if (!impl->cert || !cert_matches_key(impl->cert.get(), impl->external->get()))
        return make_error(errc::corrupt, fmt::format("{} is not the certificate of the CA key {}: restore the right "
                                                     "one, or remove it to make a new CA certificate for that key",
                                                     crt_file.string(), impl->external->description()));
      pem = std::move(*ct);
    } else {
      auto cert = make_ca_cert(impl->external->get(), impl->libctx());
      if (!cert) return cert.error();
      auto cp = cert_pem(cert->get());
      if (!cp) return cp.error();
      if (auto r = write_with_mode(crt_file, *cp, 0644); !r) return r.error();
      impl->cert = std::move(*cert);
      pem = std::move(*cp);
    }
  } else if (!have_key && !have_crt) {
    auto key = new_p256_key();
    if (!key) return key.error();
    auto cert = make_ca_cert(key->get(), nullptr);
    if (!cert) return cert.error();
    auto pair = to_pem(key->get(), cert->get());
    if (!pair) return pair.error();
    // A key without certificate (a crash in between) is reported at the next start instead of
    // silently making a second CA.
    if (auto r = write_pair(*pair, key_file, crt_file); !r) return r.error();
    impl->key = std::move(*key);
    impl->cert = std::move(*cert);
    pem = std::move(pair->cert);
  } else {
    if (!have_key || !have_crt)
      return make_error(errc::corrupt, fmt::format("the local CA in {} is incomplete ({} is missing): restore it from a "
                                                   "backup, or remove the folder to create a new CA (every client "
                                                   "device certificate must then be issued again)",
                                                   dir.string(), (have_key ? crt_file : key_file).string()));
    auto kt = read_file(key_file);
    if (!kt) return kt.error();
    auto ct = read_file(crt_file);
    if (!ct) return ct.error();
    impl->key = parse_key(*kt);
    impl->cert = parse_cert(*ct);
    if (!impl->key || !impl->cert)
      return make_error(errc::corrupt, fmt::format("the local CA in {} cannot be read ({}): restore it from a backup or "
                                                   "remove the folder to create a new CA",
                                                   dir.string(), ssl_error()));
    if (X509_check_private_key(impl->cert.get(), impl->key.get()) != 1)
      return make_error(errc::corrupt, fmt::format("{} and {} do not belong together: restore the pair from a backup "
                                                   "or remove the folder to create a new CA",
                                                   key_file.string(), crt_file.string()));
    pem = std::move(*ct);
  }
  LocalCa ca(std::move(impl));
  ca.ca_pem_ = std::move(pem);
  return ca;
}

result<IssuedCertificate> LocalCa::issue_client(const std::string& name, int days) const {
  if (!valid_device_name(name))
    return make_error(errc::invalid, fmt::format("\"{}\" is not a valid client device name: use 1 to 64 letters, digits, "
                                                 "'.', '_' or '-'",
                                                 name));
  if (days < 1 || days > 3650)
    return make_error(errc::invalid, fmt::format("days must be from 1 to 3650, not {}", days));
  auto key = new_p256_key();
  if (!key) return key.error();
  auto cert = make_cert(key->get(), name, days, impl_->cert.get(), impl_->signing_key(),
                        {{NID_basic_constraints, "critical,CA:FALSE"},
                         {NID_key_usage, "critical,digitalSignature"},
                         {NID_ext_key_usage, "clientAuth"},
                         {NID_subject_key_identifier, "hash"},
                         {NID_authority_key_identifier, "keyid"}},
                        impl_->libctx());
  if (!cert) return cert.error();
  auto pair = to_pem(key->get(), cert->get());
  if (!pair) return pair.error();
  return IssuedCertificate{std::move(pair->cert), std::move(pair->key)};
}

result<bool> LocalCa::ensure_server_certificate(const fs::path& crt, const fs::path& key,
                                                const std::vector<std::string>& dns_names,
                                                const std::vector<std::string>& ip_addresses, int days,
                                                std::chrono::hours renew_before) const {
  if (fs::exists(crt) && fs::exists(key)) {
    auto ct = read_file(crt);
    auto kt = read_file(key);
    if (ct && kt) {
      X509Ptr cert = parse_cert(*ct);
      KeyPtr k = parse_key(*kt);
      EVP_PKEY* ca_pub = X509_get0_pubkey(impl_->cert.get());
      std::time_t limit = std::time(nullptr) + std::chrono::duration_cast<std::chrono::seconds>(renew_before).count();
      if (cert && k && X509_check_private_key(cert.get(), k.get()) == 1 && ca_pub != nullptr &&
          X509_verify(cert.get(), ca_pub) == 1 && X509_cmp_time(X509_get0_notAfter(cert.get()), &limit) > 0)
        return false;
    }
    ERR_clear_error();
  }
  auto k = new_p256_key();
  if (!k) return k.error();
  std::string san;
  for (const auto& d : dns_names) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& i : ip_addresses) san += (san.empty() ? "IP:" : ",IP:") + i;
  auto cert = make_cert(k->get(), dns_names.empty() ? std::string("localhost") : dns_names.front(), days,
                        impl_->cert.get(), impl_->signing_key(),
                        {{NID_basic_constraints, "critical,CA:FALSE"},
                         {NID_key_usage, "critical,digitalSignature"},
                         {NID_ext_key_usage, "serverAuth"},
                         {NID_subject_alt_name, san},
                         {NID_subject_key_identifier, "hash"},
                         {NID_authority_key_identifier, "keyid"}},
                        impl_->libctx());
  if (!cert) return cert.error();
  auto pair = to_pem(k->get(), cert->get());
  if (!pair) return pair.error();
  if (auto r = write_pair(*pair, key, crt); !r) return r.error();
  return true;
}

}  // namespace canopy::broker
