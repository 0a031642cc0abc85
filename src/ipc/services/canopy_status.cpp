// canopy#GetStatus: version, uptime and IPC counters for `canopy status` (CLI only).
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
}

}  // namespace canopy::ipc::services
