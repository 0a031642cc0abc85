// canopy#GetStatus: version, uptime and IPC counters for `canopy status` (CLI only), and
// canopy#ReleaseHeldMessages for `canopy cloud release-held` (CLI only).
#include "services/common.hpp"

namespace canopy::ipc::services {

void add_canopy_status(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "canopy#GetStatus",
      .external_only = true,
      .handle =
          [&ctx](Call& call) {
            nlohmann::json status = ctx.status ? ctx.status() : nlohmann::json::object();
            call.stream->respond(status.dump(), "canopy#GetStatusResponse");
          },
  });
  table.add({
      .name = "canopy#ReleaseHeldMessages",
      .external_only = true,
      .handle =
          [&ctx](Call& call) {
            if (!ctx.iot_core.release_held)
              return call.stream->fail({ErrorShape::service, "this canopyd has no cloud link"});
            ctx.iot_core.release_held([stream = call.stream](std::size_t n) {
              stream->respond(nlohmann::json{{"released", n}}.dump(), "canopy#ReleaseHeldMessagesResponse");
            });
          },
  });
}

}  // namespace canopy::ipc::services
