// kill -9 of canopyd at random moments during a steady PublishToIoTCore load, with the cloud
// link up in even rounds and cut in odd rounds: no message acknowledged to the publisher may be
// missing on the cloud side at the end. Duplicates are expected (at least once) and reported.
#include <csignal>
#include <mutex>
#include <random>

#include <gmock/gmock.h>

#include "integration/cloud_fixture.hpp"
#include "support/tcp_proxy.hpp"

namespace canopy::test::cloud {
namespace {

TEST(CloudKill9, NoAcknowledgedMessageIsEverLost) {
  constexpr int kRounds = 20;
  TempDir dir;
  CloudBroker cloud(dir.path());
  TcpProxy proxy(cloud.broker.port());
  auto watcher = cloud.client("watcher");
  ASSERT_TRUE(watcher->subscribe("tele/#", 1));
  auto cfg = cloud.config_for(proxy.port());
  cfg.mqtt_yaml = "        maxPublishRate: 0\n";  // the test cloud is not AWS: drain at full speed
  const std::string config = yaml(cfg);

  std::mutex m;
  std::set<long> acked;
  long next_seq = 0;
  std::mt19937 rng(20261130);
  std::uniform_int_distribution<int> delay_ms(100, 700);

  for (int round = 0; round < kRounds; ++round) {
    const bool cloud_up = round % 2 == 0;
    if (cloud_up && proxy.is_cut()) proxy.restore();
    if (!cloud_up && !proxy.is_cut()) proxy.cut(true);
    Canopyd d(dir.path(), {.config_yaml = config, .extra_args = {}, .env = {}, .foreground = true, .notify = true});
    ASSERT_TRUE(d.wait_ready()) << "round " << round;
    auto c = ipc_connect(d);
    ASSERT_TRUE(c);

    // A steady load: a window of 32 outstanding publishes, each acknowledged one recorded.
    std::atomic<bool> stop{false};
    std::atomic<int> outstanding{0};
    std::thread publisher([&] {
      while (!stop.load() && c->connected()) {
        if (outstanding.load() >= 32) {
          std::this_thread::sleep_for(1ms);
          continue;
        }
        long seq;
        {
          std::lock_guard lock(m);
          seq = next_seq++;
        }
        ++outstanding;
        const auto body = publish_request("tele/k", "tele/k:" + std::to_string(seq)).dump();
        const bool sent = c->call_async("aws.greengrass#PublishToIoTCore", body, [&, seq](result<std::string> r) {
          if (r) {
            std::lock_guard lock(m);
            acked.insert(seq);
          }
          --outstanding;
        });
        if (!sent) {
          --outstanding;
          break;
        }
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    d.process().signal(SIGKILL);
    ASSERT_TRUE(d.process().wait(10s).has_value());
    stop = true;
    publisher.join();
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (outstanding.load() > 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
    c.reset();
  }

  // The link comes back for good: everything acknowledged must arrive.
  if (proxy.is_cut()) proxy.restore();
  Canopyd d(dir.path(), {.config_yaml = config, .extra_args = {}, .env = {}, .foreground = true, .notify = true});
  ASSERT_TRUE(d.wait_ready());
  ASSERT_TRUE(wait_status(d, [](const nlohmann::json& s) { return s["spool"]["queued"] == 0; }, 120s))
      << status(d).dump(2);
  std::map<std::string, std::set<long>> expected;
  {
    std::lock_guard lock(m);
    expected["tele/k"] = acked;
  }
  const auto a = audit(watcher->messages(), expected);
  const auto s = status(d)["spool"];
  std::printf("kill -9 rounds: %d rounds, %zu acknowledged, %zu received at the cloud, missing=%zu, duplicates=%zu, "
              "out_of_order=%zu, spool resent=%d duplicates_suspected=%d\n",
              kRounds, expected["tele/k"].size(), watcher->count(), a.missing, a.duplicates, a.out_of_order,
              s["resent"].get<int>(), s["duplicates_suspected"].get<int>());
  EXPECT_GT(expected["tele/k"].size(), 0u);
  EXPECT_EQ(a.missing, 0u);
}

}  // namespace
}  // namespace canopy::test::cloud
