// The control plane's client for one host agent (wrenn-agent): the agent's own API
// (wrenn.agent.v1.AgentService) and, through the agent's reverse proxy
// (/proxy/{sandbox_id}/49983/...), each sandbox's envd for commands and files.
//
// Contract:
//  - Thread-safe and blocking: any number of threads may call one HostClient at once. Each
//    call borrows a keep-alive connection from a pool (or opens one), so concurrent calls
//    do not wait for each other and sequential calls reuse connections. A kept-alive
//    connection the agent closed meanwhile is retried once, transparently, for idempotent
//    calls (every AgentService call, Stat, ListDir, process listing, file reads); exec,
//    start_background, kill, make_dir, remove and write_file are never sent twice.
//  - Every call takes an explicit timeout that bounds the whole call (connecting, sending,
//    waiting, streaming). Nothing else caps a call. exec also hands its timeout to envd
//    (Connect-Timeout-Ms), which kills the command when it passes.
//  - Errors are wrenn::Error: the agent's or envd's own Connect code and message (a
//    sandbox the agent does not know: not_found; a paused one, for envd calls:
//    failed_precondition "sandbox is not running"); a wrong agent token: unauthenticated;
//    a host that cannot be reached or drops the connection: unavailable, with a message
//    naming the host address; the timeout passing: deadline_exceeded.
//  - Sandbox ids must match [a-z0-9-]{1,63} (invalid_argument otherwise), as the agent's.
//  - Process streams (start_stream, attach) are the exception to the timeout rule: they
//    last as long as the process runs, with no cap, and are never retried. They end with
//    the process's end event, an error, or cancellation from another thread (StreamCancel,
//    noticed within kStreamPoll: envd is asked for a keepalive that often, so a quiet
//    stream still wakes up to look at the token).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agent/agent.pb.h"
#include "hosts/connection_pool.h"
#include "hosts/transport.h"

namespace wrenn::cp {

namespace agentpb = wrenn::agent::v1;

struct HostClientOptions {
  // How connections are made: plain TCP unless replaced (mutual TLS later).
  std::shared_ptr<Transport> transport;
  PoolOptions pool;
};

// A foreground command (exec) or a background process (start_background).
struct ExecRequest {
  std::string cmd;  // argv[0]: a path, or a name looked up in PATH (no shell)
  std::vector<std::string> args;
  std::map<std::string, std::string> envs;  // added to the sandbox's default environment
  std::string cwd;                          // "" = the user's default (its home directory)
  std::string user;                         // "" = the sandbox's default user
  // exec: the command's time limit; when it passes the process is killed (SIGKILL) and the
  // call throws deadline_exceeded. start_background: bounds only the start (until the pid
  // is known); the process itself then runs without a limit. Must be positive.
  std::chrono::milliseconds timeout{std::chrono::seconds(30)};
  // exec only: bytes of stdout and of stderr kept (each). Output beyond it is read and
  // discarded, and the result says so (stdout_truncated / stderr_truncated); the command
  // is not stopped for it.
  std::size_t max_output_bytes = kDefaultMaxOutput;

  static constexpr std::size_t kDefaultMaxOutput = 16 * 1024 * 1024;
};

struct ExecResult {
  std::string stdout_data;
  std::string stderr_data;
  int exit_code = -1;  // -1 when the process was ended by a signal
  std::string status;  // envd's description: "exit status: 3", "signal: 9 (SIGKILL)"
  std::chrono::milliseconds duration{0};  // measured around the call
  bool stdout_truncated = false;
  bool stderr_truncated = false;
};

struct ProcessInfo {
  std::uint32_t pid = 0;
  std::string tag;  // "" when the process has none
  std::string cmd;
  std::vector<std::string> args;
  std::map<std::string, std::string> envs;
  std::string cwd;
};

// A process by pid or by tag.
using ProcessSelector = std::variant<std::uint32_t, std::string>;
enum class Signal { kTerm, kKill };

// One event of a process stream (start_stream, attach), in envd's order: kStart first
// (pid), then output pieces as the process writes them (kStdout / kStderr, or kPty for a
// process on a terminal: raw bytes, not necessarily whole UTF-8 characters), kEnd last.
struct ProcessEvent {
  enum class Kind { kStart, kStdout, kStderr, kPty, kEnd };
  Kind kind = Kind::kStart;
  std::uint32_t pid = 0;  // kStart
  std::string data;       // output kinds
  int exit_code = -1;     // kEnd: -1 when the process was ended by a signal
  std::string status;     // kEnd: envd's description ("exit status: 3", "signal: 9 (SIGKILL)")
};
// Called on the streaming thread for each event, in order. It may block (that is the
// backpressure: nothing more is read from the host meanwhile); it should return promptly
// once the stream's StreamCancel is cancelled. An exception aborts the stream and propagates.
using ProcessEventSink = std::function<void(ProcessEvent&&)>;

// Cancels a process stream from any thread.
class StreamCancel {
 public:
  void cancel() noexcept { flag_.store(true); }
  bool cancelled() const noexcept { return flag_.load(); }

 private:
  std::atomic<bool> flag_{false};
};

// How a process stream ended: the process's end event arrived (delivered to the sink
// first), or the StreamCancel was cancelled (the connection is dropped; the process
// itself is left alone).
enum class StreamEnd { kEnded, kCancelled };

// A terminal size for a process started on a PTY.
struct PtySize {
  std::uint32_t cols = 80;
  std::uint32_t rows = 24;
};

// Where send_input's bytes go: the process's stdin pipe or its terminal.
enum class InputTarget { kStdin, kPty };

// How often a waiting process stream wakes up to look at its StreamCancel.
inline constexpr std::chrono::seconds kStreamPoll{1};

enum class FileType { kUnknown, kFile, kDirectory, kSymlink };
// "file", "directory", "symlink" ("unknown" otherwise).
std::string_view file_type_name(FileType t);

struct FileEntry {
  std::string name;
  std::string path;
  FileType type = FileType::kUnknown;
  std::int64_t size = 0;
  std::uint32_t mode = 0;   // permission bits (and set-id/sticky), as envd reports them
  std::string permissions;  // "-rwxr-xr-x"
  std::string owner;
  std::string group;
  std::int64_t modified_at = 0;  // unix seconds
  std::optional<std::string> symlink_target;
};

// Receives a file's bytes piece by piece (read_file).
using ChunkSink = std::function<void(std::string_view)>;
// Produces a file's bytes piece by piece; "" ends the file (write_file).
using ChunkSource = std::function<std::string()>;

class HostClient {
 public:
  using Timeout = std::chrono::milliseconds;

  explicit HostClient(HostEndpoint endpoint, HostClientOptions options = {});
  ~HostClient();
  HostClient(const HostClient&) = delete;
  HostClient& operator=(const HostClient&) = delete;

  const HostEndpoint& endpoint() const;
  // Pool statistics (tests, metrics).
  std::size_t idle_connections() const;
  std::uint64_t connections_opened() const;

  // ---- The agent's API (idempotent by sandbox id, see agent.proto) ----
  agentpb::SandboxInfo create_sandbox(const agentpb::CreateSandboxRequest& req, Timeout timeout);
  // Succeeds for a sandbox that does not exist.
  void destroy_sandbox(const std::string& id, Timeout timeout);
  agentpb::SandboxInfo get_sandbox(const std::string& id, Timeout timeout);
  std::vector<agentpb::SandboxInfo> list_sandboxes(Timeout timeout);
  agentpb::SandboxInfo pause_sandbox(const std::string& id, Timeout timeout);
  // timeout_sec 0 keeps the sandbox's current inactivity timeout.
  agentpb::SandboxInfo resume_sandbox(const std::string& id, std::uint32_t timeout_sec,
                                      Timeout timeout);
  // Marks the sandbox active (resets its inactivity timeout).
  void ping_sandbox(const std::string& id, Timeout timeout);
  // range: "5m" (default when empty), "10m", "1h", "2h", "6h", "12h", "24h".
  std::vector<agentpb::MetricPoint> sandbox_metrics(const std::string& id, const std::string& range,
                                                    Timeout timeout);
  agentpb::HostInfoResponse host_info(Timeout timeout);
  // The sandbox's file system as template images/<template_id>/ on this host ("tmpl-…";
  // a running sandbox keeps running). Returns its size in bytes. Idempotent.
  std::uint64_t create_snapshot(const std::string& sandbox_id, const std::string& template_id,
                                Timeout timeout);
  // Removes the template from this host: not_found when absent, failed_precondition while a
  // sandbox there uses it.
  void delete_snapshot(const std::string& template_id, Timeout timeout);

  // ---- Processes (envd process.Process through the proxy) ----
  // Runs a command to completion (stdin is empty). A non-zero exit is a result, not an
  // error. Throws deadline_exceeded when req.timeout passes (the process is killed first),
  // and envd's error when the command cannot start (not_found for an unknown command, ...).
  ExecResult exec(const std::string& id, const ExecRequest& req);
  // Starts a process that outlives the call and returns its pid; tag ("" for none) names it
  // for list_processes/kill. Its output is discarded.
  std::uint32_t start_background(const std::string& id, const ExecRequest& req,
                                 const std::string& tag);
  // Every process envd tracks in the sandbox (background ones, those still running).
  std::vector<ProcessInfo> list_processes(const std::string& id, Timeout timeout);
  // Unknown pid or tag: not_found.
  void kill(const std::string& id, const ProcessSelector& process, Signal signal, Timeout timeout);

  // Starts a process and streams its events to sink until it ends (kEnded) or cancel is
  // cancelled (kCancelled; the process keeps running — kill it separately if it must not).
  // tag ("" for none) names it; pty set: the process runs on a terminal of that size and
  // its output arrives as kPty. req.timeout and req.max_output_bytes do not apply: nothing
  // caps the stream. Errors (the process cannot start, the host fails mid-stream) throw,
  // possibly after some events were delivered.
  StreamEnd start_stream(const std::string& id, const ExecRequest& req, const std::string& tag,
                         std::optional<PtySize> pty, const ProcessEventSink& sink,
                         const StreamCancel& cancel);
  // Attaches to a running process: the first event is kStart with its pid, then output
  // from now on (earlier output is not replayed), then kEnd. As start_stream otherwise;
  // an unknown pid or tag: not_found.
  StreamEnd attach(const std::string& id, const ProcessSelector& process,
                   const ProcessEventSink& sink, const StreamCancel& cancel);
  // Writes bytes to a process's stdin (started with one) or terminal.
  void send_input(const std::string& id, const ProcessSelector& process, const std::string& bytes,
                  InputTarget target, Timeout timeout);
  // Resizes a PTY process's terminal (cols and rows must be > 0: invalid_argument).
  void resize_pty(const std::string& id, const ProcessSelector& process, PtySize size,
                  Timeout timeout);

  // ---- Files (envd through the proxy; as the sandbox's default user) ----
  // Streams the file to sink in pieces (at most 64 KiB each): constant memory for any
  // size. Returns the byte count. A missing file: not_found; a directory: invalid_argument.
  // An exception from sink aborts the transfer and propagates.
  std::uint64_t read_file(const std::string& id, const std::string& path, const ChunkSink& sink,
                          Timeout timeout);
  // Streams source's pieces into the file (chunked transfer encoding, constant memory),
  // creating missing parent directories and replacing the file atomically once complete
  // (a failed upload leaves any old file untouched). Returns the byte count.
  std::uint64_t write_file(const std::string& id, const std::string& path,
                           const ChunkSource& source, Timeout timeout);
  // Entries below path, sorted by path: depth 0 or 1 the directory's own entries, n also
  // those of its subdirectories down to n levels. Symlinks are not followed.
  std::vector<FileEntry> list_dir(const std::string& id, const std::string& path,
                                  std::uint32_t depth, Timeout timeout);
  // Creates the directory and its missing parents; already_exists when it exists.
  FileEntry make_dir(const std::string& id, const std::string& path, Timeout timeout);
  // Removes a file or a directory tree.
  void remove(const std::string& id, const std::string& path, Timeout timeout);
  FileEntry stat(const std::string& id, const std::string& path, Timeout timeout);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace wrenn::cp
