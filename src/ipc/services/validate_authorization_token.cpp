// aws.greengrass#ValidateAuthorizationToken: whether a token is a live IPC token. Greengrass
// serves it to the stream manager only; Canopy also lets components with a policy for
// destination aws.greengrass.ipc.auth call it.
#include "services/common.hpp"

namespace canopy::ipc::services {

void add_validate_authorization_token(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "aws.greengrass#ValidateAuthorizationToken",
      .destination = "aws.greengrass.ipc.auth",
      .handle =
          [&ctx](Call& call) {
            auto token = required_string(call.request, "ValidateAuthorizationToken", "token");
            if (!token) {
              call.stream->fail(invalid(token.error().message));
              return;
            }
            if (!ctx.tokens.find(*token)) {
              call.stream->fail({ErrorShape::invalid_token, "ValidateAuthorizationToken: the token is not valid"});
              return;
            }
            call.stream->respond(R"({"isValid":true})", response_shape("ValidateAuthorizationToken"));
          },
  });
}

}  // namespace canopy::ipc::services
