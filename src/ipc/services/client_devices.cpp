// canopy#IssueClientDeviceCertificate (CLI only): a certificate of the local broker's CA for a
// client device. Request {name, days (default 365)}; answer {certificatePem, privateKeyPem,
// caPem, tlsPort}. The private key exists only in this answer: canopyd keeps no copy.
#include "services/common.hpp"

namespace canopy::ipc::services {

void add_client_device_operations(OperationTable& table, ServiceContext& ctx) {
  table.add({
      .name = "canopy#IssueClientDeviceCertificate",
      .external_only = true,
      .handle =
          [&ctx](Call& call) {
            if (!ctx.issue_client_device_certificate)
              return call.stream->fail({ErrorShape::service, "the local broker is not available in this canopyd"});
            auto name = required_string(call.request, "IssueClientDeviceCertificate", "name");
            if (!name) return call.stream->fail(invalid(name.error().message));
            int days = 365;
            if (const auto it = call.request.find("days"); it != call.request.end() && !it->is_null()) {
              if (!it->is_number_integer() || it->get<std::int64_t>() < 1 || it->get<std::int64_t>() > 3650)
                return call.stream->fail(
                    invalid("IssueClientDeviceCertificate: \"days\" must be an integer from 1 to 3650"));
              days = static_cast<int>(it->get<std::int64_t>());
            }
            auto r = ctx.issue_client_device_certificate(*name, days);
            if (!r) return call.stream->fail(to_ipc_error(r.error()));
            call.stream->respond(r->dump(), "canopy#IssueClientDeviceCertificateResponse");
          },
  });
}

}  // namespace canopy::ipc::services
