// Local broker -> cloud broker bridges, measured side by side: canopyd's canopy.MqttBridge
// (local Mosquitto -> canopyd -> SQLite spool -> TLS cloud) and Mosquitto's own bridge (a second
// local Mosquitto with a `connection` block -> TLS cloud). A libmosquitto publisher (plain TCP,
// QoS 1) feeds each candidate's local broker; one libmosquitto subscriber on the TLS "cloud"
// (client certificate, QoS 1) receives everything. Prints figures; asserts nothing.
// Run through bench/bridge_compare.sh and bench/bridge_outage.sh.
//
//   bridge_bench compare CLOUD_PORT PKI_DIR N WINDOW RATE LABEL=LOCAL_PORT [LABEL=LOCAL_PORT ...]
//     For each candidate in turn: N messages (QoS 1, 256 B, topic bench/LABEL) published to
//     127.0.0.1:LOCAL_PORT with at most WINDOW unacknowledged by the local broker; RATE > 0 paces
//     the publisher at RATE msg/s (0: as fast as the window allows, so that latency then includes
//     the backlog queued in front of the slower bridge). Throughput is
//     distinct messages received at the cloud subscriber / (last receipt - first send); latency
//     p50/p99 is send -> receipt. Then the ratio first candidate / second candidate.
//
//   bridge_bench outage CLOUD_PORT PKI_DIR LOCAL_PORT LABEL SECONDS RATE DIR [QUIET_S=20]
//     Publishes to the local broker at RATE msg/s for SECONDS (QoS 1, topic bench/LABEL, window
//     5000), waits for the local broker's PUBACKs, then creates DIR/published and waits for
//     DIR/restored (written by the script once it restored the cloud hop; it holds the restore
//     time in ns since the epoch). Then waits until every published sequence number has arrived,
//     or until QUIET_S seconds pass without a new one (at most 90 s before the first one, 900 s
//     in all), and reports published, delivered, lost, duplicates, received while cut, and the
//     drain time (restore -> last new message).
#include <mosquitto.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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

// The publisher to a local broker: plain TCP, QoS 1, at most `window` publishes without PUBACK.
struct Publisher {
  mosquitto* mosq = nullptr;
  std::mutex m;
  std::condition_variable cv;
  bool connected = false;
  std::int64_t outstanding = 0;
  std::atomic<std::int64_t> acked{0}, failed{0};
  std::int64_t last_ack_ns = 0;

  static void on_connect(mosquitto*, void* obj, int rc) {
    auto* p = static_cast<Publisher*>(obj);
    std::lock_guard lock(p->m);
    p->connected = rc == 0;
    p->cv.notify_all();
  }
  static void on_publish(mosquitto*, void* obj, int) {
    auto* p = static_cast<Publisher*>(obj);
    std::lock_guard lock(p->m);
    --p->outstanding;
    p->acked.fetch_add(1, std::memory_order_relaxed);
    p->last_ack_ns = now_ns();
    p->cv.notify_all();
  }

  bool start(int port, const std::string& id, int window) {
    mosq = mosquitto_new(id.c_str(), true, this);
    if (mosq == nullptr) return false;
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, std::min(window, 65535));
    mosquitto_connect_callback_set(mosq, &Publisher::on_connect);
    mosquitto_publish_callback_set(mosq, &Publisher::on_publish);
    if (mosquitto_connect(mosq, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS) return false;
    mosquitto_loop_start(mosq);
    std::unique_lock lock(m);
    return cv.wait_for(lock, std::chrono::seconds(20), [&] { return connected; });
  }
  // Blocks while `window` publishes are unacknowledged.
  void publish(const std::string& topic, std::int64_t seq, std::int64_t window) {
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return outstanding < window; });
      ++outstanding;
    }
    const auto p = make_payload(seq, now_ns());
    if (mosquitto_publish(mosq, nullptr, topic.c_str(), static_cast<int>(p.size()), p.data(), 1, false) != MOSQ_ERR_SUCCESS) {
      std::lock_guard lock(m);
      --outstanding;
      failed.fetch_add(1);
      cv.notify_all();
    }
  }
  bool drain(std::chrono::seconds deadline) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, deadline, [&] { return outstanding == 0; });
  }
  void stop() { bench::stop_client(mosq); }
};

double pct(std::vector<std::int64_t>& l, double p) {
  return l.empty() ? 0.0 : static_cast<double>(l[static_cast<std::size_t>(p * static_cast<double>(l.size() - 1))]) / 1e6;
}

struct Figures {
  double rate = 0, p50 = 0, p99 = 0;
};

Figures run_compare(Subscriber& sub, const std::string& label, int port, std::int64_t n, std::int64_t window,
                    double rate) {
  Run run;
  run.prepare("bench/" + label, n);
  sub.run.store(&run, std::memory_order_release);
  Publisher pub;
  if (!pub.start(port, "bridge-bench-pub-" + label, static_cast<int>(window))) {
    std::fprintf(stderr, "%s: cannot connect to the local broker on port %d\n", label.c_str(), port);
    sub.run.store(nullptr, std::memory_order_release);
    return {};
  }
  const auto t0 = Clock::now();
  const std::int64_t start = now_ns();
  for (std::int64_t i = 0; i < n; ++i) {
    if (rate > 0)
      std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(static_cast<double>(i) / rate)));
    pub.publish(run.topic, i, window);
  }
  pub.drain(std::chrono::seconds(300));
  const std::int64_t acked_ns = pub.last_ack_ns;
  const auto until = Clock::now() + std::chrono::seconds(300);
  while (run.distinct.load(std::memory_order_acquire) < n && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));  // late duplicates
  sub.run.store(nullptr, std::memory_order_release);
  pub.stop();
  auto& l = run.latencies;
  std::sort(l.begin(), l.end());
  const std::int64_t got = run.distinct.load();
  const double secs = static_cast<double>(run.last_rx_ns - start) / 1e9;
  Figures f{secs > 0 ? static_cast<double>(got) / secs : 0.0, pct(l, 0.5), pct(l, 0.99)};
  std::printf("%-10s QoS 1 payload=%zu B N=%lld window=%lld%s: %.0f msg/s at the cloud subscriber (%.2f s), "
              "latency p50=%.2f ms p99=%.2f ms max=%.2f ms, received=%lld missing=%lld duplicates=%lld, "
              "local broker acked all in %.2f s, failed publishes=%lld\n",
              label.c_str(), kPayload, static_cast<long long>(n), static_cast<long long>(window),
              rate > 0 ? (" paced at " + std::to_string(static_cast<long long>(rate)) + " msg/s").c_str() : "", f.rate, secs, f.p50,
              f.p99, pct(l, 1.0), static_cast<long long>(got), static_cast<long long>(n - got),
              static_cast<long long>(run.duplicates.load()), static_cast<double>(acked_ns - start) / 1e9,
              static_cast<long long>(pub.failed.load()));
  std::fflush(stdout);
  return f;
}

int mode_compare(int argc, char** argv) {
  if (argc < 8) return 2;
  const int cloud = std::stoi(argv[2]);
  const std::string pki = argv[3];
  const std::int64_t n = std::stoll(argv[4]), window = std::stoll(argv[5]);
  const double rate = std::stod(argv[6]);
  Subscriber sub;
  if (!sub.start(cloud, pki, "bench/#", "bridge-bench-sub", std::chrono::seconds(20))) {
    std::fprintf(stderr, "subscriber: cannot connect/subscribe on port %d\n", cloud);
    return 1;
  }
  std::vector<std::pair<std::string, Figures>> all;
  for (int i = 7; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto eq = arg.find('=');
    if (eq == std::string::npos) return 2;
    const std::string label = arg.substr(0, eq);
    all.emplace_back(label, run_compare(sub, label, std::stoi(arg.substr(eq + 1)), n, window, rate));
  }
  if (all.size() >= 2 && all[1].second.rate > 0 && all[1].second.p50 > 0 && all[1].second.p99 > 0)
    std::printf("ratio %s/%s: throughput %.2fx, latency p50 %.2fx, p99 %.2fx\n", all[0].first.c_str(), all[1].first.c_str(),
                all[0].second.rate / all[1].second.rate, all[0].second.p50 / all[1].second.p50,
                all[0].second.p99 / all[1].second.p99);
  if (sub.stray.load() > 0) std::printf("stray messages (another topic or phase): %lld\n", static_cast<long long>(sub.stray.load()));
  sub.stop();
  return 0;
}

int mode_outage(int argc, char** argv) {
  if (argc < 9) return 2;
  const int cloud = std::stoi(argv[2]);
  const std::string pki = argv[3];
  const int local = std::stoi(argv[4]);
  const std::string label = argv[5];
  const double seconds = std::stod(argv[6]), rate = std::stod(argv[7]);
  const std::filesystem::path dir = argv[8];
  const std::int64_t quiet_s = argc > 9 ? std::stoll(argv[9]) : 20;
  const std::int64_t n = static_cast<std::int64_t>(seconds * rate);
  constexpr std::int64_t kWindow = 5000;

  Run run;
  run.prepare("bench/" + label, n);
  Subscriber sub;
  sub.run.store(&run, std::memory_order_release);
  if (!sub.start(cloud, pki, "bench/#", "bridge-bench-sub", std::chrono::seconds(20))) {
    std::fprintf(stderr, "subscriber: cannot connect/subscribe on port %d\n", cloud);
    return 1;
  }
  Publisher pub;
  if (!pub.start(local, "bridge-bench-pub-" + label, static_cast<int>(kWindow))) {
    std::fprintf(stderr, "%s: cannot connect to the local broker on port %d\n", label.c_str(), local);
    return 1;
  }
  const auto t0 = Clock::now();
  const std::int64_t start = now_ns();
  for (std::int64_t i = 0; i < n; ++i) {
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(static_cast<double>(i) / rate)));
    pub.publish(run.topic, i, kWindow);
  }
  const std::int64_t sent_ns = now_ns();
  if (!pub.drain(std::chrono::seconds(120))) std::fprintf(stderr, "%s: PUBACKs still missing after 120 s\n", label.c_str());
  const std::int64_t while_cut = run.distinct.load();
  std::printf("%-14s published %lld in %.2f s (%.0f msg/s offered), PUBACKed by the local broker %lld (last PUBACK "
              "%.2f s after the start), failed publishes=%lld, at the cloud while cut=%lld\n",
              label.c_str(), static_cast<long long>(n), static_cast<double>(sent_ns - start) / 1e9,
              static_cast<double>(n) / (static_cast<double>(sent_ns - start) / 1e9),
              static_cast<long long>(pub.acked.load()), static_cast<double>(pub.last_ack_ns - start) / 1e9,
              static_cast<long long>(pub.failed.load()), static_cast<long long>(while_cut));
  std::fflush(stdout);
  pub.stop();
  std::ofstream(dir / "published") << "1\n";

  std::int64_t restored = 0;
  const auto restore_deadline = Clock::now() + std::chrono::seconds(120);
  while (restored == 0 && Clock::now() < restore_deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::ifstream(dir / "restored") >> restored;
  }
  if (restored == 0) {
    std::fprintf(stderr, "%s: no %s within 120 s\n", label.c_str(), (dir / "restored").c_str());
    return 1;
  }
  const auto hard = Clock::now() + std::chrono::seconds(900);
  while (run.distinct.load(std::memory_order_acquire) < n && Clock::now() < hard) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const std::int64_t last = run.last_new_epoch.load();
    const std::int64_t since = epoch_ns() - std::max(last, restored);
    const std::int64_t limit = (last > restored ? quiet_s : 90) * 1'000'000'000LL;
    if (since > limit) break;
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));  // late duplicates
  sub.run.store(nullptr, std::memory_order_release);
  sub.stop();
  const std::int64_t got = run.distinct.load();
  const std::int64_t last = run.last_new_epoch.load();
  const std::int64_t first = run.first_new_epoch.load();
  const double drain = last > restored ? static_cast<double>(last - restored) / 1e9 : -1.0;
  const double first_s = first > restored ? static_cast<double>(first - restored) / 1e9 : -1.0;
  std::printf("%-14s published=%lld delivered=%lld lost=%lld (%.2f%%) duplicates=%lld; after the hop was restored: "
              "first message %.2f s, last new message (drain time) %.2f s (%.0f msg/s over the drain, %.0f msg/s "
              "first to last message)%s\n",
              label.c_str(), static_cast<long long>(n), static_cast<long long>(got), static_cast<long long>(n - got),
              100.0 * static_cast<double>(n - got) / static_cast<double>(n), static_cast<long long>(run.duplicates.load()),
              first_s, drain, drain > 0 ? static_cast<double>(got - while_cut) / drain : 0.0,
              drain > first_s && first_s >= 0 ? static_cast<double>(got - while_cut) / (drain - first_s) : 0.0,
              got < n ? " (stopped waiting: no new message for the quiet period)" : "");
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  mosquitto_lib_init();
  const std::string mode = argc > 1 ? argv[1] : "";
  int rc = 2;
  if (mode == "compare") rc = mode_compare(argc, argv);
  else if (mode == "outage") rc = mode_outage(argc, argv);
  if (rc == 2)
    std::fprintf(stderr, "usage: bridge_bench compare CLOUD_PORT PKI_DIR N WINDOW RATE LABEL=LOCAL_PORT...\n"
                         "       bridge_bench outage CLOUD_PORT PKI_DIR LOCAL_PORT LABEL SECONDS RATE DIR [QUIET_S]\n");
  mosquitto_lib_cleanup();
  return rc;
}
