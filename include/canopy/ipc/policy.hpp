//! IPC authorization: components' `accessControl` policies, their parsing and validation, and
//! the default-deny Authorizer that checks (component, destination, operation, resource).
//! Pure C++: no I/O, no Asio, no logging.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "canopy/core/error.hpp"

namespace canopy::ipc {

namespace detail {
/// One step of a compiled resource pattern (policy.cpp); an implementation detail.
struct PatternToken {
  enum class Kind : unsigned char {
    literal,  ///< the byte `ch`
    one,      ///< `?`: any one byte
    star,     ///< `*` (and a lone `#` in MQTT style): any sequence
    plus,     ///< MQTT `+`: any sequence without `/`
    tail,     ///< MQTT final `/#`: nothing more, or `/` then any sequence
  };
  Kind kind = Kind::literal;
  char ch = 0;
};
}  // namespace detail

/// The destination whose resources are MQTT topics and filters (PublishToIoTCore,
/// SubscribeToIoTCore); only its policies understand the MQTT wildcards `+` and `#`.
inline constexpr std::string_view kMqttProxyDestination = "aws.greengrass.ipc.mqttproxy";

/// One policy of one component, as written under
/// `configuration.accessControl.<destination>.<id>` (eventstream.md §16).
struct Policy {
  std::string destination;  ///< service name the policy applies to, e.g. `aws.greengrass.ipc.pubsub`
  std::string id;           ///< policy id, unique within (component, destination)
  std::string description;  ///< `policyDescription`; may be empty
  std::vector<std::string> operations;  ///< e.g. `aws.greengrass#PublishToTopic`, or `*` for all
  std::vector<std::string> resources;   ///< resource patterns (see resource_matches); may be empty
};

/// How resource patterns of a destination are read.
enum class ResourceStyle {
  standard,  ///< glob: `*` `?` and the escapes `${*}` `${?}` `${$}`; `+` and `#` are literal
  mqtt,      ///< standard plus MQTT `+` (one whole level) and `#` (the whole last level)
};

/// ResourceStyle::mqtt for kMqttProxyDestination, standard for every other destination.
ResourceStyle resource_style(std::string_view destination) noexcept;

/// Parses one component's `configuration.accessControl` value: an object destination -> policy
/// id -> {policyDescription, operations, resources}. A string holding that object as JSON is
/// accepted too (the Java nucleus reads such leaf values). Keys of a policy are matched
/// case-insensitively, as the Java nucleus does; unknown keys are errors (a misspelt
/// `resource` would otherwise silently grant nothing). `null` gives no policies.
///
/// Rules: `operations` is required and is a non-empty list of non-empty strings.
/// `resources` is optional: missing or `[]` means the policy grants no resource at all, so it
/// denies everything (the Java nucleus accepts a missing list with the same effect; AWS's
/// documentation calls the key required). Each resource must pass validate_resource.
///
/// Returns the policies sorted by destination, then id.
/// Errors: errc::invalid; the message names the component, the path and the problem, e.g.
/// `com.example.Pub: accessControl.aws.greengrass.ipc.pubsub."p1".operations: expected a list
/// of strings`. Errors: errc::parse when a string value is not JSON. Pure; thread-safe.
result<std::vector<Policy>> parse_access_control(const nlohmann::json& access_control,
                                                 std::string_view component);

/// Checks one resource pattern for `destination`. Rules: not empty; `${` starts an escape that
/// must be exactly `${*}`, `${?}` or `${$}`; for kMqttProxyDestination also `#` only as the
/// whole last level (`#`, `a/#`) and `+` only as a whole level (`+`, `a/+/b`).
/// Errors: errc::invalid with a message naming the problem (no component/path prefix), e.g.
/// `"a${x}": invalid escape "${x}"; use ${*}, ${?} or ${$}`. Pure; thread-safe.
result<void> validate_resource(std::string_view resource, std::string_view destination);

/// True when `resource` (as requested by a component, taken literally: `*`, `+`, `#` in it are
/// plain characters) matches the policy `pattern`:
/// - `*` matches any sequence, including `/` and the empty one; `?` exactly one character
///   (one byte: resources are compared as bytes);
/// - `${*}`, `${?}`, `${$}` match a literal `*`, `?`, `$`; any other `$` is literal;
/// - ResourceStyle::mqtt only: a `+` that is a whole level matches any run of non-`/`
///   characters; a final `/#` matches the parent level itself (`a/#` matches `a`) or `/`
///   followed by anything; a pattern that is just `#` matches everything. `+` or `#` not used
///   as a whole level are literal.
/// A requested topic filter is matched as a string, like the Greengrass nucleus does (policy
/// `sensors/#` allows `sensors/#` and `sensors/a/b`; policy `sensors/*` allows `sensors/#`),
/// with one deliberate difference: a `+` or `#` that is a whole level of the request is never
/// matched by the policy's `?` or MQTT `+`, so policy `sensors/+` does not grant the whole
/// subtree `sensors/#` (Greengrass lets it) and `sensors/?` grants neither `sensors/+` nor `sensors/#`.
/// Runs in O(len(pattern) * len(resource)) time, never exponential. Pure; thread-safe.
bool resource_matches(std::string_view pattern, std::string_view resource, ResourceStyle style);

/// True when the policy is broad enough for `canopy audit` to flag it: an operation `*`, or a
/// resource that is exactly `*` or `#`.
bool policy_is_broad(const Policy& policy);

/// The outcome of Authorizer::check.
struct Decision {
  bool allowed = false;
  /// When allowed: the id of the first policy (in destination, id order) that allowed it.
  std::string policy_id;
  /// When denied: a sentence for the component and the operator, e.g. `com.example.Sub is not
  /// authorized to perform aws.greengrass#PublishToTopic on resource "sensors/t1"; add an
  /// accessControl policy for aws.greengrass.ipc.pubsub`. Control characters, `"` and `\` in
  /// the resource are escaped.
  std::string message;

  explicit operator bool() const noexcept { return allowed; }
};

/// The policies of every component, and the default-deny check.
///
/// A call (component, destination, operation, resource) is allowed when some policy of that
/// component has that destination, lists the operation or `*`, and has a resource pattern that
/// matches the resource under resource_style(destination). Everything else, including unknown
/// components and an empty resource, is denied.
///
/// Policies given to set_policies need not come from parse_access_control: resources that
/// validate_resource would reject still match predictably (a bad escape is literal text,
/// a misplaced `+`/`#` is literal).
///
/// @par Thread Safety
/// Not synchronized. Concurrent const calls (check, authorize, policies) are safe; mutation
/// (set_policies, remove) needs exclusive access, e.g. by running everything on one strand.
class Authorizer {
 public:
  /// Replaces every policy of `component` (a reload replaces, it does not merge). An empty
  /// vector leaves the component with no policies (everything denied).
  void set_policies(std::string component, std::vector<Policy> policies);

  /// Forgets a component's policies; unknown names are ignored.
  void remove(std::string_view component);

  /// Decides one call. See the class comment for the rule.
  Decision check(std::string_view component, std::string_view destination,
                 std::string_view operation, std::string_view resource) const;

  /// check() as a result: ok, or errc::unauthorized with Decision::message.
  result<void> authorize(std::string_view component, std::string_view destination,
                         std::string_view operation, std::string_view resource) const;

  /// The policies currently held for `component` (empty when none), for diagnostics and audit.
  std::vector<Policy> policies(std::string_view component) const;

 private:
  struct Entry {
    Policy policy;
    std::vector<std::vector<detail::PatternToken>> patterns;  // one per policy.resources
  };
  std::map<std::string, std::vector<Entry>, std::less<>> components_;
};

}  // namespace canopy::ipc
