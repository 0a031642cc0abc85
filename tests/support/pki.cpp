#include "support/pki.hpp"

#include <stdexcept>

#include "support/process.hpp"

namespace canopy::test {
namespace fs = std::filesystem;

fs::path pki_script_path() { return fs::path(CANOPY_SOURCE_DIR) / "tests" / "pki" / "gen.sh"; }

TestPki::TestPki(const fs::path& dir) : dir_(dir) {
  fs::create_directories(dir_);
  const auto r = run_command({"/bin/sh", pki_script_path().string(), dir_.string()}, std::chrono::seconds(60));
  if (r.exit_code != 0)
    throw std::runtime_error("tests/pki/gen.sh failed (exit " + std::to_string(r.exit_code) + "):\n" + r.output);
}

Mosquitto::Tls TestPki::broker_tls(const std::string& server_cert, bool with_crl) const {
  Mosquitto::Tls tls;
  tls.cafile = ca();
  tls.certfile = dir_ / (server_cert + ".crt");
  tls.keyfile = dir_ / (server_cert + ".key");
  if (with_crl) tls.crlfile = crl();
  tls.require_certificate = true;
  return tls;
}

}  // namespace canopy::test
