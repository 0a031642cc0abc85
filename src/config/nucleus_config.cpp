#include "canopy/config/nucleus_config.hpp"

#include <cctype>
#include <charconv>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <unistd.h>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "canopy/core/yaml_json.hpp"

namespace canopy::config {
namespace {

// Walks the YAML tree with the key path in hand, so that every message can say
// `file:line: a.b.c: what was expected`. Collects all errors rather than stopping at the first.
class Reader {
 public:
  explicit Reader(std::string_view file) : file_(file) {}

  using Field = std::function<void(const YAML::Node&, const std::string&)>;
  struct Entry {
    std::string_view key;
    Field read;
  };

  std::vector<std::string> errors;
  std::vector<std::string> warnings;

  void error(const YAML::Node& n, const std::string& path, const std::string& what) {
    errors.push_back(fmt::format("{}:{}: {}: {}", file_, line(n), path, what));
  }

  // Reads a mapping: each known key through its handler, unknown keys as warnings.
  // A null value (key with nothing after it) keeps the defaults.
  void map(const YAML::Node& n, const std::string& path, std::initializer_list<Entry> entries) {
    if (n.IsNull()) return;
    if (!n.IsMap()) {
      error(n, path, fmt::format("expected a mapping of keys, got {}", describe(n)));
      return;
    }
    for (const auto& kv : n) {
      const std::string key = kv.first.Scalar();
      const std::string child = path.empty() ? key : path + "." + key;
      bool known = false;
      for (const auto& e : entries) {
        if (e.key == key) {
          known = true;
          if (!kv.second.IsNull()) e.read(kv.second, child);
          break;
        }
      }
      if (!known) warnings.push_back(fmt::format("{}:{}: {}: unknown key, ignored", file_, line(kv.first), child));
    }
  }

  bool scalar(const YAML::Node& n, const std::string& path, std::string_view expected) {
    if (n.IsScalar()) return true;
    error(n, path, fmt::format("expected {}, got {}", expected, describe(n)));
    return false;
  }

  Field boolean(bool& out) {
    return [this, &out](const YAML::Node& n, const std::string& path) {
      if (!scalar(n, path, "true or false")) return;
      const std::string& v = n.Scalar();
      if (v == "true") out = true;
      else if (v == "false") out = false;
      else error(n, path, fmt::format("expected true or false, got \"{}\"", v));
    };
  }

  Field string(std::string& out) {
    return [this, &out](const YAML::Node& n, const std::string& path) {
      if (scalar(n, path, "a string")) out = n.Scalar();
    };
  }

  Field path(std::filesystem::path& out) {
    return [this, &out](const YAML::Node& n, const std::string& p) {
      if (!scalar(n, p, "a path")) return;
      if (n.Scalar().find('\0') != std::string::npos) {
        error(n, p, "expected a path, got a string with a NUL byte");
        return;
      }
      out = n.Scalar();
    };
  }

  template <class Int>
  Field integer(Int& out, std::uint64_t min, std::uint64_t max, std::string_view unit = {}) {
    return [this, &out, min, max, unit](const YAML::Node& n, const std::string& path) {
      const std::string expected = unit.empty()
                                       ? fmt::format("an integer from {} to {}", min, max)
                                       : fmt::format("a number of {} from {} to {}", unit, min, max);
      if (!scalar(n, path, expected)) return;
      const std::string& s = n.Scalar();
      std::uint64_t v = 0;
      const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
      if (ec != std::errc() || end != s.data() + s.size() || v < min || v > max) {
        error(n, path, fmt::format("expected {}, got \"{}\"", expected, s));
        return;
      }
      out = static_cast<Int>(v);
    };
  }

  template <class E>
  Field choice(E& out, std::initializer_list<std::pair<std::string_view, E>> choices) {
    std::vector<std::pair<std::string_view, E>> copy(choices);
    return [this, &out, copy](const YAML::Node& n, const std::string& path) {
      std::string names;
      for (const auto& [name, v] : copy) names += (names.empty() ? "" : ", ") + std::string(name);
      if (!scalar(n, path, "one of " + names)) return;
      for (const auto& [name, v] : copy) {
        if (name == n.Scalar()) {
          out = v;
          return;
        }
      }
      error(n, path, fmt::format("expected one of {}, got \"{}\"", names, n.Scalar()));
    };
  }

 private:
  static std::size_t line(const YAML::Node& n) {
    const auto m = n.Mark();
    return m.line >= 0 ? static_cast<std::size_t>(m.line) + 1 : 0;
  }
  static std::string describe(const YAML::Node& n) {
    if (n.IsMap()) return "a mapping";
    if (n.IsSequence()) return "a list";
    if (n.IsScalar()) return fmt::format("\"{}\"", n.Scalar());
    return "nothing";
  }
  std::string file_;
};

}  // namespace

std::string_view to_string(WhenFull v) {
  switch (v) {
    case WhenFull::reject_new: return "reject-new";
    case WhenFull::drop_oldest: return "drop-oldest";
    case WhenFull::drop_qos0_first: return "drop-qos0-first";
  }
  return "?";
}

std::string_view to_string(Durability v) { return v == Durability::full ? "full" : "normal"; }

result<Loaded> parse(std::string_view text, std::string_view file_name) {
  YAML::Node doc;
  try {
    doc = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return make_error(errc::config, fmt::format("{}:{}:{}: not valid YAML: {}", file_name, e.mark.line + 1,
                                                e.mark.column + 1, e.msg));
  }

  Loaded out;
  NucleusConfig& c = out.config;
  Reader r(file_name);
  const std::uint64_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();
  const std::uint64_t kMaxI64 = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  std::uint64_t shutdown_seconds = static_cast<std::uint64_t>(c.shutdown_timeout.count());

  const auto nucleus_configuration = [&](const YAML::Node& n, const std::string& p) {
    r.map(n, p,
          {
              {"awsRegion", r.string(c.aws_region)},
              {"iotDataEndpoint", r.string(c.iot_data_endpoint)},
              {"shutdownTimeoutSeconds", r.integer(shutdown_seconds, 1, 3600, "seconds")},
              {"logging",
               [&](const YAML::Node& ln, const std::string& lp) {
                 r.map(ln, lp,
                       {
                           {"level", r.choice(c.logging.level, {{"trace", spdlog::level::trace},
                                                                {"debug", spdlog::level::debug},
                                                                {"info", spdlog::level::info},
                                                                {"warn", spdlog::level::warn},
                                                                {"error", spdlog::level::err}})},
                           {"format", r.choice(c.logging.format, {{"text", log::Format::text},
                                                                  {"json", log::Format::json}})},
                           {"fileSizeKB", r.integer(c.logging.file_size_kb, 1, 1u << 22, "KiB")},
                           {"maxFiles", r.integer(c.logging.max_files, 1, 1000)},
                           {"outputDirectory", r.path(c.logging.output_directory)},
                       });
               }},
              {"mqtt",
               [&](const YAML::Node& mn, const std::string& mp) {
                 r.map(mn, mp,
                       {
                           {"port", r.integer(c.mqtt.port, 1, 65535)},
                           {"version", r.choice(c.mqtt.version, {{"5", std::string("5")},
                                                                 {"3.1.1", std::string("3.1.1")}})},
                           {"keepAliveSeconds", r.integer(c.mqtt.keep_alive_seconds, 5, 65535, "seconds")},
                           {"connectTimeoutSeconds", r.integer(c.mqtt.connect_timeout_seconds, 1, 600, "seconds")},
                           {"alpn", r.boolean(c.mqtt.alpn)},
                           {"reconnectBaseMs", r.integer(c.mqtt.reconnect_base_ms, 10, 3'600'000, "milliseconds")},
                           {"reconnectMaxMs", r.integer(c.mqtt.reconnect_max_ms, 10, 86'400'000, "milliseconds")},
                           {"reconnectStableSeconds", r.integer(c.mqtt.reconnect_stable_seconds, 1, 86400, "seconds")},
                           {"maxInflight", r.integer(c.mqtt.max_inflight, 1, 65535)},
                           {"maxPublishRate", r.integer(c.mqtt.max_publish_rate, 0, 1'000'000, "publishes per second")},
                           {"tpmTcti", r.string(c.mqtt.tpm_tcti)},
                       });
               }},
              {"spooler",
               [&](const YAML::Node& sn, const std::string& sp) {
                 r.map(sn, sp,
                       {
                           {"maxSizeInBytes", r.integer(c.spooler.max_size_bytes, 4096, kMaxI64, "bytes")},
                           {"maxMessages", r.integer(c.spooler.max_messages, 1, kMaxI64)},
                           {"whenFull", r.choice(c.spooler.when_full, {{"reject-new", WhenFull::reject_new},
                                                                       {"drop-oldest", WhenFull::drop_oldest},
                                                                       {"drop-qos0-first", WhenFull::drop_qos0_first}})},
                           {"durability", r.choice(c.spooler.durability, {{"full", Durability::full},
                                                                          {"normal", Durability::normal}})},
                           {"ttlSeconds", r.integer(c.spooler.ttl_seconds, 0, kMaxU32, "seconds")},
                           {"groupCommitMessages", r.integer(c.spooler.group_commit_messages, 1, 100000)},
                           {"groupCommitIntervalMs", r.integer(c.spooler.group_commit_interval_ms, 0, 10000, "milliseconds")},
                           {"qos0BypassSpool", r.boolean(c.spooler.qos0_bypass)},
                           {"liveSharePercent", r.integer(c.spooler.live_share_percent, 0, 100, "percent")},
                       });
               }},
              {"ipc",
               [&](const YAML::Node& in, const std::string& ip) {
                 r.map(in, ip,
                       {
                           {"socketGroup", r.string(c.ipc.socket_group)},
                           {"maxConnections", r.integer(c.ipc.max_connections, 1, 100000)},
                           {"maxStreamsPerConnection", r.integer(c.ipc.max_streams_per_connection, 1, 100000)},
                           {"maxFramePayloadBytes",
                            r.integer(c.ipc.max_frame_payload_bytes, 1024, 8u << 20, "bytes")},
                           {"maxQueuedBytesPerConnection",
                            r.integer(c.ipc.max_queued_bytes_per_connection, 64u << 10, 1u << 30, "bytes")},
                           {"slowReaderPolicy", r.choice(c.ipc.slow_reader_policy,
                                                         {{"drop-oldest", std::string("drop-oldest")},
                                                          {"disconnect", std::string("disconnect")}})},
                           {"handshakeTimeoutSeconds", r.integer(c.ipc.handshake_timeout_seconds, 1, 600, "seconds")},
                           {"staticIdentities",
                            [&](const YAML::Node& sn, const std::string& sp) {
                              if (!sn.IsMap()) {
                                r.error(sn, sp, "expected a mapping of identity name to token");
                                return;
                              }
                              for (const auto& kv : sn) {
                                const std::string key = kv.first.Scalar();
                                if (!kv.second.IsScalar() || kv.second.Scalar().size() < 16) {
                                  r.error(kv.second, sp + "." + key, "expected a token of at least 16 characters");
                                  continue;
                                }
                                c.ipc.static_identities.emplace_back(key, kv.second.Scalar());
                              }
                            }},
                       });
               }},
              {"lifecycle",
               [&](const YAML::Node& ln, const std::string& lp) {
                 r.map(ln, lp,
                       {
                           {"brokenAfterErrors", r.integer(c.lifecycle.broken_after_errors, 1, 1000)},
                           {"errorResetTimeSeconds", r.integer(c.lifecycle.error_reset_seconds, 1, kMaxU32, "seconds")},
                           {"restartBackoffInitialMs", r.integer(c.lifecycle.backoff_initial_ms, 0, 3'600'000, "milliseconds")},
                           {"restartBackoffMaxMs", r.integer(c.lifecycle.backoff_max_ms, 0, 86'400'000, "milliseconds")},
                           {"stopGraceSeconds", r.integer(c.lifecycle.stop_grace_seconds, 0, 3600, "seconds")},
                           {"deploymentTimeoutSeconds", r.integer(c.lifecycle.deployment_timeout_seconds, 1, 86400, "seconds")},
                       });
               }},
              {"deployment",
               [&](const YAML::Node& dn, const std::string& dp) {
                 r.map(dn, dp,
                       {
                           {"requireSignatures", r.boolean(c.deployment.require_signatures)},
                           {"signatureThreshold", r.integer(c.deployment.signature_threshold, 1, 100)},
                           {"downloadCaFile", r.path(c.deployment.download_ca_file)},
                           {"componentStoreMaxSizeBytes", r.integer(c.deployment.component_store_max_bytes, 0, kMaxI64, "bytes")},
                           {"maxDownloadBytes", r.integer(c.deployment.max_download_bytes, 1024, kMaxI64, "bytes")},
                           {"revokedKeyIds",
                            [&](const YAML::Node& ln, const std::string& lp) {
                              if (!ln.IsSequence()) {
                                r.error(ln, lp, "expected a list of key ids (64 hex characters)");
                                return;
                              }
                              for (std::size_t i = 0; i < ln.size(); ++i) {
                                const auto item = ln[i];
                                const std::string ip = fmt::format("{}[{}]", lp, i);
                                if (!r.scalar(item, ip, "a key id (64 hex characters)")) continue;
                                const std::string& v = item.Scalar();
                                if (v.size() != 64 || v.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
                                  r.error(item, ip, fmt::format("expected a key id (64 hex characters), got \"{}\"", v));
                                  continue;
                                }
                                std::string lower = v;
                                for (char& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
                                c.deployment.revoked_key_ids.push_back(lower);
                              }
                            }},
                           {"trustedSigners",
                            [&](const YAML::Node& ln, const std::string& lp) {
                              if (!ln.IsSequence()) {
                                r.error(ln, lp, "expected a list of signers ({publicKeyPath or publicKey, notAfter})");
                                return;
                              }
                              for (std::size_t i = 0; i < ln.size(); ++i) {
                                const auto item = ln[i];
                                const std::string ip = fmt::format("{}[{}]", lp, i);
                                TrustedSignerConfig t;
                                t.line = item.Mark().line + 1;
                                r.map(item, ip,
                                      {
                                          {"publicKeyPath", r.path(t.public_key_path)},
                                          {"publicKey", r.string(t.public_key_pem)},
                                          {"notAfter", r.string(t.not_after)},
                                      });
                                if (t.public_key_path.empty() == t.public_key_pem.empty()) {
                                  r.error(item, ip, "expected exactly one of publicKeyPath and publicKey");
                                  continue;
                                }
                                c.deployment.trusted_signers.push_back(std::move(t));
                              }
                            }},
                       });
               }},
              {"runWithDefault",
               [&](const YAML::Node& wn, const std::string& wp) {
                 r.map(wn, wp, {{"posixUser", [&](const YAML::Node& un, const std::string& up) {
                                   if (!r.scalar(un, up, "user or user:group")) return;
                                   const std::string& v = un.Scalar();
                                   const auto colon = v.find(':');
                                   const bool bad = v.empty() || colon == 0 || colon + 1 == v.size() ||
                                                    (colon != std::string::npos && v.find(':', colon + 1) != std::string::npos);
                                   if (bad) {
                                     r.error(un, up, fmt::format("expected user or user:group, got \"{}\"", v));
                                     return;
                                   }
                                   c.run_with_default.posix_user = v;
                                 }}});
               }},
          });
  };

  r.map(doc, "",
        {
            {"system",
             [&](const YAML::Node& n, const std::string& p) {
               r.map(n, p,
                     {
                         {"rootPath", r.path(c.root_path)},
                         {"thingName", r.string(c.thing_name)},
                         {"certificateFilePath", r.path(c.certificate_file_path)},
                         {"privateKeyPath", r.path(c.private_key_path)},
                         {"rootCaPath", r.path(c.root_ca_path)},
                         {"ipcSocketPath", r.path(c.ipc_socket_path)},
                     });
             }},
            {"services",
             [&](const YAML::Node& n, const std::string& p) {
               if (!n.IsMap()) {
                 r.error(n, p, "expected a mapping of service names");
                 return;
               }
               for (const auto& kv : n) {
                 const std::string name = kv.first.Scalar();
                 const std::string sp = p + "." + name;
                 if (name == "canopy.Nucleus") {
                   r.map(kv.second, sp, {{"configuration", nucleus_configuration}, {"version", [](auto&, auto&) {}}});
                 } else {
                   try {
                     c.other_services[name] = yaml_to_json(kv.second);
                   } catch (const YAML::Exception& e) {
                     r.error(kv.second, sp, e.msg);
                   }
                 }
               }
             }},
        });

  if (c.root_path.is_relative() && !c.root_path.empty()) {
    // A relative root would change with the working directory; refuse it early.
    r.errors.push_back(fmt::format("{}: system.rootPath: expected an absolute path, got \"{}\"", file_name,
                                   c.root_path.string()));
  }
  if (!r.errors.empty()) {
    std::string joined;
    for (const auto& e : r.errors) joined += (joined.empty() ? "" : "\n") + e;
    return make_error(errc::config, std::move(joined));
  }
  c.shutdown_timeout = std::chrono::seconds(shutdown_seconds);
  out.warnings = std::move(r.warnings);
  return out;
}

result<Loaded> load_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      return make_error(errc::not_found, fmt::format("configuration file {} does not exist", path.string()));
    return make_error(errc::io, fmt::format("cannot read configuration file {}", path.string()));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return parse(text.str(), path.filename().string());
}

}  // namespace canopy::config
