#include "canopy/ipc/policy.hpp"

#include <cstdint>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace canopy::ipc {
namespace {

using nlohmann::json;

constexpr std::string_view kPubSub = "aws.greengrass.ipc.pubsub";
constexpr std::string_view kPublish = "aws.greengrass#PublishToTopic";
constexpr std::string_view kSubscribe = "aws.greengrass#SubscribeToTopic";
constexpr std::string_view kIotSubscribe = "aws.greengrass#SubscribeToIoTCore";

// Names a parameterized case after its `name` field.
struct CaseName {
  template <class Case>
  std::string operator()(const ::testing::TestParamInfo<Case>& param) const {
    return param.param.name;
  }
};

// ---------------------------------------------------------------------------------------------
// parse_access_control

TEST(ParseAccessControl, ReadsEveryField) {
  const json doc = json::parse(R"({
    "aws.greengrass.ipc.pubsub": {
      "com.example.Pub:pubsub:1": {
        "policyDescription": "Allows access to publish to test/topic.",
        "operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"],
        "resources": ["test/topic", "sensors/*"]
      },
      "a-second": {"operations": ["*"], "resources": ["*"]}
    },
    "aws.greengrass.ipc.mqttproxy": {
      "iot": {"operations": ["aws.greengrass#SubscribeToIoTCore"], "resources": ["sensors/+/t", "cmd/#", "#"]}
    }
  })");
  auto r = parse_access_control(doc, "com.example.Pub");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 3u);
  // Sorted by destination, then id.
  const Policy& iot = (*r)[0];
  EXPECT_EQ(iot.destination, "aws.greengrass.ipc.mqttproxy");
  EXPECT_EQ(iot.id, "iot");
  EXPECT_EQ(iot.description, "");
  EXPECT_EQ(iot.resources, (std::vector<std::string>{"sensors/+/t", "cmd/#", "#"}));
  const Policy& second = (*r)[1];
  EXPECT_EQ(second.destination, kPubSub);
  EXPECT_EQ(second.id, "a-second");
  const Policy& first = (*r)[2];
  EXPECT_EQ(first.id, "com.example.Pub:pubsub:1");
  EXPECT_EQ(first.description, "Allows access to publish to test/topic.");
  EXPECT_EQ(first.operations,
            (std::vector<std::string>{"aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"}));
  EXPECT_EQ(first.resources, (std::vector<std::string>{"test/topic", "sensors/*"}));
}

struct GoodCase {
  const char* name;
  const char* doc;
  std::size_t policies;
  std::size_t resources_of_first;
};

class ParseGood : public ::testing::TestWithParam<GoodCase> {};

TEST_P(ParseGood, Accepted) {
  const GoodCase& c = GetParam();
  auto r = parse_access_control(json::parse(c.doc), "com.example.Pub");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), c.policies);
  if (c.policies > 0) {
    EXPECT_EQ((*r)[0].resources.size(), c.resources_of_first);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, ParseGood,
    ::testing::Values(
        GoodCase{"null_is_no_policies", "null", 0, 0},
        GoodCase{"empty_object", "{}", 0, 0},
        GoodCase{"null_destination", R"({"aws.greengrass.ipc.pubsub": null})", 0, 0},
        // Missing `resources` grants nothing (Java nucleus behaviour), it is not an error.
        GoodCase{"missing_resources", R"({"d": {"p": {"operations": ["*"]}}})", 1, 0},
        GoodCase{"null_resources", R"({"d": {"p": {"operations": ["*"], "resources": null}}})", 1, 0},
        GoodCase{"empty_resources", R"({"d": {"p": {"operations": ["*"], "resources": []}}})", 1, 0},
        GoodCase{"keys_ignore_case",
                 R"({"d": {"p": {"PolicyDescription": "x", "Operations": ["*"], "RESOURCES": ["a"]}}})", 1, 1},
        GoodCase{"null_description", R"({"d": {"p": {"policyDescription": null, "operations": ["o"], "resources": ["a"]}}})", 1, 1},
        GoodCase{"escapes", R"({"d": {"p": {"operations": ["o"], "resources": ["${*}${?}${$}", "$aws/things/x", "a$"]}}})", 1, 3},
        GoodCase{"plus_hash_literal_outside_mqttproxy",
                 R"({"aws.greengrass.ipc.pubsub": {"p": {"operations": ["o"], "resources": ["a#b+c", "a/#/b"]}}})", 1, 2},
        GoodCase{"mqtt_wildcards_as_levels",
                 R"({"aws.greengrass.ipc.mqttproxy": {"p": {"operations": ["o"], "resources": ["#", "+", "+/a", "a/+", "a/+/b", "a/#", "/#", "+/#"]}}})", 1, 8}),
    CaseName{});

TEST(ParseAccessControl, AcceptsAJsonStringLeaf) {
  const json doc = std::string(R"({"d": {"p": {"operations": ["o"], "resources": ["r"]}}})");
  auto r = parse_access_control(doc, "c");
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_EQ(r->size(), 1u);
  EXPECT_EQ((*r)[0].destination, "d");
}

TEST(ParseAccessControl, AStringThatIsNotJsonIsAParseError) {
  auto r = parse_access_control(json("not json {"), "com.example.Pub");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::parse);
  EXPECT_EQ(r.error().message, "com.example.Pub: accessControl: a string that is not a JSON object");
}

struct BadCase {
  const char* name;
  const char* doc;
  const char* message;
};

class ParseBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(ParseBad, RejectedWithExactMessage) {
  const BadCase& c = GetParam();
  auto r = parse_access_control(json::parse(c.doc), "com.example.Pub");
  ASSERT_FALSE(r) << c.doc;
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(r.error().message, c.message);
}

#define PUBSUB "aws.greengrass.ipc.pubsub"
#define MQTTPROXY "aws.greengrass.ipc.mqttproxy"
#define PREFIX_PUBSUB "com.example.Pub: accessControl." PUBSUB ".\"p1\""
#define PREFIX_MQTT "com.example.Pub: accessControl." MQTTPROXY ".\"p1\""

INSTANTIATE_TEST_SUITE_P(
    Table, ParseBad,
    ::testing::Values(
        BadCase{"top_level_array", "[]",
                "com.example.Pub: accessControl: expected an object of destinations, got array"},
        BadCase{"destination_not_object", R"({")" PUBSUB R"(": ["p1"]})",
                "com.example.Pub: accessControl." PUBSUB ": expected an object of policies, got array"},
        BadCase{"empty_destination", R"({"": {}})", "com.example.Pub: accessControl.\"\": empty destination name"},
        BadCase{"empty_policy_id", R"({")" PUBSUB R"(": {"": {}}})",
                "com.example.Pub: accessControl." PUBSUB ".\"\": empty policy id"},
        BadCase{"policy_not_object", R"({")" PUBSUB R"(": {"p1": "x"}})",
                PREFIX_PUBSUB ": expected an object with operations and resources, got string"},
        BadCase{"operations_not_list", R"({")" PUBSUB R"(": {"p1": {"operations": "aws.greengrass#PublishToTopic", "resources": ["a"]}}})",
                PREFIX_PUBSUB ".operations: expected a list of strings"},
        BadCase{"operations_null", R"({")" PUBSUB R"(": {"p1": {"operations": null, "resources": ["a"]}}})",
                PREFIX_PUBSUB ".operations: expected a list of strings"},
        BadCase{"operation_not_string", R"({")" PUBSUB R"(": {"p1": {"operations": ["a", 3], "resources": ["a"]}}})",
                PREFIX_PUBSUB ".operations[1]: expected a string, got number"},
        BadCase{"operation_empty", R"({")" PUBSUB R"(": {"p1": {"operations": [""], "resources": ["a"]}}})",
                PREFIX_PUBSUB ".operations[0]: empty operation name"},
        BadCase{"operations_missing", R"({")" PUBSUB R"(": {"p1": {"resources": ["a"]}}})",
                PREFIX_PUBSUB ".operations: missing; list the allowed operations, or \"*\" for all"},
        BadCase{"operations_empty", R"({")" PUBSUB R"(": {"p1": {"operations": [], "resources": ["a"]}}})",
                PREFIX_PUBSUB ".operations: empty list; list the allowed operations, or \"*\" for all"},
        BadCase{"resources_not_list", R"({")" PUBSUB R"(": {"p1": {"operations": ["*"], "resources": "a"}}})",
                PREFIX_PUBSUB ".resources: expected a list of strings"},
        BadCase{"resource_not_string", R"({")" PUBSUB R"(": {"p1": {"operations": ["*"], "resources": [true]}}})",
                PREFIX_PUBSUB ".resources[0]: expected a string, got boolean"},
        BadCase{"resource_empty", R"({")" PUBSUB R"(": {"p1": {"operations": ["*"], "resources": ["a", ""]}}})",
                PREFIX_PUBSUB ".resources[1]: empty resource"},
        BadCase{"unterminated_escape", R"({")" PUBSUB R"(": {"p1": {"operations": ["*"], "resources": ["a${"]}}})",
                PREFIX_PUBSUB ".resources[0]: \"a${\": unterminated escape \"${\"; use ${*}, ${?} or ${$}"},
        BadCase{"unterminated_escape_3", R"({")" PUBSUB R"(": {"p1": {"operations": ["*"], "resources": ["a${?"]}}})",
                PREFIX_PUBSUB ".resources[0]: \"a${?\": unterminated escape \"${?\"; use ${*}, ${?} or ${$}"},
        BadCase{"invalid_escape_char", R"({")" PUBSUB R"(": {"p1": {"operations": ["*"], "resources": ["a${x}b"]}}})",
                PREFIX_PUBSUB ".resources[0]: \"a${x}b\": invalid escape \"${x}\"; use ${*}, ${?} or ${$}"},
        BadCase{"escape_too_long", R"({")" PUBSUB R"(": {"p1": {"operations": ["*"], "resources": ["${**}"]}}})",
                PREFIX_PUBSUB ".resources[0]: \"${**}\": invalid escape \"${**\"; use ${*}, ${?} or ${$}"},
        BadCase{"mqtt_hash_not_last", R"({")" MQTTPROXY R"(": {"p1": {"operations": ["*"], "resources": ["a/#/b"]}}})",
                PREFIX_MQTT ".resources[0]: \"a/#/b\": \"#\" must be the whole last level (as in \"sensors/#\")"},
        BadCase{"mqtt_hash_not_whole_level", R"({")" MQTTPROXY R"(": {"p1": {"operations": ["*"], "resources": ["a/b#"]}}})",
                PREFIX_MQTT ".resources[0]: \"a/b#\": \"#\" must be the whole last level (as in \"sensors/#\")"},
        BadCase{"mqtt_plus_not_whole_level", R"({")" MQTTPROXY R"(": {"p1": {"operations": ["*"], "resources": ["ok", "a/b+/c"]}}})",
                PREFIX_MQTT ".resources[1]: \"a/b+/c\": \"+\" must be a whole level (as in \"sensors/+/temp\")"},
        BadCase{"unknown_key", R"({")" PUBSUB R"(": {"p1": {"operations": ["*"], "resource": ["a"]}}})",
                PREFIX_PUBSUB ".resource: unknown key; expected policyDescription, operations or resources"},
        BadCase{"duplicate_key_by_case", R"({")" PUBSUB R"(": {"p1": {"Operations": ["*"], "operations": ["*"]}}})",
                PREFIX_PUBSUB ".operations: duplicate key (keys ignore case)"},
        BadCase{"description_not_string", R"({")" PUBSUB R"(": {"p1": {"policyDescription": 1, "operations": ["*"]}}})",
                PREFIX_PUBSUB ".policyDescription: expected a string, got number"}),
    CaseName{});

TEST(ValidateResource, MessageHasNoPathPrefixAndEscapesControlBytes) {
  auto r = validate_resource("a\n${", kPubSub);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid);
  EXPECT_EQ(r.error().message, "\"a\\x0a${\": unterminated escape \"${\"; use ${*}, ${?} or ${$}");
  EXPECT_TRUE(validate_resource("a/#", kMqttProxyDestination));
  EXPECT_TRUE(validate_resource("a/#/b", kPubSub));
}

// ---------------------------------------------------------------------------------------------
// resource_matches

struct MatchCase {
  const char* pattern;
  const char* resource;
  ResourceStyle style;
  bool matches;
};

void PrintTo(const MatchCase& c, std::ostream* os) {
  *os << '"' << c.pattern << "\" vs \"" << c.resource << "\" ("
      << (c.style == ResourceStyle::mqtt ? "mqtt" : "standard") << ") -> " << c.matches;
}

class Match : public ::testing::TestWithParam<MatchCase> {};

TEST_P(Match, Table) {
  const MatchCase& c = GetParam();
  EXPECT_EQ(resource_matches(c.pattern, c.resource, c.style), c.matches);
}

constexpr auto S = ResourceStyle::standard;
constexpr auto M = ResourceStyle::mqtt;

INSTANTIATE_TEST_SUITE_P(
    Literal, Match,
    ::testing::Values(MatchCase{"test/topic", "test/topic", S, true}, MatchCase{"test/topic", "test/topi", S, false},
                      MatchCase{"test/topic", "test/topic/x", S, false}, MatchCase{"Test", "test", S, false},
                      MatchCase{"$aws/things/x", "$aws/things/x", S, true}, MatchCase{"a$", "a$", M, true}));

INSTANTIATE_TEST_SUITE_P(
    Star, Match,
    ::testing::Values(MatchCase{"*", "anything/at/all", S, true}, MatchCase{"sensors/*", "sensors/", S, true},
                      MatchCase{"sensors/*", "sensors/t1", S, true},
                      MatchCase{"sensors/*", "sensors/a/b/c", S, true},  // `*` crosses `/`
                      MatchCase{"sensors/*", "sensors", S, false}, MatchCase{"sensors/*", "actuators/t1", S, false},
                      MatchCase{"*/temp", "a/b/temp", S, true}, MatchCase{"a*b*c", "aXXbYYc", S, true},
                      MatchCase{"a*b*c", "aXXcYYb", S, false}, MatchCase{"a**b", "ab", S, true},
                      MatchCase{"*a", "bbba", S, true}, MatchCase{"*a", "bbbab", S, false},
                      MatchCase{"sensors/*", "sensors/a/b", M, true}));

INSTANTIATE_TEST_SUITE_P(
    Question, Match,
    ::testing::Values(MatchCase{"t?", "t1", S, true}, MatchCase{"t?", "t", S, false},
                      MatchCase{"t?", "t12", S, false}, MatchCase{"a?c", "a/c", S, true},
                      MatchCase{"??", "ab", M, true}, MatchCase{"?*", "", S, false}));

INSTANTIATE_TEST_SUITE_P(
    Escapes, Match,
    ::testing::Values(MatchCase{"a${*}", "a*", S, true}, MatchCase{"a${*}", "ab", S, false},
                      MatchCase{"a${?}", "a?", S, true}, MatchCase{"a${?}", "ab", S, false},
                      MatchCase{"a${$}", "a$", S, true}, MatchCase{"${$}{*}", "${*}", S, true},
                      MatchCase{"${*}*", "*abc", S, true}, MatchCase{"${*}*", "abc", S, false},
                      // An invalid escape given straight to the matcher is literal text.
                      MatchCase{"a${x}", "a${x}", S, true}, MatchCase{"a${", "a${", S, true}));

INSTANTIATE_TEST_SUITE_P(
    MqttWildcards, Match,
    ::testing::Values(
        MatchCase{"sensors/+/temp", "sensors/t1/temp", M, true},
        MatchCase{"sensors/+/temp", "sensors/a/b/temp", M, false},
        MatchCase{"sensors/+/temp", "sensors//temp", M, true},  // `+` matches an empty level
        MatchCase{"sensors/+", "sensors/t1", M, true}, MatchCase{"sensors/+", "sensors/t1/x", M, false},
        MatchCase{"+", "t1", M, true}, MatchCase{"+", "a/b", M, false}, MatchCase{"+/x", "a/x", M, true},
        MatchCase{"sensors/#", "sensors/a/b", M, true}, MatchCase{"sensors/#", "sensors/a", M, true},
        MatchCase{"sensors/#", "sensors", M, true},  // `a/#` matches the parent level
        MatchCase{"sensors/#", "sensors/", M, true}, MatchCase{"sensors/#", "sensorsX", M, false},
        MatchCase{"sensors/#", "other/a", M, false}, MatchCase{"#", "a/b/c", M, true},
        MatchCase{"a/*xy/#", "a/12xy", M, true}, MatchCase{"a/*xy/#", "a/12xy/z", M, true},
        MatchCase{"+/#", "a", M, true}, MatchCase{"+/#", "a/b/c", M, true},
        // A `+`/`#` that is not a whole level is literal even in MQTT style.
        MatchCase{"a+", "a+", M, true}, MatchCase{"a+", "ab", M, false},
        MatchCase{"a#", "a#", M, true}, MatchCase{"a#", "ab", M, false}));

INSTANTIATE_TEST_SUITE_P(
    MqttWildcardsAreLiteralInStandardStyle, Match,
    ::testing::Values(MatchCase{"sensors/+/temp", "sensors/t1/temp", S, false},
                      MatchCase{"sensors/+/temp", "sensors/+/temp", S, true},
                      MatchCase{"sensors/#", "sensors/a", S, false}, MatchCase{"sensors/#", "sensors/#", S, true},
                      MatchCase{"#", "a", S, false}, MatchCase{"#", "#", S, true}));

// The requested resource is a topic filter (SubscribeToIoTCore "sensors/#"): it is matched
// literally against the policy pattern, as the Greengrass nucleus does.
INSTANTIATE_TEST_SUITE_P(
    RequestedFilterIsLiteral, Match,
    ::testing::Values(MatchCase{"sensors/#", "sensors/#", M, true}, MatchCase{"sensors/#", "sensors/+/t", M, true},
                      MatchCase{"sensors/*", "sensors/#", M, true},
                      // Stricter than Greengrass: `+` (one level) never grants the whole subtree `#`.
                      MatchCase{"sensors/+", "sensors/#", M, false},
                      MatchCase{"sensors/+", "sensors/+", M, true},
                      MatchCase{"sensors/a", "sensors/+", M, false}, MatchCase{"sensors/a", "sensors/#", M, false},
                      MatchCase{"sensors/+/t", "sensors/#", M, false}, MatchCase{"sensors/?", "sensors/#", M, false},
                      MatchCase{"sensors/?", "sensors/+", S, false}, MatchCase{"sensors/?", "sensors/a", S, true},
                      MatchCase{"a?b", "a+b", S, true}));

TEST(ResourceMatches, PathologicalPatternFinishes) {
  // 200 stars interleaved with `a` against 10k `a`s ending in `b`: exponential for a naive
  // backtracking glob, O(pattern * resource) here.
  std::string pattern;
  for (int i = 0; i < 200; ++i) pattern += "*a";
  pattern += "c";
  const std::string resource = std::string(10000, 'a') + "b";
  EXPECT_FALSE(resource_matches(pattern, resource, ResourceStyle::standard));
  EXPECT_FALSE(resource_matches(pattern, resource, ResourceStyle::mqtt));
  pattern.back() = 'b';
  EXPECT_TRUE(resource_matches(pattern, resource, ResourceStyle::standard));

  std::string plus_pattern;
  for (int i = 0; i < 200; ++i) plus_pattern += "+/";
  plus_pattern += "x";
  std::string levels;
  for (int i = 0; i < 5000; ++i) levels += "a/";
  levels += "y";
  EXPECT_FALSE(resource_matches(plus_pattern, levels, ResourceStyle::mqtt));
  EXPECT_FALSE(resource_matches(std::string(200, '*') + "c", resource, ResourceStyle::standard));
}

// `+` or `#` standing alone as a level of a requested filter.
bool wildcard_level(std::string_view s, std::size_t k) {
  return (s[k] == '+' || s[k] == '#') && (k == 0 || s[k - 1] == '/') && (k + 1 == s.size() || s[k + 1] == '/');
}

// Exponential but obviously right (a requested filter's wildcard levels are not matched by
// `?` or by MQTT `+`, see RequestedFilterIsLiteral): `*` any sequence, `?` one byte, MQTT `+` (whole level) any
// run without `/`, MQTT final `/#` the parent level or `/` and anything. No escapes.
bool reference_match(std::string_view p, std::size_t pi, std::string_view s, std::size_t si, bool mqtt) {
  if (pi == p.size()) return si == s.size();
  const char c = p[pi];
  const bool level_start = pi == 0 || p[pi - 1] == '/';
  const bool level_end = pi + 1 == p.size() || p[pi + 1] == '/';
  if (c == '*') {
    for (std::size_t k = si; k <= s.size(); ++k) {
      if (reference_match(p, pi + 1, s, k, mqtt)) return true;
    }
    return false;
  }
  if (mqtt && c == '+' && level_start && level_end) {
    for (std::size_t k = si; k <= s.size(); ++k) {
      if (reference_match(p, pi + 1, s, k, mqtt)) return true;
      if (k < s.size() && (s[k] == '/' || (s[k] == '#' && wildcard_level(s, k)))) return false;
    }
    return false;
  }
  if (mqtt && c == '/' && pi + 2 == p.size() && p[pi + 1] == '#') {
    return si == s.size() || s[si] == '/';
  }
  if (mqtt && c == '#' && p.size() == 1) return true;
  if (si == s.size()) return false;
  if ((c == '?' && !wildcard_level(s, si)) || c == s[si]) return reference_match(p, pi + 1, s, si + 1, mqtt);
  return false;
}

TEST(ResourceMatches, AgreesWithAReferenceMatcherOnRandomInputs) {
  std::uint32_t state = 12345;
  auto next = [&state](std::uint32_t bound) {
    state = state * 1103515245u + 12345u;
    return (state >> 16) % bound;
  };
  const std::string_view pattern_chars = "ab/*?+#";
  const std::string_view resource_chars = "ab/+#";
  for (int round = 0; round < 20000; ++round) {
    std::string pattern;
    std::string resource;
    for (std::uint32_t i = 0, n = next(7); i < n; ++i) pattern += pattern_chars[next(7)];
    for (std::uint32_t i = 0, n = next(9); i < n; ++i) resource += resource_chars[next(5)];
    for (const bool mqtt : {false, true}) {
      const bool expected = reference_match(pattern, 0, resource, 0, mqtt);
      EXPECT_EQ(resource_matches(pattern, resource, mqtt ? ResourceStyle::mqtt : ResourceStyle::standard),
                expected)
          << "pattern \"" << pattern << "\" resource \"" << resource << "\" mqtt " << mqtt;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// policy_is_broad

TEST(PolicyIsBroad, FlagsStarOperationsAndMatchAllResources) {
  EXPECT_TRUE(policy_is_broad(Policy{"d", "p", "", {"*"}, {"a"}}));
  EXPECT_TRUE(policy_is_broad(Policy{"d", "p", "", {"op"}, {"a", "*"}}));
  EXPECT_TRUE(policy_is_broad(Policy{"d", "p", "", {"op"}, {"#"}}));
  EXPECT_FALSE(policy_is_broad(Policy{"d", "p", "", {"op"}, {"a/*", "+", "a/#"}}));
  EXPECT_FALSE(policy_is_broad(Policy{"d", "p", "", {"op"}, {}}));
}

// ---------------------------------------------------------------------------------------------
// Authorizer

Policy make_policy(std::string_view destination, std::string id, std::vector<std::string> ops,
                   std::vector<std::string> resources) {
  return Policy{std::string(destination), std::move(id), "", std::move(ops), std::move(resources)};
}

TEST(Authorizer, DefaultDenyWithAnExactMessage) {
  Authorizer a;
  const Decision d = a.check("com.example.Sub", kPubSub, kPublish, "sensors/t1");
  EXPECT_FALSE(d);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.message,
            "com.example.Sub is not authorized to perform aws.greengrass#PublishToTopic on resource "
            "\"sensors/t1\"; add an accessControl policy for aws.greengrass.ipc.pubsub");
  auto r = a.authorize("com.example.Sub", kPubSub, kPublish, "sensors/t1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::unauthorized);
  EXPECT_EQ(r.error().message, d.message);
}

TEST(Authorizer, DeniedMessageEscapesTheResource) {
  Authorizer a;
  const Decision d = a.check("c", kPubSub, kPublish, "a\"b\\c\nd");
  EXPECT_EQ(d.message,
            "c is not authorized to perform aws.greengrass#PublishToTopic on resource \"a\\\"b\\\\c\\x0ad\"; "
            "add an accessControl policy for aws.greengrass.ipc.pubsub");
}

struct CheckCase {
  const char* name;
  const char* component;
  std::string_view destination;
  std::string_view operation;
  const char* resource;
  bool allowed;
  const char* policy_id;  // when allowed
};

class AuthorizerCheck : public ::testing::TestWithParam<CheckCase> {
 protected:
  void SetUp() override {
    a_.set_policies("com.example.Pub",
                    {make_policy(kPubSub, "pub", {std::string(kPublish)}, {"sensors/*", "test/topic"}),
                     make_policy(kPubSub, "sub", {std::string(kSubscribe)}, {"cmd/?"}),
                     make_policy(kMqttProxyDestination, "iot", {std::string(kIotSubscribe)}, {"sensors/#", "dev/+/cmd"}),
                     make_policy("aws.greengrass.ipc.lifecycle", "all", {"*"}, {"com.example.Other"}),
                     make_policy(kPubSub, "nothing", {"*"}, {})});
    a_.set_policies("com.example.Other", {make_policy(kPubSub, "other", {"*"}, {"*"})});
  }
  Authorizer a_;
};

TEST_P(AuthorizerCheck, Table) {
  const CheckCase& c = GetParam();
  const Decision d = a_.check(c.component, c.destination, c.operation, c.resource);
  EXPECT_EQ(d.allowed, c.allowed) << d.message;
  if (c.allowed) {
    EXPECT_EQ(d.policy_id, c.policy_id);
    EXPECT_EQ(d.message, "");
    EXPECT_TRUE(a_.authorize(c.component, c.destination, c.operation, c.resource));
  } else {
    EXPECT_EQ(d.policy_id, "");
    EXPECT_THAT(d.message, ::testing::StartsWith(std::string(c.component) + " is not authorized"));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, AuthorizerCheck,
    ::testing::Values(
        CheckCase{"publish_allowed", "com.example.Pub", kPubSub, kPublish, "sensors/t1", true, "pub"},
        CheckCase{"second_resource", "com.example.Pub", kPubSub, kPublish, "test/topic", true, "pub"},
        CheckCase{"resource_not_listed", "com.example.Pub", kPubSub, kPublish, "actuators/x", false, ""},
        CheckCase{"operation_not_listed", "com.example.Pub", kPubSub, kSubscribe, "sensors/t1", false, ""},
        CheckCase{"second_policy", "com.example.Pub", kPubSub, kSubscribe, "cmd/1", true, "sub"},
        CheckCase{"wrong_destination", "com.example.Pub", kMqttProxyDestination, kPublish, "sensors/t1", false, ""},
        CheckCase{"mqtt_hash", "com.example.Pub", kMqttProxyDestination, kIotSubscribe, "sensors/#", true, "iot"},
        CheckCase{"mqtt_hash_deep", "com.example.Pub", kMqttProxyDestination, kIotSubscribe, "sensors/a/b", true, "iot"},
        CheckCase{"mqtt_plus", "com.example.Pub", kMqttProxyDestination, kIotSubscribe, "dev/7/cmd", true, "iot"},
        CheckCase{"mqtt_plus_one_level", "com.example.Pub", kMqttProxyDestination, kIotSubscribe, "dev/7/8/cmd", false, ""},
        CheckCase{"star_operation", "com.example.Pub", "aws.greengrass.ipc.lifecycle", "aws.greengrass#PauseComponent",
                  "com.example.Other", true, "all"},
        CheckCase{"star_operation_other_resource", "com.example.Pub", "aws.greengrass.ipc.lifecycle",
                  "aws.greengrass#PauseComponent", "com.example.Third", false, ""},
        CheckCase{"policies_are_per_component", "com.example.Other", kMqttProxyDestination, kIotSubscribe, "sensors/#", false, ""},
        CheckCase{"other_component_broad", "com.example.Other", kPubSub, kPublish, "x/y", true, "other"},
        CheckCase{"unknown_component", "com.example.Nobody", kPubSub, kPublish, "sensors/t1", false, ""},
        CheckCase{"empty_resource", "com.example.Other", kPubSub, kPublish, "", false, ""},
        CheckCase{"star_resource_not_a_wildcard_request", "com.example.Pub", kPubSub, kPublish, "*", false, ""}),
    CaseName{});

TEST(Authorizer, ReloadReplacesAndRemoveForgets) {
  Authorizer a;
  a.set_policies("c", {make_policy(kPubSub, "p", {"*"}, {"old/*"})});
  EXPECT_TRUE(a.check("c", kPubSub, kPublish, "old/1"));
  EXPECT_FALSE(a.check("c", kPubSub, kPublish, "new/1"));

  a.set_policies("c", {make_policy(kPubSub, "p", {"*"}, {"new/*"})});
  EXPECT_FALSE(a.check("c", kPubSub, kPublish, "old/1"));
  EXPECT_TRUE(a.check("c", kPubSub, kPublish, "new/1"));
  ASSERT_EQ(a.policies("c").size(), 1u);
  EXPECT_EQ(a.policies("c")[0].resources, std::vector<std::string>{"new/*"});

  a.set_policies("c", {});
  EXPECT_FALSE(a.check("c", kPubSub, kPublish, "new/1"));

  a.set_policies("c", {make_policy(kPubSub, "p", {"*"}, {"new/*"})});
  a.remove("c");
  a.remove("never-added");
  EXPECT_FALSE(a.check("c", kPubSub, kPublish, "new/1"));
  EXPECT_TRUE(a.policies("c").empty());
}

TEST(Authorizer, ParsedPoliciesEndToEnd) {
  auto parsed = parse_access_control(json::parse(R"({
    "aws.greengrass.ipc.mqttproxy": {
      "p": {"operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["$aws/things/gw-1/shadow/${*}", "t/+"]}
    }
  })"), "com.example.Pub");
  ASSERT_TRUE(parsed) << parsed.error().message;
  Authorizer a;
  a.set_policies("com.example.Pub", std::move(*parsed));
  const std::string_view op = "aws.greengrass#PublishToIoTCore";
  EXPECT_TRUE(a.check("com.example.Pub", kMqttProxyDestination, op, "$aws/things/gw-1/shadow/*"));
  EXPECT_FALSE(a.check("com.example.Pub", kMqttProxyDestination, op, "$aws/things/gw-1/shadow/update"));
  EXPECT_TRUE(a.check("com.example.Pub", kMqttProxyDestination, op, "t/1"));
  EXPECT_FALSE(a.check("com.example.Pub", kMqttProxyDestination, op, "t/1/2"));
}

}  // namespace
}  // namespace canopy::ipc
