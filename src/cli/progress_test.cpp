// [cli] the --wait progress renderer and failure descriptions.
#include "progress.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace canopy::cli {
namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using ::testing::HasSubstr;

json snapshot(const std::string& status, json components = json::array(), const std::string& message = "") {
  json d = {{"deploymentId", "d-1"}, {"status", status}, {"components", std::move(components)}};
  if (!message.empty()) d["message"] = message;
  return d;
}

TEST(Progress, WithoutATerminalOneLinePerChangeAndNothingOtherwise) {
  ProgressRenderer p({false, 80});
  EXPECT_EQ(p.update(snapshot("QUEUED"), milliseconds(100)), "[   0.1s] deployment QUEUED\n");
  EXPECT_EQ(p.update(snapshot("QUEUED"), milliseconds(200)), "");
  EXPECT_EQ(p.update(snapshot("IN_PROGRESS", json::array(), "resolving dependencies"), milliseconds(300)),
            "[   0.3s] deployment IN_PROGRESS: resolving dependencies\n");
  const json a_installed = {{{"componentName", "com.a"}, {"version", "1.0.0"}, {"state", "INSTALLED"}}};
  EXPECT_EQ(p.update(snapshot("IN_PROGRESS", a_installed, "resolving dependencies"), milliseconds(1500)),
            "[   1.5s] com.a 1.0.0 INSTALLED\n");
  // 50 polls with nothing new print nothing.
  for (int i = 0; i < 50; ++i)
    EXPECT_EQ(p.update(snapshot("IN_PROGRESS", a_installed, "resolving dependencies"), milliseconds(1600 + i * 100)),
              "");
  const json a_running = {{{"componentName", "com.a"}, {"version", "1.0.0"}, {"state", "RUNNING"}}};
  EXPECT_EQ(p.update(snapshot("SUCCEEDED", a_running), milliseconds(12000)),
            "[  12.0s] deployment SUCCEEDED\n"
            "[  12.0s] com.a 1.0.0 RUNNING\n");
  EXPECT_EQ(p.finish(), "");
}

TEST(Progress, OnATerminalTheLiveLineIsRedrawnAtMostOnceASecondUnlessSomethingChanged) {
  ProgressRenderer p({true, 80});
  const auto first = p.update(snapshot("IN_PROGRESS"), milliseconds(100));
  EXPECT_EQ(first, "\r\033[K[   0.1s] deployment IN_PROGRESS\nwaiting for deployment d-1: IN_PROGRESS (0s elapsed)");
  EXPECT_EQ(p.update(snapshot("IN_PROGRESS"), milliseconds(200)), "");
  EXPECT_EQ(p.update(snapshot("IN_PROGRESS"), milliseconds(900)), "");
  EXPECT_EQ(p.update(snapshot("IN_PROGRESS"), milliseconds(1000)),
            "\r\033[Kwaiting for deployment d-1: IN_PROGRESS (1s elapsed)");
  const json c = {{{"componentName", "com.a"}, {"version", "1.0.0"}, {"state", "STARTING"}}};
  EXPECT_EQ(p.update(snapshot("IN_PROGRESS", c), milliseconds(1100)),
            "\r\033[K[   1.1s] com.a 1.0.0 STARTING\nwaiting for deployment d-1: IN_PROGRESS (1s elapsed)");
  EXPECT_EQ(p.finish(), "\r\033[K");
  EXPECT_EQ(p.finish(), "");
}

TEST(Progress, LiveLineFitsTheTerminal) {
  ProgressRenderer p({true, 20});
  const auto out = p.update(snapshot("IN_PROGRESS"), milliseconds(0));
  const auto live = out.substr(out.rfind('\n') + 1);
  EXPECT_EQ(live, "waiting for deploym");
}

TEST(Progress, ControlCharactersFromTheServerAreNeutralised) {
  ProgressRenderer p({false, 80});
  EXPECT_EQ(p.update(snapshot("IN_PROGRESS", json::array(), "evil\x1b[2J\nline"), milliseconds(0)),
            "[   0.0s] deployment IN_PROGRESS: evil?[2J?line\n");
}

TEST(Progress, FinalStatuses) {
  EXPECT_TRUE(is_final_status("SUCCEEDED"));
  EXPECT_TRUE(is_final_status("FAILED"));
  EXPECT_TRUE(is_final_status("CANCELED"));
  EXPECT_FALSE(is_final_status("QUEUED"));
  EXPECT_FALSE(is_final_status("IN_PROGRESS"));
  EXPECT_FALSE(is_final_status(""));
}

TEST(Progress, FailureDescriptionNamesDetailAndCauses) {
  json d = snapshot("FAILED");
  d["deploymentStatusDetails"] = {{"detailedDeploymentStatus", "FAILED_ROLLBACK_COMPLETE"},
                                  {"failureCauses", {{{"errorMessage", "com.a failed to start"}},
                                                     {{"errorMessage", "exit code 3"}}}}};
  EXPECT_EQ(describe_failure(d), "deployment d-1 FAILED (FAILED_ROLLBACK_COMPLETE): com.a failed to start; exit code 3");
  json m = snapshot("CANCELED", json::array(), "canceled by the operator");
  EXPECT_EQ(describe_failure(m), "deployment d-1 CANCELED: canceled by the operator");
  EXPECT_THAT(describe_failure(json::object()), HasSubstr("did not succeed"));
}

}  // namespace
}  // namespace canopy::cli
