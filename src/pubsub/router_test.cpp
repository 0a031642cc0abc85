#include "canopy/pubsub/router.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace canopy::pubsub {
namespace {
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// What one sink saw: the subscription, topic, source and a printable payload.
struct Seen {
  SubscriptionId id;
  std::string topic;
  std::string source;
  std::string body;  // "json:<dump>" or "bin:<bytes>"
  bool operator==(const Seen&) const = default;
};

std::string describe(const Payload& p) {
  if (p.is_json()) return "json:" + p.json_message().dump();
  const auto& b = p.binary_message();
  return "bin:" + std::string(b.begin(), b.end());
}

// A Subscriber whose sink appends to `log`.
Subscriber recorder(std::string component, ReceiveMode mode, std::vector<Seen>& log) {
  return Subscriber{std::move(component), mode, [&log](const Delivery& d) {
                      log.push_back({d.subscription, std::string(d.topic), std::string(d.source_component),
                                     describe(d.payload)});
                    }};
}

SubscriptionId must_subscribe(Router& r, std::string_view filter, Subscriber s) {
  auto id = r.subscribe(filter, std::move(s));
  EXPECT_TRUE(id) << (id ? "" : id.error().message);
  return id ? *id : 0;
}

const Payload kHello = Payload::binary(std::string_view("hello"));

TEST(ReceiveMode, GreengrassDefaultDependsOnWildcards) {
  EXPECT_EQ(default_receive_mode("a/b"), ReceiveMode::receive_all_messages);
  EXPECT_EQ(default_receive_mode("$aws/x"), ReceiveMode::receive_all_messages);
  EXPECT_EQ(default_receive_mode("a/+"), ReceiveMode::receive_messages_from_others);
  EXPECT_EQ(default_receive_mode("a/#"), ReceiveMode::receive_messages_from_others);
  EXPECT_EQ(default_receive_mode("#"), ReceiveMode::receive_messages_from_others);
}

TEST(ReceiveMode, WireNamesRoundTrip) {
  for (auto m : {ReceiveMode::receive_all_messages, ReceiveMode::receive_messages_from_others}) {
    auto parsed = parse_receive_mode(to_string(m));
    ASSERT_TRUE(parsed);
    EXPECT_EQ(*parsed, m);
  }
  EXPECT_EQ(to_string(ReceiveMode::receive_messages_from_others), "RECEIVE_MESSAGES_FROM_OTHERS");
  auto bad = parse_receive_mode("receive_all_messages");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid);
  EXPECT_EQ(bad.error().message,
            R"(receiveMode "receive_all_messages" is not one of RECEIVE_ALL_MESSAGES, RECEIVE_MESSAGES_FROM_OTHERS)");
}

TEST(Payload, JsonAndBinaryAreDistinct) {
  const auto j = Payload::json({{"temp", 21.5}});
  EXPECT_TRUE(j.is_json());
  EXPECT_FALSE(j.is_binary());
  EXPECT_EQ(j.json_message()["temp"], 21.5);
  EXPECT_THROW(static_cast<void>(j.binary_message()), std::bad_variant_access);

  const auto b = Payload::binary(std::vector<std::uint8_t>{0, 1, 255});
  EXPECT_TRUE(b.is_binary());
  EXPECT_EQ(b.binary_message(), (std::vector<std::uint8_t>{0, 1, 255}));
  EXPECT_THROW(static_cast<void>(b.json_message()), std::bad_variant_access);
  EXPECT_TRUE(Payload::binary(std::string_view()).binary_message().empty());
}

TEST(Payload, JsonTextIsJsonHeldAsText) {
  const auto t = Payload::json_text(R"({"b":[1,2.5,"x\u00e9"],"a":null})");
  EXPECT_TRUE(t.is_json());
  EXPECT_TRUE(t.is_json_text());
  EXPECT_FALSE(t.is_binary());
  // The text is kept as given (member order too); json_message() parses it.
  EXPECT_EQ(t.json_text(), R"({"b":[1,2.5,"x\u00e9"],"a":null})");
  EXPECT_EQ(t.json_string(), t.json_text());
  EXPECT_EQ(t.json_message(), nlohmann::json::parse(R"({"a":null,"b":[1,2.5,"x\u00e9"]})"));
  EXPECT_EQ(t.json_message()["b"][2], "x\u00e9");
  EXPECT_THROW(static_cast<void>(t.binary_message()), std::bad_variant_access);

  // Scalars are JSON values too.
  EXPECT_EQ(Payload::json_text("42").json_message(), 42);
  EXPECT_EQ(Payload::json_text("null").json_message(), nullptr);
}

TEST(Payload, OnlyJsonTextPayloadsHaveText) {
  const auto j = Payload::json({{"temp", 21}});
  EXPECT_FALSE(j.is_json_text());
  EXPECT_THROW(static_cast<void>(j.json_text()), std::bad_variant_access);
  EXPECT_EQ(j.json_string(), R"({"temp":21})");
  // A document's strings that are not UTF-8 are replaced, not thrown about.
  EXPECT_EQ(Payload::json(std::string("a\xff")).json_string(), "\"a\xef\xbf\xbd\"");

  const auto b = Payload::binary(std::string_view("x"));
  EXPECT_FALSE(b.is_json());
  EXPECT_FALSE(b.is_json_text());
  EXPECT_THROW(static_cast<void>(b.json_text()), std::bad_variant_access);
  EXPECT_THROW(static_cast<void>(b.json_string()), std::bad_variant_access);
}

TEST(Router, DeliversJsonTextToEverySubscriberAsIs) {
  Router r;
  std::vector<Seen> a, b;
  const auto ida = must_subscribe(r, "s/#", recorder("A", ReceiveMode::receive_all_messages, a));
  std::vector<std::string> texts;
  must_subscribe(r, "s/1", Subscriber{"B", ReceiveMode::receive_all_messages, [&texts](const Delivery& d) {
                                        ASSERT_TRUE(d.payload.is_json_text());
                                        texts.push_back(d.payload.json_text());
                                      }});
  ASSERT_TRUE(r.publish("s/1", Payload::json_text(R"({"z":1,"a":2})"), "P"));
  // describe() goes through json_message(): a document, keys in its order.
  EXPECT_THAT(a, ElementsAre(Seen{ida, "s/1", "P", R"(json:{"a":2,"z":1})"}));
  EXPECT_THAT(texts, ElementsAre(R"({"z":1,"a":2})"));
}

TEST(Router, SubscribeRejectsBadFiltersAndMissingSinks) {
  Router r;
  std::vector<Seen> log;
  auto bad = r.subscribe("a/b#", recorder("c", ReceiveMode::receive_all_messages, log));
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid);
  EXPECT_THAT(bad.error().message, HasSubstr(R"(topic filter "a/b#" has "#" inside a level)"));

  auto empty = r.subscribe("", recorder("c", ReceiveMode::receive_all_messages, log));
  ASSERT_FALSE(empty);
  EXPECT_EQ(empty.error().message, "topic filter is empty");

  auto no_sink = r.subscribe("a", Subscriber{"com.example.A", ReceiveMode::receive_all_messages, nullptr});
  ASSERT_FALSE(no_sink);
  EXPECT_EQ(no_sink.error().code, errc::invalid);
  EXPECT_EQ(no_sink.error().message, R"(subscription of component "com.example.A" to topic filter "a" has no sink)");
  EXPECT_EQ(r.subscription_count(), 0u);
}

TEST(Router, PublishRejectsWildcardTopics) {
  Router r;
  std::vector<Seen> log;
  must_subscribe(r, "#", recorder("c", ReceiveMode::receive_all_messages, log));
  auto res = r.publish("a/+/b", kHello, "p");
  ASSERT_FALSE(res);
  EXPECT_EQ(res.error().code, errc::invalid);
  EXPECT_EQ(res.error().message, R"(topic "a/+/b" contains the wildcard "+"; publish to a concrete topic)");
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(r.stats().rejected, 1u);
  EXPECT_EQ(r.stats().published, 0u);
}

TEST(Router, PublishWithoutSubscribersSucceedsWithZeroDeliveries) {
  Router r;
  auto res = r.publish("nobody/home", kHello, "p");
  ASSERT_TRUE(res);
  EXPECT_EQ(*res, 0u);
  EXPECT_EQ(r.stats().published, 1u);
  EXPECT_EQ(r.stats().unmatched, 1u);
  EXPECT_EQ(r.stats().deliveries, 0u);
}

TEST(Router, DeliversJsonAndBinaryWithTopicAndSource) {
  Router r;
  std::vector<Seen> log;
  const auto id = must_subscribe(r, "sensors/+", recorder("sub", ReceiveMode::receive_all_messages, log));
  ASSERT_TRUE(r.publish("sensors/t1", Payload::json({{"temp", 21}}), "com.example.Pub"));
  ASSERT_TRUE(r.publish("sensors/t2", Payload::binary(std::string_view("raw\x01")), "com.example.Pub"));
  ASSERT_TRUE(r.publish("other/t1", kHello, "com.example.Pub"));
  EXPECT_THAT(log, ElementsAre(Seen{id, "sensors/t1", "com.example.Pub", R"(json:{"temp":21})"},
                               Seen{id, "sensors/t2", "com.example.Pub", "bin:raw\x01"}));
}

TEST(Router, ReceiveModesControlEchoToThePublisher) {
  Router r;
  std::vector<Seen> all_log;
  std::vector<Seen> others_log;
  std::vector<Seen> b_log;
  must_subscribe(r, "t", recorder("A", ReceiveMode::receive_all_messages, all_log));
  must_subscribe(r, "t", recorder("A", ReceiveMode::receive_messages_from_others, others_log));
  must_subscribe(r, "t", recorder("B", ReceiveMode::receive_messages_from_others, b_log));

  auto from_a = r.publish("t", kHello, "A");
  ASSERT_TRUE(from_a);
  EXPECT_EQ(*from_a, 2u);  // A's receive-all subscription and B
  EXPECT_EQ(all_log.size(), 1u);
  EXPECT_TRUE(others_log.empty());
  EXPECT_EQ(b_log.size(), 1u);
  EXPECT_EQ(r.stats().suppressed_own, 1u);

  auto from_b = r.publish("t", kHello, "B");
  ASSERT_TRUE(from_b);
  EXPECT_EQ(*from_b, 2u);  // both of A's
  EXPECT_EQ(all_log.size(), 2u);
  EXPECT_EQ(others_log.size(), 1u);
  EXPECT_EQ(b_log.size(), 1u);

  // Only the publisher's own subscriptions are suppressed, never another component's.
  auto from_c = r.publish("t", kHello, "C");
  ASSERT_TRUE(from_c);
  EXPECT_EQ(*from_c, 3u);
}

TEST(Router, SameComponentSameFilterTwiceIsTwoSubscriptions) {
  Router r;
  std::vector<Seen> log;
  const auto a = must_subscribe(r, "x", recorder("C", ReceiveMode::receive_all_messages, log));
  const auto b = must_subscribe(r, "x", recorder("C", ReceiveMode::receive_all_messages, log));
  EXPECT_NE(a, b);
  EXPECT_EQ(*r.publish("x", kHello, "P"), 2u);
  EXPECT_TRUE(r.unsubscribe(a));
  EXPECT_EQ(*r.publish("x", kHello, "P"), 1u);
  EXPECT_EQ(log.back().id, b);
}

TEST(Router, DeliversInSubscriptionOrderAndPublishOrder) {
  Router r;
  std::vector<Seen> log;
  // Filters that sit in different parts of the trie, subscribed in a known order.
  const auto s1 = must_subscribe(r, "#", recorder("c1", ReceiveMode::receive_all_messages, log));
  const auto s2 = must_subscribe(r, "a/b/c", recorder("c2", ReceiveMode::receive_all_messages, log));
  const auto s3 = must_subscribe(r, "a/+/c", recorder("c3", ReceiveMode::receive_all_messages, log));
  const auto s4 = must_subscribe(r, "a/#", recorder("c4", ReceiveMode::receive_all_messages, log));
  const auto s5 = must_subscribe(r, "+/b/+", recorder("c5", ReceiveMode::receive_all_messages, log));
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(r.publish("a/b/c", Payload::json(i), "p"));
  ASSERT_EQ(log.size(), 250u);
  const SubscriptionId order[] = {s1, s2, s3, s4, s5};
  for (std::size_t k = 0; k < log.size(); ++k) {
    EXPECT_EQ(log[k].id, order[k % 5]) << k;
    EXPECT_EQ(log[k].body, "json:" + std::to_string(k / 5)) << k;
  }
}

TEST(Router, ManySubscribersAcrossFilters) {
  Router r;
  std::size_t hits = 0;
  std::vector<SubscriptionId> ids;
  for (int i = 0; i < 1000; ++i) {
    const std::string filter = i % 4 == 0 ? "fleet/#" : i % 4 == 1 ? "fleet/+/temp" : i % 4 == 2
                                                                                       ? "fleet/dev" + std::to_string(i) + "/temp"
                                                                                       : "other/" + std::to_string(i);
    ids.push_back(must_subscribe(r, filter, Subscriber{"c" + std::to_string(i), ReceiveMode::receive_all_messages,
                                                       [&hits](const Delivery&) { ++hits; }}));
  }
  EXPECT_EQ(r.subscription_count(), 1000u);
  auto n = r.publish("fleet/dev2/temp", kHello, "p");
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 250u + 250u + 1u);  // all fleet/#, all fleet/+/temp, the one exact filter
  EXPECT_EQ(hits, *n);
  for (const auto id : ids) EXPECT_TRUE(r.unsubscribe(id));
  EXPECT_EQ(r.subscription_count(), 0u);
  EXPECT_EQ(*r.publish("fleet/dev2/temp", kHello, "p"), 0u);
}

TEST(Router, UnsubscribeUnknownIsANoOp) {
  Router r;
  std::vector<Seen> log;
  EXPECT_FALSE(r.unsubscribe(0));
  EXPECT_FALSE(r.unsubscribe(42));
  const auto id = must_subscribe(r, "a", recorder("c", ReceiveMode::receive_all_messages, log));
  EXPECT_TRUE(r.unsubscribe(id));
  EXPECT_FALSE(r.unsubscribe(id));
  EXPECT_EQ(*r.publish("a", kHello, "p"), 0u);
  EXPECT_EQ(r.filter_of(id), nullptr);
}

TEST(Router, IdsAreNeverReused) {
  Router r;
  std::vector<Seen> log;
  const auto a = must_subscribe(r, "a", recorder("c", ReceiveMode::receive_all_messages, log));
  EXPECT_TRUE(r.unsubscribe(a));
  const auto b = must_subscribe(r, "a", recorder("c", ReceiveMode::receive_all_messages, log));
  EXPECT_GT(b, a);
  ASSERT_NE(r.filter_of(b), nullptr);
  EXPECT_EQ(*r.filter_of(b), "a");
}

TEST(Router, UnsubscribeComponentRemovesOnlyItsSubscriptions) {
  Router r;
  std::vector<Seen> log;
  must_subscribe(r, "a", recorder("gone", ReceiveMode::receive_all_messages, log));
  must_subscribe(r, "b/#", recorder("gone", ReceiveMode::receive_all_messages, log));
  const auto keep = must_subscribe(r, "a", recorder("stays", ReceiveMode::receive_all_messages, log));
  EXPECT_EQ(r.unsubscribe_component("gone"), 2u);
  EXPECT_EQ(r.unsubscribe_component("gone"), 0u);
  EXPECT_EQ(r.subscription_count(), 1u);
  ASSERT_TRUE(r.publish("a", kHello, "p"));
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0].id, keep);
}

TEST(Router, SinkUnsubscribingALaterSubscriberSkipsItAtOnce) {
  Router r;
  std::vector<Seen> log;
  SubscriptionId victim = 0;
  must_subscribe(r, "t", Subscriber{"killer", ReceiveMode::receive_all_messages, [&](const Delivery&) {
                                      EXPECT_TRUE(r.unsubscribe(victim));
                                    }});
  victim = must_subscribe(r, "t", recorder("victim", ReceiveMode::receive_all_messages, log));
  auto n = r.publish("t", kHello, "p");
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_TRUE(log.empty());
  EXPECT_EQ(r.subscription_count(), 1u);
}

TEST(Router, SinkUnsubscribingItselfIsSafe) {
  Router r;
  int calls = 0;
  SubscriptionId self = 0;
  // The capture makes the std::function own heap state, so a premature destruction of the
  // sink would be visible to ASan.
  auto big = std::make_shared<std::string>(1000, 'x');
  self = must_subscribe(r, "t", Subscriber{"once", ReceiveMode::receive_all_messages, [&r, &calls, &self, big](const Delivery&) {
                                             ++calls;
                                             EXPECT_TRUE(r.unsubscribe(self));
                                             EXPECT_FALSE(r.unsubscribe(self));
                                             EXPECT_EQ(big->size(), 1000u);  // still alive
                                           }});
  big.reset();
  ASSERT_TRUE(r.publish("t", kHello, "p"));
  ASSERT_TRUE(r.publish("t", kHello, "p"));
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(r.subscription_count(), 0u);
}

TEST(Router, SubscriptionMadeDuringDeliveryGetsTheNextPublish) {
  Router r;
  std::vector<Seen> late_log;
  std::optional<SubscriptionId> late;
  must_subscribe(r, "t/#", Subscriber{"adder", ReceiveMode::receive_all_messages, [&](const Delivery&) {
                                        if (!late)
                                          late = must_subscribe(r, "t/+", recorder("late", ReceiveMode::receive_all_messages, late_log));
                                      }});
  EXPECT_EQ(*r.publish("t/1", Payload::json(1), "p"), 1u);
  EXPECT_TRUE(late_log.empty());
  EXPECT_EQ(*r.publish("t/2", Payload::json(2), "p"), 2u);
  ASSERT_EQ(late_log.size(), 1u);
  EXPECT_EQ(late_log[0].topic, "t/2");
}

TEST(Router, ChurnDuringDeliveryDoesNotCrash) {
  // Every sink unsubscribes a neighbour and subscribes a replacement on each delivery.
  Router r;
  std::vector<SubscriptionId> ids;
  std::size_t calls = 0;
  std::function<void(const Delivery&)> churn = [&](const Delivery& d) {
    ++calls;
    for (auto& id : ids)
      if (id != d.subscription && r.unsubscribe(id)) {
        id = must_subscribe(r, "t/+", Subscriber{"c", ReceiveMode::receive_all_messages, churn});
        break;
      }
  };
  for (int i = 0; i < 20; ++i) ids.push_back(must_subscribe(r, i % 2 ? "t/+" : "t/#", Subscriber{"c", ReceiveMode::receive_all_messages, churn}));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(r.publish("t/x", kHello, "p"));
  EXPECT_EQ(r.subscription_count(), 20u);
  EXPECT_GT(calls, 0u);
}

TEST(Router, PublishFromASinkIsDeliveredNested) {
  Router r;
  std::vector<Seen> log;
  must_subscribe(r, "in", Subscriber{"relay", ReceiveMode::receive_all_messages, [&](const Delivery& d) {
                                       auto n = r.publish("out", d.payload, "relay");
                                       EXPECT_TRUE(n);
                                     }});
  must_subscribe(r, "#", recorder("tap", ReceiveMode::receive_all_messages, log));
  ASSERT_TRUE(r.publish("in", Payload::json("m"), "p"));
  // Depth-first: "out" reaches the tap inside the relay's callback, before "in" does.
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0].topic, "out");
  EXPECT_EQ(log[1].topic, "in");
  EXPECT_EQ(r.stats().published, 2u);
}

TEST(Router, PublishLoopStopsAtTheNestingLimit) {
  Router r(RouterLimits{.max_subscriptions = 10, .max_nesting = 4});
  std::size_t calls = 0;
  std::size_t refused = 0;
  must_subscribe(r, "loop", Subscriber{"echo", ReceiveMode::receive_all_messages, [&](const Delivery& d) {
                                         ++calls;
                                         auto n = r.publish("loop", d.payload, "echo");
                                         if (!n) {
                                           ++refused;
                                           EXPECT_EQ(n.error().code, errc::busy);
                                           EXPECT_THAT(n.error().message, HasSubstr("nested 4 deep"));
                                         }
                                       }});
  ASSERT_TRUE(r.publish("loop", kHello, "p"));
  EXPECT_EQ(calls, 4u);
  EXPECT_EQ(refused, 1u);
  EXPECT_EQ(r.stats().rejected, 1u);
  // The router is usable afterwards.
  ASSERT_TRUE(r.publish("loop", kHello, "p"));
  EXPECT_EQ(calls, 8u);
}

TEST(Router, ThrowingSinkIsCountedAndOthersStillReceive) {
  Router r;
  std::vector<Seen> log;
  must_subscribe(r, "t", Subscriber{"bad", ReceiveMode::receive_all_messages,
                                    [](const Delivery&) { throw std::runtime_error("boom"); }});
  must_subscribe(r, "t", Subscriber{"worse", ReceiveMode::receive_all_messages, [](const Delivery&) { throw 7; }});
  must_subscribe(r, "t", recorder("good", ReceiveMode::receive_all_messages, log));
  auto n = r.publish("t", kHello, "p");
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 1u);
  EXPECT_EQ(log.size(), 1u);
  EXPECT_EQ(r.stats().sink_failures, 2u);
  EXPECT_EQ(r.stats().deliveries, 1u);
}

TEST(Router, SubscriptionLimitIsEnforced) {
  Router r(RouterLimits{.max_subscriptions = 2, .max_nesting = 8});
  std::vector<Seen> log;
  must_subscribe(r, "a", recorder("c", ReceiveMode::receive_all_messages, log));
  const auto second = must_subscribe(r, "b", recorder("c", ReceiveMode::receive_all_messages, log));
  auto third = r.subscribe("c", recorder("c", ReceiveMode::receive_all_messages, log));
  ASSERT_FALSE(third);
  EXPECT_EQ(third.error().code, errc::busy);
  EXPECT_EQ(third.error().message, R"(cannot subscribe component "c": the router already holds 2 subscriptions, its limit)");
  EXPECT_TRUE(r.unsubscribe(second));
  EXPECT_TRUE(r.subscribe("c", recorder("c", ReceiveMode::receive_all_messages, log)));
}

TEST(Router, DollarTopicsReachOnlyExplicitFilters) {
  Router r;
  std::vector<Seen> all;
  std::vector<Seen> aws;
  must_subscribe(r, "#", recorder("all", ReceiveMode::receive_all_messages, all));
  must_subscribe(r, "$aws/things/+/shadow/#", recorder("aws", ReceiveMode::receive_all_messages, aws));
  EXPECT_EQ(*r.publish("$aws/things/gw/shadow/update", kHello, "p"), 1u);
  EXPECT_TRUE(all.empty());
  EXPECT_EQ(aws.size(), 1u);
}

TEST(Router, StatsCountEverything) {
  Router r;
  std::vector<Seen> log;
  must_subscribe(r, "a/#", recorder("A", ReceiveMode::receive_messages_from_others, log));
  must_subscribe(r, "a/b", recorder("B", ReceiveMode::receive_all_messages, log));
  ASSERT_TRUE(r.publish("a/b", kHello, "A"));  // B only
  ASSERT_TRUE(r.publish("a/b", kHello, "C"));  // both
  ASSERT_TRUE(r.publish("z", kHello, "C"));    // nobody
  ASSERT_FALSE(r.publish("", kHello, "C"));
  const RouterStats& s = r.stats();
  EXPECT_EQ(s.published, 3u);
  EXPECT_EQ(s.rejected, 1u);
  EXPECT_EQ(s.deliveries, 3u);
  EXPECT_EQ(s.unmatched, 1u);
  EXPECT_EQ(s.suppressed_own, 1u);
  EXPECT_EQ(s.sink_failures, 0u);
}

}  // namespace
}  // namespace canopy::pubsub

namespace canopy::pubsub {
namespace {

TEST(PayloadBase64, KeepsTheTextItWasDecodedFrom) {
  const Payload p = Payload::binary(std::vector<std::uint8_t>{'h', 'i'}, "aGk=");
  ASSERT_TRUE(p.is_binary());
  EXPECT_EQ(p.binary_base64(), "aGk=");
  EXPECT_EQ(p.binary_message(), (std::vector<std::uint8_t>{'h', 'i'}));
  EXPECT_TRUE(Payload::binary(std::string_view("hi")).binary_base64().empty());
}

}  // namespace
}  // namespace canopy::pubsub
