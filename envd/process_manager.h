// The process table: spawning, output fan-out, input, signals and reaping.
//
// Guarantees (the upstream broke each of these, R-4):
//  - A subscriber passed to start() is attached before the child runs, so it sees the
//    start event first and every byte of output after it.
//  - The end event is queued only after stdout/stderr (or the PTY) reached EOF and the
//    child was reaped; then the process leaves the table.
//  - Output is never dropped for a slow subscriber: each subscriber has its own queue, and
//    when any queue passes the high-water mark the pipes are not read until it drains, so
//    the child blocks on write (backpressure) instead of losing bytes.
//  - Processes outlive their subscribers; attach() subscribes to a running process (live
//    output from that point on).
// Single-threaded: every method runs on the io_context given to the constructor.
#pragma once

#include <sys/types.h>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "notifier.h"
#include "envd/process.pb.h"
#include "users.h"

namespace wrenn::envd {

namespace asio = boost::asio;

struct SpawnSpec {
  std::string cmd;
  std::vector<std::string> args;
  std::vector<std::pair<std::string, std::string>> env;  // final environment, in order
  std::string cwd;                                       // resolved, absolute
  User user;
  std::optional<std::pair<unsigned, unsigned>> pty;  // cols, rows
  bool stdin_pipe = true;
  std::optional<std::string> tag;
  process::ProcessConfig config;  // as reported by List
};

// One subscriber's view of a process: its own queue of events.
class Subscriber {
 public:
  explicit Subscriber(const asio::any_io_executor& ex) : wake_(ex) {}
  // Next event, or nullopt when `timeout` passes first (the caller sends a keepalive).
  asio::awaitable<std::optional<process::ProcessEvent>> next(std::chrono::steady_clock::duration timeout);
  std::size_t queued_bytes() const { return queued_bytes_; }

 private:
  friend class ProcessManager;
  friend struct Process;
  void push(process::ProcessEvent ev, std::size_t bytes);
  std::deque<std::pair<process::ProcessEvent, std::size_t>> queue_;
  std::size_t queued_bytes_ = 0;
  Notifier wake_;
  std::function<void()> on_drain_;  // set by the process: resume reading
};

struct Process;

class ProcessManager {
 public:
  static constexpr std::size_t kHighWater = 4 << 20;  // per-subscriber queued bytes
  static constexpr std::size_t kLowWater = 1 << 20;

  explicit ProcessManager(asio::io_context& io);
  ~ProcessManager();

  // Spawns the process; `sub` (may be null) receives start, data and end. Throws Error
  // (invalid_argument for a missing executable or cwd, already_exists for a duplicate
  // tag, internal for fork/exec failures) naming the problem.
  std::shared_ptr<Process> start(const SpawnSpec& spec, const std::shared_ptr<Subscriber>& sub);

  // Selector lookup; Error(not_found) / Error(invalid_argument) for an empty selector.
  std::shared_ptr<Process> find(const process::ProcessSelector& sel) const;
  std::vector<std::shared_ptr<Process>> list() const;

  // Subscribes to a running process: a start event, then live output, then end.
  void attach(const std::shared_ptr<Process>& p, const std::shared_ptr<Subscriber>& sub);
  void detach(const std::shared_ptr<Process>& p, const Subscriber* sub);

  // Input: throws Error(failed_precondition) for the wrong mode or closed stdin.
  asio::awaitable<void> write_stdin(std::shared_ptr<Process> p, std::string bytes);
  asio::awaitable<void> write_pty(std::shared_ptr<Process> p, std::string bytes);
  void close_stdin(const std::shared_ptr<Process>& p);
  void resize(const std::shared_ptr<Process>& p, unsigned cols, unsigned rows);
  void signal(const std::shared_ptr<Process>& p, int sig);

  // Reaps every exited child (call on SIGCHLD; also reaps orphans when envd is PID 1).
  void reap();
  // Signals every running process (shutdown).
  void signal_all(int sig);
  std::size_t size() const { return table_.size(); }

 private:
  asio::awaitable<void> read_output(std::shared_ptr<Process> p, int which);
  asio::awaitable<void> finish_after_exit(std::shared_ptr<Process> p);
  asio::awaitable<void> write_input(std::shared_ptr<Process> p, std::string bytes, bool pty);
  void maybe_finish(const std::shared_ptr<Process>& p);

  asio::io_context& io_;
  std::map<pid_t, std::shared_ptr<Process>> table_;
};

struct Process {
  Process(asio::io_context& io) : space(io.get_executor()), input_gate(io.get_executor()), idle_check(io.get_executor()) {}
  pid_t pid = 0;
  std::optional<std::string> tag;
  process::ProcessConfig config;
  bool is_pty = false;
  // Output descriptors: [0] stdout or PTY master, [1] stderr (pipe mode only).
  std::unique_ptr<asio::posix::stream_descriptor> out[2];
  bool out_eof[2] = {true, true};
  std::unique_ptr<asio::posix::stream_descriptor> in;  // stdin pipe (pipe mode)
  int master_fd = -1;                                  // PTY master (shared with out[0])
  std::vector<std::shared_ptr<Subscriber>> subscribers;
  Notifier space;       // woken when subscribers drain below the low-water mark
  Notifier input_gate;  // serialises writers of stdin/PTY input
  Notifier idle_check;
  bool input_busy = false;
  bool reaped = false;
  bool finished = false;
  int wait_status = 0;
  std::size_t bytes_since_exit = 0;
  bool blocked_on_space = false;
  bool over_high_water() const;
};

}  // namespace wrenn::envd
