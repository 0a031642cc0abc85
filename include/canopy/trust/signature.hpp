//! Signed recipes: detached signatures over the exact recipe bytes, signer keys and the trust
//! policy that decides whether a recipe may be installed. Pure (no I/O beyond what a function
//! names), OpenSSL 3 EVP.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "canopy/core/error.hpp"

namespace canopy::trust {

/// `ecdsa-p256-sha256` (the default) or `ed25519`.
enum class Algorithm { ecdsa_p256_sha256, ed25519 };
std::string_view to_string(Algorithm a);
result<Algorithm> parse_algorithm(std::string_view text);

/// A public key a recipe may be signed with.
struct PublicKey {
  std::string pem;      ///< SubjectPublicKeyInfo PEM
  std::string keyid;    ///< lowercase hex SHA-256 of the SubjectPublicKeyInfo DER
  Algorithm alg = Algorithm::ecdsa_p256_sha256;
};

/// Parses a PEM public key (or the public half of a PEM private key). Only P-256 EC and Ed25519
/// keys are accepted. Errors: errc::invalid naming `what` (a file name or a config path).
result<PublicKey> parse_public_key(std::string_view pem, std::string_view what);

/// One entry of a `.sig` document.
struct SignatureEntry {
  std::string keyid;
  Algorithm alg = Algorithm::ecdsa_p256_sha256;
  std::string sig;  ///< raw signature bytes (DER for ECDSA, 64 bytes for Ed25519)
};

/// The `<recipe>.sig` document: `{"signatures": [{"keyid": hex, "alg": "...", "sig": base64}, ...]}`.
/// Errors (errc::invalid): not JSON, wrong shape, bad base64, unknown alg — naming `what`.
result<std::vector<SignatureEntry>> parse_signature_file(std::string_view text, std::string_view what);
std::string to_signature_file(const std::vector<SignatureEntry>& entries);

/// A freshly generated key pair, PEM encoded.
struct KeyPair {
  std::string private_pem;  ///< PKCS#8 PEM (unencrypted; the caller writes it mode 0600)
  PublicKey public_key;
};
result<KeyPair> generate_key(Algorithm alg);

/// Signs `data` with a PEM private key. Errors: errc::invalid for an unusable key.
result<SignatureEntry> sign(std::string_view data, std::string_view private_pem);

/// A trusted signer from the nucleus configuration.
struct TrustedSigner {
  PublicKey key;
  std::optional<std::chrono::system_clock::time_point> not_after;  ///< after it, the key signs nothing
  std::string source;  ///< where it was configured (file name or config path), for messages
};

/// Parses an RFC 3339 UTC-or-offset timestamp (`2026-01-01T00:00:00Z`, `…+02:00`, optional
/// fraction), as `notAfter` is written. Errors: errc::invalid naming `what`.
result<std::chrono::system_clock::time_point> parse_rfc3339(std::string_view text, std::string_view what);
/// `2026-01-01T00:00:00Z` (UTC, whole seconds).
std::string format_rfc3339(std::chrono::system_clock::time_point t);

/// `services.canopy.Nucleus.configuration.deployment`.
struct TrustPolicy {
  bool require_signatures = false;
  std::vector<TrustedSigner> signers;
  std::vector<std::string> revoked_keyids;
  std::size_t threshold = 1;  ///< distinct trusted keys whose valid signatures are needed
};

/// Whether `recipe_bytes` (the file exactly as delivered) carries at least `threshold` valid
/// signatures from distinct trusted, unexpired, unrevoked keys. `what` names the recipe in
/// messages. Errors (errc::unauthorized), one sentence naming the recipe and the reason:
/// `com.x-1.0.0.yaml is not signed (no com.x-1.0.0.yaml.sig)`, `… is signed only by keys this
/// device does not trust (keyid 3f2a…)`, `… signer 3f2a… expired on 2026-01-01T00:00:00Z`,
/// `… signer 3f2a… is revoked`, `… the signature of 3f2a… does not match the recipe (was it
/// changed after signing?)`, `… has 1 valid signature, 2 are required`.
/// `signature_file` is nullopt when there is no `.sig`. With require_signatures false,
/// everything is accepted (signatures present are not even checked).
result<void> verify_recipe(std::string_view recipe_bytes, const std::optional<std::string>& signature_file,
                           const TrustPolicy& policy, std::string_view what,
                           std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

}  // namespace canopy::trust
