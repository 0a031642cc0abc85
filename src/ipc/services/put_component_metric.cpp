// aws.greengrass#PutComponentMetric: record component metrics (exported by a later issue).
#include <array>

#include "services/common.hpp"

namespace canopy::ipc::services {

namespace {

constexpr std::array<std::string_view, 6> kUnits = {"BYTES",   "BYTES_PER_SECOND", "COUNT",
                                                     "COUNT_PER_SECOND", "MEGABYTES", "SECONDS"};

result<std::vector<Metric>> parse_metrics(const nlohmann::json& request) {
  const auto it = request.find("metrics");
  if (it == request.end() || !it->is_array() || it->empty())
    return make_error(errc::invalid, "PutComponentMetric: \"metrics\" must be a non-empty list");
  if (it->size() > 1000) return make_error(errc::invalid, "PutComponentMetric: at most 1000 metrics per call");
  std::vector<Metric> out;
  for (const auto& m : *it) {
    if (!m.is_object() || !m.contains("name") || !m["name"].is_string() || m["name"].get_ref<const std::string&>().empty() ||
        m["name"].get_ref<const std::string&>().size() > 128)
      return make_error(errc::invalid, "PutComponentMetric: each metric needs a \"name\" of 1 to 128 characters");
    if (!m.contains("value") || !m["value"].is_number() || m["value"].get<double>() < 0)
      return make_error(errc::invalid, fmt::format("PutComponentMetric: metric {}: \"value\" must be a number >= 0",
                                                   m["name"].get<std::string>()));
    const std::string unit = m.value("unit", std::string("COUNT"));
    if (std::find(kUnits.begin(), kUnits.end(), unit) == kUnits.end())
      return make_error(errc::invalid,
                        fmt::format("PutComponentMetric: metric {}: unknown unit \"{}\"", m["name"].get<std::string>(), unit));
    out.push_back(Metric{m["name"].get<std::string>(), unit, m["value"].get<double>(), 0});
  }
  return out;
}

}  // namespace

void add_put_component_metric(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#PutComponentMetric",
      .destination = "aws.greengrass.ipc.componentmetric",
      .resources = [](const Call& call) -> result<std::vector<std::string>> {
        auto metrics = parse_metrics(call.request);
        if (!metrics) return metrics.error();
        std::vector<std::string> names;
        for (const auto& m : *metrics) names.push_back(m.name);
        return names;
      },
      .handle =
          [&ctx](Call& call) {
            auto metrics = parse_metrics(call.request);
            if (!metrics) {
              call.stream->fail(invalid(metrics.error().message));
              return;
            }
            auto& mine = ctx.metrics[call.caller.name];
            for (auto& m : *metrics) {
              m.at_ms = now_ms();
              mine[m.name] = std::move(m);
            }
            call.stream->respond("{}", response_shape("PutComponentMetric"));
          },
  });
}

}  // namespace canopy::ipc::services
