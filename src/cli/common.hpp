//! What every canopy subcommand shares: global options, exit codes, the connection to canopyd,
//! error output and stop signals.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "canopy/core/error.hpp"
#include "canopy/ipc/client.hpp"

namespace canopy::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;  ///< the operation failed; the message says why
inline constexpr int kExitUsage = 2;  ///< the command line is wrong

/// Options that apply to every subcommand.
struct Globals {
  std::string root;   ///< canopyd's root folder
  bool json = false;  ///< print the raw response JSON instead of text
};

/// The work of the parsed subcommand; set by its CLI11 callback and run by main after parsing.
/// Returns the exit code.
using Action = std::function<int()>;

/// $CANOPY_ROOT, else /var/lib/canopy.
std::string default_root();

/// Prints "canopy: <message>" to stderr and returns kExitError.
int fail(std::string_view message);
/// Prints "canopy: <message>" to stderr and returns kExitUsage.
int usage(std::string_view message);

/// Connects to canopyd using the CLI token in <root>/cli_ipc_info/. Errors as
/// ipc::read_cli_token and ipc::Client::connect report them (sentences for the operator).
result<std::unique_ptr<ipc::Client>> connect(const Globals& g);

/// Connects and calls one operation. Errors: those of connect() and Client::call, with the
/// server's message and the error shape mapped to errc.
result<nlohmann::json> call(const Globals& g, std::string_view operation, const nlohmann::json& request,
                            std::chrono::milliseconds timeout = std::chrono::seconds(30));

/// Writes `value` as indented JSON and a newline to stdout; returns kExitOk.
int print_json(const nlohmann::json& value);

/// Makes SIGINT and SIGTERM set a flag instead of killing the process, for commands that must
/// stop cleanly (logs --follow, deployment create --wait).
void catch_stop_signals();
/// True once SIGINT or SIGTERM arrived after catch_stop_signals().
bool stop_requested();
/// Sleeps `duration`, returning early (false) when a stop signal arrives.
bool sleep_unless_stopped(std::chrono::milliseconds duration);

/// Adds `--json` to `command`, bound to g.json.
void add_json_flag(CLI::App* command, Globals& g);

/// Subcommand registration, one per file.
void add_status_commands(CLI::App& app, Globals& g, Action& action);     // status, config get|set
void add_component_commands(CLI::App& app, Globals& g, Action& action);  // component ...
void add_deployment_commands(CLI::App& app, Globals& g, Action& action); // deployment ...
void add_logs_command(CLI::App& app, Globals& g, Action& action);        // logs
void add_sign_commands(CLI::App& app, Globals& g, Action& action);
void add_client_device_commands(CLI::App& app, Globals& g, Action& action);  // client-device issue|list       // keygen, sign, verify (no canopyd)

}  // namespace canopy::cli
