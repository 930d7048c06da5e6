// ns runtime and overlay volumes against the real kernel: namespaces, cgroups, loop
// devices, seccomp. Needs root. Every test case runs in its own process (ctest), enters
// its own network namespace first and uses its own state dir and cgroup parent.
#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>

#include "envd_fixture.h"
#include "runtime/ns_runtime.h"
#include "volume/overlay_volumes.h"

namespace fs = std::filesystem;
using namespace wrenn;
using namespace wrenn::agent;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::uint16_t kPort = 49983;

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// Runs argv, returns its exit status (test setup only).
int run(const std::vector<std::string>& args) {
  pid_t pid = fork();
  if (pid == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void loopback_up() {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ifreq ifr{};
  std::strcpy(ifr.ifr_name, "lo");
  ioctl(s, SIOCGIFFLAGS, &ifr);
  ifr.ifr_flags |= IFF_UP;
  if (ioctl(s, SIOCSIFFLAGS, &ifr) != 0) throw std::runtime_error("lo up failed");
  close(s);
}

// A network namespace bind-mounted at path, with loopback up (what a NetSlot provides).
void make_netns(const std::string& path) {
  std::string err;
  std::thread t([&] {
    if (unshare(CLONE_NEWNET) != 0) {
      err = "unshare";
      return;
    }
    loopback_up();
    close(open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644));
    std::string self = "/proc/self/task/" + std::to_string(gettid()) + "/ns/net";
    if (mount(self.c_str(), path.c_str(), nullptr, MS_BIND, nullptr) != 0) err = "bind mount";
  });
  t.join();
  if (!err.empty()) throw std::runtime_error("make_netns: " + err);
}

// HTTP status of GET target from envd inside the netns; -1 when it does not answer.
int http_get(const std::string& netns, const std::string& target, std::string* body = nullptr) {
  int status = -1;
  std::thread t([&] {
    int nfd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (nfd < 0 || setns(nfd, CLONE_NEWNET) != 0) return;
    close(nfd);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    timeval tv{2, 0};
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(kPort);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(s);
      return;
    }
    std::string req = "GET " + target + " HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n";
    if (write(s, req.data(), req.size()) != static_cast<ssize_t>(req.size())) {
      close(s);
      return;
    }
    std::string resp;
    char buf[4096];
    ssize_t n;
    while ((n = read(s, buf, sizeof buf)) > 0) resp.append(buf, static_cast<std::size_t>(n));
    close(s);
    if (resp.rfind("HTTP/1.1 ", 0) == 0) status = std::stoi(resp.substr(9, 3));
    if (body) {
      auto p = resp.find("\r\n\r\n");
      *body = p == std::string::npos ? "" : resp.substr(p + 4);
    }
  });
  t.join();
  return status;
}

bool wait_health(const std::string& netns,
                 std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (http_get(netns, "/health") == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return false;
}

struct ExecResult {
  int code = -1;
  std::string out;
};

// Runs `sh -c cmd` as root inside the sandbox through envd (envd-exec from the netns).
ExecResult exec_in(const std::string& netns, const std::string& cmd) {
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  std::string exe = test::bin_dir() + "/envd-exec";
  std::string port = std::to_string(kPort);
  pid_t pid = fork();
  if (pid == 0) {
    int nfd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
    if (nfd < 0 || setns(nfd, CLONE_NEWNET) != 0) _exit(126);
    dup2(p[1], 1);
    dup2(p[1], 2);
    const char* argv[] = {exe.c_str(), "--port",  port.c_str(), "--user",    "root",
                          "--",        "/bin/sh", "-c",         cmd.c_str(), nullptr};
    execv(argv[0], const_cast<char**>(argv));
    _exit(127);
  }
  close(p[1]);
  ExecResult r;
  char buf[4096];
  ssize_t n;
  while ((n = read(p[0], buf, sizeof buf)) > 0) r.out.append(buf, static_cast<std::size_t>(n));
  close(p[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::string trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::string read_or_empty(const std::string& path) {
  try {
    return test::read_file(path);
  } catch (...) {
    return "";
  }
}

// One test's world: own netns, state dir, cgroup parent, template; removes all of it.
struct World {
  test::TempDir tmp;
  std::string state_dir = tmp.path() + "/state";
  std::string template_root = tmp.path() + "/template";
  std::string parent = "wrenn-test-" + std::to_string(getpid());
  std::vector<std::string> netns_paths;
  std::unique_ptr<OverlayVolumes> volumes;
  std::unique_ptr<NsRuntime> runtime;

  World() {
    REQUIRE(unshare(CLONE_NEWNET) == 0);
    fs::create_directories(state_dir);
    std::string src = WRENN_SOURCE_DIR;
    REQUIRE(run({"bash", src + "/images/busybox/build.sh", template_root, test::sandbox_envd()}) ==
            0);
    fs::copy_file(test::bin_dir() + "/runtime_probe", template_root + "/usr/local/bin/probe");
    volumes = std::make_unique<OverlayVolumes>(state_dir);
    NsRuntimeOptions o;
    o.state_dir = state_dir;
    o.cgroup_parent = parent;
    o.nsinit_path = test::bin_dir() + "/wrenn-nsinit";
    o.envd_path = test::sandbox_envd();
    runtime = std::make_unique<NsRuntime>(o);
  }

  ~World() {
    try {
      runtime->sweep_stale({});
      for (const auto& root : runtime->cgroup_layout().roots())
        rmdir((root + "/" + parent).c_str());
      volumes->sweep_stale({});
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cleanup: %s\n", e.what());
    }
    for (const auto& p : netns_paths) umount2(p.c_str(), MNT_DETACH);
  }

  NetSlot slot(const std::string& name) {
    NetSlot s;
    s.netns_path = tmp.path() + "/netns-" + name;
    make_netns(s.netns_path);
    netns_paths.push_back(s.netns_path);
    return s;
  }

  struct Sandbox {
    SandboxSpec spec;
    Volume volume;
    NetSlot slot;
    RuntimeHandle handle;
  };

  Sandbox start(const std::string& id, std::uint64_t disk_mb = 64,
                std::function<void(SandboxSpec&)> tweak = nullptr) {
    Sandbox sb;
    sb.spec.id = id;
    sb.spec.env = {{"WRENN_TEST", "1"}};
    if (tweak) tweak(sb.spec);
    sb.slot = slot(id);
    sb.volume = volumes->prepare(id, template_root, disk_mb);
    auto t0 = Clock::now();
    sb.handle = runtime->start(sb.spec, sb.volume, sb.slot);
    double start_ms = ms_since(t0);
    // start() returns once envd signalled that it listens: the first request succeeds.
    CHECK(http_get(sb.slot.netns_path, "/health") == 200);
    REQUIRE(wait_health(sb.slot.netns_path));
    std::printf("TIMING start(%s): %.2f ms to envd listening, %.2f ms to /health\n", id.c_str(),
                start_ms, ms_since(t0));
    return sb;
  }

  void stop(Sandbox& sb) {
    runtime->stop(sb.spec.id, sb.handle);
    volumes->release(sb.spec.id);
  }
};

}  // namespace

TEST_CASE(
    "ns runtime: envd answers, hostname is the id, only the sandbox's processes are visible") {
  World w;
  auto sb = w.start("sb-basic");
  CHECK(w.runtime->alive(sb.spec.id, sb.handle));
  CHECK_FALSE(w.runtime->alive(sb.spec.id, {sb.handle.pid, sb.handle.start_time + 1}));

  auto r = exec_in(sb.slot.netns_path, "hostname; cat /etc/hostname");
  CHECK(r.code == 0);
  CHECK(r.out == "sb-basic\nsb-basic\n");

  // PID 1 is envd; every pid inside is the sandbox's own (a handful, small numbers).
  r = exec_in(sb.slot.netns_path,
              "cat /proc/1/comm; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '");
  CHECK(r.code == 0);
  INFO(r.out);
  std::istringstream in(r.out);
  std::string comm;
  in >> comm;
  CHECK(comm == "envd");
  int count = 0, p;
  while (in >> p) {
    ++count;
    CHECK(p < 100);
  }
  CHECK(count >= 2);
  CHECK(count < 10);
  CHECK(exec_in(sb.slot.netns_path, "test -e /proc/" + std::to_string(getpid())).code != 0);

  r = exec_in(sb.slot.netns_path, "id -u; tr '\\0' '\\n' < /proc/1/environ | sort");
  INFO(r.out);
  CHECK(r.out ==
        "0\nHOME=/root\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/"
        "bin\nWRENN_TEST=1\n");

  auto st = w.runtime->stats(sb.spec.id);
  CHECK(st.cpu_usec > 0);
  CHECK(st.memory_bytes > 0);

  // The sandbox sits in its cgroups, also in the cgroup2 hierarchy (CLONE_INTO_CGROUP).
  auto cg_dirs = w.runtime->cgroup(sb.spec.id).dirs();
  CHECK(cg_dirs.size() == w.runtime->cgroup_layout().roots().size());
  for (const auto& d : cg_dirs) {
    INFO(d);
    CHECK(read_or_empty(d + "/cgroup.procs").find(std::to_string(sb.handle.pid)) !=
          std::string::npos);
  }

  int pid = sb.handle.pid;
  w.stop(sb);
  CHECK_FALSE(w.runtime->alive(sb.spec.id, sb.handle));
  CHECK(kill(pid, 0) != 0);
  CHECK(w.runtime->cgroup(sb.spec.id).dirs().empty());
  CHECK(mounts_under(w.state_dir).empty());
  CHECK_FALSE(fs::exists(sb.volume.rootfs));
  // Idempotent.
  w.runtime->stop(sb.spec.id, sb.handle);
  w.volumes->release(sb.spec.id);
  CHECK(test::error_code_of([&] { w.runtime->stats(sb.spec.id); }) == Code::kNotFound);
}

TEST_CASE("ns runtime: privileged operations fail inside the sandbox") {
  World w;
  auto sb = w.start("sb-priv");
  auto r = exec_in(sb.slot.netns_path, "/usr/local/bin/probe priv");
  INFO(r.out);
  CHECK(r.code == 0);
  auto has = [&](const std::string& line) { return r.out.find(line + "\n") != std::string::npos; };
  CHECK(has("mount=EPERM"));
  CHECK(has("raw_socket=EPERM"));
  CHECK(has("packet_socket=EPERM"));
  CHECK(has("ptrace_attach=EPERM"));
  CHECK(has("ptrace_traceme=EPERM"));
  CHECK(has("unshare_user=EPERM"));
  CHECK(has("unshare_net=EPERM"));
  CHECK(has("clone_newuser=EPERM"));
  CHECK(has("setns=EPERM"));
  CHECK(has("sys_write=EROFS"));
  CHECK(has("proc_sys_write=EROFS"));
  CHECK((has("sysrq_write=EROFS") || has("sysrq_write=absent")));  // no CONFIG_MAGIC_SYSRQ: absent
  CHECK(has("mknod=EPERM"));
  CHECK(has("personality_query=ok"));
  CHECK(has("personality_norandom=EPERM"));
  CHECK(has("sethostname=EPERM"));
  CHECK(has("chown=ok"));

  // busybox's own tools see the same.
  auto m = exec_in(sb.slot.netns_path, "mount -t tmpfs none /mnt");
  CHECK(m.code != 0);
  CHECK(exec_in(sb.slot.netns_path, "touch /sys/x").code != 0);

  auto status = exec_in(sb.slot.netns_path, "cat /proc/self/status").out;
  INFO(status);
  CHECK(status.find("NoNewPrivs:\t1") != std::string::npos);
  CHECK(status.find("Seccomp:\t2") != std::string::npos);
  // CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID NET_BIND_SERVICE SYS_CHROOT AUDIT_WRITE
  std::uint64_t want = (1ull << 0) | (1ull << 1) | (1ull << 3) | (1ull << 4) | (1ull << 5) |
                       (1ull << 6) | (1ull << 7) | (1ull << 10) | (1ull << 18) | (1ull << 29);
  char hex[32];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(want));
  CHECK(status.find(std::string("CapBnd:\t") + hex) != std::string::npos);
  CHECK(status.find(std::string("CapEff:\t") + hex) != std::string::npos);
  CHECK(status.find("CapAmb:\t0000000000000000") != std::string::npos);
  w.stop(sb);
}

TEST_CASE("ns runtime: disk_mb bounds what the sandbox writes - the template stays untouched") {
  World w;
  auto sb = w.start("sb-disk", 32);
  auto r = exec_in(sb.slot.netns_path, "dd if=/dev/zero of=/root/big bs=1M count=64");
  INFO(r.out);
  CHECK(r.code != 0);
  CHECK(r.out.find("No space left on device") != std::string::npos);
  CHECK(fs::exists(sb.volume.upper + "/root/big"));
  CHECK(fs::file_size(sb.volume.upper + "/root/big") < 32ull << 20);
  CHECK_FALSE(fs::exists(w.template_root + "/root/big"));
  std::uint64_t used = w.volumes->used_bytes(sb.spec.id);
  CHECK(used > 20ull << 20);
  CHECK(used <= 32ull << 20);
  // Deleting a template file inside only whites it out in the upper layer.
  CHECK(exec_in(sb.slot.netns_path, "rm /etc/wrenn-template && rm /root/big && echo ok").out ==
        "ok\n");
  CHECK(fs::exists(w.template_root + "/etc/wrenn-template"));
  CHECK(w.volumes->used_bytes(sb.spec.id) < 4ull << 20);
  w.stop(sb);
}

TEST_CASE("ns runtime: a memory hog is OOM-killed under memory_mb and envd survives") {
  World w;
  auto sb = w.start("sb-mem", 64, [](SandboxSpec& s) { s.memory_mb = 64; });
  auto r = exec_in(sb.slot.netns_path, "/usr/local/bin/probe alloc 300");
  INFO(r.out);
  CHECK(r.code == 137);
  CHECK(r.out.find("allocated all") == std::string::npos);
  CHECK(http_get(sb.slot.netns_path, "/health") == 200);
  CHECK(exec_in(sb.slot.netns_path, "echo alive").out == "alive\n");
  CHECK(w.runtime->stats(sb.spec.id).memory_bytes <= 64ull << 20);
  w.stop(sb);
}

TEST_CASE("ns runtime: pids_max stops a fork bomb and envd keeps answering") {
  World w;
  auto sb = w.start("sb-pids", 64, [](SandboxSpec& s) { s.pids_max = 40; });
  auto r = exec_in(sb.slot.netns_path, "/usr/local/bin/probe forkbomb 3000");
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(r.out.find("errno=EAGAIN") != std::string::npos);
  int forks = std::stoi(r.out.substr(r.out.find("forks=") + 6));
  CHECK(forks < 40);
  CHECK(forks > 5);
  // The bomb's children still hold the pids: envd answers anyway.
  CHECK(http_get(sb.slot.netns_path, "/health") == 200);
  w.stop(sb);
}

TEST_CASE("ns runtime: pause freezes every process - resume thaws them - stop works while frozen") {
  World w;
  auto sb = w.start("sb-pause");
  auto r = exec_in(
      sb.slot.netns_path,
      "(i=0; while true; do i=$((i+1)); echo $i > /tmp/c; sleep 0.05; done) >/dev/null 2>&1 &");
  CHECK(r.code == 0);
  std::string counter = sb.volume.upper + "/tmp/c";
  auto value = [&] {
    for (int i = 0; i < 100; ++i) {
      std::string s = trimmed(read_or_empty(counter));
      if (!s.empty()) return std::stol(s);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1L;
  };
  auto t_end = Clock::now() + std::chrono::seconds(5);
  while (value() < 3 && Clock::now() < t_end)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  REQUIRE(value() >= 3);

  CHECK_FALSE(w.runtime->paused(sb.spec.id));
  auto t0 = Clock::now();
  w.runtime->pause(sb.spec.id);
  std::printf("TIMING pause: %.2f ms\n", ms_since(t0));
  CHECK(w.runtime->paused(sb.spec.id));
  long a = value();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK(value() == a);
  CHECK(w.runtime->alive(sb.spec.id, sb.handle));

  t0 = Clock::now();
  w.runtime->resume(sb.spec.id);
  std::printf("TIMING resume: %.2f ms\n", ms_since(t0));
  CHECK_FALSE(w.runtime->paused(sb.spec.id));
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK(value() > a);
  CHECK(http_get(sb.slot.netns_path, "/health") == 200);

  w.runtime->pause(sb.spec.id);
  t0 = Clock::now();
  w.stop(sb);
  std::printf("TIMING stop (frozen) + release: %.2f ms\n", ms_since(t0));
  CHECK(w.runtime->cgroup(sb.spec.id).dirs().empty());
  CHECK(kill(sb.handle.pid, 0) != 0);
}

TEST_CASE("ns runtime: sweep_stale removes sandboxes not kept - and only those") {
  World w;
  auto a = w.start("sb-a");
  auto b = w.start("sb-b");
  test::write_file(w.state_dir + "/sandboxes/sb-a/record.json", "{}");
  test::write_file(w.state_dir + "/sandboxes/sb-b/record.json", "{}");

  w.runtime->sweep_stale({"sb-b"});
  CHECK_FALSE(w.runtime->alive(a.spec.id, a.handle));
  CHECK(w.runtime->cgroup(a.spec.id).dirs().empty());
  CHECK(w.runtime->alive(b.spec.id, b.handle));
  CHECK(http_get(b.slot.netns_path, "/health") == 200);
  // Our own (killed) child is reaped by alive() or stop(); here by stop().
  w.runtime->stop(a.spec.id, a.handle);

  w.volumes->sweep_stale({"sb-b"});
  CHECK_FALSE(fs::exists(w.state_dir + "/sandboxes/sb-a"));
  CHECK(mounts_under(w.state_dir + "/sandboxes/sb-a").empty());
  CHECK(fs::exists(w.state_dir + "/sandboxes/sb-b/record.json"));
  CHECK(exec_in(b.slot.netns_path, "echo hi > /root/x && cat /root/x").out == "hi\n");

  w.stop(b);
  CHECK(fs::exists(w.state_dir + "/sandboxes/sb-b/record.json"));  // release keeps the record
  CHECK_FALSE(fs::exists(w.state_dir + "/sandboxes/sb-b/volume/disk.ext4"));
}

TEST_CASE("ns runtime: a failed start leaves no process or cgroup behind") {
  World w;
  SandboxSpec spec;
  spec.id = "sb-fail";
  auto slot = w.slot("fail");
  auto vol = w.volumes->prepare(spec.id, w.template_root, 32);

  Volume bad = vol;
  bad.rootfs = w.tmp.path() + "/no-such-root";
  try {
    w.runtime->start(spec, bad, slot);
    FAIL("start succeeded");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find("no-such-root") != std::string::npos);
  }
  CHECK(w.runtime->cgroup(spec.id).dirs().empty());

  NetSlot no_ns;
  no_ns.netns_path = w.tmp.path() + "/no-such-netns";
  CHECK(test::error_code_of([&] { w.runtime->start(spec, vol, no_ns); }) == Code::kNotFound);
  CHECK(w.runtime->cgroup(spec.id).dirs().empty());
  CHECK(test::error_code_of([&] {
          SandboxSpec s = spec;
          s.id = "../etc";
          w.runtime->start(s, vol, slot);
        }) == Code::kInvalidArgument);

  // The volume is still usable.
  auto h = w.runtime->start(spec, vol, slot);
  CHECK(wait_health(slot.netns_path));
  w.runtime->stop(spec.id, h);
  w.volumes->release(spec.id);
}

TEST_CASE("overlay volumes: prepare and release - bounds - modes - timings") {
  World w;
  CHECK(test::error_code_of([&] { w.volumes->prepare("v0", w.tmp.path() + "/nope", 64); }) ==
        Code::kNotFound);
  CHECK_FALSE(fs::exists(w.state_dir + "/sandboxes/v0/volume/disk.ext4"));

  auto t0 = Clock::now();
  auto v = w.volumes->prepare("v1", w.template_root, 256);
  std::printf("TIMING first prepare (mkfs.ext4 of 256 MiB into the cache): %.2f ms\n",
              ms_since(t0));
  struct stat st {};
  REQUIRE(stat(v.upper.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
  CHECK(fs::exists(v.rootfs + "/bin/busybox"));
  CHECK(test::error_code_of([&] { w.volumes->prepare("v1", w.template_root, 256); }) ==
        Code::kAlreadyExists);
  // Sparse: the disk file holds far less than its size.
  struct stat ds {};
  REQUIRE(stat((w.state_dir + "/sandboxes/v1/volume/disk.ext4").c_str(), &ds) == 0);
  CHECK(ds.st_size == 256ll << 20);
  CHECK(ds.st_blocks * 512 < 32ll << 20);

  test::write_file(v.rootfs + "/etc/new", "x");
  CHECK(fs::exists(v.upper + "/etc/new"));
  CHECK_FALSE(fs::exists(w.template_root + "/etc/new"));
  CHECK(w.volumes->existing("v1").rootfs == v.rootfs);
  w.volumes->release("v1");
  w.volumes->release("v1");
  CHECK(mounts_under(w.state_dir).empty());
  CHECK_FALSE(fs::exists(v.rootfs));

  double prep = 0, rel = 0;
  const int n = 10;
  for (int i = 0; i < n; ++i) {
    t0 = Clock::now();
    w.volumes->prepare("v2", w.template_root, 256);
    prep += ms_since(t0);
    t0 = Clock::now();
    w.volumes->release("v2");
    rel += ms_since(t0);
  }
  std::printf("TIMING prepare: %.2f ms, release: %.2f ms (mean of %d, 256 MiB disk)\n", prep / n,
              rel / n, n);
  CHECK(mounts_under(w.state_dir).empty());
  CHECK(test::error_code_of([&] { w.volumes->prepare("v3", w.template_root, 1); }) ==
        Code::kInvalidArgument);
  CHECK(test::error_code_of([&] { w.volumes->prepare("../x", w.template_root, 64); }) ==
        Code::kInvalidArgument);
}

TEST_CASE("overlay volumes: ready disks are taken, refilled, never shared, and swept") {
  World w;
  auto wait_ready = [&](OverlayVolumes& v, std::uint64_t mb, std::size_t n) {
    auto deadline = Clock::now() + std::chrono::seconds(20);
    while (v.ready_count(mb) < n && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return v.ready_count(mb);
  };
  {
    OverlayVolumes pooled(OverlayVolumesOptions{w.state_dir, 2, {64}});
    REQUIRE(wait_ready(pooled, 64, 2) == 2);
    CHECK(mounts_under(w.state_dir + "/pool").size() == 2);

    // Two sandboxes from ready disks: each gets its own, empty, writable disk.
    auto t0 = Clock::now();
    auto a = pooled.prepare("pa", w.template_root, 64);
    const double from_pool = ms_since(t0);
    auto b = pooled.prepare("pb", w.template_root, 64);
    std::printf("TIMING prepare from a ready disk: %.2f ms\n", from_pool);
    test::write_file(a.rootfs + "/root/only-a", "a");
    CHECK_FALSE(fs::exists(b.rootfs + "/root/only-a"));
    CHECK(fs::exists(w.state_dir + "/sandboxes/pa/volume/disk.ext4"));
    CHECK(pooled.used_bytes("pb") < (1u << 20));
    // The pool refills behind them.
    CHECK(wait_ready(pooled, 64, 2) == 2);

    // A size nobody asked for is made on demand, then pooled as well.
    auto c = pooled.prepare("pc", w.template_root, 32);
    CHECK(fs::exists(c.rootfs + "/bin/busybox"));
    CHECK(wait_ready(pooled, 32, 2) == 2);

    for (auto id : {"pa", "pb", "pc"}) pooled.release(id);
    CHECK(mounts_under(w.state_dir + "/sandboxes").empty());
  }
  // The destructor released the ready disks.
  CHECK(mounts_under(w.state_dir).empty());

  // A previous agent's ready disks (its pid differs) are removed by sweep_stale.
  {
    OverlayVolumes pooled(OverlayVolumesOptions{w.state_dir, 1, {32}});
    REQUIRE(wait_ready(pooled, 32, 1) == 1);
  }
  const std::string stale = w.state_dir + "/pool/32M-1-1";
  fs::create_directories(stale + "/disk");
  REQUIRE(mount("tmpfs", (stale + "/disk").c_str(), "tmpfs", 0, nullptr) == 0);
  w.volumes->sweep_stale({});
  CHECK_FALSE(fs::exists(stale));
  CHECK(mounts_under(w.state_dir).empty());
}
