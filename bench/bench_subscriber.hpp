// The cloud-side subscriber the MQTT benchmarks share (cloud_e2e_bench, bridge_bench): a
// libmosquitto client over TLS with the test PKI's client certificate, counting the bench
// payloads (bench_payload.hpp) of one topic at a time. The caller runs mosquitto_lib_init()
// and mosquitto_lib_cleanup() around it.
#pragma once

#include <mosquitto.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "bench_payload.hpp"

namespace bench {

// What the subscriber saw on one topic. Written by libmosquitto's loop thread only; the main
// thread reads the atomics while waiting and the rest after the wait.
/// Disconnects, stops the network thread of and frees a libmosquitto client; null afterwards.
inline void stop_client(mosquitto*& mosq) {
  if (mosq == nullptr) return;
  mosquitto_disconnect(mosq);
  mosquitto_loop_stop(mosq, true);
  mosquitto_destroy(mosq);
  mosq = nullptr;
}

struct Run {
  std::string topic;
  std::int64_t count = 0;
  bool measure_latency = true;
  std::vector<std::uint8_t> seen;
  std::vector<std::int64_t> latencies;  // steady-clock ns, send to receipt, first copies only
  std::atomic<std::int64_t> distinct{0}, duplicates{0};
  std::atomic<std::int64_t> first_new_epoch{0}, last_new_epoch{0};  // ns since the epoch
  std::int64_t bad = 0;                                              // not a bench payload
  std::int64_t first_rx_ns = 0, last_rx_ns = 0;                      // steady clock

  void prepare(const std::string& t, std::int64_t n, bool latency = true) {
    topic = t;
    count = n;
    measure_latency = latency;
    seen.assign(static_cast<std::size_t>(n), 0);
    if (latency) latencies.reserve(static_cast<std::size_t>(n));
  }
};

struct Subscriber {
  mosquitto* mosq = nullptr;
  std::mutex m;
  std::condition_variable cv;
  bool connected = false, subscribed = false;
  std::atomic<Run*> run{nullptr};
  std::atomic<std::int64_t> stray{0};  // messages for no current run

  ~Subscriber() { stop(); }

  static void on_message(mosquitto*, void* obj, const mosquitto_message* msg) {
    auto* s = static_cast<Subscriber*>(obj);
    const std::int64_t t = now_ns();
    Run* r = s->run.load(std::memory_order_acquire);
    if (r == nullptr || r->topic != msg->topic) {
      s->stray.fetch_add(1);
      return;
    }
    std::int64_t seq = -1, sent = 0;
    if (msg->payloadlen >= 16) {
      std::memcpy(&seq, msg->payload, 8);
      std::memcpy(&sent, static_cast<const std::uint8_t*>(msg->payload) + 8, 8);
    }
    if (seq < 0 || seq >= r->count) {
      ++r->bad;
      return;
    }
    auto& flag = r->seen[static_cast<std::size_t>(seq)];
    if (flag != 0) {
      r->duplicates.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    flag = 1;
    if (r->measure_latency) r->latencies.push_back(t - sent);
    const std::int64_t e = epoch_ns();
    if (r->first_rx_ns == 0) {
      r->first_rx_ns = t;
      r->first_new_epoch.store(e, std::memory_order_relaxed);
    }
    r->last_rx_ns = t;
    r->last_new_epoch.store(e, std::memory_order_relaxed);
    r->distinct.fetch_add(1, std::memory_order_release);
  }
  static void on_connect(mosquitto*, void* obj, int rc) {
    auto* s = static_cast<Subscriber*>(obj);
    std::lock_guard lock(s->m);
    s->connected = rc == 0;
    s->cv.notify_all();
  }
  static void on_subscribe(mosquitto*, void* obj, int, int, const int*) {
    auto* s = static_cast<Subscriber*>(obj);
    std::lock_guard lock(s->m);
    s->subscribed = true;
    s->cv.notify_all();
  }

  // Connects over TLS to 127.0.0.1:port with PKI_DIR's ca.crt, client.crt and client.key
  // (retrying every 5 ms until the deadline, for a broker that is still starting) and subscribes
  // `filter` at QoS 1.
  bool start(int port, const std::string& pki, const std::string& filter, const std::string& client_id,
             std::chrono::seconds deadline) {
    mosq = mosquitto_new(client_id.c_str(), true, this);
    if (mosq == nullptr) return false;
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V311);
    mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_message_callback_set(mosq, &Subscriber::on_message);
    mosquitto_connect_callback_set(mosq, &Subscriber::on_connect);
    mosquitto_subscribe_callback_set(mosq, &Subscriber::on_subscribe);
    const std::string ca = pki + "/ca.crt", crt = pki + "/client.crt", key = pki + "/client.key";
    if (mosquitto_tls_set(mosq, ca.c_str(), nullptr, crt.c_str(), key.c_str(), nullptr) != MOSQ_ERR_SUCCESS) return false;
    const auto until = Clock::now() + deadline;
    while (mosquitto_connect(mosq, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS) {
      if (Clock::now() > until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    mosquitto_loop_start(mosq);
    std::unique_lock lock(m);
    if (!cv.wait_until(lock, until, [&] { return connected; })) return false;
    lock.unlock();
    if (mosquitto_subscribe(mosq, nullptr, filter.c_str(), 1) != MOSQ_ERR_SUCCESS) return false;
    lock.lock();
    return cv.wait_until(lock, until, [&] { return subscribed; });
  }
  void stop() { stop_client(mosq); }
};

}  // namespace bench
