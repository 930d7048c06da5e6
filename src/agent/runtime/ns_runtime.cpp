#include "runtime/ns_runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cstring>
#include <sstream>
#include <thread>
#include <vector>

#include "error.h"
#include "log.h"

namespace wrenn::agent {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kStartTimeout = std::chrono::seconds(20);
constexpr auto kStopTimeout = std::chrono::seconds(20);

// The fixed fds nsinit finds its pipes on (0-2 are stdio).
constexpr int kSyncFd = 3;
constexpr int kErrorFd = 4;
constexpr int kReadyFd = 5;  // inherited by envd, which writes one byte once it listens

void validate_id(const std::string& id) {
  bool ok = !id.empty() && id.size() <= 63 && id[0] != '.' && id[0] != '-';
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'))
      ok = false;
  if (!ok) throw Error(Code::kInvalidArgument, "invalid sandbox id \"" + id + "\"");
}

// Moves fd to a number >= 10 so the child's dup3 onto 0..4 never overwrites a source.
UniqueFd high_fd(UniqueFd fd) {
  if (fd.get() >= 10) return fd;
  int h = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 10);
  if (h < 0) throw errno_error(errno, "fcntl F_DUPFD_CLOEXEC");
  return UniqueFd(h);
}

// Everything the child needs, prepared before clone3: after it the child may only make
// raw system calls (the agent is multi-threaded; malloc's locks may be held).
struct ChildPlan {
  int netns_fd;
  int stdin_fd;
  int log_fd;
  int sync_fd;
  int error_fd;
  int ready_fd;
  const char* path;
  char* const* argv;
  char* const* envp;
};

[[noreturn]] void child_fail(int fd, const char* what, int err) {
  char buf[160];
  std::size_t n = 0;
  for (const char* p = what; *p && n < 100; ++p) buf[n++] = *p;
  for (const char* p = ": errno "; *p; ++p) buf[n++] = *p;
  char digits[12];
  int d = 0;
  unsigned v = static_cast<unsigned>(err);
  do {
    digits[d++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v && d < 11);
  while (d) buf[n++] = digits[--d];
  ::syscall(SYS_write, fd, buf, n);
  ::syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

[[noreturn]] void run_child(const ChildPlan& p) {
  if (::syscall(SYS_setns, p.netns_fd, CLONE_NEWNET) != 0)
    child_fail(p.error_fd, "setns into the sandbox's network namespace", errno);
  if (::syscall(SYS_dup3, p.stdin_fd, 0, 0) < 0 || ::syscall(SYS_dup3, p.log_fd, 1, 0) < 0 ||
      ::syscall(SYS_dup3, p.log_fd, 2, 0) < 0 || ::syscall(SYS_dup3, p.sync_fd, kSyncFd, 0) < 0 ||
      ::syscall(SYS_dup3, p.error_fd, kErrorFd, 0) < 0 ||
      ::syscall(SYS_dup3, p.ready_fd, kReadyFd, 0) < 0)
    child_fail(p.error_fd, "dup3", errno);
  // Whatever else the agent has open (without O_CLOEXEC, by some library) stays out.
  ::syscall(SYS_close_range, kReadyFd + 1, ~0U, CLOSE_RANGE_CLOEXEC);
  std::uint64_t empty_mask = 0;
  ::syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty_mask, nullptr, sizeof empty_mask);
  ::syscall(SYS_setsid);
  ::syscall(SYS_execve, p.path, p.argv, p.envp);
  child_fail(kErrorFd, "execve wrenn-nsinit", errno);
}

// Reaps pid when it is our child, waiting up to deadline. Returns when reaped, when it is
// not our child, or at the deadline.
void reap_if_child(int pid, Clock::time_point deadline) {
  int wait_ms = 1;
  for (;;) {
    int status;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) return;
    if (Clock::now() > deadline) return;
    if (r == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
      wait_ms = std::min(wait_ms * 2, 20);
    }
  }
}

// State letter and start time from /proc/<pid>/stat; false when there is no such process.
bool read_stat(int pid, char& state, std::uint64_t& start_time) {
  std::string text;
  try {
    text = read_text("/proc/" + std::to_string(pid) + "/stat");
  } catch (const Error&) {
    return false;
  }
  // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
  auto close = text.rfind(')');
  if (close == std::string::npos) return false;
  std::istringstream in(text.substr(close + 1));
  std::string field;
  std::vector<std::string> f;  // f[0] is field 3
  while (f.size() < 20 && in >> field) f.push_back(field);
  if (f.size() < 20) return false;
  state = f[0].empty() ? '?' : f[0][0];
  start_time = std::stoull(f[19]);
  return true;
}

}  // namespace

std::uint64_t process_start_time(int pid) {
  char state;
  std::uint64_t st;
  return pid > 0 && read_stat(pid, state, st) ? st : 0;
}

NsRuntime::NsRuntime(NsRuntimeOptions options)
    : opts_(std::move(options)), layout_(CgroupLayout::detect()) {
  if (opts_.state_dir.empty()) throw Error(Code::kInvalidArgument, "ns runtime: no state_dir");
  if (::access(opts_.nsinit_path.c_str(), X_OK) != 0)
    throw errno_error(errno, "ns runtime: wrenn-nsinit at \"" + opts_.nsinit_path + "\"");
  if (opts_.cgroup_parent.empty() || opts_.cgroup_parent.find('/') != std::string::npos)
    throw Error(Code::kInvalidArgument,
                "ns runtime: bad cgroup parent \"" + opts_.cgroup_parent + "\"");
}

Cgroup NsRuntime::cgroup(const std::string& id) const {
  validate_id(id);
  return Cgroup(layout_, opts_.cgroup_parent, id);
}

RuntimeHandle NsRuntime::start(const SandboxSpec& spec, const Volume& volume, const NetSlot& slot) {
  Cgroup cg = cgroup(spec.id);
  auto t0 = Clock::now();

  // Everything the child touches is made here, before clone3.
  make_dir(opts_.state_dir);
  make_dir(opts_.state_dir + "/sandboxes");
  make_dir(opts_.state_dir + "/sandboxes/" + spec.id);
  UniqueFd netns = high_fd(open_fd(slot.netns_path, O_RDONLY));
  UniqueFd devnull = high_fd(open_fd("/dev/null", O_RDONLY));
  UniqueFd log_fd = high_fd(open_fd(opts_.state_dir + "/sandboxes/" + spec.id + "/envd.log",
                                    O_WRONLY | O_CREAT | O_APPEND, 0640));
  int sync_pipe[2], error_pipe[2], ready_pipe[2];
  if (::pipe2(sync_pipe, O_CLOEXEC) != 0) throw errno_error(errno, "pipe2");
  UniqueFd sync_r(sync_pipe[0]), sync_w(sync_pipe[1]);
  if (::pipe2(error_pipe, O_CLOEXEC) != 0) throw errno_error(errno, "pipe2");
  UniqueFd error_r(error_pipe[0]), error_w(error_pipe[1]);
  if (::pipe2(ready_pipe, O_CLOEXEC) != 0) throw errno_error(errno, "pipe2");
  UniqueFd ready_r(ready_pipe[0]), ready_w(ready_pipe[1]);
  sync_r = high_fd(std::move(sync_r));
  error_w = high_fd(std::move(error_w));
  ready_w = high_fd(std::move(ready_w));

  std::vector<std::string> args = {opts_.nsinit_path,
                                   "--sync-fd",
                                   std::to_string(kSyncFd),
                                   "--error-fd",
                                   std::to_string(kErrorFd),
                                   "--ready-fd",
                                   std::to_string(kReadyFd),
                                   "--root",
                                   volume.rootfs,
                                   "--hostname",
                                   spec.id,
                                   "--port",
                                   std::to_string(opts_.envd_port),
                                   "--write-hostname"};
  if (!opts_.envd_path.empty()) args.insert(args.end(), {"--envd", opts_.envd_path});
  if (!opts_.resolv_conf.empty()) args.insert(args.end(), {"--resolv-conf", opts_.resolv_conf});
  for (const auto& [k, v] : spec.env) {
    if (k.empty() || k.find('=') != std::string::npos)
      throw Error(Code::kInvalidArgument, "invalid environment variable name \"" + k + "\"");
    args.insert(args.end(), {"--env", k + "=" + v});
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char* envp[] = {nullptr};

  CgroupLimits limits;
  limits.vcpus = spec.vcpus;
  limits.memory_bytes = spec.memory_mb * 1024 * 1024;
  limits.pids_max = spec.pids_max;
  cg.create(limits);

  pid_t pid = -1;
  auto fail = [&](Error e) -> Error {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      reap_if_child(pid, Clock::now() + kStopTimeout);
    }
    try {
      cg.destroy();
    } catch (const Error& de) {
      log::error("ns runtime: cleanup after failed start", {{"id", spec.id}, {"error", de.what()}});
    }
    return e;
  };

  UniqueFd cgroup_fd;
  try {
    cgroup_fd = cg.open_v2_dir();
  } catch (const Error& e) {
    throw fail(e);
  }
  ChildPlan plan{netns.get(),
                 devnull.get(),
                 log_fd.get(),
                 sync_r.get(),
                 error_w.get(),
                 ready_w.get(),
                 opts_.nsinit_path.c_str(),
                 argv.data(),
                 envp};
  clone_args ca{};
  ca.flags = CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWCGROUP;
  if (cgroup_fd.valid()) {
    ca.flags |= CLONE_INTO_CGROUP;
    ca.cgroup = static_cast<std::uint64_t>(cgroup_fd.get());
  }
  ca.exit_signal = SIGCHLD;
  long r = ::syscall(SYS_clone3, &ca, sizeof ca);
  if (r == 0) run_child(plan);
  if (r < 0) throw fail(errno_error(errno, "clone3 for sandbox " + spec.id));
  pid = static_cast<pid_t>(r);
  sync_r.reset();
  error_w.reset();
  ready_w.reset();

  try {
    cg.attach_v1(pid);
  } catch (const Error& e) {
    throw fail(e);
  }
  char go = 'g';
  if (::write(sync_w.get(), &go, 1) != 1) throw fail(errno_error(errno, "write to wrenn-nsinit"));
  sync_w.reset();

  // EOF on the error pipe (close-on-exec in nsinit) means envd was exec'd.
  std::string message;
  auto deadline = t0 + kStartTimeout;
  for (;;) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0)
      throw fail(Error(Code::kDeadlineExceeded, "sandbox " + spec.id + ": wrenn-nsinit timed out"));
    pollfd pfd{error_r.get(), POLLIN, 0};
    int pr = ::poll(&pfd, 1, left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) throw fail(errno_error(errno, "poll"));
    if (pr == 0) continue;
    char buf[512];
    ssize_t n = ::read(error_r.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw fail(errno_error(errno, "read from wrenn-nsinit"));
    if (n == 0) break;
    message.append(buf, static_cast<std::size_t>(n));
  }
  if (!message.empty())
    throw fail(Error(Code::kInternal, "sandbox " + spec.id + ": wrenn-nsinit: " + message));

  // envd's readiness byte: no polling, and the caller's first /health succeeds. EOF without
  // it (a template's own envd, or envd failed) leaves the verdict to the caller's polling.
  for (;;) {
    int left = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
    if (left <= 0) break;
    pollfd pfd{ready_r.get(), POLLIN, 0};
    int pr = ::poll(&pfd, 1, left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) break;
    char ready;
    ssize_t n = ::read(ready_r.get(), &ready, 1);
    if (n < 0 && errno == EINTR) continue;
    break;
  }

  RuntimeHandle h;
  h.pid = pid;
  h.start_time = process_start_time(pid);
  if (h.start_time == 0)
    throw fail(Error(Code::kInternal, "sandbox " + spec.id + ": envd exited at once"));
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count();
  log::info("sandbox started",
            {{"id", spec.id}, {"pid", std::to_string(pid)}, {"start_us", std::to_string(us)}});
  return h;
}

bool NsRuntime::alive(const std::string& /*id*/, const RuntimeHandle& h) const {
  char state;
  std::uint64_t st;
  if (h.pid <= 0 || !read_stat(h.pid, state, st) || st != h.start_time) return false;
  if (state == 'Z' || state == 'X') {
    int status;
    ::waitpid(h.pid, &status, WNOHANG);  // ours: reap it; anyone else's: ECHILD
    return false;
  }
  return true;
}

void NsRuntime::pause(const std::string& id) {
  Cgroup cg = cgroup(id);
  if (!cg.exists()) throw Error(Code::kNotFound, "sandbox " + id + " has no cgroup");
  cg.freeze();
}

void NsRuntime::resume(const std::string& id) {
  Cgroup cg = cgroup(id);
  if (!cg.exists()) throw Error(Code::kNotFound, "sandbox " + id + " has no cgroup");
  cg.thaw();
}

bool NsRuntime::paused(const std::string& id) const {
  Cgroup cg = cgroup(id);
  return cg.exists() && cg.frozen();
}

void NsRuntime::stop(const std::string& id, const RuntimeHandle& h) {
  Cgroup cg = cgroup(id);
  auto deadline = Clock::now() + kStopTimeout;
  bool ours = false;
  if (h.pid > 0) {
    // A pidfd pins the process: checked, then signalled, without a pid-reuse window.
    int pfd = static_cast<int>(::syscall(SYS_pidfd_open, h.pid, 0));
    if (pfd >= 0) {
      UniqueFd pidfd(pfd);
      if (h.start_time != 0 && process_start_time(h.pid) == h.start_time) {
        ours = true;
        ::syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
      }
    }
  }
  cg.kill_all();
  if (ours) reap_if_child(h.pid, deadline);
  cg.destroy(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
}

RuntimeStats NsRuntime::stats(const std::string& id) const {
  Cgroup cg = cgroup(id);
  if (!cg.exists()) throw Error(Code::kNotFound, "sandbox " + id + " has no cgroup");
  RuntimeStats s;
  s.cpu_usec = cg.cpu_usec();
  s.memory_bytes = cg.memory_bytes();
  return s;
}

void NsRuntime::sweep_stale(const std::set<std::string>& keep) {
  for (const auto& name : cgroup_children(layout_, opts_.cgroup_parent)) {
    if (keep.count(name)) continue;
    log::info("ns runtime: removing stale sandbox cgroup", {{"id", name}});
    Cgroup(layout_, opts_.cgroup_parent, name).destroy();
  }
}

}  // namespace wrenn::agent
