// The agent can die at any instant: a restarted agent re-adopts the sandboxes that were
// created and removes every trace of the ones that were not.
#include <net/if.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "agent_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
namespace pb = wrenn::agent::v1;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

std::set<std::string> sandbox_links() {
  std::set<std::string> out;
  if (auto* ni = if_nameindex()) {
    for (auto* p = ni; p->if_index; ++p)
      if (std::string(p->if_name).rfind("wv", 0) == 0) out.insert(p->if_name);
    if_freenameindex(ni);
  }
  return out;
}

std::size_t count_dirs(const std::string& dir) {
  std::size_t n = 0;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.is_directory()) ++n;
  return n;
}

std::size_t mounts_below(const std::string& dir) {
  std::size_t n = 0;
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    std::istringstream ss(line);
    std::string a, b, c, d, mp;
    ss >> a >> b >> c >> d >> mp;
    if (mp.rfind(dir + "/", 0) == 0) ++n;
  }
  return n;
}

}  // namespace

TEST_CASE("sandboxes keep running across an agent restart and are re-adopted - paused ones too") {
  enter_private_netns();
  TempDir dir;
  std::string cgroup_parent;
  {
    AgentProcess first(dir.path(),
                       {"--cgroup-parent", "wrenn-restart-" + std::to_string(::getpid())});
    auto c = first.client();
    create_sandbox(*c, "sb-keep");
    create_sandbox(*c, "sb-paused");
    run_in_sandbox(first, "sb-keep", "echo before > /tmp/marker");
    pb::PauseSandboxRequest p;
    p.set_sandbox_id("sb-paused");
    pb::PauseSandboxResponse pr;
    c->unary("/wrenn.agent.v1.AgentService/PauseSandbox", p, pr);
    first.kill_hard();
  }
  // While no agent runs, the sandboxes are still there.
  CHECK(count_dirs(dir.path() + "/sandboxes") == 2);

  AgentProcess second(dir.path(),
                      {"--cgroup-parent", "wrenn-restart-" + std::to_string(::getpid())});
  auto c = second.client();
  auto listed = list_sandboxes(*c);
  REQUIRE(listed.size() == 2);
  std::map<std::string, pb::SandboxState> states;
  for (const auto& s : listed) states[s.sandbox_id()] = s.state();
  CHECK(states["sb-keep"] == pb::SANDBOX_STATE_RUNNING);
  CHECK(states["sb-paused"] == pb::SANDBOX_STATE_PAUSED);
  CHECK(run_in_sandbox(second, "sb-keep", "cat /tmp/marker").output == "before\n");
  pb::ResumeSandboxRequest r;
  r.set_sandbox_id("sb-paused");
  pb::ResumeSandboxResponse rr;
  c->unary("/wrenn.agent.v1.AgentService/ResumeSandbox", r, rr);
  CHECK(run_in_sandbox(second, "sb-paused", "echo awake").output == "awake\n");
  // A new sandbox does not collide with the adopted ones' network slots.
  auto fresh = create_sandbox(*c, "sb-new");
  for (const auto& s : listed) CHECK(s.address() != fresh.address());
  CHECK(run_in_sandbox(second, "sb-new", "echo new").output == "new\n");
}

TEST_CASE(
    "SIGKILL during 20 creates: created sandboxes answer after restart and the rest leave no "
    "trace") {
  enter_private_netns();
  TempDir dir;
  const std::string parent = "wrenn-crash-" + std::to_string(::getpid());
  std::set<std::string> created;
  std::mutex mu;
  {
    AgentProcess first(dir.path(), {"--cgroup-parent", parent, "--warm-slots", "2"});
    std::vector<std::thread> threads;
    std::atomic<int> done{0};
    for (int i = 0; i < 20; ++i) {
      threads.emplace_back([&, i] {
        const std::string id = "sb-crash-" + std::to_string(i);
        try {
          auto c = first.client();
          create_sandbox(*c, id, "busybox", 64, 64);
          std::lock_guard g(mu);
          created.insert(id);
        } catch (const std::exception&) {
        }
        ++done;
      });
    }
    // Kill while creates are in flight: after the first few have completed.
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < deadline) {
      {
        std::lock_guard g(mu);
        if (created.size() >= 3) break;
      }
      std::this_thread::sleep_for(5ms);
    }
    first.kill_hard();
    for (auto& t : threads) t.join();
    INFO("created before the kill: " << created.size());
    CHECK(created.size() < 20);  // the kill really hit creates in flight
  }

  AgentProcess second(dir.path(), {"--cgroup-parent", parent, "--warm-slots", "0"});
  auto c = second.client();
  auto listed = list_sandboxes(*c);
  std::set<std::string> adopted;
  for (const auto& s : listed) adopted.insert(s.sandbox_id());
  // Every create that returned is there and answers; creates that were cut short are gone
  // (a create may also have completed without its answer reaching us: then it is kept).
  for (const auto& id : created) {
    INFO(id);
    CHECK(adopted.count(id) == 1);
    CHECK(run_in_sandbox(second, id, "echo up").output == "up\n");
  }
  for (const auto& s : listed) CHECK(s.state() == pb::SANDBOX_STATE_RUNNING);
  // No trace of the rest: one state dir, one link, one set of mounts, one cgroup per
  // adopted sandbox and nothing else.
  CHECK(count_dirs(dir.path() + "/sandboxes") == adopted.size());
  CHECK(sandbox_links().size() == adopted.size());
  std::size_t netns_files = 0;
  for (const auto& e : fs::directory_iterator(dir.path() + "/netns")) (void)e, ++netns_files;
  CHECK(netns_files == adopted.size());
  CHECK(count_dirs("/sys/fs/cgroup/memory/" + parent) == adopted.size());
  CHECK(count_dirs("/sys/fs/cgroup/pids/" + parent) == adopted.size());
  // Each sandbox holds its overlay, its disk and its netns bind mount; the ready disks
  // under pool/ are the restarted agent's own (its pid in their names).
  CHECK(mounts_below(dir.path() + "/sandboxes") == adopted.size() * 2);
  CHECK(mounts_below(dir.path() + "/netns") == adopted.size());
  const std::string own = "M-" + std::to_string(second.pid()) + "-";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir.path() + "/pool", ec))
    CHECK(e.path().filename().string().find(own) != std::string::npos);
}
