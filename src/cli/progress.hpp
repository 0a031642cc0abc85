//! Progress of a local deployment while `canopy deployment create --wait` polls its status.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace canopy::cli {

/// True for SUCCEEDED, FAILED and CANCELED: the deployment will not change any more.
bool is_final_status(std::string_view status);

/// One line explaining why a deployment did not succeed, from a LocalDeployment object:
/// "deployment ID FAILED (FAILED_ROLLBACK_COMPLETE): cause one; cause two". The message
/// (Canopy's extra) stands in when there are no failure causes.
std::string describe_failure(const nlohmann::json& deployment);

/// Turns successive LocalDeployment snapshots into text for stderr. Never spams: it writes a
/// line only when the status, the message or a component's version or state changes. On a
/// terminal it also keeps one live status line at the bottom, redrawn in place at most once a
/// second unless something changed. Not thread-safe; one instance per wait.
class ProgressRenderer {
 public:
  struct Options {
    bool tty = false;        ///< stderr is a terminal: draw the live line
    std::size_t width = 80;  ///< terminal width; the live line is cut to fit
  };

  explicit ProgressRenderer(Options options);

  /// Feeds one snapshot (the "deployment" member of GetLocalDeploymentStatus) taken `elapsed`
  /// after the wait began. Returns the text to write, often empty.
  std::string update(const nlohmann::json& deployment, std::chrono::milliseconds elapsed);

  /// Text to write once polling stops, before any other output: on a terminal it erases the
  /// live line. Empty otherwise.
  std::string finish();

 private:
  Options options_;
  bool first_ = true;
  std::string status_;
  std::string message_;
  std::map<std::string, std::string> components_;  ///< name -> "version state"
  bool live_drawn_ = false;
  long long live_second_ = -1;
};

}  // namespace canopy::cli
