// canopy keygen, canopy sign, canopy verify: signed recipes (see canopy/trust/signature.hpp).
// All three work on files alone, without a running canopyd.
#include <cerrno>
#include <filesystem>
#include <iostream>

#include <fmt/format.h>

#include "canopy/config/nucleus_config.hpp"
#include "canopy/core/file.hpp"
#include "canopy/trust/signature.hpp"
#include "common.hpp"

namespace canopy::cli {
namespace {

namespace fs = std::filesystem;

struct KeygenArgs {
  std::string out;
  std::string alg = "ecdsa-p256";
  bool force = false;
};

struct SignArgs {
  std::string recipe;
  std::string key;
};

struct VerifyArgs {
  std::string recipe;
  std::string config;
  std::vector<std::string> trust;
};

/// Reads a file, or nullopt when it does not exist.
result<std::optional<std::string>> read_optional(const fs::path& path) {
  auto r = read_file(path);
  if (r) return std::optional<std::string>(std::move(*r));
  if (r.error().code == errc::not_found) return std::optional<std::string>();
  return std::move(r).error();
}

int cmd_keygen(const KeygenArgs& a) {
  trust::Algorithm alg{};
  if (a.alg == "ecdsa-p256" || a.alg == "ecdsa-p256-sha256") alg = trust::Algorithm::ecdsa_p256_sha256;
  else if (a.alg == "ed25519") alg = trust::Algorithm::ed25519;
  else return usage(fmt::format("--alg must be ecdsa-p256 or ed25519, not {}", a.alg));
  const fs::path key_file = a.out + ".key";
  const fs::path pub_file = a.out + ".pub";
  if (!a.force) {
    for (const auto& f : {key_file, pub_file}) {
      std::error_code ec;
      if (fs::symlink_status(f, ec).type() != fs::file_type::not_found)
        return fail(fmt::format("{} already exists; not overwriting it (use --force to replace the key pair)",
                                f.string()));
    }
  }
  auto kp = trust::generate_key(alg);
  if (!kp) return fail(kp.error().message);
  if (auto r = write_file_atomically(key_file, kp->private_pem, 0600); !r) return fail(r.error().message);
  if (auto r = write_file_atomically(pub_file, kp->public_key.pem, 0644); !r) return fail(r.error().message);
  std::cout << fmt::format("Wrote {} (private {} key, mode 0600) and {}\nkeyid {}\n", key_file.string(),
                           trust::to_string(alg), pub_file.string(), kp->public_key.keyid);
  return kExitOk;
}

int cmd_sign(const SignArgs& a) {
  auto recipe = read_file(a.recipe);
  if (!recipe) return fail(recipe.error().message);
  auto key = read_file(a.key);
  if (!key) return fail(key.error().message);
  auto entry = trust::sign(*recipe, *key);
  if (!entry) return fail(fmt::format("cannot sign with {}: {}", a.key, entry.error().message));

  const fs::path sig_file = a.recipe + ".sig";
  auto existing = read_optional(sig_file);
  if (!existing) return fail(existing.error().message);
  std::vector<trust::SignatureEntry> entries;
  if (*existing) {
    auto parsed = trust::parse_signature_file(**existing, sig_file.string());
    if (!parsed) return fail(fmt::format("{}; fix or remove it before signing again", parsed.error().message));
    entries = std::move(*parsed);
  }
  std::erase_if(entries, [&](const trust::SignatureEntry& e) { return e.keyid == entry->keyid; });
  entries.push_back(*entry);
  if (auto r = write_file_atomically(sig_file, trust::to_signature_file(entries), 0644); !r)
    return fail(r.error().message);
  std::cout << fmt::format("Signed {} with keyid {} ({} holds {} signature{})\n", a.recipe, entry->keyid,
                           sig_file.string(), entries.size(), entries.size() == 1 ? "" : "s");
  return kExitOk;
}

/// The trust policy of a nucleus configuration file (signers' key files relative to its folder).
result<trust::TrustPolicy> policy_from_config(const fs::path& file) {
  auto loaded = config::load_file(file);
  if (!loaded) return std::move(loaded).error();
  const auto& d = loaded->config.deployment;
  trust::TrustPolicy p;
  p.threshold = d.signature_threshold;
  p.revoked_keyids = d.revoked_key_ids;
  for (std::size_t i = 0; i < d.trusted_signers.size(); ++i) {
    const auto& s = d.trusted_signers[i];
    trust::TrustedSigner t;
    t.source = fmt::format("{}:{}: deployment.trustedSigners[{}]", file.string(), s.line, i);
    std::string pem = s.public_key_pem;
    if (!s.public_key_path.empty()) {
      const fs::path path = s.public_key_path.is_absolute() ? s.public_key_path : file.parent_path() / s.public_key_path;
      auto text = read_file(path);
      if (!text) return make_error(errc::config, fmt::format("{}: {}", t.source, text.error().message));
      pem = std::move(*text);
      t.source = path.string();
    }
    auto key = trust::parse_public_key(pem, t.source);
    if (!key) return make_error(errc::config, key.error().message);
    t.key = std::move(*key);
    if (!s.not_after.empty()) {
      auto when = trust::parse_rfc3339(s.not_after, t.source + ".notAfter");
      if (!when) return make_error(errc::config, when.error().message);
      t.not_after = *when;
    }
    p.signers.push_back(std::move(t));
  }
  return p;
}

int cmd_verify(const VerifyArgs& a) {
  if (a.config.empty() && a.trust.empty()) return usage("give --config FILE, --trust PUBFILE, or both");
  trust::TrustPolicy policy;
  if (!a.config.empty()) {
    auto p = policy_from_config(a.config);
    if (!p) return fail(p.error().message);
    policy = std::move(*p);
  }
  for (const auto& f : a.trust) {
    auto text = read_file(f);
    if (!text) return fail(text.error().message);
    auto key = trust::parse_public_key(*text, f);
    if (!key) return fail(key.error().message);
    policy.signers.push_back(trust::TrustedSigner{std::move(*key), std::nullopt, f});
  }
  if (policy.signers.empty())
    return fail(fmt::format("{} lists no deployment.trustedSigners, and no --trust key was given", a.config));
  policy.require_signatures = true;  // verify even where the device would not insist

  auto recipe = read_file(a.recipe);
  if (!recipe) return fail(recipe.error().message);
  auto sig = read_optional(a.recipe + ".sig");
  if (!sig) return fail(sig.error().message);
  if (auto r = trust::verify_recipe(*recipe, *sig, policy, a.recipe); !r) return fail(r.error().message);

  // Which trusted keys signed it: each one alone, under the same revocations and expiry.
  std::vector<std::string> ids;
  for (const auto& s : policy.signers) {
    if (std::find(ids.begin(), ids.end(), s.key.keyid) != ids.end()) continue;
    trust::TrustPolicy one = policy;
    one.signers = {s};
    one.threshold = 1;
    if (trust::verify_recipe(*recipe, *sig, one, a.recipe)) ids.push_back(s.key.keyid);
  }
  std::string list;
  for (const auto& id : ids) list += (list.empty() ? "" : ", ") + id;
  std::cout << fmt::format("{}: signed by {} trusted key{} ({})\n", a.recipe, ids.size(), ids.size() == 1 ? "" : "s",
                           list);
  return kExitOk;
}

}  // namespace

void add_sign_commands(CLI::App& app, Globals& /*g*/, Action& action) {
  auto k = std::make_shared<KeygenArgs>();
  auto* keygen = app.add_subcommand("keygen", "Generate a recipe signing key pair (PREFIX.key, PREFIX.pub)");
  keygen->add_option("--out", k->out, "Write PREFIX.key (private, mode 0600) and PREFIX.pub")
      ->required()
      ->type_name("PREFIX");
  keygen->add_option("--alg", k->alg, "ecdsa-p256 (default) or ed25519")->type_name("ALG");
  keygen->add_flag("--force", k->force, "Replace PREFIX.key and PREFIX.pub if they exist");
  keygen->footer("Example:\n  canopy keygen --out ~/keys/release --alg ed25519");
  keygen->callback([&, k] { action = [k] { return cmd_keygen(*k); }; });

  auto s = std::make_shared<SignArgs>();
  auto* sign = app.add_subcommand("sign", "Sign a recipe file: add this key's signature to RECIPE.sig");
  sign->add_option("recipe", s->recipe, "The recipe file, signed byte for byte as it is")->required();
  sign->add_option("--key", s->key, "PEM private key (from canopy keygen)")->required()->type_name("KEYFILE");
  sign->footer("Example:\n  canopy sign recipes/com.example.Hello-1.0.0.yaml --key ~/keys/release.key");
  sign->callback([&, s] { action = [s] { return cmd_sign(*s); }; });

  auto v = std::make_shared<VerifyArgs>();
  auto* verify = app.add_subcommand(
      "verify", "Check RECIPE.sig against the trust policy of a configuration file and/or given public keys");
  verify->add_option("recipe", v->recipe, "The recipe file; its signatures are read from RECIPE.sig")->required();
  verify->add_option("--config", v->config,
                     "canopyd configuration file whose deployment section (trustedSigners, revokedKeyIds, "
                     "signatureThreshold) to apply; requireSignatures is taken as true")
      ->type_name("FILE");
  verify->add_option("--trust", v->trust, "Also trust this PEM public key (repeatable)")->type_name("PUBFILE");
  verify->footer(
      "Exit codes: 0 the recipe is signed as the policy requires, 1 it is not (the message says why).\n\n"
      "Examples:\n"
      "  canopy verify recipes/com.example.Hello-1.0.0.yaml --config /etc/canopy/config.yaml\n"
      "  canopy verify recipes/com.example.Hello-1.0.0.yaml --trust release.pub");
  verify->callback([&, v] { action = [v] { return cmd_verify(*v); }; });
}

}  // namespace canopy::cli
