// Local pub/sub throughput and latency: canopyd's IPC (the C++ client, Greengrass
// PublishToTopic/SubscribeToTopic with binary messages) or Mosquitto at QoS 0 (libmosquitto),
// one publisher and one subscriber, same payloads. Prints figures; asserts nothing.
//
//   ipc_pubsub_bench canopy SOCKET PUB_TOKEN SUB_TOKEN PAYLOAD_BYTES COUNT [RATE]
//   ipc_pubsub_bench mosquitto PORT PAYLOAD_BYTES COUNT [RATE]
//
// Without RATE: throughput, the publisher at most WINDOW messages ahead of the subscriber.
// With RATE (msg/s): paced publishing; latency p50/p99 from a send timestamp in the payload.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <mosquitto.h>
#include <nlohmann/json.hpp>

#include "canopy/core/base64.hpp"
#include "canopy/ipc/client.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::int64_t kWindow = 1000;

std::int64_t now_ns() { return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count(); }

struct Run {
  std::atomic<std::int64_t> received{0};
  std::vector<std::int64_t> latencies;  // subscriber thread only
  std::int64_t first_ns = 0, last_ns = 0;
};

void on_payload(Run& run, const std::uint8_t* data, std::size_t size, bool measure) {
  const std::int64_t t = now_ns();
  if (measure && size >= 8) {
    std::int64_t sent = 0;
    std::memcpy(&sent, data, 8);
    run.latencies.push_back(t - sent);
  }
  run.last_ns = t;
  run.received.fetch_add(1, std::memory_order_release);
}

std::vector<std::uint8_t> make_payload(std::size_t size) {
  std::vector<std::uint8_t> p(std::max<std::size_t>(size, 8));
  for (std::size_t i = 8; i < p.size(); ++i) p[i] = static_cast<std::uint8_t>('a' + i % 26);
  return p;
}

// Paces or windows the publisher; returns false to stop.
void pace(Run& run, std::int64_t sent, double rate, std::int64_t start_ns) {
  if (rate > 0) {
    const auto due = start_ns + static_cast<std::int64_t>(static_cast<double>(sent) * 1e9 / rate);
    while (now_ns() < due) std::this_thread::yield();
  } else {
    while (sent - run.received.load(std::memory_order_acquire) >= kWindow) std::this_thread::yield();
  }
}

void report(const char* who, std::size_t payload, std::int64_t count, Run& run, double rate, std::int64_t start_ns) {
  const bool complete = run.received.load() == count;
  const double secs = static_cast<double>(run.last_ns - start_ns) / 1e9;
  if (rate <= 0) {
    std::printf("%-10s payload=%5zu B  messages=%lld  received=%lld  %.0f msg/s  (%.2f s)\n", who, payload,
                static_cast<long long>(count), static_cast<long long>(run.received.load()),
                static_cast<double>(run.received.load()) / secs, secs);
  } else {
    auto& l = run.latencies;
    std::sort(l.begin(), l.end());
    auto pct = [&](double p) { return l.empty() ? 0.0 : static_cast<double>(l[static_cast<std::size_t>(p * static_cast<double>(l.size() - 1))]) / 1000.0; };
    std::printf("%-10s payload=%5zu B  rate=%.0f msg/s  received=%lld/%lld  latency p50=%.1f us  p99=%.1f us  max=%.1f us\n",
                who, payload, rate, static_cast<long long>(run.received.load()), static_cast<long long>(count), pct(0.5),
                pct(0.99), pct(1.0));
  }
  if (!complete) std::printf("%-10s WARNING: %lld messages did not arrive\n", who, static_cast<long long>(count - run.received.load()));
}

int bench_canopy(int argc, char** argv) {
  if (argc < 7) return 2;
  const std::string socket = argv[2], pub_token = argv[3], sub_token = argv[4];
  const std::size_t size = std::stoul(argv[5]);
  const std::int64_t count = std::stoll(argv[6]);
  const double rate = argc > 7 ? std::stod(argv[7]) : 0;
  auto sub = canopy::ipc::Client::connect({socket, sub_token, std::chrono::seconds(10)});
  auto pub = canopy::ipc::Client::connect({socket, pub_token, std::chrono::seconds(10)});
  if (!sub || !pub) {
    std::fprintf(stderr, "connect failed: %s\n", (!sub ? sub.error() : pub.error()).message.c_str());
    return 1;
  }
  Run run;
  run.latencies.reserve(static_cast<std::size_t>(count));
  const bool measure = rate > 0;
  auto stream = (*sub)->subscribe("aws.greengrass#SubscribeToTopic", {{"topic", "bench/t"}}, [&](std::string_view body) {
    // {"binaryMessage":{"message":"<b64>","context":{...}}}: decode only what we need.
    const auto k = body.find("\"message\":\"");
    if (k == std::string_view::npos) return;
    const auto start = k + 11;
    const auto end = body.find('"', start);
    std::string_view b64 = body.substr(start, 12);  // the first 8 bytes are in the first 12 characters
    (void)end;
    auto bytes = canopy::base64_decode(b64);
    on_payload(run, bytes ? bytes->data() : nullptr, bytes ? bytes->size() : 0, measure);
  });
  if (!stream) {
    std::fprintf(stderr, "subscribe failed: %s\n", stream.error().message.c_str());
    return 1;
  }
  auto payload = make_payload(size);
  std::atomic<std::int64_t> answered{0}, failed{0};
  const std::int64_t start = now_ns();
  for (std::int64_t i = 0; i < count; ++i) {
    pace(run, i, rate, start);
    const std::int64_t t = now_ns();
    std::memcpy(payload.data(), &t, 8);
    std::string body = R"({"topic":"bench/t","publishMessage":{"binaryMessage":{"message":")" +
                       canopy::base64_encode(std::span<const std::uint8_t>(payload)) + "\"}}}";
    (*pub)->call_async("aws.greengrass#PublishToTopic", std::move(body), [&](canopy::result<std::string> r) {
      if (!r) failed++;
      answered++;
    });
  }
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (run.received.load() < count && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  report("canopy", size, count, run, rate, start);
  if (failed.load() > 0) std::printf("canopy     WARNING: %lld publishes failed\n", static_cast<long long>(failed.load()));
  return 0;
}

int bench_mosquitto(int argc, char** argv) {
  if (argc < 5) return 2;
  const int port = std::stoi(argv[2]);
  const std::size_t size = std::stoul(argv[3]);
  const std::int64_t count = std::stoll(argv[4]);
  const double rate = argc > 5 ? std::stod(argv[5]) : 0;
  mosquitto_lib_init();
  Run run;
  run.latencies.reserve(static_cast<std::size_t>(count));
  struct Ctx {
    Run* run;
    bool measure;
    std::atomic<bool> subscribed{false};
  } ctx{&run, rate > 0};
  mosquitto* sub = mosquitto_new("bench-sub", true, &ctx);
  mosquitto* pub = mosquitto_new("bench-pub", true, nullptr);
  mosquitto_message_callback_set(sub, [](mosquitto*, void* obj, const mosquitto_message* m) {
    auto* c = static_cast<Ctx*>(obj);
    on_payload(*c->run, static_cast<const std::uint8_t*>(m->payload), static_cast<std::size_t>(m->payloadlen), c->measure);
  });
  mosquitto_subscribe_callback_set(sub, [](mosquitto*, void* obj, int, int, const int*) {
    static_cast<Ctx*>(obj)->subscribed = true;
  });
  if (mosquitto_connect(sub, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS ||
      mosquitto_connect(pub, "127.0.0.1", port, 60) != MOSQ_ERR_SUCCESS) {
    std::fprintf(stderr, "cannot connect to mosquitto on port %d\n", port);
    return 1;
  }
  mosquitto_loop_start(sub);
  mosquitto_loop_start(pub);
  mosquitto_subscribe(sub, nullptr, "bench/t", 0);
  for (int i = 0; i < 5000 && !ctx.subscribed; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  auto payload = make_payload(size);
  const std::int64_t start = now_ns();
  for (std::int64_t i = 0; i < count; ++i) {
    pace(run, i, rate, start);
    const std::int64_t t = now_ns();
    std::memcpy(payload.data(), &t, 8);
    mosquitto_publish(pub, nullptr, "bench/t", static_cast<int>(payload.size()), payload.data(), 0, false);
  }
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (run.received.load() < count && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  report("mosquitto", size, count, run, rate, start);
  mosquitto_disconnect(pub);
  mosquitto_disconnect(sub);
  mosquitto_loop_stop(pub, true);
  mosquitto_loop_stop(sub, true);
  mosquitto_destroy(pub);
  mosquitto_destroy(sub);
  mosquitto_lib_cleanup();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "canopy") return bench_canopy(argc, argv);
  if (argc > 1 && std::string(argv[1]) == "mosquitto") return bench_mosquitto(argc, argv);
  std::fprintf(stderr, "usage: ipc_pubsub_bench canopy SOCKET PUB_TOKEN SUB_TOKEN PAYLOAD COUNT [RATE]\n"
                       "       ipc_pubsub_bench mosquitto PORT PAYLOAD COUNT [RATE]\n");
  return 2;
}
