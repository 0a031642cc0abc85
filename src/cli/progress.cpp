#include "progress.hpp"

#include <fmt/format.h>

#include "format.hpp"
#include "table.hpp"

namespace canopy::cli {
namespace {

constexpr std::string_view kEraseLine = "\r\033[K";

std::string stamp(std::chrono::milliseconds elapsed) {
  return fmt::format("[{:6.1f}s] ", static_cast<double>(elapsed.count()) / 1000.0);
}

std::string cut(std::string text, std::size_t width) {
  if (width == 0 || display_width(text) < width) return text;
  // Cut at a code point boundary, one column short so the cursor never wraps.
  std::size_t columns = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if ((static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) continue;
    if (++columns == width) {
      text.resize(i);
      break;
    }
  }
  return text;
}

}  // namespace

bool is_final_status(std::string_view status) {
  return status == "SUCCEEDED" || status == "FAILED" || status == "CANCELED";
}

std::string describe_failure(const nlohmann::json& deployment) {
  const auto id = field(deployment, "deploymentId");
  const auto status = field(deployment, "status");
  std::string text = fmt::format("deployment {} {}", id, status.empty() ? "did not succeed" : status);
  const auto& details = deployment.is_object() ? deployment.value("deploymentStatusDetails", nlohmann::json::object())
                                               : nlohmann::json::object();
  const auto detailed = field(details, "detailedDeploymentStatus");
  if (!detailed.empty()) text += fmt::format(" ({})", detailed);
  std::vector<std::string> causes;
  if (details.is_object() && details.contains("failureCauses") && details["failureCauses"].is_array())
    for (const auto& cause : details["failureCauses"]) {
      auto message = field(cause, "errorMessage");
      if (!message.empty()) causes.push_back(printable(message));
    }
  if (causes.empty()) {
    const auto message = field(deployment, "message");
    if (!message.empty()) causes.push_back(printable(message));
  }
  if (!causes.empty()) text += ": " + join(causes, "; ");
  return text;
}

ProgressRenderer::ProgressRenderer(Options options) : options_(options) {}

std::string ProgressRenderer::update(const nlohmann::json& deployment, std::chrono::milliseconds elapsed) {
  std::string lines;
  const auto status = field(deployment, "status");
  const auto message = field(deployment, "message");
  if (first_ || status != status_ || message != message_) {
    // Server text goes through printable(): a newline or escape in it must not reach the terminal.
    lines += stamp(elapsed) + "deployment " + (status.empty() ? "?" : printable(status));
    if (!message.empty()) lines += ": " + printable(message);
    lines += '\n';
    status_ = status;
    message_ = message;
  }
  first_ = false;
  if (deployment.is_object() && deployment.contains("components") && deployment["components"].is_array()) {
    for (const auto& component : deployment["components"]) {
      const auto name = field(component, "componentName");
      if (name.empty()) continue;
      auto now = field(component, "version");
      const auto state = field(component, "state");
      if (!state.empty()) now += (now.empty() ? "" : " ") + state;
      auto& before = components_[name];
      if (before == now) continue;
      before = now;
      lines += stamp(elapsed) + printable(name) + " " + printable(now) + '\n';
    }
  }
  if (!options_.tty) return lines;
  const long long second = elapsed.count() / 1000;
  if (lines.empty() && live_drawn_ && second == live_second_) return {};
  live_second_ = second;
  live_drawn_ = true;
  std::string out(kEraseLine);
  out += lines;
  out += cut(printable(fmt::format("waiting for deployment {}: {} ({}s elapsed)", field(deployment, "deploymentId"),
                                   status.empty() ? "?" : status, second)),
             options_.width);
  return out;
}

std::string ProgressRenderer::finish() {
  if (!live_drawn_) return {};
  live_drawn_ = false;
  return std::string(kEraseLine);
}

}  // namespace canopy::cli
