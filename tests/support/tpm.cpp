#include "support/tpm.hpp"

#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <system_error>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

namespace canopy::test {
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr const char* kSwtpm = "/usr/bin/swtpm";
constexpr const char* kSwtpmSetup = "/usr/bin/swtpm_setup";
constexpr const char* kSwtpmLocalca = "/usr/bin/swtpm_localca";
constexpr const char* kDbusDaemon = "/usr/bin/dbus-daemon";
constexpr const char* kAbrmd = "/usr/sbin/tpm2-abrmd";
constexpr const char* kOpenssl = "/usr/bin/openssl";
constexpr const char* kCreatePrimary = "/usr/bin/tpm2_createprimary";
constexpr const char* kEvictControl = "/usr/bin/tpm2_evictcontrol";
constexpr const char* kCreate = "/usr/bin/tpm2_create";
constexpr const char* kLoad = "/usr/bin/tpm2_load";
constexpr const char* kReadPublic = "/usr/bin/tpm2_readpublic";
constexpr const char* kGetCap = "/usr/bin/tpm2_getcap";

// swtpm_setup runs `swtpm` and swtpm_localca from PATH; pin it so a test's PATH cannot matter.
constexpr const char* kSystemPath = "/usr/sbin:/usr/bin:/sbin:/bin";

bool executable(const char* path) { return ::access(path, X_OK) == 0; }

// True if a shared library with this file name is in one of the usual library folders
// (including the multiarch ones such as /usr/lib/x86_64-linux-gnu).
bool have_library(const std::string& name) {
  std::vector<fs::path> dirs = {"/usr/lib", "/usr/lib64", "/usr/local/lib", "/lib"};
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib", ec))
    if (e.is_directory(ec) && e.path().filename().string().find("-linux-gnu") != std::string::npos)
      dirs.push_back(e.path());
  for (const auto& d : dirs)
    if (fs::exists(d / name, ec)) return true;
  return false;
}

// SIGTERM by PID, wait up to `deadline`, then SIGKILL (Process's destructor) and reap.
void stop(std::unique_ptr<Process>& p, std::chrono::milliseconds deadline) {
  if (!p) return;
  if (p->running()) {
    p->signal(SIGTERM);
    p->wait(deadline);
  }
  p.reset();
}

// True once a unix stream socket at `path` accepts a connection.
bool unix_socket_accepts(const fs::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// True if 127.0.0.1:port can be bound right now.
bool port_is_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

std::string tail(const std::string& s, std::size_t n = 4000) { return s.size() <= n ? s : s.substr(s.size() - n); }

}  // namespace

std::string SoftwareTpm::unavailable_reason() {
  for (const char* bin : {kSwtpm, kSwtpmSetup, kSwtpmLocalca, kDbusDaemon, kAbrmd, kOpenssl, kCreatePrimary,
                          kEvictControl, kCreate, kLoad, kReadPublic, kGetCap})
    if (!executable(bin)) return std::string(bin) + " is missing (swtpm, swtpm-tools, dbus, tpm2-abrmd, tpm2-tools)";
  for (const char* lib : {"libtss2-tcti-tabrmd.so.0", "libtss2-tcti-swtpm.so.0"})
    if (!have_library(lib)) return std::string(lib) + " is missing (libtss2-tcti-tabrmd0, libtss2-tcti-swtpm0)";
  // The tpm2-openssl provider module. (Loading it is no check: its init opens the TCTI, which
  // fails without a running TPM.)
  const auto r = run_command({kOpenssl, "version", "-m"}, 20s);
  const auto q1 = r.output.find('"');
  const auto q2 = q1 == std::string::npos ? q1 : r.output.find('"', q1 + 1);
  if (r.exit_code != 0 || q2 == std::string::npos) return "cannot read OpenSSL's MODULESDIR: " + tail(r.output, 500);
  const fs::path module = fs::path(r.output.substr(q1 + 1, q2 - q1 - 1)) / "tpm2.so";
  if (!fs::exists(module)) return module.string() + " is missing (tpm2-openssl)";
  return {};
}

SoftwareTpm::SoftwareTpm(const fs::path& dir) : dir_(dir) {
  const auto t0 = std::chrono::steady_clock::now();
  if (const auto why = unavailable_reason(); !why.empty()) throw std::runtime_error("SoftwareTpm: " + why);
  fs::create_directories(dir_ / "keys");
  // 0711: a broker that drops privileges (user mosquitto) must still traverse to key files.
  ::chmod(dir_.c_str(), 0711);
  // sun_path is 108 bytes; fail clearly instead of truncating the bus address.
  if ((dir_ / "dbus.sock").string().size() >= sizeof(sockaddr_un{}.sun_path))
    throw std::runtime_error("SoftwareTpm: folder path too long for a unix socket: " + dir_.string());

  write_file(openssl_config(),
             "# tpm2 first, then default (tpm2-openssl 1.1.1: signing with the TPM key fails otherwise);\n"
             "# digests, ciphers and the DRBG stay in the default provider.\n"
             "openssl_conf = openssl_init\n"
             "[openssl_init]\n"
             "providers = provider_sect\n"
             "alg_section = algorithm_sect\n"
             "[provider_sect]\n"
             "tpm2 = tpm2_sect\n"
             "default = default_sect\n"
             "[tpm2_sect]\n"
             "activate = 1\n"
             "[default_sect]\n"
             "activate = 1\n"
             "[algorithm_sect]\n"
             "default_properties = tpm2.digest!=yes,tpm2.cipher!=yes,tpm2.rand!=yes\n");

  setup_state();
  start_swtpm();
  start_dbus();
  start_abrmd();
  provision();
  startup_time_ = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0);
}

SoftwareTpm::~SoftwareTpm() {
  if (::testing::Test::HasFailure())
    std::fprintf(stderr, "----- software TPM logs (%s) -----\n%s\n-----\n", dir_.c_str(), logs().c_str());
  // Clients first: abrmd holds the swtpm connection and a name on the bus.
  stop(abrmd_, 5s);
  stop(dbus_, 5s);
  stop(swtpm_, 5s);
}

std::map<std::string, std::string> SoftwareTpm::environment() const {
  return {{"DBUS_SESSION_BUS_ADDRESS", "unix:path=" + (dir_ / "dbus.sock").string()},
          {"TPM2OPENSSL_TCTI", tcti()},
          {"TPM2TOOLS_TCTI", tcti()}};
}

std::map<std::string, std::string> SoftwareTpm::openssl_environment() const {
  auto env = environment();
  env["OPENSSL_CONF"] = openssl_config().string();
  return env;
}

std::string SoftwareTpm::run_checked(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env,
                                     const std::string& what) const {
  const auto r = run_command(argv, 60s, env);
  if (r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error("SoftwareTpm: " + what + " failed (exit " + std::to_string(r.exit_code) + "): " + cmd +
                             "\n" + r.output + "\n" + logs());
  }
  return r.output;
}

// swtpm_setup "manufactures" the TPM (EKs, EK and platform certificates in NV). Its
// certificate tool swtpm_localca would otherwise keep a host-global CA in
// /var/lib/swtpm-localca (notes, pitfall 13), so both configurations are written here and
// point into the test folder; XDG_CONFIG_HOME and HOME point there too so no per-user
// configuration is read or written.
void SoftwareTpm::setup_state() {
  const fs::path conf = dir_ / "swtpm-config";
  const fs::path localca = dir_ / "localca";
  fs::create_directories(conf);
  fs::create_directories(localca);
  fs::create_directories(dir_ / "tpmstate");
  write_file(conf / "swtpm-localca.conf", "statedir = " + localca.string() + "\n" +
                                              "signingkey = " + (localca / "signkey.pem").string() + "\n" +
                                              "issuercert = " + (localca / "issuercert.pem").string() + "\n" +
                                              "certserial = " + (localca / "certserial").string() + "\n");
  write_file(conf / "swtpm-localca.options",
             "--platform-manufacturer Canopy-Test\n--platform-version 2.1\n--platform-model swtpm\n");
  write_file(conf / "swtpm_setup.conf", std::string("create_certs_tool = ") + kSwtpmLocalca + "\n" +
                                            "create_certs_tool_config = " + (conf / "swtpm-localca.conf").string() +
                                            "\n" + "create_certs_tool_options = " +
                                            (conf / "swtpm-localca.options").string() + "\n" +
                                            "active_pcr_banks = sha256\n");
  const std::map<std::string, std::string> env = {
      {"PATH", kSystemPath}, {"XDG_CONFIG_HOME", conf.string()}, {"HOME", dir_.string()}};
  const auto r = run_command({kSwtpmSetup, "--tpm2", "--tpmstate", (dir_ / "tpmstate").string(), "--config",
                              (conf / "swtpm_setup.conf").string(), "--createek", "--create-ek-cert",
                              "--create-platform-cert", "--lock-nvram", "--overwrite"},
                             60s, env);
  write_file(dir_ / "swtpm_setup.log", r.output);
  if (r.exit_code != 0)
    throw std::runtime_error("SoftwareTpm: swtpm_setup failed (exit " + std::to_string(r.exit_code) + "):\n" + r.output);
}

// swtpm in the foreground (no --daemon) so that Process's PID is swtpm itself.
void SoftwareTpm::start_swtpm() {
  const fs::path log = dir_ / "swtpm.log";
  for (int attempt = 0; attempt < 20; ++attempt) {
    // The swtpm TCTI (tpm2-tss 3.2) has no control-port option: it always uses port + 1.
    server_port_ = free_port();
    ctrl_port_ = server_port_ + 1;
    if (ctrl_port_ > 65535 || !port_is_free(ctrl_port_)) continue;
    swtpm_ = std::make_unique<Process>(Process::Spec{
        {kSwtpm, "socket", "--tpm2", "--tpmstate", "dir=" + (dir_ / "tpmstate").string(), "--server",
         "type=tcp,port=" + std::to_string(server_port_) + ",bindaddr=127.0.0.1", "--ctrl",
         "type=tcp,port=" + std::to_string(ctrl_port_) + ",bindaddr=127.0.0.1", "--flags",
         "not-need-init,startup-clear", "--log", "file=" + log.string() + ",level=1"},
        {},
        dir_ / "swtpm.out",
        true});
    // Up = still running and both ports accept. swtpm serves one connection at a time; the
    // probes connect and close at once, before abrmd is started.
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < until && swtpm_->running()) {
      if (wait_for_port(ctrl_port_, 100ms) && wait_for_port(server_port_, 100ms) && swtpm_->running()) return;
    }
    const bool port_taken = !swtpm_->running() && read_file(dir_ / "swtpm.out").find("in use") != std::string::npos;
    const std::string out = read_file(dir_ / "swtpm.out");
    swtpm_.reset();
    if (!port_taken) throw std::runtime_error("SoftwareTpm: swtpm did not start:\n" + out + "\n" + read_file(log));
  }
  throw std::runtime_error("SoftwareTpm: swtpm did not start (no two consecutive free ports in 20 attempts)");
}

// A private bus from our own configuration: no <servicedir>, so nothing on it can be
// activated behind our back (an activated daemon would not be tracked by PID).
void SoftwareTpm::start_dbus() {
  const fs::path sock = dir_ / "dbus.sock";
  const fs::path conf = dir_ / "dbus-session.conf";
  write_file(conf,
             "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n"
             " \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
             "<busconfig>\n"
             "  <type>session</type>\n"
             "  <listen>unix:path=" + sock.string() + "</listen>\n"
             "  <auth>EXTERNAL</auth>\n"
             "  <policy context=\"default\">\n"
             "    <allow send_destination=\"*\" eavesdrop=\"true\"/>\n"
             "    <allow eavesdrop=\"true\"/>\n"
             "    <allow own=\"*\"/>\n"
             "  </policy>\n"
             "</busconfig>\n");
  std::error_code ec;
  fs::remove(sock, ec);
  dbus_ = std::make_unique<Process>(Process::Spec{
      {kDbusDaemon, "--config-file=" + conf.string(), "--nofork", "--nopidfile", "--print-address=1"},
      {},
      dir_ / "dbus.log",
      true});
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < until) {
    if (!dbus_->running()) break;
    if (unix_socket_accepts(sock)) return;
    std::this_thread::sleep_for(10ms);
  }
  throw std::runtime_error("SoftwareTpm: dbus-daemon did not come up:\n" + read_file(dir_ / "dbus.log"));
}

// Ready = a real TPM command through the tabrmd TCTI succeeds (this also proves abrmd reached
// swtpm). Each probe has its own deadline; the whole wait is bounded.
void SoftwareTpm::start_abrmd() {
  abrmd_ = std::make_unique<Process>(
      Process::Spec{{kAbrmd, "--session", "--allow-root", "--tcti=swtpm:host=127.0.0.1,port=" + std::to_string(server_port_)},
                    environment(),
                    dir_ / "abrmd.log",
                    true});
  const auto until = std::chrono::steady_clock::now() + 30s;
  std::string last;
  while (std::chrono::steady_clock::now() < until) {
    if (!abrmd_->running()) break;
    const auto r = run_command({kGetCap, "properties-fixed"}, 10s, environment());
    if (r.exit_code == 0) return;
    last = r.output;
    std::this_thread::sleep_for(50ms);
  }
  throw std::runtime_error("SoftwareTpm: tpm2-abrmd did not become ready:\n" + tail(last) + "\n" + logs());
}

void SoftwareTpm::provision() {
  const auto env = environment();
  const fs::path k = dir_ / "keys";
  run_checked({kCreatePrimary, "-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb", "-c", (k / "srk.ctx").string(), "-a",
               "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|decrypt|noda"},
              env, "tpm2_createprimary");
  run_checked({kEvictControl, "-C", "o", "-c", (k / "srk.ctx").string(), parent_handle()}, env,
              "tpm2_evictcontrol (storage parent)");
  run_checked({kCreate, "-C", parent_handle(), "-G", "ecc256:ecdsa-sha256", "-u", (k / "device.pub").string(), "-r",
               (k / "device.priv").string(), "-a", "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign|noda"},
              env, "tpm2_create (device key)");
  run_checked({kLoad, "-C", parent_handle(), "-u", (k / "device.pub").string(), "-r", (k / "device.priv").string(), "-c",
               (k / "device.ctx").string()},
              env, "tpm2_load (device key)");
  run_checked({kEvictControl, "-C", "o", "-c", (k / "device.ctx").string(), "0x81000001"}, env,
              "tpm2_evictcontrol (device key)");
  run_checked({kReadPublic, "-c", "0x81000001", "-f", "pem", "-o", device_public_key_pem().string()}, env,
              "tpm2_readpublic (device key)");
  // emptyAuth TRUE (unlike tpm2_encodeobject in tpm2-tools 5.4, pitfall 9), so no password
  // prompt when the provider loads it.
  run_checked({kOpenssl, "genpkey", "-provider", "tpm2", "-provider", "base", "-algorithm", "EC", "-pkeyopt",
               "group:P-256", "-pkeyopt", "parent:" + parent_handle(), "-out", tss2_key_path().string()},
              env, "openssl genpkey -provider tpm2");
  if (read_file(tss2_key_path()).find("-----BEGIN TSS2 PRIVATE KEY-----") == std::string::npos)
    throw std::runtime_error("SoftwareTpm: " + tss2_key_path().string() + " is not a TSS2 PEM key");
}

void SoftwareTpm::make_certificate(const std::string& key_uri, const std::string& cn, const TestPki& pki,
                                   const fs::path& out_crt) const {
  const fs::path work = dir_ / "certs";
  fs::create_directories(work);
  const fs::path csr = work / (cn + ".csr");
  const fs::path ext = work / "client.ext";
  write_file(ext,
             "basicConstraints = critical, CA:false\n"
             "keyUsage = critical, digitalSignature\n"
             "extendedKeyUsage = clientAuth\n"
             "subjectKeyIdentifier = hash\n"
             "authorityKeyIdentifier = keyid\n");
  // The CSR is signed by the TPM key: tpm2 first, then default (pitfall 4).
  run_checked({kOpenssl, "req", "-provider", "tpm2", "-provider", "default", "-new", "-key", key_uri, "-subj", "/CN=" + cn,
               "-out", csr.string()},
              environment(), "openssl req (CSR from " + key_uri + ")");
  // The CA key is a file key: no tpm2 provider, no TPM environment (pitfall 5). The serial
  // file stays in our folder, not next to the shared test CA.
  if (!out_crt.parent_path().empty()) fs::create_directories(out_crt.parent_path());
  run_checked({kOpenssl, "x509", "-req", "-in", csr.string(), "-CA", pki.ca().string(), "-CAkey",
               pki.file("ca.key").string(), "-CAserial", (work / "ca.srl").string(), "-CAcreateserial", "-days", "30",
               "-sha256", "-extfile", ext.string(), "-out", out_crt.string()},
              {}, "openssl x509 -req (sign " + cn + ")");
}

std::string SoftwareTpm::logs() const {
  std::string s;
  for (const char* f : {"swtpm_setup.log", "swtpm.out", "swtpm.log", "dbus.log", "abrmd.log"}) {
    const fs::path p = dir_ / f;
    std::error_code ec;
    if (fs::exists(p, ec)) s += std::string("[") + f + "]\n" + tail(read_file(p)) + "\n";
  }
  return s;
}

}  // namespace canopy::test
