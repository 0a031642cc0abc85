//! Test helpers: temporary folders, child processes (by PID), free loopback ports.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace canopy::test {

/// A fresh folder under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// A child process started with execve. stdout and stderr go to `output_file`.
/// The destructor kills it (SIGKILL, by PID and its process group) if it still runs.
class Process {
 public:
  struct Spec {
    std::vector<std::string> argv;
    std::map<std::string, std::string> env;  ///< added to (and overriding) this process's environment
    std::filesystem::path output_file;       ///< empty: inherit stdout/stderr
    bool new_process_group = true;
  };
  explicit Process(Spec spec);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  /// Sends a signal to the process (not its group).
  void signal(int sig);
  /// Waits for exit up to `deadline`; returns the exit status as from waitpid's
  /// WEXITSTATUS (or 128+signal), or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds deadline);
  std::string output() const;

 private:
  Spec spec_;
  pid_t pid_ = -1;
  std::optional<int> status_;
};

/// Runs a command to completion (with a deadline) and returns {exit code, output}.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult run_command(const std::vector<std::string>& argv, std::chrono::seconds deadline = std::chrono::seconds(60),
                          const std::map<std::string, std::string>& env = {});

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read, close).
int free_port();

/// True once a TCP connect to 127.0.0.1:port succeeds, polling until `deadline`.
bool wait_for_port(int port, std::chrono::milliseconds deadline);

std::string read_file(const std::filesystem::path& path);
void write_file(const std::filesystem::path& path, const std::string& text);

}  // namespace canopy::test
