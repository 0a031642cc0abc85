// The device's TLS client identity (see tls_identity.hpp for the contract and the reasons).
#include "canopy/trust/tls_identity.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <mutex>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <openssl/store.h>
#include <openssl/ui.h>
#include <openssl/x509.h>

namespace canopy::trust {

namespace fs = std::filesystem;

std::string last_tls_error(const std::string& fallback) {
  std::string out;
  const char* data = nullptr;
  int flags = 0;
  unsigned long e = 0;
  while ((e = ERR_get_error_all(nullptr, nullptr, nullptr, &data, &flags)) != 0) {
    const char* reason = ERR_reason_error_string(e);
    std::string one = reason ? reason : fmt::format("OpenSSL error {:#x}", e);
    if (data && (flags & ERR_TXT_STRING) && *data) one += fmt::format(" ({})", data);
    if (out.find(one) != std::string::npos) continue;  // OpenSSL often repeats itself
    if (!out.empty()) out += "; ";
    out += one;
  }
  return out.empty() ? fallback : out;
}

result<void> check_private_key_file_mode(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT)
      return make_error(errc::not_found, fmt::format("the private key file {} does not exist (system.privateKeyPath)",
                                                     path.string()));
    return errno_error(fmt::format("cannot check the private key file {}", path.string()), err);
  }
  if ((st.st_mode & 077) != 0)
    return make_error(errc::config,
                      fmt::format("the private key file {} is readable by group or others (mode {:04o}); "
                                  "canopyd refuses to use it. Run: chmod 600 {}",
                                  path.string(), st.st_mode & 07777, path.string()));
  return ok();
}

namespace {

struct LibCtxDeleter {
  void operator()(OSSL_LIB_CTX* c) const { OSSL_LIB_CTX_free(c); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct CtxDeleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};

// A TSS2 key file says so in its first line; anything else is read as an ordinary PEM key.
bool is_tss2_key_file(const fs::path& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line.find("TSS2 PRIVATE KEY") != std::string::npos;
}

// OSSL_STORE asks for a password when a TSS2 file says emptyAuth FALSE (tpm2_encodeobject
// without -p); the device key has none, so answer with an empty one instead of failing.
int empty_password(UI* ui, UI_STRING* s) { return UI_set_result(ui, s, "") == 0 ? 1 : 0; }

result<std::unique_ptr<EVP_PKEY, PkeyDeleter>> load_key(OSSL_LIB_CTX* lctx, const std::string& uri,
                                                        const std::string& what) {
  UI_METHOD* ui = UI_create_method("canopy-empty-password");
  UI_method_set_reader(ui, empty_password);
  OSSL_STORE_CTX* st = OSSL_STORE_open_ex(uri.c_str(), lctx, nullptr, ui, nullptr, nullptr, nullptr, nullptr);
  EVP_PKEY* key = nullptr;
  if (st != nullptr && OSSL_STORE_expect(st, OSSL_STORE_INFO_PKEY) == 1) {
    while (key == nullptr && OSSL_STORE_eof(st) == 0) {
      OSSL_STORE_INFO* info = OSSL_STORE_load(st);
      if (info == nullptr) break;
      key = OSSL_STORE_INFO_get1_PKEY(info);
      OSSL_STORE_INFO_free(info);
    }
  }
  OSSL_STORE_close(st);
  UI_destroy_method(ui);
  if (key == nullptr)
    return make_error(errc::config, fmt::format("cannot load the private key {}: {}", what,
                                                last_tls_error("it holds no private key")));
  ERR_clear_error();
  return std::unique_ptr<EVP_PKEY, PkeyDeleter>(key);
}

std::int64_t to_unix(const ASN1_TIME* t) {
  struct tm tm {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return 0;
  return static_cast<std::int64_t>(timegm(&tm));
}

}  // namespace

struct PrivateKey::Impl {
  std::unique_ptr<OSSL_LIB_CTX, LibCtxDeleter> libctx;  // null: the default context (file keys)
  OSSL_PROVIDER* tpm2 = nullptr;
  OSSL_PROVIDER* deflt = nullptr;
  std::unique_ptr<EVP_PKEY, PkeyDeleter> key;
  KeyStorage storage = KeyStorage::file;
  std::string description;

  ~Impl() {
    key.reset();
    if (tpm2) OSSL_PROVIDER_unload(tpm2);
    if (deflt) OSSL_PROVIDER_unload(deflt);
  }
};

PrivateKey::PrivateKey(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PrivateKey::~PrivateKey() = default;
EVP_PKEY* PrivateKey::get() const { return impl_->key.get(); }
OSSL_LIB_CTX* PrivateKey::library_context() const { return impl_->libctx.get(); }
KeyStorage PrivateKey::storage() const { return impl_->storage; }
const std::string& PrivateKey::description() const { return impl_->description; }

result<std::shared_ptr<PrivateKey>> PrivateKey::load(const std::string& key_uri, const std::string& tpm_tcti,
                                                     const std::string& what) {
  ERR_clear_error();
  auto impl = std::make_unique<Impl>();
  if (key_uri.empty()) return make_error(errc::config, what + " is not set");
  // Where the key lives decides the library context.
  if (key_uri.rfind("handle:", 0) == 0) {
    impl->storage = KeyStorage::tpm_handle;
    impl->description = "TPM handle " + key_uri.substr(7);
  } else {
    const fs::path p(key_uri);
    if (auto m = check_private_key_file_mode(p); !m)
      return make_error(m.error().code, fmt::format("{} ({})", m.error().message, what));
    if (is_tss2_key_file(p)) {
      impl->storage = KeyStorage::tpm_key_file;
      impl->description = "TPM key file " + key_uri;
    } else {
      impl->description = "file " + key_uri;
    }
  }
  OSSL_LIB_CTX* lctx = nullptr;
  if (impl->storage != KeyStorage::file) {
    // The provider reads its TCTI from the environment when it is loaded.
    if (!tpm_tcti.empty()) ::setenv("TPM2OPENSSL_TCTI", tpm_tcti.c_str(), 1);
    impl->libctx.reset(OSSL_LIB_CTX_new());
    lctx = impl->libctx.get();
    if (lctx == nullptr) return make_error(errc::io, "cannot create an OpenSSL library context for the TPM key");
    impl->tpm2 = OSSL_PROVIDER_load(lctx, "tpm2");  // first: see the header (tpm2-openssl 1.1.1)
    if (impl->tpm2 == nullptr) {
      const std::string why = last_tls_error("the provider did not load");
      const char* tcti = std::getenv("TPM2OPENSSL_TCTI");
      return make_error(errc::no_connection,
                        fmt::format("cannot use the TPM for the key {} ({}): the OpenSSL tpm2 provider could not be "
                                    "loaded or could not reach the TPM (TCTI {}): {}. Is the tpm2-openssl package "
                                    "installed and the TPM (or tpm2-abrmd) running?",
                                    key_uri, what, tcti && *tcti ? tcti : "default search", why));
    }
    impl->deflt = OSSL_PROVIDER_load(lctx, "default");
    if (impl->deflt == nullptr ||
        EVP_set_default_properties(lctx, "tpm2.digest!=yes,tpm2.cipher!=yes,tpm2.rand!=yes") != 1)
      return make_error(errc::io, "cannot set up the TPM key's OpenSSL context: " + last_tls_error());
  }
  auto key = load_key(lctx, key_uri, impl->description);
  if (!key) {
    if (impl->storage != KeyStorage::file)
      return make_error(errc::no_connection, key.error().message + " (is that key in this TPM?)");
    return key.error();
  }
  impl->key = std::move(*key);
  ERR_clear_error();
  return std::shared_ptr<PrivateKey>(new PrivateKey(std::move(impl)));
}

struct TlsIdentity::Impl {
  std::shared_ptr<PrivateKey> key;
  std::unique_ptr<SSL_CTX, CtxDeleter> ctx;
  std::string subject;
  std::int64_t not_after = 0;

  ~Impl() { ctx.reset(); }
};

TlsIdentity::TlsIdentity(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TlsIdentity::~TlsIdentity() = default;
SSL_CTX* TlsIdentity::ssl_context() const { return impl_->ctx.get(); }
KeyStorage TlsIdentity::key_storage() const { return impl_->key->storage(); }
std::string TlsIdentity::key_description() const { return impl_->key->description(); }
std::string TlsIdentity::certificate_subject() const { return impl_->subject; }
std::int64_t TlsIdentity::certificate_not_after() const { return impl_->not_after; }

result<std::shared_ptr<TlsIdentity>> TlsIdentity::load(const TlsIdentityOptions& o) {
  ERR_clear_error();
  auto impl = std::make_unique<Impl>();
  const std::string& key_uri = o.private_key;
  if (o.certificate_path.empty())
    return make_error(errc::config, "system.certificateFilePath is not set: the cloud link needs the device certificate");
  if (key_uri.empty())
    return make_error(errc::config, "system.privateKeyPath is not set: the cloud link needs the device's private key");
  if (o.root_ca_path.empty())
    return make_error(errc::config,
                      "system.rootCaPath is not set: without it canopyd cannot check that it talks to the real cloud");

  auto pk = PrivateKey::load(key_uri, o.tpm_tcti, "system.privateKeyPath");
  if (!pk) return pk.error();
  impl->key = std::move(*pk);
  OSSL_LIB_CTX* lctx = impl->key->library_context();
  const bool in_tpm = impl->key->storage() != KeyStorage::file;

  // Certificate: parse it here to report its subject and expiry in status and messages.
  {
    FILE* f = std::fopen(o.certificate_path.c_str(), "r");
    if (f == nullptr) {
      const int err = errno;
      if (err == ENOENT)
        return make_error(errc::not_found, fmt::format("the device certificate {} does not exist "
                                                       "(system.certificateFilePath)",
                                                       o.certificate_path.string()));
      return errno_error("cannot read the device certificate " + o.certificate_path.string(), err);
    }
    std::unique_ptr<X509, X509Deleter> cert(PEM_read_X509(f, nullptr, nullptr, nullptr));
    std::fclose(f);
    if (!cert)
      return make_error(errc::config, fmt::format("the device certificate {} is not a PEM certificate: {}",
                                                  o.certificate_path.string(), last_tls_error()));
    char buf[512];
    X509_NAME_oneline(X509_get_subject_name(cert.get()), buf, sizeof buf);
    impl->subject = buf;
    impl->not_after = to_unix(X509_get0_notAfter(cert.get()));
  }

  impl->ctx.reset(SSL_CTX_new_ex(lctx, nullptr, TLS_client_method()));
  SSL_CTX* ctx = impl->ctx.get();
  if (ctx == nullptr) return make_error(errc::io, "cannot create a TLS context: " + last_tls_error());
  SSL_CTX_set_min_proto_version(ctx, in_tpm ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (SSL_CTX_load_verify_locations(ctx, o.root_ca_path.c_str(), nullptr) != 1)
    return make_error(errc::config, fmt::format("cannot read the root CA file {} (system.rootCaPath): {}",
                                                o.root_ca_path.string(), last_tls_error()));
  if (SSL_CTX_use_certificate_chain_file(ctx, o.certificate_path.c_str()) != 1)
    return make_error(errc::config, fmt::format("cannot use the device certificate {}: {}",
                                                o.certificate_path.string(), last_tls_error()));
  if (SSL_CTX_use_PrivateKey(ctx, impl->key->get()) != 1 || SSL_CTX_check_private_key(ctx) != 1)
    return make_error(errc::config, fmt::format("the private key ({}) does not belong to the device certificate {}: {}",
                                                impl->key->description(), o.certificate_path.string(),
                                                last_tls_error()));
  if (!o.alpn.empty()) {
    std::string wire(1, static_cast<char>(o.alpn.size()));
    wire += o.alpn;
    if (SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(wire.data()),
                                static_cast<unsigned>(wire.size())) != 0)
      return make_error(errc::config, "cannot set the ALPN protocol " + o.alpn);
  }
  ERR_clear_error();
  return std::shared_ptr<TlsIdentity>(new TlsIdentity(std::move(impl)));
}

}  // namespace canopy::trust
