// Test support for the host agent: a private network namespace for the test process, a
// real wrenn-agent child with its own state directory, and a Connect client for its API.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/agent.pb.h"
#include "connect/client.h"
#include "envd/process.pb.h"
#include "envd_fixture.h"

namespace wrenn::test {

// Moves the calling process into a new network namespace with lo up, so nothing a test
// does to networking reaches the host. Call first thing in a test case (each test case
// runs in its own process under ctest).
void enter_private_netns();

// The busybox root tree built once per build (test-images/busybox next to bin/).
std::string busybox_template();

class AgentProcess {
 public:
  // Starts wrenn-agent on 127.0.0.1 (free port) with state in dir; images/busybox links
  // to the prebuilt busybox template. Waits until it listens.
  explicit AgentProcess(std::string dir, std::vector<std::string> extra_args = {});
  ~AgentProcess();  // SIGTERM, then SIGKILL after 5 s
  AgentProcess(const AgentProcess&) = delete;
  AgentProcess& operator=(const AgentProcess&) = delete;

  // The public port (mutual TLS when the agent has a control plane, --cp-url).
  unsigned short port() const { return port_; }
  // Where plain HTTP reaches the agent API: port(), or for a TLS agent the loopback port
  // of its HTTP server behind the TLS front (what client() and run_in_sandbox use).
  unsigned short api_port() const { return backend_port_ ? backend_port_ : port_; }
  bool tls() const { return backend_port_ != 0; }
  // SIGTERM and wait (sandboxes keep running), then start again on the same dir and port,
  // with the same extra arguments or, when given, these instead. Waits until it listens.
  void restart(std::optional<std::vector<std::string>> extra_args = std::nullopt);
  const std::vector<std::string>& extra_args() const { return args_; }
  pid_t pid() const { return pid_; }
  const std::string& token() const { return token_; }
  const std::string& dir() const { return dir_; }
  std::string log() const;
  bool running() const;
  // SIGKILL without cleanup (crash tests); the destructor then does nothing, leaving the
  // sandboxes, mounts and cgroups for the next AgentProcess on the same dir.
  void kill_hard();

  // A client with the bearer token set (binary codec).
  std::unique_ptr<connect::Client> client() const;
  // Name of the agent's cgroup parent (unique per AgentProcess).
  const std::string& cgroup_parent() const { return cgroup_parent_; }

 private:
  std::string dir_;
  std::string cgroup_parent_;
  pid_t pid_ = -1;
  bool crashed_ = false;
  void spawn(const std::vector<std::string>& extra_args);
  void terminate();

  std::vector<std::string> args_;  // extra arguments of the constructor
  unsigned short port_ = 0;
  unsigned short backend_port_ = 0;
  std::string token_;
  std::string log_path_;
};

// Agent API shorthands (throw wrenn::Error like the client).
agent::v1::SandboxInfo create_sandbox(connect::Client& c, const std::string& id,
                                      const std::string& tmpl = "busybox",
                                      std::uint64_t memory_mb = 256, std::uint64_t disk_mb = 256);
void destroy_sandbox(connect::Client& c, const std::string& id);
std::vector<agent::v1::SandboxInfo> list_sandboxes(connect::Client& c);

// Runs `sh -c script` in the sandbox through the agent's proxy to envd (process.Process/
// Start, JSON codec) and returns {exit code, stdout+stderr}.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
CommandResult run_in_sandbox(const AgentProcess& agent, const std::string& id,
                             const std::string& script, const std::string& user = "root");

}  // namespace wrenn::test
