// Agent benchmark: create -> first command result through the agent API and proxy,
// serially and at 10 concurrent; destroy latency; memory per idle sandbox — printed side
// by side with `crun run` of the same busybox root tree in its own network namespace.
//
// Runs in its own network and mount namespaces (set up by scripts/bench.sh), as root.
#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <numeric>
#include <sstream>
#include <thread>

#include "agent_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

extern char** environ;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

struct Stats {
  double p50 = 0, p99 = 0, mean = 0;
  std::size_t n = 0;
};
Stats stats(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.n = v.size();
  s.p50 = v[v.size() / 2];
  s.p99 = v[std::min(v.size() - 1, static_cast<std::size_t>(v.size() * 0.99))];
  s.mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  return s;
}

void row(const std::string& name, const Stats& s) {
  std::printf("  %-46s p50 %7.1f ms   p99 %7.1f ms   (n=%zu)\n", name.c_str(), s.p50, s.p99, s.n);
}

std::uint64_t kb_field(const std::string& path, const std::string& key) {
  std::ifstream f(path);
  std::string k;
  while (f >> k) {
    if (k == key) {
      std::uint64_t v;
      f >> v;
      return v;
    }
    std::string rest;
    std::getline(f, rest);
  }
  return 0;
}

int run_quiet(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  if (posix_spawnp(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) return -1;
  posix_spawn_file_actions_destroy(&fa);
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// crun of `echo hi` in a copy of the busybox tree, with new pid/mount/ipc/uts/net
// namespaces (crun's default spec plus a network namespace).
struct CrunFigures {
  Stats serial, concurrent;
};

std::optional<CrunFigures> bench_crun(const std::string& work, int runs) {
  if (run_quiet({"crun", "--version"}) != 0) {
    std::printf("  crun: not installed (apt-get install crun)\n");
    return std::nullopt;
  }
  // crun refuses hybrid cgroups while hugetlb sits on the v2 hierarchy; binding it to a
  // v1 hierarchy in this private mount namespace frees it (see test/bench notes).
  if (fs::exists("/sys/fs/cgroup/unified/cgroup.controllers")) {
    fs::create_directories("/sys/fs/cgroup/hugetlb");
    ::mount("none", "/sys/fs/cgroup/hugetlb", "cgroup", 0, "hugetlb");
  }
  const std::string bundle = work + "/crun-bundle";
  fs::create_directories(bundle);
  if (!fs::exists(bundle + "/rootfs"))
    fs::copy(busybox_template(), bundle + "/rootfs",
             fs::copy_options::recursive | fs::copy_options::copy_symlinks);
  if (run_quiet({"sh", "-c", "cd " + bundle + " && rm -f config.json && crun spec"}) != 0)
    return std::nullopt;
  std::ifstream in(bundle + "/config.json");
  std::stringstream ss;
  ss << in.rdbuf();
  auto cfg = boost::json::parse(ss.str()).as_object();
  cfg["process"].as_object()["terminal"] = false;
  cfg["process"].as_object()["args"] = boost::json::array{"echo", "hi"};
  auto& ns = cfg["linux"].as_object()["namespaces"].as_array();
  bool has_net = false;
  for (auto& n : ns) has_net |= n.as_object()["type"].as_string() == "network";
  if (!has_net) ns.push_back(boost::json::object{{"type", "network"}});
  std::ofstream(bundle + "/config.json") << boost::json::serialize(cfg);
  std::vector<double> t;
  for (int i = 0; i < runs + 3; ++i) {
    auto t0 = Clock::now();
    int rc = run_quiet({"crun", "run", "-b", bundle, "wrenn-bench-" + std::to_string(i)});
    double ms = ms_since(t0);
    if (rc != 0) {
      std::printf("  crun run failed (exit %d)\n", rc);
      return std::nullopt;
    }
    if (i >= 3) t.push_back(ms);  // warm-up runs not counted
  }
  // 10 at once, like the agent's concurrent figure (one bundle serves every container).
  std::vector<std::future<std::vector<double>>> workers;
  for (int w = 0; w < 10; ++w) {
    workers.push_back(std::async(std::launch::async, [&, w] {
      std::vector<double> mine;
      for (int i = 0; i < runs / 10; ++i) {
        auto t0 = Clock::now();
        int rc = run_quiet({"crun", "run", "-b", bundle,
                            "wrenn-bench-c" + std::to_string(w) + "-" + std::to_string(i)});
        if (rc == 0) mine.push_back(ms_since(t0));
      }
      return mine;
    }));
  }
  std::vector<double> conc;
  for (auto& f : workers) {
    auto v = f.get();
    conc.insert(conc.end(), v.begin(), v.end());
  }
  if (conc.empty()) {
    std::printf("  crun run at 10 concurrent failed\n");
    return std::nullopt;
  }
  return CrunFigures{stats(t), stats(conc)};
}

}  // namespace

int main() {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "agent_bench needs root\n");
    return 1;
  }
  enter_private_netns();
  TempDir dir;
  const int serial_runs = 30, concurrent_runs = 30, idle_count = 20;

  std::printf("agent benchmark (%u cpus, kernel runtime ns, busybox template)\n\n",
              std::thread::hardware_concurrency());
  std::optional<CrunFigures> crun = bench_crun(dir.path(), serial_runs);

  std::vector<double> serial, destroy_ms, concurrent, create_only, first_cmd, second_cmd;
  {
    AgentProcess agent(dir.path(), {"--warm-slots", "16"});
    auto c = agent.client();
    // Warm-up: the first create formats the disk image cache.
    create_sandbox(*c, "warm-up", "busybox", 256, 1024);
    run_in_sandbox(agent, "warm-up", "true");
    destroy_sandbox(*c, "warm-up");
    std::this_thread::sleep_for(std::chrono::milliseconds(300));

    for (int i = 0; i < serial_runs; ++i) {
      const std::string id = "s" + std::to_string(i);
      auto t0 = Clock::now();
      create_sandbox(*c, id, "busybox", 256, 1024);
      create_only.push_back(ms_since(t0));
      auto t_cmd = Clock::now();
      auto r = run_in_sandbox(agent, id, "echo hi");
      serial.push_back(ms_since(t0));
      first_cmd.push_back(ms_since(t_cmd));
      if (r.output != "hi\n") std::fprintf(stderr, "unexpected output %s\n", r.output.c_str());
      t_cmd = Clock::now();
      run_in_sandbox(agent, id, "echo hi");
      second_cmd.push_back(ms_since(t_cmd));
      auto t1 = Clock::now();
      destroy_sandbox(*c, id);
      destroy_ms.push_back(ms_since(t1));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let the pool refill
    }

    std::vector<std::future<std::vector<double>>> workers;
    for (int w = 0; w < 10; ++w) {
      workers.push_back(std::async(std::launch::async, [&, w] {
        std::vector<double> mine;
        auto cc = agent.client();
        for (int i = 0; i < concurrent_runs / 10; ++i) {
          const std::string id = "c" + std::to_string(w) + "-" + std::to_string(i);
          auto t0 = Clock::now();
          create_sandbox(*cc, id, "busybox", 256, 1024);
          run_in_sandbox(agent, id, "echo hi");
          mine.push_back(ms_since(t0));
          destroy_sandbox(*cc, id);
        }
        return mine;
      }));
    }
    for (auto& f : workers) {
      auto v = f.get();
      concurrent.insert(concurrent.end(), v.begin(), v.end());
    }

    // Idle memory: the agent's growth plus each envd's proportional share (PSS).
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    const std::string agent_status = "/proc/" + std::to_string(agent.pid()) + "/smaps_rollup";
    const std::uint64_t agent_before = kb_field(agent_status, "Pss:");
    std::vector<int> pids;
    for (int i = 0; i < idle_count; ++i) {
      auto info = create_sandbox(*c, "idle" + std::to_string(i), "busybox", 256, 1024);
      (void)info;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    const std::uint64_t agent_after = kb_field(agent_status, "Pss:");
    std::uint64_t envd_pss = 0;
    for (int i = 0; i < idle_count; ++i) {
      auto rec = read_file(dir.path() + "/sandboxes/idle" + std::to_string(i) + "/record.json");
      auto pid = boost::json::parse(rec).as_object()["pid"].to_number<int>();
      envd_pss += kb_field("/proc/" + std::to_string(pid) + "/smaps_rollup", "Pss:");
    }
    const double per_sandbox_kib =
        (static_cast<double>(agent_after > agent_before ? agent_after - agent_before : 0) +
         static_cast<double>(envd_pss)) /
        idle_count;

    std::printf("create -> first command result (create + `echo hi` through the proxy to envd):\n");
    row("wrenn ns runtime, serial", stats(serial));
    if (crun) row("crun run, serial (echo hi, own netns, same tree)", crun->serial);
    row("wrenn ns runtime, 10 concurrent", stats(concurrent));
    if (crun) row("crun run, 10 concurrent", crun->concurrent);
    std::printf("\nwhere the serial time goes:\n");
    row("CreateSandbox (returns with envd ready)", stats(create_only));
    row("first command in a new sandbox", stats(first_cmd));
    row("second command in the same sandbox", stats(second_cmd));
    std::printf("\ndestroy:\n");
    row("wrenn destroy (returns; netdev teardown continues)", stats(destroy_ms));
    std::printf("\nmemory per idle sandbox (agent growth + envd PSS, %d sandboxes): %.2f MiB\n",
                idle_count, per_sandbox_kib / 1024.0);
    std::printf("  agent PSS %.1f -> %.1f MiB; envd PSS average %.2f MiB\n", agent_before / 1024.0,
                agent_after / 1024.0, static_cast<double>(envd_pss) / idle_count / 1024.0);
    if (crun)
      std::printf(
          "\nratio wrenn p50 / crun p50: serial %.2f, 10 concurrent %.2f  (target <= 1.0)\n",
          stats(serial).p50 / crun->serial.p50, stats(concurrent).p50 / crun->concurrent.p50);
  }
  return 0;
}
