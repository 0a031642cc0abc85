// The Greengrass IPC wire protocol against a real canopyd, with hand-built EventStream frames
// (eventstream.md §2-§9, §11-§13): the handshake, framing errors, the stream-id rules, Ping,
// request/response and streaming operations, modeled errors, many concurrent clients, and the
// slow-reader policies. Every test also checks that canopyd still serves a well-behaved client
// afterwards and is still running.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "canopy/ipc/eventstream.hpp"
#include "support/daemon.hpp"

namespace canopy::test {
namespace {
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ipc::Header;
using ipc::Message;
using ipc::MessageType;
using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kTokenA = "token-a-0123456789abcdef";
constexpr std::int32_t kTerminate = ipc::message_flags::terminate_stream;

// ---------------------------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------------------------

// Plain CRC-32 (IEEE, as zlib), independent of the codec under test.
std::uint32_t crc32(std::string_view data) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (const char ch : data) {
    c ^= static_cast<unsigned char>(ch);
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

void put_be32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xFFu));
}

// A frame's 12-byte prelude with a correct prelude CRC.
std::string prelude(std::uint32_t total_length, std::uint32_t headers_length) {
  std::string p;
  put_be32(p, total_length);
  put_be32(p, headers_length);
  put_be32(p, crc32(p));
  return p;
}

Message rpc(MessageType type, std::int32_t flags, std::int32_t stream, std::vector<Header> extra = {},
            std::string payload = {}) {
  Message m;
  m.headers.push_back(Header::int32(":message-type", static_cast<std::int32_t>(type)));
  m.headers.push_back(Header::int32(":message-flags", flags));
  m.headers.push_back(Header::int32(":stream-id", stream));
  for (auto& h : extra) m.headers.push_back(std::move(h));
  m.payload = std::move(payload);
  return m;
}

std::string frame(const Message& m) {
  auto r = ipc::encode(m);
  if (!r) throw std::logic_error("test frame does not encode: " + r.error().message);
  return *r;
}

std::string connect_payload(std::string_view token) {
  return nlohmann::json{{"authToken", std::string(token)}}.dump();
}

Message connect_msg(std::string payload, std::vector<Header> version = {Header::string(":version", "0.1.0")}) {
  return rpc(MessageType::connect, 0, 0, std::move(version), std::move(payload));
}

// A request opening stream `stream`, as the C++ SDK sends it.
Message request(std::int32_t stream, std::string_view operation, std::string body, std::int32_t flags = 0) {
  return rpc(MessageType::application_message, flags, stream,
             {Header::string("operation", std::string(operation)),
              Header::string(":content-type", "application/json"),
              Header::string("service-model-type", std::string(operation))},
             std::move(body));
}

Message publish(std::int32_t stream, std::string_view topic, const nlohmann::json& message) {
  const nlohmann::json body = {{"topic", topic}, {"publishMessage", {{"jsonMessage", {{"message", message}}}}}};
  return request(stream, "aws.greengrass#PublishToTopic", body.dump());
}

Message subscribe(std::int32_t stream, std::string_view topic) {
  return request(stream, "aws.greengrass#SubscribeToTopic", nlohmann::json{{"topic", topic}}.dump());
}

std::int32_t type_of(const Message& m) { return m.int32(":message-type").value_or(-1); }
std::int32_t flags_of(const Message& m) { return m.int32(":message-flags").value_or(-1); }
std::int32_t stream_of(const Message& m) { return m.int32(":stream-id").value_or(-1); }
std::string string_header(const Message& m, std::string_view name) {
  return std::string(m.string(name).value_or("<absent>"));
}
nlohmann::json json_of(const Message& m) { return nlohmann::json::parse(m.payload, nullptr, false); }

std::string describe(const Message& m) {
  std::ostringstream s;
  s << "{type=" << type_of(m) << " flags=" << flags_of(m) << " stream=" << stream_of(m);
  for (const auto& h : m.headers)
    if (const auto* v = std::get_if<std::string>(&h.value)) s << " " << h.name << "=" << *v;
  s << " payload=" << m.payload.substr(0, 300) << "}";
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// A raw client: a blocking Unix socket, frames decoded with the codec, every wait with a deadline
// ---------------------------------------------------------------------------------------------

struct Received {
  enum class Kind { message, eof, timeout, malformed };
  Kind kind = Kind::timeout;
  Message message;
  std::string error;

  bool is_message() const { return kind == Kind::message; }
  std::string what() const {
    switch (kind) {
      case Kind::message: return describe(message);
      case Kind::eof: return "EOF";
      case Kind::timeout: return "timeout";
      case Kind::malformed: return "malformed frame from canopyd: " + error;
    }
    return "?";
  }
};

class RawClient {
 public:
  explicit RawClient(const fs::path& socket_path)
      : decoder_(ipc::Limits{16u << 20, 128u << 10, 1024}) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      error_ = std::string("connect ") + socket_path.string() + ": " + std::strerror(errno);
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~RawClient() { close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  const std::string& error() const { return error_; }

  // Sends every byte (waiting for room up to `deadline`); false on a socket error or timeout.
  bool send_raw(std::string_view bytes, std::chrono::milliseconds deadline = 10s) {
    const auto until = Clock::now() + deadline;
    while (!bytes.empty()) {
      const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        bytes.remove_prefix(static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, static_cast<int>(left));
        continue;
      }
      return false;
    }
    return true;
  }
  bool send(const Message& m) { return send_raw(frame(m)); }

  // The next frame, EOF, a timeout, or a malformed stream.
  Received next(std::chrono::milliseconds deadline = 10s) {
    const auto until = Clock::now() + deadline;
    for (;;) {
      auto n = decoder_.next();
      if (!n) return {Received::Kind::malformed, {}, n.error().message};
      if (n->has_value()) return {Received::Kind::message, std::move(**n), {}};
      if (eof_) return {Received::Kind::eof, {}, {}};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
      if (left <= 0) return {Received::Kind::timeout, {}, {}};
      pollfd p{fd_, POLLIN, 0};
      const int r = ::poll(&p, 1, static_cast<int>(left));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) continue;
      char buf[64 * 1024];
      const ssize_t got = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
      if (got > 0) {
        decoder_.feed(std::string_view(buf, static_cast<std::size_t>(got)));
      } else if (got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        eof_ = true;  // orderly EOF, or ECONNRESET/EPIPE: the server closed
      }
    }
  }

  // The next frame, skipping nothing: a failure message if it is not a frame.
  std::optional<Message> next_message(std::string* why, std::chrono::milliseconds deadline = 10s) {
    auto r = next(deadline);
    if (r.is_message()) return std::move(r.message);
    if (why) *why = r.what();
    return std::nullopt;
  }

  // Sends Connect with `token` and expects ConnectAck with ConnectionAccepted.
  ::testing::AssertionResult handshake(std::string_view token = kTokenA) {
    if (!connected()) return ::testing::AssertionFailure() << error_;
    if (!send(connect_msg(connect_payload(token)))) return ::testing::AssertionFailure() << "cannot send Connect";
    auto r = next();
    if (!r.is_message()) return ::testing::AssertionFailure() << "no ConnectAck: " << r.what();
    const Message& m = r.message;
    if (type_of(m) != static_cast<int>(MessageType::connect_ack) || flags_of(m) != 1 || stream_of(m) != 0)
      return ::testing::AssertionFailure() << "expected ConnectAck flags 1 on stream 0, got " << describe(m);
    return ::testing::AssertionSuccess();
  }

  // Reads until EOF (up to `deadline`), counting the frames that came first.
  bool reaches_eof(std::chrono::milliseconds deadline, std::vector<Message>* before = nullptr) {
    const auto until = Clock::now() + deadline;
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
      auto r = next(std::max(left, 0ms));
      if (r.kind == Received::Kind::eof) return true;
      if (r.kind != Received::Kind::message) return false;
      if (before) before->push_back(std::move(r.message));
    }
  }

  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
  std::string error_;
  ipc::Decoder decoder_;
  bool eof_ = false;
};

// ---------------------------------------------------------------------------------------------
// Expectations shared by the tests
// ---------------------------------------------------------------------------------------------

// A ProtocolError on stream 0 whose JSON message contains `needle`, then EOF and nothing else.
::testing::AssertionResult protocol_error_then_eof(RawClient& c, std::string_view needle) {
  auto r = c.next();
  if (!r.is_message()) return ::testing::AssertionFailure() << "expected a ProtocolError, got " << r.what();
  const Message& m = r.message;
  if (type_of(m) != static_cast<int>(MessageType::protocol_error) || stream_of(m) != 0 || flags_of(m) != 0)
    return ::testing::AssertionFailure() << "expected a ProtocolError (6) on stream 0, got " << describe(m);
  if (string_header(m, ":content-type") != "application/json")
    return ::testing::AssertionFailure() << "ProtocolError without :content-type application/json: " << describe(m);
  const auto body = json_of(m);
  if (!body.is_object() || !body.contains("message") || !body["message"].is_string())
    return ::testing::AssertionFailure() << "ProtocolError payload is not {\"message\": ...}: " << m.payload;
  const auto text = body["message"].get<std::string>();
  if (text.find(needle) == std::string::npos)
    return ::testing::AssertionFailure() << "ProtocolError message \"" << text << "\" does not name \"" << needle
                                         << "\"";
  std::vector<Message> extra;
  if (!c.reaches_eof(10s, &extra)) return ::testing::AssertionFailure() << "no EOF after the ProtocolError";
  if (!extra.empty())
    return ::testing::AssertionFailure() << extra.size() << " frame(s) after the ProtocolError, first "
                                         << describe(extra.front());
  return ::testing::AssertionSuccess();
}

// ConnectAck without ConnectionAccepted, then EOF.
::testing::AssertionResult refused_then_eof(RawClient& c) {
  auto r = c.next();
  if (!r.is_message()) return ::testing::AssertionFailure() << "expected ConnectAck flags 0, got " << r.what();
  const Message& m = r.message;
  if (type_of(m) != static_cast<int>(MessageType::connect_ack) || flags_of(m) != 0 || stream_of(m) != 0)
    return ::testing::AssertionFailure() << "expected ConnectAck flags 0 on stream 0, got " << describe(m);
  std::vector<Message> extra;
  if (!c.reaches_eof(10s, &extra)) return ::testing::AssertionFailure() << "no EOF after the refusing ConnectAck";
  if (!extra.empty())
    return ::testing::AssertionFailure() << "frames after the refusing ConnectAck, first " << describe(extra.front());
  return ::testing::AssertionSuccess();
}

// The response of a request/response operation: ApplicationMessage, TerminateStream, JSON, shape.
::testing::AssertionResult is_response(const Received& r, std::int32_t stream, std::string_view shape) {
  if (!r.is_message()) return ::testing::AssertionFailure() << "expected a response, got " << r.what();
  const Message& m = r.message;
  if (type_of(m) != static_cast<int>(MessageType::application_message) || flags_of(m) != kTerminate ||
      stream_of(m) != stream || string_header(m, ":content-type") != "application/json" ||
      string_header(m, "service-model-type") != shape || !json_of(m).is_object())
    return ::testing::AssertionFailure() << "expected ApplicationMessage flags 2 on stream " << stream << " with "
                                         << shape << ", got " << describe(m);
  return ::testing::AssertionSuccess();
}

// A modeled error: ApplicationError + TerminateStream, JSON, aws.greengrass#<shape>, both forms.
::testing::AssertionResult is_modeled_error(const Received& r, std::int32_t stream, std::string_view shape) {
  if (!r.is_message()) return ::testing::AssertionFailure() << "expected an ApplicationError, got " << r.what();
  const Message& m = r.message;
  const auto body = json_of(m);
  if (type_of(m) != static_cast<int>(MessageType::application_error) || flags_of(m) != kTerminate ||
      stream_of(m) != stream || string_header(m, ":content-type") != "application/json" ||
      string_header(m, "service-model-type") != "aws.greengrass#" + std::string(shape) || !body.is_object() ||
      !body.contains("message") || body.value("_message", "") != body.value("message", "?") ||
      body.value("_errorCode", "") != shape || body.value("_service", "") != "aws.greengrass#GreengrassCoreIPC")
    return ::testing::AssertionFailure() << "expected ApplicationError flags 2 on stream " << stream
                                         << " with aws.greengrass#" << shape << ", got " << describe(m);
  return ::testing::AssertionSuccess();
}

// The number at a JSON pointer such as "/ipc/connections" of a GetStatus answer; -1 when it is
// absent (e.g. GetStatus failed), so that a failed status reads as a failed expectation.
std::int64_t num(const nlohmann::json& j, const std::string& pointer) {
  const nlohmann::json::json_pointer p(pointer);
  if (!j.is_object() || !j.contains(p) || !j.at(p).is_number()) return -1;
  return j.at(p).get<std::int64_t>();
}

std::optional<long> proc_status_kb(pid_t pid, std::string_view key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(std::string(key) + ":", 0) == 0) return std::stol(line.substr(key.size() + 1));
  return std::nullopt;
}

// Resets the process's peak RSS (VmHWM) to its current RSS, so VmHWM later is the peak since now.
bool reset_peak_rss(pid_t pid) {
  std::ofstream out("/proc/" + std::to_string(pid) + "/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

// ---------------------------------------------------------------------------------------------
// The fixture: one canopyd per test
// ---------------------------------------------------------------------------------------------

class IpcProtocol : public ::testing::Test {
 protected:
  // `ipc_extra`: more YAML lines under services.canopy.Nucleus.configuration.ipc (8 spaces in).
  void start(const std::string& ipc_extra = "") {
    Canopyd::Options o;
    o.config_yaml =
        "services:\n"
        "  canopy.Nucleus:\n"
        "    configuration:\n"
        "      ipc:\n"
        "        staticIdentities:\n"
        "          com.example.A: \"" + std::string(kTokenA) + "\"\n"
        "        maxQueuedBytesPerConnection: 65536\n" +
        ipc_extra +
        "  com.example.A:\n"
        "    configuration:\n"
        "      accessControl:\n"
        "        aws.greengrass.ipc.pubsub:\n"
        "          \"p1\":\n"
        "            operations: [\"*\"]\n"
        "            resources: [\"*\"]\n";
    d_ = std::make_unique<Canopyd>(dir_.path(), o);
    ASSERT_TRUE(d_->wait_ready()) << "canopyd did not become ready";
    ASSERT_TRUE(fs::exists(socket())) << socket();
  }

  fs::path socket() const { return d_->root() / "ipc.socket"; }
  pid_t pid() const { return d_->process().pid(); }

  std::unique_ptr<RawClient> client() { return std::make_unique<RawClient>(socket()); }

  std::unique_ptr<RawClient> connected_client() {
    auto c = client();
    EXPECT_TRUE(c->handshake());
    return c;
  }

  // canopy#GetStatus over a fresh CLI connection.
  nlohmann::json status() {
    const auto info = nlohmann::json::parse(read_file(d_->root() / "cli_ipc_info" / std::to_string(::geteuid())),
                                            nullptr, false);
    if (!info.is_object() || !info.contains("cli_auth_token")) {
      ADD_FAILURE() << "no CLI token file under " << d_->root() / "cli_ipc_info";
      return {};
    }
    RawClient c(socket());
    const auto ok = c.handshake(info["cli_auth_token"].get<std::string>());
    if (!ok) {
      ADD_FAILURE() << "CLI handshake: " << ok.message();
      return {};
    }
    c.send(request(1, "canopy#GetStatus", "{}"));
    auto r = c.next();
    if (!is_response(r, 1, "canopy#GetStatusResponse")) {
      ADD_FAILURE() << "GetStatus: " << r.what();
      return {};
    }
    return json_of(r.message);
  }

  std::uint64_t ipc_counter(const std::string& name) {
    const auto s = status();
    const auto v = num(s, "/ipc/" + name);
    if (v < 0) ADD_FAILURE() << "GetStatus has no ipc." << name << ": " << s.dump();
    return v < 0 ? 0 : static_cast<std::uint64_t>(v);
  }

  // Polls GetStatus until `pred` holds (up to `deadline`); the last status either way.
  template <typename Pred>
  nlohmann::json status_until(Pred pred, std::chrono::milliseconds deadline = 10s) {
    const auto until = Clock::now() + deadline;
    nlohmann::json s = status();
    while (!pred(s) && Clock::now() < until) {
      std::this_thread::sleep_for(20ms);
      s = status();
    }
    return s;
  }

  // canopyd runs and a fresh, well-behaved client connects, publishes and gets its response.
  ::testing::AssertionResult still_serves() {
    if (!d_->process().running()) return ::testing::AssertionFailure() << "canopyd is not running any more";
    RawClient c(socket());
    if (auto ok = c.handshake(); !ok) return ok;
    if (!c.send(publish(1, "health", {{"ok", true}}))) return ::testing::AssertionFailure() << "cannot send";
    if (auto ok = is_response(c.next(), 1, "aws.greengrass#PublishToTopicResponse"); !ok) return ok;
    if (!c.send(rpc(MessageType::ping, 0, 0))) return ::testing::AssertionFailure() << "cannot send Ping";
    auto r = c.next();
    if (!r.is_message() || type_of(r.message) != static_cast<int>(MessageType::ping_response))
      return ::testing::AssertionFailure() << "expected a PingResponse, got " << r.what();
    if (!d_->process().running()) return ::testing::AssertionFailure() << "canopyd is not running any more";
    return ::testing::AssertionSuccess();
  }

  TempDir dir_;
  std::unique_ptr<Canopyd> d_;
};

// ---------------------------------------------------------------------------------------------
// Handshake (§5, §6, §12.1, §12.3)
// ---------------------------------------------------------------------------------------------

TEST_F(IpcProtocol, GoodConnectGetsConnectAckWithConnectionAcceptedAndNoPayload) {
  start();
  auto c = client();
  ASSERT_TRUE(c->connected()) << c->error();
  ASSERT_TRUE(c->send(connect_msg(connect_payload(kTokenA))));
  auto r = c->next();
  ASSERT_TRUE(r.is_message()) << r.what();
  EXPECT_EQ(type_of(r.message), static_cast<int>(MessageType::connect_ack));
  EXPECT_EQ(flags_of(r.message), 1);
  EXPECT_EQ(stream_of(r.message), 0);
  EXPECT_TRUE(r.message.payload.empty()) << r.message.payload;
  const auto s = status();
  EXPECT_EQ(num(s, "/ipc/authenticatedConnections"), 2) << s.dump();  // this one and the status client
  EXPECT_EQ(num(s, "/ipc/protocolErrors"), 0);
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, ConnectWithTheWireBytesOfTheWorkedExampleIsAnsweredLikeAnyOther) {
  // eventstream.md §13: the same frame our encoder builds for a bad token, byte for byte.
  start();
  const Message m = connect_msg(R"({"authToken":"ABCDEFGHIJKLMNOP"})");
  EXPECT_EQ(frame(m).size(), 120u);
  auto c = client();
  ASSERT_TRUE(c->send(m));
  EXPECT_TRUE(refused_then_eof(*c));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, WrongVersionIsRefusedWithConnectAckFlagsZeroThenEof) {
  start();
  auto c = client();
  ASSERT_TRUE(c->send(connect_msg(connect_payload(kTokenA), {Header::string(":version", "0.2.0")})));
  EXPECT_TRUE(refused_then_eof(*c));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, VersionThatIsNotAStringIsRefused) {
  start();
  for (auto version : {Header::bytes(":version", ipc::Bytes{'0', '.', '1', '.', '0'}), Header::int32(":version", 1)}) {
    auto c = client();
    ASSERT_TRUE(c->send(connect_msg(connect_payload(kTokenA), {version})));
    EXPECT_TRUE(refused_then_eof(*c)) << "type " << ipc::to_string(version.type());
  }
  auto c = client();  // no :version at all
  ASSERT_TRUE(c->send(connect_msg(connect_payload(kTokenA), {})));
  EXPECT_TRUE(refused_then_eof(*c)) << "no :version";
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, MissingAuthTokenIsRefused) {
  start();
  for (const std::string payload : {"{}", "", R"({"authToken": 42})", R"({"componentName":"com.example.A"})"}) {
    auto c = client();
    ASSERT_TRUE(c->send(connect_msg(payload)));
    EXPECT_TRUE(refused_then_eof(*c)) << "payload " << payload;
  }
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, BadTokenIsRefusedAndCounted) {
  start();
  auto c = client();
  ASSERT_TRUE(c->send(connect_msg(connect_payload("token-b-not-known-to-canopyd"))));
  EXPECT_TRUE(refused_then_eof(*c));
  EXPECT_GE(ipc_counter("refusedTotal"), 1u);
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, NonJsonConnectPayloadIsRefused) {
  start();
  for (const std::string payload : {"hello", "{\"authToken\":", "[\"token-a-0123456789abcdef\"]"}) {
    auto c = client();
    ASSERT_TRUE(c->send(connect_msg(payload)));
    EXPECT_TRUE(refused_then_eof(*c)) << "payload " << payload;
  }
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, NoConnectWithinTheHandshakeTimeoutIsClosed) {
  start("        handshakeTimeoutSeconds: 1\n");
  auto silent = client();
  auto partial = client();  // half a Connect frame, then nothing
  ASSERT_TRUE(partial->send_raw(frame(connect_msg(connect_payload(kTokenA))).substr(0, 30)));
  std::vector<Message> before;
  EXPECT_TRUE(silent->reaches_eof(15s, &before)) << "a silent client was not closed";
  EXPECT_TRUE(before.empty());
  EXPECT_TRUE(partial->reaches_eof(15s, &before)) << "a client stuck mid-Connect was not closed";
  EXPECT_TRUE(before.empty());
  EXPECT_TRUE(still_serves());
}

// ---------------------------------------------------------------------------------------------
// Framing errors (§2, §9)
// ---------------------------------------------------------------------------------------------

TEST_F(IpcProtocol, GarbageBytesGetAProtocolErrorNamingThePreludeCrc) {
  start();
  auto c = client();
  ASSERT_TRUE(c->send_raw("GET / HTTP/1.1\r\nHost: canopy\r\n\r\n"));
  EXPECT_TRUE(protocol_error_then_eof(*c, "prelude CRC mismatch"));
  EXPECT_EQ(ipc_counter("protocolErrors"), 1u);
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, WellFormedFrameWithoutRpcHeadersGetsAProtocolError) {
  start();
  auto c = client();  // the CRT's empty-message test vector (eventstream.md §13)
  ASSERT_TRUE(c->send_raw(std::string("\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2\x48\xeb\x7d\x98\xc8\xff", 16)));
  EXPECT_TRUE(protocol_error_then_eof(*c, ":message-type"));
  auto typed = connected_client();  // :stream-id as int16 is not a stream id (§4)
  ASSERT_TRUE(typed->send(Message{{Header::int32(":message-type", 2), Header::int32(":message-flags", 0),
                                   Header::int16(":stream-id", 0)},
                                  {}}));
  EXPECT_TRUE(protocol_error_then_eof(*typed, ":stream-id"));
  auto upper = connected_client();  // RPC header names are case-insensitive (§4, §12.2)
  ASSERT_TRUE(upper->send(Message{{Header::int32(":Message-Type", 2), Header::int32(":MESSAGE-FLAGS", 0),
                                   Header::int32(":Stream-Id", 0)},
                                  "p"}));
  auto pong = upper->next();
  ASSERT_TRUE(pong.is_message()) << pong.what();
  EXPECT_EQ(type_of(pong.message), static_cast<int>(MessageType::ping_response)) << describe(pong.message);
  EXPECT_EQ(pong.message.payload, "p");
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, TruncatedFrameThenCloseReleasesTheConnection) {
  start();
  {
    auto c = client();
    ASSERT_TRUE(c->handshake());
    const std::string f = frame(publish(1, "t", {{"x", 1}}));
    ASSERT_TRUE(c->send_raw(f.substr(0, f.size() / 2)));
  }  // closed mid-frame
  const auto s = status_until([](const nlohmann::json& st) { return num(st, "/ipc/connections") == 1; });
  EXPECT_EQ(num(s, "/ipc/connections"), 1) << "the half-sent connection was not released: " << s.dump();

  // Half-close mid-frame: canopyd closes its side too; it may say why, but nothing else.
  auto c = client();
  ASSERT_TRUE(c->handshake());
  const std::string f = frame(publish(1, "t", {{"x", 1}}));
  ASSERT_TRUE(c->send_raw(f.substr(0, 20)));
  c->shutdown_write();
  std::vector<Message> before;
  EXPECT_TRUE(c->reaches_eof(10s, &before));
  for (const auto& m : before)
    EXPECT_EQ(type_of(m), static_cast<int>(MessageType::protocol_error)) << describe(m);
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, BadPreludeCrcGetsAProtocolError) {
  start();
  auto c = client();
  std::string f = frame(connect_msg(connect_payload(kTokenA)));
  f[9] = static_cast<char>(f[9] ^ 0x01);  // the prelude CRC
  ASSERT_TRUE(c->send_raw(f));
  EXPECT_TRUE(protocol_error_then_eof(*c, "prelude CRC mismatch"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, BadMessageCrcGetsAProtocolError) {
  start();
  auto c = client();
  ASSERT_TRUE(c->handshake());
  std::string f = frame(publish(1, "t", {{"x", 1}}));
  f[f.size() - 20] = static_cast<char>(f[f.size() - 20] ^ 0x40);  // a payload byte: the message CRC breaks
  ASSERT_TRUE(c->send_raw(f));
  EXPECT_TRUE(protocol_error_then_eof(*c, "message CRC mismatch"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, TenMegabyteFrameIsRejectedFromItsPreludeWithoutAllocatingIt) {
  start();
  ASSERT_EQ(prelude(16, 0), std::string("\x00\x00\x00\x10\x00\x00\x00\x00\x05\xc2\x48\xeb", 12));  // §13 vector
  const auto rss_before = proc_status_kb(pid(), "VmRSS");
  ASSERT_TRUE(rss_before);
  ASSERT_TRUE(reset_peak_rss(pid()));

  auto c = client();
  ASSERT_TRUE(c->handshake());
  constexpr std::uint32_t kTotal = 10u * 1024 * 1024;
  std::string bytes = prelude(kTotal, 0) + std::string(4096, 'z');
  ASSERT_TRUE(c->send_raw(bytes));
  EXPECT_TRUE(protocol_error_then_eof(*c, "frame of 10485760 bytes exceeds the limit"));

  // Before connecting, too.
  auto early = client();
  ASSERT_TRUE(early->send_raw(prelude(kTotal, 100)));
  EXPECT_TRUE(protocol_error_then_eof(*early, "exceeds the limit"));

  const auto peak = proc_status_kb(pid(), "VmHWM");
  ASSERT_TRUE(peak);
  EXPECT_LT(*peak - *rss_before, 4 * 1024) << "canopyd's peak RSS grew by " << (*peak - *rss_before)
                                          << " KiB while rejecting 10 MB frames";
  EXPECT_TRUE(still_serves());
}

// ---------------------------------------------------------------------------------------------
// Connection and stream rules (§5.4, §8.1)
// ---------------------------------------------------------------------------------------------

TEST_F(IpcProtocol, MessagesBeforeConnectGetAProtocolError) {
  start();
  const std::string kText = "A CONNECT message must be received";
  auto ping = client();
  ASSERT_TRUE(ping->send(rpc(MessageType::ping, 0, 0)));
  EXPECT_TRUE(protocol_error_then_eof(*ping, kText));
  auto app = client();
  ASSERT_TRUE(app->send(publish(1, "t", {{"x", 1}})));
  EXPECT_TRUE(protocol_error_then_eof(*app, kText));
  EXPECT_EQ(ipc_counter("protocolErrors"), 2u);
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, SecondConnectGetsAProtocolError) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(connect_msg(connect_payload(kTokenA))));
  EXPECT_TRUE(protocol_error_then_eof(*c, "second CONNECT"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, SecondConnectWhileTheFirstIsBeingCheckedGetsAProtocolError) {
  start();
  auto c = client();
  const std::string f = frame(connect_msg(connect_payload(kTokenA)));
  ASSERT_TRUE(c->send_raw(f + f));  // both in one write: the second arrives before the ConnectAck
  auto r = c->next();
  ASSERT_TRUE(r.is_message()) << r.what();
  // Whatever the first Connect got, the second is a protocol violation and the connection ends.
  if (type_of(r.message) == static_cast<int>(MessageType::connect_ack)) {
    EXPECT_EQ(flags_of(r.message), 1) << describe(r.message);
    EXPECT_TRUE(protocol_error_then_eof(*c, "CONNECT"));
  } else {
    // Refused as a protocol violation: no ConnectAck may follow the ProtocolError.
    EXPECT_EQ(type_of(r.message), static_cast<int>(MessageType::protocol_error)) << describe(r.message);
    std::vector<Message> after;
    EXPECT_TRUE(c->reaches_eof(10s, &after));
    EXPECT_TRUE(after.empty()) << "after the ProtocolError: " << describe(after.front());
  }
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, ApplicationMessageOnStreamZeroGetsAProtocolError) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(request(0, "aws.greengrass#PublishToTopic", R"({"topic":"t"})")));
  EXPECT_TRUE(protocol_error_then_eof(*c, "invalid value for message-type 0 on stream-id 0"));
  auto e = connected_client();
  ASSERT_TRUE(e->send(rpc(MessageType::application_error, 0, 0, {}, "{}")));
  EXPECT_TRUE(protocol_error_then_eof(*e, "invalid value for message-type 1 on stream-id 0"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, StreamIdThatSkipsGetsAProtocolError) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(publish(1, "t", {{"x", 1}})));
  EXPECT_TRUE(is_response(c->next(), 1, "aws.greengrass#PublishToTopicResponse"));
  ASSERT_TRUE(c->send(publish(3, "t", {{"x", 1}})));
  EXPECT_TRUE(protocol_error_then_eof(*c, "stream-id 3 was incremented by more than 1"));
  auto first = connected_client();  // the first stream must be 1
  ASSERT_TRUE(first->send(publish(2, "t", {{"x", 1}})));
  EXPECT_TRUE(protocol_error_then_eof(*first, "incremented by more than 1"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, ReusedLowerStreamIdThatIsNotOpenGetsAProtocolError) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(publish(1, "t", {{"x", 1}})));
  EXPECT_TRUE(is_response(c->next(), 1, "aws.greengrass#PublishToTopicResponse"));
  ASSERT_TRUE(c->send(publish(2, "t", {{"x", 2}})));
  EXPECT_TRUE(is_response(c->next(), 2, "aws.greengrass#PublishToTopicResponse"));
  ASSERT_TRUE(c->send(publish(1, "t", {{"x", 3}})));
  EXPECT_TRUE(protocol_error_then_eof(*c, "lower than the last seen stream-id"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, NewStreamWithoutOperationGetsAProtocolError) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(rpc(MessageType::application_message, 0, 1, {Header::string(":content-type", "application/json")},
                          R"({"topic":"t"})")));
  EXPECT_TRUE(protocol_error_then_eof(*c, "must contain an operation header value"));
  auto typed = connected_client();  // an operation header that is not a string does not count
  ASSERT_TRUE(typed->send(rpc(MessageType::application_message, 0, 1,
                              {Header::bytes("operation", ipc::Bytes{'x'})}, "{}")));
  EXPECT_TRUE(protocol_error_then_eof(*typed, "must contain an operation header value"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, TerminateStreamForAClosedStreamIsIgnored) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(publish(1, "t", {{"x", 1}})));
  EXPECT_TRUE(is_response(c->next(), 1, "aws.greengrass#PublishToTopicResponse"));
  ASSERT_TRUE(c->send(rpc(MessageType::application_message, kTerminate, 1)));  // already closed by the server
  ASSERT_TRUE(c->send(publish(2, "t", {{"x", 2}})));
  EXPECT_TRUE(is_response(c->next(), 2, "aws.greengrass#PublishToTopicResponse"));
  ASSERT_TRUE(c->send(rpc(MessageType::application_message, kTerminate, 2)));
  ASSERT_TRUE(c->send(rpc(MessageType::application_message, kTerminate, 1)));
  ASSERT_TRUE(c->send(rpc(MessageType::ping, 0, 0)));
  auto pong = c->next();
  ASSERT_TRUE(pong.is_message()) << pong.what();
  EXPECT_EQ(type_of(pong.message), static_cast<int>(MessageType::ping_response)) << describe(pong.message);
  EXPECT_EQ(ipc_counter("protocolErrors"), 0u);
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, FirstMessageCarryingTerminateStreamIsIgnored) {
  start();
  auto c = connected_client();
  Message terminating = publish(1, "t", {{"x", 1}});
  terminating.headers[1] = Header::int32(":message-flags", kTerminate);
  ASSERT_TRUE(c->send(terminating));
  // Requests are answered in order, so had stream 1 run, its answer would come first.
  ASSERT_TRUE(c->send(publish(2, "t", {{"x", 2}})));
  EXPECT_TRUE(is_response(c->next(), 2, "aws.greengrass#PublishToTopicResponse"));
  ASSERT_TRUE(c->send(rpc(MessageType::ping, 0, 0)));
  auto pong = c->next();
  ASSERT_TRUE(pong.is_message()) << pong.what();
  EXPECT_EQ(type_of(pong.message), static_cast<int>(MessageType::ping_response)) << describe(pong.message);
  EXPECT_EQ(ipc_counter("protocolErrors"), 0u);
  EXPECT_TRUE(still_serves());
}

// ---------------------------------------------------------------------------------------------
// Ping (§7)
// ---------------------------------------------------------------------------------------------

TEST_F(IpcProtocol, PingIsEchoedWithItsCustomHeadersAndPayload) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(rpc(MessageType::ping, 0, 0,
                          {Header::string("x-trace", "abc-123"), Header::int64("x-seq", 42),
                           Header::bytes("x-blob", ipc::Bytes{0, 1, 2, 255})},
                          "ping payload \x01\x02")));
  auto r = c->next();
  ASSERT_TRUE(r.is_message()) << r.what();
  const Message& m = r.message;
  EXPECT_EQ(type_of(m), static_cast<int>(MessageType::ping_response));
  EXPECT_EQ(flags_of(m), 0);
  EXPECT_EQ(stream_of(m), 0);
  EXPECT_EQ(m.payload, "ping payload \x01\x02");
  ASSERT_NE(m.find("x-trace"), nullptr) << describe(m);
  EXPECT_EQ(*m.find("x-trace"), Header::string("x-trace", "abc-123"));
  ASSERT_NE(m.find("x-seq"), nullptr);
  EXPECT_EQ(*m.find("x-seq"), Header::int64("x-seq", 42));
  ASSERT_NE(m.find("x-blob"), nullptr);
  EXPECT_EQ(*m.find("x-blob"), Header::bytes("x-blob", ipc::Bytes{0, 1, 2, 255}));
  EXPECT_EQ(m.headers.size(), 6u) << describe(m);
  // The connection stays usable.
  ASSERT_TRUE(c->send(publish(1, "t", {{"x", 1}})));
  EXPECT_TRUE(is_response(c->next(), 1, "aws.greengrass#PublishToTopicResponse"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, PingWithAHeaderTooLongToEchoIsAProtocolErrorNotACrash) {
  start();
  auto c = connected_client();
  // Hand-built: the codec decodes header names up to 255 bytes but writes at most 127.
  std::string headers;
  const auto add_int32 = [&](std::string_view name, std::uint32_t v) {
    headers.push_back(static_cast<char>(name.size()));
    headers += name;
    headers.push_back(4);
    put_be32(headers, v);
  };
  add_int32(":message-type", static_cast<std::uint32_t>(MessageType::ping));
  add_int32(":message-flags", 0);
  add_int32(":stream-id", 0);
  headers.push_back(static_cast<char>(200));
  headers += std::string(200, 'x');
  headers += std::string("\x07\x00\x01v", 4);
  std::string f = prelude(static_cast<std::uint32_t>(16 + headers.size()), static_cast<std::uint32_t>(headers.size()));
  f += headers;
  put_be32(f, crc32(f));
  ASSERT_TRUE(c->send_raw(f));
  EXPECT_TRUE(protocol_error_then_eof(*c, "cannot echo this Ping"));
  EXPECT_TRUE(still_serves());
}

// ---------------------------------------------------------------------------------------------
// Operations (§8.2, §8.3, §11)
// ---------------------------------------------------------------------------------------------

TEST_F(IpcProtocol, PublishToTopicGetsOneTerminatingJsonResponse) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(publish(1, "t", {{"x", 1}})));
  auto r = c->next();
  EXPECT_TRUE(is_response(r, 1, "aws.greengrass#PublishToTopicResponse"));
  // The JavaScript SDK's minimal request: no :content-type, no service-model-type (§12.9).
  ASSERT_TRUE(c->send(rpc(MessageType::application_message, 0, 2,
                          {Header::string("operation", "aws.greengrass#PublishToTopic")},
                          R"({"topic":"t","publishMessage":{"jsonMessage":{"message":{"x":2}}}})")));
  EXPECT_TRUE(is_response(c->next(), 2, "aws.greengrass#PublishToTopicResponse"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, SubscribeGetsItsInitialResponseBeforeAnyEventAndTerminateEndsIt) {
  start();
  auto pub = connected_client();
  auto sub = connected_client();
  // Publishes already in flight when the subscription starts.
  std::int32_t next_pub = 1;
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(pub->send(publish(next_pub++, "s/1", {{"n", i}})));
  ASSERT_TRUE(sub->send(subscribe(1, "s/1")));
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(pub->send(publish(next_pub++, "s/1", {{"n", 200 + i}})));

  auto first = sub->next();
  ASSERT_TRUE(first.is_message()) << first.what();
  const Message& m = first.message;
  EXPECT_EQ(type_of(m), static_cast<int>(MessageType::application_message)) << describe(m);
  EXPECT_EQ(flags_of(m), 0) << describe(m);
  EXPECT_EQ(stream_of(m), 1);
  EXPECT_EQ(string_header(m, ":content-type"), "application/json");
  EXPECT_EQ(string_header(m, "service-model-type"), "aws.greengrass#SubscribeToTopicResponse") << describe(m);

  for (std::int32_t id = 1; id < next_pub; ++id)
    ASSERT_TRUE(is_response(pub->next(), id, "aws.greengrass#PublishToTopicResponse"));
  // Connections are independent, so publishes racing the subscribe may or may not reach it;
  // every publish sent after its initial response arrived must.
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(pub->send(publish(next_pub++, "s/1", {{"n", 400 + i}})));
    ASSERT_TRUE(is_response(pub->next(), next_pub - 1, "aws.greengrass#PublishToTopicResponse"));
  }
  // Every event after the response: in publish order, on stream 1, flags 0, the event shape.
  ASSERT_TRUE(pub->send(publish(next_pub++, "s/1", {{"n", "last"}})));
  ASSERT_TRUE(is_response(pub->next(), next_pub - 1, "aws.greengrass#PublishToTopicResponse"));
  int events = 0;
  int last_n = -1;
  for (;;) {
    auto e = sub->next();
    ASSERT_TRUE(e.is_message()) << e.what();
    const Message& ev = e.message;
    ASSERT_EQ(type_of(ev), static_cast<int>(MessageType::application_message)) << describe(ev);
    ASSERT_EQ(flags_of(ev), 0) << describe(ev);
    ASSERT_EQ(stream_of(ev), 1);
    ASSERT_EQ(string_header(ev, "service-model-type"), "aws.greengrass#SubscriptionResponseMessage");
    ASSERT_EQ(string_header(ev, ":content-type"), "application/json");
    const auto body = json_of(ev);
    ASSERT_TRUE(body.contains("jsonMessage")) << ev.payload;
    EXPECT_EQ(body["jsonMessage"]["context"]["topic"], "s/1");
    const auto& n = body["jsonMessage"]["message"]["n"];
    if (n == "last") break;
    ASSERT_TRUE(n.is_number_integer()) << ev.payload;
    EXPECT_GT(n.get<int>(), last_n) << "events out of publish order";
    last_n = n.get<int>();
    if (last_n >= 400) ++events;
  }
  EXPECT_EQ(events, 200) << "the publishes sent after the subscription was confirmed were not all delivered";
  EXPECT_EQ(num(status(), "/pubsub/subscriptions"), 1);

  // The client's empty TerminateStream ends the subscription.
  ASSERT_TRUE(sub->send(rpc(MessageType::application_message, kTerminate, 1)));
  const auto s = status_until([](const nlohmann::json& st) { return num(st, "/pubsub/subscriptions") == 0; });
  EXPECT_EQ(num(s, "/pubsub/subscriptions"), 0) << s.dump();
  ASSERT_TRUE(pub->send(publish(next_pub++, "s/1", {{"n", "after"}})));
  ASSERT_TRUE(is_response(pub->next(), next_pub - 1, "aws.greengrass#PublishToTopicResponse"));
  // Had the publish been delivered, the event would be queued before this Ping's answer.
  ASSERT_TRUE(sub->send(rpc(MessageType::ping, 0, 0)));
  auto pong = sub->next();
  ASSERT_TRUE(pong.is_message()) << pong.what();
  EXPECT_EQ(type_of(pong.message), static_cast<int>(MessageType::ping_response)) << describe(pong.message);
  EXPECT_EQ(ipc_counter("protocolErrors"), 0u);
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, ClosingTheConnectionReleasesItsSubscriptions) {
  start();
  {
    auto sub = connected_client();
    ASSERT_TRUE(sub->send(subscribe(1, "gone/1")));
    ASSERT_TRUE(sub->send(subscribe(2, "gone/#")));
    for (int id = 1; id <= 2; ++id) {
      auto r = sub->next();
      ASSERT_TRUE(r.is_message()) << r.what();
      EXPECT_EQ(string_header(r.message, "service-model-type"), "aws.greengrass#SubscribeToTopicResponse");
    }
    EXPECT_EQ(num(status(), "/pubsub/subscriptions"), 2);
  }
  const auto s = status_until([](const nlohmann::json& st) { return num(st, "/pubsub/subscriptions") == 0; });
  EXPECT_EQ(num(s, "/pubsub/subscriptions"), 0) << s.dump();
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, UnknownOperationGetsAModeledServiceError) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(request(1, "aws.greengrass#NoSuchOperation", "{}")));
  auto r = c->next();
  ASSERT_TRUE(is_modeled_error(r, 1, "ServiceError"));
  const auto body = json_of(r.message);
  EXPECT_EQ(body["message"], "aws.greengrass#NoSuchOperation is an unsupported operation.");
  EXPECT_EQ(body["error"], "Unsupported Operation");
  // The connection stays usable.
  ASSERT_TRUE(c->send(publish(2, "t", {{"x", 1}})));
  EXPECT_TRUE(is_response(c->next(), 2, "aws.greengrass#PublishToTopicResponse"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, InvalidJsonRequestGetsInvalidArgumentsError) {
  start();
  auto c = connected_client();
  ASSERT_TRUE(c->send(request(1, "aws.greengrass#PublishToTopic", "{\"topic\": \"t\", ")));
  auto r = c->next();
  ASSERT_TRUE(is_modeled_error(r, 1, "InvalidArgumentsError"));
  EXPECT_THAT(json_of(r.message)["message"].get<std::string>(), HasSubstr("not valid JSON"));
  // Valid JSON with the wrong shape is InvalidArguments too.
  ASSERT_TRUE(c->send(request(2, "aws.greengrass#PublishToTopic", R"({"topic": 7})")));
  EXPECT_TRUE(is_modeled_error(c->next(), 2, "InvalidArgumentsError"));
  ASSERT_TRUE(c->send(publish(3, "t", {{"x", 1}})));
  EXPECT_TRUE(is_response(c->next(), 3, "aws.greengrass#PublishToTopicResponse"));
  EXPECT_TRUE(still_serves());
}

// ---------------------------------------------------------------------------------------------
// Load: many clients; slow readers
// ---------------------------------------------------------------------------------------------

TEST_F(IpcProtocol, TwoHundredConcurrentClientsEachPublishAndReceive) {
  start();
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::mutex mu;
  std::vector<std::string> failures;
  const auto fail = [&](int i, const std::string& why) {
    std::lock_guard lock(mu);
    failures.push_back("client " + std::to_string(i) + ": " + why);
  };
  std::latch subscribed(kThreads);
  std::latch go(1);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::unique_ptr<RawClient>> cs;
      std::vector<bool> ok(kPerThread, true);
      for (int k = 0; k < kPerThread; ++k) {
        cs.push_back(std::make_unique<RawClient>(socket()));
        if (!cs.back()->connected() || !cs.back()->send(connect_msg(connect_payload(kTokenA)))) ok[k] = false;
      }
      for (int k = 0; k < kPerThread; ++k) {
        const int i = t * kPerThread + k;
        if (!ok[k]) continue;
        auto r = cs[k]->next(30s);
        if (!r.is_message() || type_of(r.message) != 5 || flags_of(r.message) != 1) {
          fail(i, "ConnectAck: " + r.what());
          ok[k] = false;
          continue;
        }
        cs[k]->send(subscribe(1, "c/" + std::to_string(i)));
      }
      for (int k = 0; k < kPerThread; ++k) {
        if (!ok[k]) continue;
        auto r = cs[k]->next(30s);
        if (!r.is_message() || flags_of(r.message) != 0 ||
            string_header(r.message, "service-model-type") != "aws.greengrass#SubscribeToTopicResponse") {
          fail(t * kPerThread + k, "subscribe: " + r.what());
          ok[k] = false;
        }
      }
      subscribed.count_down();
      go.wait();
      for (int k = 0; k < kPerThread; ++k)
        if (ok[k]) cs[k]->send(publish(2, "c/" + std::to_string(t * kPerThread + k), {{"from", t * kPerThread + k}}));
      for (int k = 0; k < kPerThread; ++k) {
        const int i = t * kPerThread + k;
        if (!ok[k]) continue;
        bool got_event = false;
        bool got_response = false;
        for (int n = 0; n < 2; ++n) {
          auto r = cs[k]->next(30s);
          if (!r.is_message()) {
            fail(i, "publish: " + r.what());
            break;
          }
          if (stream_of(r.message) == 1) {
            const auto body = json_of(r.message);
            got_event = body.is_object() && body.contains("jsonMessage") &&
                        body["jsonMessage"]["message"]["from"] == i;
            if (!got_event) fail(i, "wrong event " + describe(r.message));
          } else {
            got_response = static_cast<bool>(is_response(r, 2, "aws.greengrass#PublishToTopicResponse"));
            if (!got_response) fail(i, "wrong response " + describe(r.message));
          }
        }
        if (!got_event || !got_response) fail(i, "missing the event or the response");
      }
    });
  }
  subscribed.wait();
  const auto s = status();
  EXPECT_EQ(num(s, "/ipc/authenticatedConnections"), 201) << s.dump();
  EXPECT_EQ(num(s, "/pubsub/subscriptions"), 200) << s.dump();
  go.count_down();
  for (auto& th : threads) th.join();
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, first: " << failures.front();
  EXPECT_TRUE(still_serves());
}

// Publishes `count` messages of about 1 KiB on `topic` from `pub`, keeping at most `window`
// requests in flight and checking every response; calls `every_batch` after each window.
template <typename F>
::testing::AssertionResult flood(RawClient& pub, std::int32_t& next_stream, std::string_view topic, int count,
                                 F every_batch, int window = 100) {
  const nlohmann::json data = {{"d", std::string(1000, 'x')}};
  for (int sent = 0; sent < count;) {
    const int n = std::min(window, count - sent);
    std::string batch;
    for (int k = 0; k < n; ++k) batch += frame(publish(next_stream + k, topic, data));
    if (!pub.send_raw(batch, 30s)) return ::testing::AssertionFailure() << "publisher cannot send at " << sent;
    for (int k = 0; k < n; ++k)
      if (auto ok = is_response(pub.next(30s), next_stream + k, "aws.greengrass#PublishToTopicResponse"); !ok)
        return ok << " (publish " << sent + k << ")";
    next_stream += n;
    sent += n;
    if (!every_batch(sent)) return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionSuccess();
}

TEST_F(IpcProtocol, SubscriberThatNeverReadsHasItsEventsDroppedAndMemoryStaysBounded) {
  start();
  auto slow = connected_client();
  ASSERT_TRUE(slow->send(subscribe(1, "slow")));
  auto first = slow->next();
  ASSERT_TRUE(first.is_message()) << first.what();
  ASSERT_EQ(string_header(first.message, "service-model-type"), "aws.greengrass#SubscribeToTopicResponse");
  auto pub = connected_client();
  auto third = connected_client();

  const auto rss_before = proc_status_kb(pid(), "VmRSS");
  ASSERT_TRUE(rss_before);
  ASSERT_TRUE(reset_peak_rss(pid()));
  // The slow client stops reading: 20,000 events of ~1 KiB (~20 MB) are published for it.
  std::int32_t pub_stream = 1;
  std::int32_t third_stream = 1;
  std::string third_failure;
  ASSERT_TRUE(flood(*pub, pub_stream, "slow", 20000, [&](int sent) {
    if (sent % 2000 == 0 && third_failure.empty()) {  // a third client is unaffected
      third->send(publish(third_stream, "other", {{"sent", sent}}));
      if (auto ok = is_response(third->next(30s), third_stream, "aws.greengrass#PublishToTopicResponse"); !ok)
        third_failure = ok.message();
      ++third_stream;
    }
    return true;
  }));
  EXPECT_TRUE(third_failure.empty()) << third_failure;
  const auto peak = proc_status_kb(pid(), "VmHWM");
  ASSERT_TRUE(peak);
  RecordProperty("rss_growth_kib", std::to_string(*peak - *rss_before));
  EXPECT_LT(*peak - *rss_before, 32 * 1024) << "canopyd's peak RSS grew by " << (*peak - *rss_before)
                                           << " KiB while a subscriber did not read";
  const auto s = status();
  EXPECT_GT(num(s, "/ipc/eventsDropped"), 0) << s.dump();
  EXPECT_EQ(num(s, "/ipc/slowReaderDisconnects"), 0) << s.dump();
  EXPECT_EQ(num(s, "/ipc/authenticatedConnections"), 4) << s.dump();  // slow, pub, third, status

  // The slow reader was not disconnected: once it reads again it gets what was kept (events,
  // oldest dropped first, so the kept ones are the latest, in order) and its Ping answered.
  ASSERT_TRUE(slow->send(rpc(MessageType::ping, 0, 0)));
  int kept = 0;
  for (;;) {
    auto r = slow->next(30s);
    ASSERT_TRUE(r.is_message()) << r.what() << " after " << kept << " events";
    if (type_of(r.message) == static_cast<int>(MessageType::ping_response)) break;
    ASSERT_EQ(string_header(r.message, "service-model-type"), "aws.greengrass#SubscriptionResponseMessage")
        << describe(r.message);
    ++kept;
  }
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 20000);
  // Every event was queued before the Ping was read, so the count is final now.
  const auto dropped = ipc_counter("eventsDropped");
  RecordProperty("events_kept", std::to_string(kept));
  RecordProperty("events_dropped", std::to_string(dropped));
  EXPECT_EQ(static_cast<std::uint64_t>(kept) + dropped, 20000u) << "every event is either delivered or counted";
  ASSERT_TRUE(pub->send(publish(pub_stream, "other", {{"x", 1}})));
  EXPECT_TRUE(is_response(pub->next(), pub_stream, "aws.greengrass#PublishToTopicResponse"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, SubscriberThatClosesWhileItsEventsAreStillBeingWrittenIsReleased) {
  // canopyd is blocked writing to the subscriber when it hangs up: the connection must be torn
  // down cleanly (the queued events freed once, its subscription released).
  start();
  for (int round = 0; round < 3; ++round) {
    auto slow = connected_client();
    ASSERT_TRUE(slow->send(subscribe(1, "gone")));
    auto first = slow->next();
    ASSERT_TRUE(first.is_message()) << first.what();
    auto pub = connected_client();
    std::int32_t pub_stream = 1;
    ASSERT_TRUE(flood(*pub, pub_stream, "gone", 1000, [](int) { return true; }));
    slow->close();
    ASSERT_TRUE(flood(*pub, pub_stream, "gone", 200, [](int) { return true; }));
    pub->close();
    const auto s = status_until([](const nlohmann::json& st) {
      return num(st, "/ipc/connections") == 1 && num(st, "/pubsub/subscriptions") == 0;
    });
    EXPECT_EQ(num(s, "/ipc/connections"), 1) << s.dump();
    EXPECT_EQ(num(s, "/pubsub/subscriptions"), 0) << s.dump();
    ASSERT_TRUE(still_serves()) << "round " << round;
  }
}

TEST_F(IpcProtocol, ProtocolErrorFromASubscriberThatDoesNotReadClosesItCleanly) {
  // The ProtocolError cannot be flushed to a client that does not read: canopyd gives up after
  // its flush deadline and closes the connection while the write is still pending.
  start();
  auto slow = connected_client();
  ASSERT_TRUE(slow->send(subscribe(1, "stuck")));
  auto first = slow->next();
  ASSERT_TRUE(first.is_message()) << first.what();
  auto pub = connected_client();
  std::int32_t pub_stream = 1;
  ASSERT_TRUE(flood(*pub, pub_stream, "stuck", 1000, [](int) { return true; }));
  ASSERT_TRUE(slow->send(connect_msg(connect_payload(kTokenA))));  // a second Connect
  const auto s = status_until(
      [](const nlohmann::json& st) {
        return num(st, "/ipc/connections") == 2 && num(st, "/pubsub/subscriptions") == 0;
      },
      20s);
  EXPECT_EQ(num(s, "/ipc/connections"), 2) << "the offending client was not closed: " << s.dump();  // pub, status
  EXPECT_EQ(num(s, "/pubsub/subscriptions"), 0) << s.dump();
  EXPECT_EQ(num(s, "/ipc/protocolErrors"), 1) << s.dump();
  std::vector<Message> before;
  EXPECT_TRUE(slow->reaches_eof(30s, &before));
  for (std::size_t i = 0; i < before.size(); ++i) {
    const bool last = i + 1 == before.size();
    if (last && type_of(before[i]) == static_cast<int>(MessageType::protocol_error)) continue;
    EXPECT_EQ(string_header(before[i], "service-model-type"), "aws.greengrass#SubscriptionResponseMessage")
        << describe(before[i]);
  }
  ASSERT_TRUE(pub->send(publish(pub_stream, "stuck", {{"x", 1}})));
  EXPECT_TRUE(is_response(pub->next(), pub_stream, "aws.greengrass#PublishToTopicResponse"));
  EXPECT_TRUE(still_serves());
}

TEST_F(IpcProtocol, SubscriberThatNeverReadsIsDisconnectedWithTheDisconnectPolicy) {
  start("        slowReaderPolicy: disconnect\n");
  auto slow = connected_client();
  ASSERT_TRUE(slow->send(subscribe(1, "slow")));
  auto first = slow->next();
  ASSERT_TRUE(first.is_message()) << first.what();
  ASSERT_EQ(string_header(first.message, "service-model-type"), "aws.greengrass#SubscribeToTopicResponse");
  auto pub = connected_client();
  auto third = connected_client();

  std::int32_t pub_stream = 1;
  std::int32_t third_stream = 1;
  std::string third_failure;
  std::uint64_t disconnects = 0;
  ASSERT_TRUE(flood(*pub, pub_stream, "slow", 20000, [&](int sent) {
    if (sent % 1000 != 0) return true;
    third->send(publish(third_stream, "other", {{"sent", sent}}));
    if (auto ok = is_response(third->next(30s), third_stream, "aws.greengrass#PublishToTopicResponse"); !ok)
      third_failure = ok.message();
    ++third_stream;
    disconnects = ipc_counter("slowReaderDisconnects");
    return disconnects == 0;
  }));
  EXPECT_TRUE(third_failure.empty()) << third_failure;
  EXPECT_GT(disconnects, 0u) << "the slow reader was not disconnected after " << pub_stream - 1 << " events";
  std::vector<Message> before;
  EXPECT_TRUE(slow->reaches_eof(30s, &before)) << "the slow reader saw no EOF after " << before.size() << " frames";
  for (const auto& m : before)
    ASSERT_EQ(string_header(m, "service-model-type"), "aws.greengrass#SubscriptionResponseMessage") << describe(m);
  const auto s = status();
  EXPECT_EQ(num(s, "/ipc/authenticatedConnections"), 3) << s.dump();  // pub, third, status
  EXPECT_EQ(num(s, "/pubsub/subscriptions"), 0) << s.dump();
  ASSERT_TRUE(pub->send(publish(pub_stream, "slow", {{"x", 1}})));
  EXPECT_TRUE(is_response(pub->next(), pub_stream, "aws.greengrass#PublishToTopicResponse"));
  EXPECT_TRUE(still_serves());
}

}  // namespace
}  // namespace canopy::test
