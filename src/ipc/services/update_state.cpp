// aws.greengrass#UpdateState: a component reports RUNNING or ERRORED.
#include "services/common.hpp"

namespace canopy::ipc::services {

void add_update_state(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#UpdateState",
      .handle =
          [&ctx](Call& call) {
            auto state = required_string(call.request, "UpdateState", "state");
            if (!state || (*state != "RUNNING" && *state != "ERRORED")) {
              call.stream->fail(invalid("UpdateState: \"state\" must be RUNNING or ERRORED"));
              return;
            }
            if (call.caller.is_external()) {
              call.stream->fail(invalid("UpdateState reports a component's own state; the CLI is not a component"));
              return;
            }
            ctx.reported_states[call.caller.name] = ReportedState{*state, now_ms()};
            if (ctx.on_state_reported) ctx.on_state_reported(call.caller.name, *state);
            call.stream->respond("{}", response_shape("UpdateState"));
          },
  });
}

}  // namespace canopy::ipc::services
