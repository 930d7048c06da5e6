#include "process_manager.h"

#include <fcntl.h>
#include <grp.h>
#include <pty.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>

#include "error.h"
#include "log.h"

namespace wrenn::envd {

namespace {
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  int release() {
    int f = fd;
    fd = -1;
    return f;
  }
};

void make_pipe(Fd& r, Fd& w) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw errno_error(errno, "pipe");
  r.fd = p[0];
  w.fd = p[1];
}

// PATH search done in the parent so that a missing executable is a clear error rather
// than a 127 exit from a shell.
std::optional<std::string> find_executable(const std::string& cmd, const std::string& path_var,
                                           const std::string& cwd) {
  auto runnable = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111);
  };
  if (cmd.find('/') != std::string::npos) {
    std::string p = cmd[0] == '/' ? cmd : cwd + "/" + cmd;
    return runnable(p) ? std::optional(p) : std::nullopt;
  }
  std::size_t i = 0;
  while (i <= path_var.size()) {
    auto j = path_var.find(':', i);
    if (j == std::string::npos) j = path_var.size();
    std::string dir = path_var.substr(i, j - i);
    if (dir.empty()) dir = ".";
    std::string p = dir + "/" + cmd;
    if (runnable(p)) return p;
    i = j + 1;
  }
  return std::nullopt;
}

std::string exit_status_text(int status) {
  if (WIFEXITED(status)) return "exit status: " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    int sig = WTERMSIG(status);
    const char* abbrev = sigabbrev_np(sig);
    std::string s = "signal: " + std::to_string(sig);
    if (abbrev) s += std::string(" (SIG") + abbrev + ")";
    if (WCOREDUMP(status)) s += " (core dumped)";
    return s;
  }
  return "unknown status " + std::to_string(status);
}

struct ChildFailure {
  int stage;
  int err;
};
const char* kStageNames[] = {"setsid", "controlling terminal", "stdio", "setgroups", "setgid", "setuid", "chdir", "exec"};
}  // namespace

bool Process::over_high_water() const {
  for (auto& s : subscribers)
    if (s->queued_bytes() > ProcessManager::kHighWater) return true;
  return false;
}

void Subscriber::push(process::ProcessEvent ev, std::size_t bytes) {
  queue_.emplace_back(std::move(ev), bytes);
  queued_bytes_ += bytes;
  wake_.notify();
}

asio::awaitable<std::optional<process::ProcessEvent>> Subscriber::next(std::chrono::steady_clock::duration timeout) {
  if (queue_.empty()) co_await wake_.wait_for(timeout);
  if (queue_.empty()) co_return std::nullopt;
  auto [ev, bytes] = std::move(queue_.front());
  queue_.pop_front();
  bool was_high = queued_bytes_ > ProcessManager::kLowWater;
  queued_bytes_ -= bytes;
  if (was_high && queued_bytes_ <= ProcessManager::kLowWater && on_drain_) on_drain_();
  co_return std::move(ev);
}

ProcessManager::ProcessManager(asio::io_context& io) : io_(io) {}
ProcessManager::~ProcessManager() = default;

std::shared_ptr<Process> ProcessManager::start(const SpawnSpec& spec, const std::shared_ptr<Subscriber>& sub) {
  if (spec.cmd.empty()) throw Error(Code::kInvalidArgument, "process.cmd is empty");
  if (spec.cmd.find('\0') != std::string::npos) throw Error(Code::kInvalidArgument, "process.cmd contains a NUL byte");
  for (auto& a : spec.args)
    if (a.find('\0') != std::string::npos) throw Error(Code::kInvalidArgument, "process.args contain a NUL byte");
  for (auto& [k, v] : spec.env)
    if (k.empty() || k.find('=') != std::string::npos || k.find('\0') != std::string::npos ||
        v.find('\0') != std::string::npos)
      throw Error(Code::kInvalidArgument, "invalid environment variable name \"" + k + "\"");
  if (spec.tag) {
    for (auto& [pid, p] : table_)
      if (p->tag == spec.tag)
        throw Error(Code::kAlreadyExists, "a running process already has tag \"" + *spec.tag + "\" (pid " +
                                              std::to_string(pid) + ")");
  }
  struct stat st {};
  if (::stat(spec.cwd.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error(Code::kInvalidArgument, "working directory \"" + spec.cwd + "\" does not exist or is not a directory");
  std::string path_var = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  for (auto& [k, v] : spec.env)
    if (k == "PATH") path_var = v;
  auto exe = find_executable(spec.cmd, path_var, spec.cwd);
  if (!exe)
    throw Error(Code::kInvalidArgument, "executable \"" + spec.cmd + "\" not found" +
                                            (spec.cmd.find('/') == std::string::npos ? " in PATH " + path_var : ""));

  // Everything the child needs is prepared here: after fork it may only make syscalls.
  std::vector<std::string> argv_s{spec.cmd};
  argv_s.insert(argv_s.end(), spec.args.begin(), spec.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_s;
  for (auto& [k, v] : spec.env) env_s.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<gid_t> groups = spec.user.groups;
  if (groups.empty()) groups.push_back(spec.user.gid);
  bool change_ids = ::geteuid() == 0;

  Fd out_r, out_w, err_r, err_w, in_r, in_w, master, slave, fail_r, fail_w;
  make_pipe(fail_r, fail_w);
  if (spec.pty) {
    struct winsize ws {};
    ws.ws_col = static_cast<unsigned short>(spec.pty->first);
    ws.ws_row = static_cast<unsigned short>(spec.pty->second);
    int m, s;
    if (::openpty(&m, &s, nullptr, nullptr, &ws) != 0) throw errno_error(errno, "openpty");
    master.fd = m;
    slave.fd = s;
    ::fcntl(m, F_SETFD, FD_CLOEXEC);
    ::fcntl(s, F_SETFD, FD_CLOEXEC);
  } else {
    make_pipe(out_r, out_w);
    make_pipe(err_r, err_w);
    if (spec.stdin_pipe) {
      make_pipe(in_r, in_w);
    } else {
      in_r.fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (in_r.fd < 0) throw errno_error(errno, "open /dev/null");
    }
  }

  pid_t pid = ::fork();
  if (pid < 0) throw errno_error(errno, "fork");
  if (pid == 0) {
    auto fail = [&](int stage) {
      ChildFailure f{stage, errno};
      ssize_t ig = ::write(fail_w.fd, &f, sizeof f);
      (void)ig;
      ::_exit(127);
    };
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    if (::setsid() < 0) fail(0);
    if (spec.pty) {
      if (::ioctl(slave.fd, TIOCSCTTY, 0) != 0) fail(1);
      if (::dup2(slave.fd, 0) < 0 || ::dup2(slave.fd, 1) < 0 || ::dup2(slave.fd, 2) < 0) fail(2);
    } else {
      if (::dup2(in_r.fd, 0) < 0 || ::dup2(out_w.fd, 1) < 0 || ::dup2(err_w.fd, 2) < 0) fail(2);
    }
    int oom = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom >= 0) {
      ssize_t ig = ::write(oom, "100", 3);
      (void)ig;
      ::close(oom);
    }
    if (change_ids) {
      if (::setgroups(groups.size(), groups.data()) != 0) fail(3);
      if (::setgid(spec.user.gid) != 0) fail(4);
      if (::setuid(spec.user.uid) != 0) fail(5);
    }
    if (::chdir(spec.cwd.c_str()) != 0) fail(6);
    ::execve(exe->c_str(), argv.data(), envp.data());
    fail(7);
  }
  fail_w.reset();
  slave.reset();
  out_w.reset();
  err_w.reset();
  in_r.reset();
  ChildFailure f{};
  ssize_t n;
  do {
    n = ::read(fail_r.fd, &f, sizeof f);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof f)) {
    int status;
    ::waitpid(pid, &status, 0);
    const char* stage = f.stage >= 0 && f.stage < 8 ? kStageNames[f.stage] : "spawn";
    Error e = errno_error(f.err, std::string("starting \"") + spec.cmd + "\" as user " + spec.user.name + ": " + stage);
    throw Error(f.err == ENOENT || f.err == EACCES || f.err == ENOEXEC ? Code::kInvalidArgument : e.code(), e.what());
  }

  auto p = std::make_shared<Process>(io_);
  p->pid = pid;
  p->tag = spec.tag;
  p->config = spec.config;
  p->is_pty = spec.pty.has_value();
  if (p->is_pty) {
    p->master_fd = master.fd;
    p->out[0] = std::make_unique<asio::posix::stream_descriptor>(io_, master.release());
    p->out_eof[0] = false;
  } else {
    p->out[0] = std::make_unique<asio::posix::stream_descriptor>(io_, out_r.release());
    p->out[1] = std::make_unique<asio::posix::stream_descriptor>(io_, err_r.release());
    p->out_eof[0] = p->out_eof[1] = false;
    if (spec.stdin_pipe) p->in = std::make_unique<asio::posix::stream_descriptor>(io_, in_w.release());
  }
  table_[pid] = p;
  if (sub) attach(p, sub);
  log::info("process started", {{"pid", std::to_string(pid)}, {"cmd", spec.cmd}, {"user", spec.user.name}});
  for (int i = 0; i < 2; ++i)
    if (p->out[i]) asio::co_spawn(io_, read_output(p, i), asio::detached);
  return p;
}

void ProcessManager::attach(const std::shared_ptr<Process>& p, const std::shared_ptr<Subscriber>& sub) {
  process::ProcessEvent ev;
  ev.mutable_start()->set_pid(static_cast<std::uint32_t>(p->pid));
  sub->push(std::move(ev), 0);
  std::weak_ptr<Process> wp = p;
  sub->on_drain_ = [wp] {
    if (auto proc = wp.lock()) proc->space.notify();
  };
  p->subscribers.push_back(sub);
}

void ProcessManager::detach(const std::shared_ptr<Process>& p, const Subscriber* sub) {
  auto& v = p->subscribers;
  for (auto it = v.begin(); it != v.end(); ++it)
    if (it->get() == sub) {
      v.erase(it);
      p->space.notify();
      return;
    }
}

asio::awaitable<void> ProcessManager::read_output(std::shared_ptr<Process> p, int which) {
  std::vector<char> buf(p->is_pty ? 16384 : 32768);
  auto& fd = *p->out[which];
  for (;;) {
    while (p->over_high_water()) {
      p->blocked_on_space = true;
      co_await p->space.wait();
    }
    p->blocked_on_space = false;
    auto [ec, n] = co_await fd.async_read_some(asio::buffer(buf), tuple_awaitable);
    if (n > 0) {
      p->bytes_since_exit += n;
      for (auto& s : p->subscribers) {
        process::ProcessEvent ev;
        auto* d = ev.mutable_data();
        std::string chunk(buf.data(), n);
        if (p->is_pty)
          d->set_pty(std::move(chunk));
        else if (which == 0)
          d->set_stdout(std::move(chunk));
        else
          d->set_stderr(std::move(chunk));
        s->push(std::move(ev), n);
      }
    }
    // EOF, EIO (PTY slave closed) or cancellation by finish_after_exit.
    if (ec) break;
  }
  p->out_eof[which] = true;
  maybe_finish(p);
}

void ProcessManager::reap() {
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) break;
    auto it = table_.find(pid);
    if (it == table_.end()) continue;  // an orphan we adopted as PID 1 or subreaper
    auto p = it->second;
    p->reaped = true;
    p->wait_status = status;
    p->bytes_since_exit = 0;
    maybe_finish(p);
    if (!p->finished) asio::co_spawn(io_, finish_after_exit(p), asio::detached);
  }
}

// The child has exited but its output is still open: a background descendant may hold
// the pipe forever. Keep reading while data flows (or while a slow reader holds us back);
// once the pipes stay quiet for a moment, stop waiting for EOF. Everything the exited
// child wrote is in the pipe by now and has been read.
asio::awaitable<void> ProcessManager::finish_after_exit(std::shared_ptr<Process> p) {
  using namespace std::chrono_literals;
  while (!p->finished) {
    co_await p->idle_check.wait_for(100ms);
    if (p->finished) break;
    if (p->bytes_since_exit == 0 && !p->blocked_on_space) {
      boost::system::error_code ec;
      for (auto& fd : p->out)
        if (fd) fd->cancel(ec);
      break;
    }
    p->bytes_since_exit = 0;
  }
}

void ProcessManager::maybe_finish(const std::shared_ptr<Process>& p) {
  if (p->finished || !p->reaped || !p->out_eof[0] || !p->out_eof[1]) return;
  p->finished = true;
  int st = p->wait_status;
  process::ProcessEvent ev;
  auto* end = ev.mutable_end();
  end->set_exited(WIFEXITED(st));
  end->set_exit_code(WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  end->set_status(exit_status_text(st));
  for (auto& s : p->subscribers) s->push(ev, 0);
  p->subscribers.clear();
  boost::system::error_code ec;
  for (auto& fd : p->out)
    if (fd) fd->close(ec);
  if (p->in) p->in->close(ec);
  p->master_fd = -1;
  p->input_gate.notify();
  table_.erase(p->pid);
  log::info("process ended", {{"pid", std::to_string(p->pid)}, {"status", exit_status_text(st)}});
}

std::shared_ptr<Process> ProcessManager::find(const process::ProcessSelector& sel) const {
  switch (sel.selector_case()) {
    case process::ProcessSelector::kPid: {
      auto it = table_.find(static_cast<pid_t>(sel.pid()));
      if (it == table_.end() || it->second->finished)
        throw Error(Code::kNotFound, "no running process with pid " + std::to_string(sel.pid()));
      return it->second;
    }
    case process::ProcessSelector::kTag:
      for (auto& [pid, p] : table_)
        if (p->tag == sel.tag() && !p->finished) return p;
      throw Error(Code::kNotFound, "no running process with tag \"" + sel.tag() + "\"");
    default:
      throw Error(Code::kInvalidArgument, "process selector needs a pid or a tag");
  }
}

std::vector<std::shared_ptr<Process>> ProcessManager::list() const {
  std::vector<std::shared_ptr<Process>> out;
  for (auto& [pid, p] : table_)
    if (!p->finished) out.push_back(p);
  return out;
}

asio::awaitable<void> ProcessManager::write_input(std::shared_ptr<Process> p, std::string bytes, bool pty) {
  while (p->input_busy && !p->finished) co_await p->input_gate.wait();
  if (p->finished) throw Error(Code::kNotFound, "process " + std::to_string(p->pid) + " has exited");
  if (pty != p->is_pty)
    throw Error(Code::kFailedPrecondition,
                pty ? "process " + std::to_string(p->pid) + " has no PTY; send stdin input instead"
                    : "process " + std::to_string(p->pid) + " runs in a PTY; send pty input instead");
  if (!pty && !p->in)
    throw Error(Code::kFailedPrecondition, "stdin of process " + std::to_string(p->pid) + " is closed or was not requested");
  p->input_busy = true;
  boost::system::error_code ec;
  if (pty) {
    // The master is also the output descriptor; write through it directly.
    std::size_t off = 0;
    while (off < bytes.size() && !ec) {
      std::tie(ec) = co_await p->out[0]->async_wait(asio::posix::stream_descriptor::wait_write, tuple_awaitable);
      if (ec || p->master_fd < 0) break;
      ssize_t n = ::write(p->master_fd, bytes.data() + off, bytes.size() - off);
      if (n < 0 && errno != EAGAIN && errno != EINTR) ec = boost::system::error_code(errno, boost::system::system_category());
      if (n > 0) off += static_cast<std::size_t>(n);
    }
  } else {
    std::tie(ec, std::ignore) = co_await asio::async_write(*p->in, asio::buffer(bytes), tuple_awaitable);
  }
  p->input_busy = false;
  p->input_gate.notify();
  if (ec)
    throw Error(Code::kFailedPrecondition, "writing input to process " + std::to_string(p->pid) + ": " + ec.message());
}

asio::awaitable<void> ProcessManager::write_stdin(std::shared_ptr<Process> p, std::string bytes) {
  co_await write_input(std::move(p), std::move(bytes), false);
}

asio::awaitable<void> ProcessManager::write_pty(std::shared_ptr<Process> p, std::string bytes) {
  co_await write_input(std::move(p), std::move(bytes), true);
}

void ProcessManager::close_stdin(const std::shared_ptr<Process>& p) {
  if (p->is_pty)
    throw Error(Code::kFailedPrecondition, "process " + std::to_string(p->pid) +
                                               " runs in a PTY; send Ctrl+D (0x04) to end its input");
  if (p->in) {
    boost::system::error_code ec;
    p->in->close(ec);
    p->in.reset();
  }
}

void ProcessManager::resize(const std::shared_ptr<Process>& p, unsigned cols, unsigned rows) {
  if (!p->is_pty || p->master_fd < 0)
    throw Error(Code::kFailedPrecondition, "process " + std::to_string(p->pid) + " has no PTY to resize");
  if (cols == 0 || rows == 0 || cols > 65535 || rows > 65535)
    throw Error(Code::kInvalidArgument, "PTY size must be 1..65535 columns and rows");
  struct winsize ws {};
  ws.ws_col = static_cast<unsigned short>(cols);
  ws.ws_row = static_cast<unsigned short>(rows);
  if (::ioctl(p->master_fd, TIOCSWINSZ, &ws) != 0) throw errno_error(errno, "resizing PTY");
}

void ProcessManager::signal(const std::shared_ptr<Process>& p, int sig) {
  if (p->reaped) return;  // exited; nothing to signal (the pid may be reused)
  if (::kill(p->pid, sig) != 0 && errno != ESRCH) throw errno_error(errno, "kill " + std::to_string(p->pid));
}

void ProcessManager::signal_all(int sig) {
  for (auto& [pid, p] : table_)
    if (!p->reaped) ::kill(pid, sig);
}

}  // namespace wrenn::envd
