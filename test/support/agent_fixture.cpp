#include "agent_fixture.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "envd/process.pb.h"

namespace wrenn::test {

namespace fs = std::filesystem;
namespace pb = wrenn::agent::v1;

void enter_private_netns() {
  if (::unshare(CLONE_NEWNET) != 0)
    throw std::runtime_error(std::string("unshare(CLONE_NEWNET): ") + std::strerror(errno));
  int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strcpy(ifr.ifr_name, "lo");
  ::ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP;
  int rc = ::ioctl(s, SIOCSIFFLAGS, &ifr);
  ::close(s);
  if (rc != 0) throw std::runtime_error("bringing lo up failed");
}

std::string busybox_template() {
  return bin_dir() + "/../test-images/busybox";
}

namespace {

// Unmounts everything mounted at or below dir, deepest first.
void unmount_below(const std::string& dir) {
  std::vector<std::string> mounts;
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    std::istringstream ss(line);
    std::string id, parent, devno, root, mp;
    ss >> id >> parent >> devno >> root >> mp;
    if (mp == dir || mp.rfind(dir + "/", 0) == 0) mounts.push_back(mp);
  }
  std::sort(mounts.begin(), mounts.end(),
            [](const auto& a, const auto& b) { return a.size() > b.size(); });
  for (const auto& m : mounts) ::umount2(m.c_str(), MNT_DETACH);
}

}  // namespace

AgentProcess::AgentProcess(std::string dir, std::vector<std::string> extra_args)
    : dir_(std::move(dir)), args_(std::move(extra_args)) {
  cgroup_parent_ =
      "wrenn-test-" + std::to_string(::getpid()) + "-" +
      std::to_string(std::chrono::steady_clock::now().time_since_epoch().count() % 1000000);
  fs::create_directories(dir_ + "/images");
  if (!fs::exists(dir_ + "/images/busybox"))
    fs::create_directory_symlink(busybox_template(), dir_ + "/images/busybox");
  log_path_ = dir_ + "/agent.log";
  spawn(args_);
}

void AgentProcess::spawn(const std::vector<std::string>& extra_args) {
  int fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("cannot create " + log_path_);
  const std::size_t log_start = fs::file_size(log_path_);
  std::vector<std::string> args = {bin_dir() + "/wrenn-agent",
                                   "--dir",
                                   dir_,
                                   "--listen",
                                   "127.0.0.1:" + std::to_string(port_),
                                   "--cgroup-parent",
                                   cgroup_parent_,
                                   "--nameserver",
                                   "192.0.2.53",
                                   "--envd",
                                   sandbox_envd()};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  pid_ = ::fork();
  if (pid_ == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fd);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline) {
    std::string l = log().substr(std::min(log_start, log().size()));
    auto pos = l.find("\"msg\":\"wrenn-agent listening\"");
    if (pos != std::string::npos) {
      auto p = l.find("\"port\":\"", pos);
      port_ = static_cast<unsigned short>(std::stoi(l.substr(p + 8)));
      backend_port_ = 0;
      auto b = l.find("\"backend_port\":\"", pos);
      auto eol = l.find('\n', pos);
      if (b != std::string::npos && b < eol && l[b + 16] != '"')
        backend_port_ = static_cast<unsigned short>(std::stoi(l.substr(b + 16)));
      token_ = read_file(dir_ + "/agent-token");
      while (!token_.empty() && token_.back() == '\n') token_.pop_back();
      return;
    }
    if (!running()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  throw std::runtime_error("wrenn-agent did not start; log:\n" + log());
}

void AgentProcess::terminate() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGTERM);
  int status;
  for (int i = 0; i < 500 && ::waitpid(pid_, &status, WNOHANG) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (::waitpid(pid_, &status, WNOHANG) == 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }
  pid_ = -1;
}

void AgentProcess::restart(std::optional<std::vector<std::string>> extra_args) {
  terminate();
  if (extra_args) args_ = std::move(*extra_args);
  spawn(args_);
}

AgentProcess::~AgentProcess() {
  if (crashed_) return;  // kill_hard(): leave everything as a crash would, for the next agent
  if (pid_ > 0 && !running()) {
    std::fprintf(stderr, "wrenn-agent (pid %d) exited during the test; its log:\n%s\n", pid_,
                 log().c_str());
    pid_ = -1;
  }
  if (pid_ > 0) {
    // Sandboxes outlive the agent by design; a test cleans up after itself.
    try {
      auto c = client();
      for (const auto& s : list_sandboxes(*c)) destroy_sandbox(*c, s.sandbox_id());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cleanup of sandboxes failed: %s\n", e.what());
    }
    terminate();
  }
  unmount_below(dir_);
  for (const char* h : {"cpu", "cpuacct", "memory", "pids", "freezer", "unified", ""}) {
    std::string p = std::string("/sys/fs/cgroup/") + h + (*h ? "/" : "") + cgroup_parent_;
    ::rmdir(p.c_str());
  }
}

bool AgentProcess::running() const {
  int status;
  return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == 0;
}

void AgentProcess::kill_hard() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  crashed_ = true;
}

std::string AgentProcess::log() const {
  return read_file(log_path_);
}

std::unique_ptr<connect::Client> AgentProcess::client() const {
  auto c = std::make_unique<connect::Client>("127.0.0.1", api_port());
  c->default_headers()["Authorization"] = "Bearer " + token_;
  return c;
}

pb::SandboxInfo create_sandbox(connect::Client& c, const std::string& id, const std::string& tmpl,
                               std::uint64_t memory_mb, std::uint64_t disk_mb) {
  pb::CreateSandboxRequest req;
  req.set_sandbox_id(id);
  req.set_template_(tmpl);
  req.set_memory_mb(memory_mb);
  req.set_disk_mb(disk_mb);
  pb::CreateSandboxResponse resp;
  c.unary("/wrenn.agent.v1.AgentService/CreateSandbox", req, resp);
  return resp.sandbox();
}

void destroy_sandbox(connect::Client& c, const std::string& id) {
  pb::DestroySandboxRequest req;
  req.set_sandbox_id(id);
  pb::DestroySandboxResponse resp;
  c.unary("/wrenn.agent.v1.AgentService/DestroySandbox", req, resp);
}

std::vector<pb::SandboxInfo> list_sandboxes(connect::Client& c) {
  pb::ListSandboxesResponse resp;
  c.unary("/wrenn.agent.v1.AgentService/ListSandboxes", pb::ListSandboxesRequest{}, resp);
  return {resp.sandboxes().begin(), resp.sandboxes().end()};
}

CommandResult run_in_sandbox(const AgentProcess& agent, const std::string& id,
                             const std::string& script, const std::string& user) {
  connect::Client c("127.0.0.1", agent.api_port());
  // The agent's token in its own header, so Authorization carries envd's Basic user.
  c.default_headers()["X-Wrenn-Agent-Token"] = agent.token();
  std::string cred = user + ":";
  static const char* b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string enc;
  for (std::size_t i = 0; i < cred.size(); i += 3) {
    unsigned v = static_cast<unsigned char>(cred[i]) << 16;
    if (i + 1 < cred.size()) v |= static_cast<unsigned char>(cred[i + 1]) << 8;
    if (i + 2 < cred.size()) v |= static_cast<unsigned char>(cred[i + 2]);
    enc += b64[(v >> 18) & 63];
    enc += b64[(v >> 12) & 63];
    enc += i + 1 < cred.size() ? b64[(v >> 6) & 63] : '=';
    enc += i + 2 < cred.size() ? b64[v & 63] : '=';
  }
  c.default_headers()["Authorization"] = "Basic " + enc;
  process::StartRequest req;
  req.mutable_process()->set_cmd("/bin/sh");
  req.mutable_process()->add_args("-c");
  req.mutable_process()->add_args(script);
  auto s = c.server_stream("/proxy/" + id + "/49983/process.Process/Start", req);
  CommandResult r;
  process::StartResponse ev;
  while (s->next(ev)) {
    const auto& e = ev.event();
    if (e.has_data()) r.output += e.data().has_stdout() ? e.data().stdout() : e.data().stderr();
    if (e.has_end()) r.exit_code = e.end().exit_code();
  }
  return r;
}

}  // namespace wrenn::test
