// The cloud link, measured against a real TLS Mosquitto "cloud" (require_certificate) with a
// cloud-side subscriber (libmosquitto, QoS 1, TLS client certificate). Prints figures; asserts
// nothing. Run through bench/cloud_e2e.sh and bench/cloud_drain.sh.
//
//   cloud_e2e_bench e2e SOCKET TOKEN BROKER_PORT PKI_DIR [N=20000] [WINDOW=64]
//     (a) canopy: N PublishToIoTCore calls (QoS 1) through canopyd's IPC, at most WINDOW calls
//         unanswered (canopyd answers after the spool commit), topic tele/canopy;
//     (b) peer:   the same N messages published by a Paho C++ async_client straight to the cloud
//         broker over TLS (file key, same PKI), at most WINDOW publishes without PUBACK, topic
//         tele/peer.
//     Both to the same subscriber. Each 256-byte payload carries a sequence number and the
//     steady-clock send time (taken just before the IPC call / the Paho publish): throughput is
//     messages received / (last receipt - first send); latency p50/p99 is send -> receipt at the
//     subscriber; missing and duplicates come from the sequence numbers.
//
//   cloud_e2e_bench fill SOCKET TOKEN M [WINDOW=256]
//     M PublishToIoTCore calls (QoS 1, topic tele/drain, seq 0..M-1) with at most WINDOW
//     unanswered; prints the fill rate (answered messages / time until the last answer).
//
//   cloud_e2e_bench drain BROKER_PORT PKI_DIR M START_FILE [DEADLINE_S=1800]
//     Connects the subscriber (retrying until the broker listens), subscribes tele/drain QoS 1
//     and waits for M distinct sequence numbers. START_FILE holds the broker's start time (ns
//     since the epoch, written by the script just before it starts mosquitto); times are reported
//     from it: subscribed, first message, all M.
#include <mosquitto.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <mqtt/async_client.h>

#include "canopy/core/base64.hpp"
#include "canopy/ipc/client.hpp"

#include "bench_payload.hpp"
#include "bench_subscriber.hpp"

namespace {

using bench::Clock;
using bench::epoch_ns;
using bench::kPayload;
using bench::make_payload;
using bench::now_ns;
using bench::Run;
using bench::Subscriber;

struct Window {
  std::mutex m;
  std::condition_variable cv;
  std::int64_t outstanding = 0;
  std::atomic<std::int64_t> failed{0};
  std::string first_error;
  void acquire(std::int64_t limit) {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return outstanding < limit; });
    ++outstanding;
  }
  void release(bool ok, const std::string& why = {}) {
    std::lock_guard lock(m);
    --outstanding;
    if (!ok) {
      if (failed.fetch_add(1) == 0) first_error = why;
    }
    cv.notify_all();
  }
  bool drain(std::chrono::seconds deadline) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, deadline, [&] { return outstanding == 0; });
  }
};

std::string publish_body(const std::string& topic, std::int64_t seq) {
  const auto p = make_payload(seq, now_ns());
  return R"({"topicName":")" + topic + R"(","qos":"1","payload":")" +
         canopy::base64_encode(std::span<const std::uint8_t>(p)) + "\"}";
}

void wait_received(Run& run, std::chrono::seconds deadline) {
  const auto until = Clock::now() + deadline;
  while (run.distinct.load(std::memory_order_acquire) < run.count && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  // Let late duplicates (QoS 1 redelivery) arrive before counting them.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
}

void report(const char* who, Run& run, std::int64_t start_ns, std::int64_t answered_ns, std::int64_t window,
            const Window& w) {
  auto& l = run.latencies;
  std::sort(l.begin(), l.end());
  auto pct = [&](double p) {
    return l.empty() ? 0.0 : static_cast<double>(l[static_cast<std::size_t>(p * static_cast<double>(l.size() - 1))]) / 1e6;
  };
  const std::int64_t got = run.distinct.load();
  const double secs = static_cast<double>(run.last_rx_ns - start_ns) / 1e9;
  std::printf("%-7s QoS 1 payload=%zu B N=%lld window=%lld: %.0f msg/s at the subscriber (%.2f s), "
              "latency p50=%.2f ms p99=%.2f ms max=%.2f ms, received=%lld missing=%lld duplicates=%lld, "
              "publisher done in %.2f s, failed calls=%lld\n",
              who, kPayload, static_cast<long long>(run.count), static_cast<long long>(window),
              secs > 0 ? static_cast<double>(got) / secs : 0.0, secs, pct(0.5), pct(0.99), pct(1.0),
              static_cast<long long>(got), static_cast<long long>(run.count - got),
              static_cast<long long>(run.duplicates.load()), static_cast<double>(answered_ns - start_ns) / 1e9,
              static_cast<long long>(w.failed.load()));
  if (w.failed.load() > 0) std::printf("%-7s first failure: %s\n", who, w.first_error.c_str());
  std::fflush(stdout);
}

// With rate > 0, publish i waits until i / rate seconds after the first: latency is then the
// path's, not time spent queued behind a burst.
Clock::time_point start_paced(bool first) {
  static Clock::time_point t0;
  if (first) t0 = Clock::now();
  return t0;
}
void pace(Clock::time_point t0, std::int64_t i, double rate) {
  if (rate <= 0) return;
  std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                         std::chrono::duration<double>(static_cast<double>(i) / rate)));
}

// (a) through canopyd: PublishToIoTCore over IPC, WINDOW calls outstanding.
void run_canopy(canopy::ipc::Client& ipc, Subscriber& sub, std::int64_t n, std::int64_t window, double rate) {
  Run run;
  run.prepare("tele/canopy", n, true);
  sub.run.store(&run, std::memory_order_release);
  Window w;
  const std::int64_t start = now_ns();
  for (std::int64_t i = 0; i < n; ++i) {
    pace(start_paced(i == 0), i, rate);
    w.acquire(window);
    if (!ipc.call_async("aws.greengrass#PublishToIoTCore", publish_body(run.topic, i),
                        [&w](canopy::result<std::string> r) { w.release(static_cast<bool>(r), r ? "" : r.error().message); }))
      w.release(false, "call_async: not sent");
  }
  w.drain(std::chrono::seconds(120));
  const std::int64_t answered = now_ns();
  wait_received(run, std::chrono::seconds(120));
  sub.run.store(nullptr, std::memory_order_release);
  report("canopy", run, start, answered, window, w);
}

struct Listener : mqtt::iaction_listener {
  Window& w;
  explicit Listener(Window& win) : w(win) {}
  void on_success(const mqtt::token&) override { w.release(true); }
  void on_failure(const mqtt::token& tok) override { w.release(false, "publish failed, rc " + std::to_string(tok.get_return_code())); }
};

// (b) the peer: Paho C++ straight to the cloud broker over TLS, WINDOW publishes without PUBACK.
int run_peer(int port, const std::string& pki, Subscriber& sub, std::int64_t n, std::int64_t window, double rate) {
  mqtt::async_client cli("ssl://127.0.0.1:" + std::to_string(port), "cloud-bench-peer",
                         mqtt::create_options(MQTTVERSION_3_1_1), nullptr);
  auto ssl = mqtt::ssl_options_builder()
                 .trust_store(pki + "/ca.crt")
                 .key_store(pki + "/client.crt")
                 .private_key(pki + "/client.key")
                 .enable_server_cert_auth(true)
                 .verify(true)
                 .finalize();
  auto opts = mqtt::connect_options_builder()
                  .clean_session(true)
                  .keep_alive_interval(std::chrono::seconds(60))
                  .max_inflight(static_cast<int>(window + 10))
                  .ssl(std::move(ssl))
                  .finalize();
  try {
    cli.connect(opts)->wait_for(std::chrono::seconds(20));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "peer: cannot connect: %s\n", e.what());
    return 1;
  }
  if (!cli.is_connected()) {
    std::fprintf(stderr, "peer: not connected after 20 s\n");
    return 1;
  }
  Run run;
  run.prepare("tele/peer", n, true);
  sub.run.store(&run, std::memory_order_release);
  Window w;
  Listener listener(w);
  const std::int64_t start = now_ns();
  for (std::int64_t i = 0; i < n; ++i) {
    pace(start_paced(i == 0), i, rate);
    w.acquire(window);
    const auto p = make_payload(i, now_ns());
    try {
      cli.publish(run.topic, p.data(), p.size(), 1, false, nullptr, listener);
    } catch (const std::exception& e) {
      w.release(false, e.what());
    }
  }
  w.drain(std::chrono::seconds(120));
  const std::int64_t answered = now_ns();
  wait_received(run, std::chrono::seconds(120));
  sub.run.store(nullptr, std::memory_order_release);
  report("peer", run, start, answered, window, w);
  try {
    cli.disconnect()->wait_for(std::chrono::seconds(5));
  } catch (const std::exception&) {
  }
  return 0;
}

std::unique_ptr<canopy::ipc::Client> ipc_connect(const std::string& socket, const std::string& token) {
  auto c = canopy::ipc::Client::connect({socket, token, std::chrono::seconds(10)});
  if (!c) {
    std::fprintf(stderr, "IPC connect failed: %s\n", c.error().message.c_str());
    return nullptr;
  }
  return std::move(*c);
}

int mode_e2e(int argc, char** argv) {
  if (argc < 6) return 2;
  const std::string socket = argv[2], token = argv[3], pki = argv[5];
  const int port = std::stoi(argv[4]);
  const std::int64_t n = argc > 6 ? std::stoll(argv[6]) : 20000;
  const std::int64_t window = argc > 7 ? std::stoll(argv[7]) : 64;
  const double rate = argc > 8 ? std::stod(argv[8]) : 0;  // msgs/s, 0 = as fast as the window allows
  if (rate > 0) std::printf("paced at %.0f msg/s\n", rate);
  Subscriber sub;
  if (!sub.start(port, pki, "tele/#", "cloud-bench-sub", std::chrono::seconds(20))) {
    std::fprintf(stderr, "subscriber: cannot connect/subscribe on port %d\n", port);
    return 1;
  }
  auto ipc = ipc_connect(socket, token);
  if (!ipc) return 1;
  run_canopy(*ipc, sub, n, window, rate);
  const int rc = run_peer(port, pki, sub, n, window, rate);
  if (sub.stray.load() > 0) std::printf("stray messages (another topic or phase): %lld\n", static_cast<long long>(sub.stray.load()));
  sub.stop();
  return rc;
}

int mode_fill(int argc, char** argv) {
  if (argc < 5) return 2;
  const std::string socket = argv[2], token = argv[3];
  const std::int64_t m = std::stoll(argv[4]);
  const std::int64_t window = argc > 5 ? std::stoll(argv[5]) : 256;
  auto ipc = ipc_connect(socket, token);
  if (!ipc) return 1;
  Window w;
  const std::int64_t start = now_ns();
  std::int64_t last_report = start;
  for (std::int64_t i = 0; i < m; ++i) {
    w.acquire(window);
    if (!ipc->call_async("aws.greengrass#PublishToIoTCore", publish_body("tele/drain", i),
                         [&w](canopy::result<std::string> r) { w.release(static_cast<bool>(r), r ? "" : r.error().message); }))
      w.release(false, "call_async: not sent");
    if ((i + 1) % 100000 == 0) {
      const std::int64_t t = now_ns();
      std::fprintf(stderr, "fill: %lld sent, %.0f msg/s over the last 100000\n", static_cast<long long>(i + 1),
                   1e5 / (static_cast<double>(t - last_report) / 1e9));
      last_report = t;
    }
  }
  if (!w.drain(std::chrono::seconds(300))) std::fprintf(stderr, "fill: calls still unanswered after 300 s\n");
  const double secs = static_cast<double>(now_ns() - start) / 1e9;
  std::printf("fill    M=%lld window=%lld: %.0f msg/s into the spool through IPC (%.2f s), failed calls=%lld\n",
              static_cast<long long>(m), static_cast<long long>(window),
              static_cast<double>(m - w.failed.load()) / secs, secs, static_cast<long long>(w.failed.load()));
  if (w.failed.load() > 0) std::printf("fill    first failure: %s\n", w.first_error.c_str());
  return w.failed.load() == 0 ? 0 : 1;
}

int mode_drain(int argc, char** argv) {
  if (argc < 6) return 2;
  const int port = std::stoi(argv[2]);
  const std::string pki = argv[3], start_file = argv[5];
  const std::int64_t m = std::stoll(argv[4]);
  const std::int64_t deadline_s = argc > 6 ? std::stoll(argv[6]) : 1800;
  Run run;
  run.prepare("tele/drain", m, false);
  Subscriber sub;
  sub.run.store(&run, std::memory_order_release);
  if (!sub.start(port, pki, "tele/drain", "cloud-bench-sub", std::chrono::seconds(30))) {
    std::fprintf(stderr, "subscriber: cannot connect/subscribe on port %d\n", port);
    return 1;
  }
  const std::int64_t subscribed_epoch = epoch_ns();
  std::fprintf(stderr, "drain: subscriber subscribed\n");
  const auto until = Clock::now() + std::chrono::seconds(deadline_s);
  std::int64_t shown = 0;
  while (run.distinct.load(std::memory_order_acquire) < m && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const std::int64_t got = run.distinct.load(std::memory_order_acquire);
    if (got / 100000 > shown / 100000) std::fprintf(stderr, "drain: %lld received\n", static_cast<long long>(got));
    shown = got;
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  sub.stop();
  std::int64_t broker_start = 0;
  std::ifstream(start_file) >> broker_start;
  auto since = [&](std::int64_t t) { return t == 0 ? -1.0 : static_cast<double>(t - broker_start) / 1e9; };
  const std::int64_t got = run.distinct.load();
  const double span = static_cast<double>(run.last_rx_ns - run.first_rx_ns) / 1e9;
  const double total = got == m ? since(run.last_new_epoch.load()) : -1.0;  // "all at": only when all came
  std::printf("drain   M=%lld: subscribed %.3f s after the broker start, first message at %.3f s, all at %.3f s; "
              "%.0f msg/s from the broker start, %.0f msg/s first to last message (%.2f s); received=%lld "
              "missing=%lld duplicates=%lld\n",
              static_cast<long long>(m), since(subscribed_epoch), since(run.first_new_epoch.load()), total,
              total > 0 ? static_cast<double>(got) / total : 0.0, span > 0 ? static_cast<double>(got) / span : 0.0, span,
              static_cast<long long>(got), static_cast<long long>(m - got), static_cast<long long>(run.duplicates.load()));
  return got == m ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  mosquitto_lib_init();
  const std::string mode = argc > 1 ? argv[1] : "";
  int rc = 2;
  if (mode == "e2e") rc = mode_e2e(argc, argv);
  else if (mode == "fill") rc = mode_fill(argc, argv);
  else if (mode == "drain") rc = mode_drain(argc, argv);
  if (rc == 2)
    std::fprintf(stderr, "usage: cloud_e2e_bench e2e SOCKET TOKEN BROKER_PORT PKI_DIR [N] [WINDOW] [RATE]\n"
                         "       cloud_e2e_bench fill SOCKET TOKEN M [WINDOW]\n"
                         "       cloud_e2e_bench drain BROKER_PORT PKI_DIR M START_FILE [DEADLINE_S]\n");
  mosquitto_lib_cleanup();
  return rc;
}
