// wrenn-agent end to end: create a sandbox from the busybox template, run commands and
// move files through the proxy to envd, pause/resume, timeouts, metrics, destroy — and
// then check that nothing of the sandbox is left on the host.
#include <net/if.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include "agent_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
namespace pb = wrenn::agent::v1;
namespace fs = std::filesystem;
namespace bhttp = boost::beast::http;
using namespace std::chrono_literals;

namespace {

const std::string kSvc = "/wrenn.agent.v1.AgentService/";

template <class F>
bool eventually(F pred, std::chrono::milliseconds budget = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + budget;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

std::set<std::string> links() {
  std::set<std::string> out;
  if (auto* ni = if_nameindex()) {
    for (auto* p = ni; p->if_index; ++p) out.insert(p->if_name);
    if_freenameindex(ni);
  }
  return out;
}

std::vector<std::string> mounts_below(const std::string& dir) {
  std::vector<std::string> out;
  std::ifstream mi("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mi, line)) {
    std::istringstream ss(line);
    std::string a, b, c, d, mp;
    ss >> a >> b >> c >> d >> mp;
    if (mp.rfind(dir + "/", 0) == 0) out.push_back(mp);
  }
  return out;
}

std::vector<std::string> children(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
  return out;
}

std::vector<std::string> sandbox_cgroups(const std::string& parent) {
  std::vector<std::string> out;
  for (const char* h : {"cpu", "memory", "pids", "freezer", "unified"})
    for (const auto& c : children(std::string("/sys/fs/cgroup/") + h + "/" + parent))
      if (fs::is_directory(std::string("/sys/fs/cgroup/") + h + "/" + parent + "/" + c))
        out.push_back(std::string(h) + "/" + c);
  return out;
}

std::string nft_ruleset() {
  std::string out;
  FILE* p = ::popen("nft list table inet wrenn 2>&1", "r");
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  ::pclose(p);
  return out;
}

Response proxy_http(const AgentProcess& a, const std::string& id, bhttp::verb m,
                    const std::string& target, const std::string& body = "",
                    std::map<std::string, std::string> headers = {}) {
  headers["X-Wrenn-Agent-Token"] = a.token();
  return http_request(a.port(), m, "/proxy/" + id + "/49983" + target, body, headers);
}

pb::SandboxInfo get_sandbox(connect::Client& c, const std::string& id) {
  pb::GetSandboxRequest req;
  req.set_sandbox_id(id);
  pb::GetSandboxResponse resp;
  c.unary(kSvc + "GetSandbox", req, resp);
  return resp.sandbox();
}

}  // namespace

TEST_CASE("create then command then files then pause and resume then destroy leaves nothing") {
  enter_private_netns();
  TempDir dir;
  AgentProcess agent(dir.path(), {"--warm-slots", "0"});
  auto c = agent.client();
  const std::string ruleset_before = nft_ruleset();
  REQUIRE(ruleset_before.find("table inet wrenn") != std::string::npos);

  auto info = create_sandbox(*c, "sb-life");
  CHECK(info.state() == pb::SANDBOX_STATE_RUNNING);
  CHECK(info.runtime() == "ns");
  CHECK(info.template_() == "busybox");
  CHECK(!info.address().empty());

  auto r = run_in_sandbox(agent, "sb-life", "echo hello from $(hostname); id -un");
  CHECK(r.exit_code == 0);
  CHECK(r.output == "hello from sb-life\nroot\n");
  CHECK(run_in_sandbox(agent, "sb-life", "id -un", "wrenn-user").output == "wrenn-user\n");
  // Its name and resolver (the fixture passes --nameserver 192.0.2.53).
  CHECK(run_in_sandbox(agent, "sb-life",
                       "cat /etc/hostname; grep -c sb-life /etc/hosts; cat /etc/resolv.conf")
            .output == "sb-life\n1\nnameserver 192.0.2.53\n");

  // Files through envd's /files, both ways.
  const std::string boundary = "wrennboundary42";
  const std::string body = "--" + boundary +
                           "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"f\"\r\n"
                           "Content-Type: application/octet-stream\r\n\r\nfile contents\n\r\n--" +
                           boundary + "--\r\n";
  auto up = proxy_http(agent, "sb-life", bhttp::verb::post,
                       "/files?path=/home/wrenn-user/note.txt&username=root", body,
                       {{"Content-Type", "multipart/form-data; boundary=" + boundary}});
  CHECK(up.result_int() == 200);
  auto down = proxy_http(agent, "sb-life", bhttp::verb::get,
                         "/files?path=/home/wrenn-user/note.txt&username=root");
  CHECK(down.result_int() == 200);
  CHECK(down.body() == "file contents\n");
  CHECK(run_in_sandbox(agent, "sb-life", "cat /home/wrenn-user/note.txt").output ==
        "file contents\n");
  // The template itself is untouched.
  CHECK_FALSE(fs::exists(busybox_template() + "/home/wrenn-user/note.txt"));

  // Pause: a counting process stops; resume: it continues.
  run_in_sandbox(
      agent, "sb-life",
      "(i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.05; done) >/dev/null 2>&1 &");
  const std::string count_file = dir.path() + "/sandboxes/sb-life/volume/rootfs/tmp/count";
  REQUIRE(eventually([&] { return fs::exists(count_file) && !read_file(count_file).empty(); }));
  pb::PauseSandboxRequest preq;
  preq.set_sandbox_id("sb-life");
  pb::PauseSandboxResponse presp;
  c->unary(kSvc + "PauseSandbox", preq, presp);
  CHECK(presp.sandbox().state() == pb::SANDBOX_STATE_PAUSED);
  CHECK(presp.sandbox().paused_reason() == "api");
  std::this_thread::sleep_for(100ms);
  const std::string frozen = read_file(count_file);
  std::this_thread::sleep_for(500ms);
  CHECK(read_file(count_file) == frozen);
  // A paused sandbox is listed, and the proxy says it is not running.
  auto listed = list_sandboxes(*c);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].state() == pb::SANDBOX_STATE_PAUSED);
  CHECK(proxy_http(agent, "sb-life", bhttp::verb::get, "/health").result_int() == 503);
  // Pausing again is a no-op.
  c->unary(kSvc + "PauseSandbox", preq, presp);
  CHECK(presp.sandbox().state() == pb::SANDBOX_STATE_PAUSED);

  pb::ResumeSandboxRequest rreq;
  rreq.set_sandbox_id("sb-life");
  pb::ResumeSandboxResponse rresp;
  c->unary(kSvc + "ResumeSandbox", rreq, rresp);
  CHECK(rresp.sandbox().state() == pb::SANDBOX_STATE_RUNNING);
  CHECK(eventually([&] { return read_file(count_file) != frozen; }, 2000ms));
  CHECK(run_in_sandbox(agent, "sb-life", "echo still here").output == "still here\n");

  // Metrics are sampled once a second.
  REQUIRE(eventually(
      [&] {
        pb::GetSandboxMetricsRequest mreq;
        mreq.set_sandbox_id("sb-life");
        pb::GetSandboxMetricsResponse mresp;
        c->unary(kSvc + "GetSandboxMetrics", mreq, mresp);
        return mresp.points_size() >= 2 &&
               mresp.points(mresp.points_size() - 1).memory_bytes() > 0 &&
               mresp.points(mresp.points_size() - 1).disk_bytes() > 0;
      },
      5000ms));

  const std::uint32_t slot_links_before = static_cast<std::uint32_t>(links().size());
  CHECK(slot_links_before >= 2);  // lo + the sandbox's wv link
  destroy_sandbox(*c, "sb-life");
  CHECK(list_sandboxes(*c).empty());
  CHECK(error_code_of([&] { get_sandbox(*c, "sb-life"); }) == Code::kNotFound);
  // Destroying again (or something that never existed) succeeds.
  destroy_sandbox(*c, "sb-life");
  destroy_sandbox(*c, "never-was");

  // Nothing left: links, network namespaces, mounts, cgroups, state, nft rules.
  CHECK(eventually([&] { return links() == std::set<std::string>{"lo"}; }));
  CHECK(eventually([&] { return children(dir.path() + "/netns").empty(); }));
  // Only the ready disks the agent keeps for the next creates remain mounted.
  CHECK(mounts_below(dir.path() + "/sandboxes").empty());
  CHECK(mounts_below(dir.path() + "/netns").size() <= 16);  // warm network slots
  CHECK(sandbox_cgroups(agent.cgroup_parent()).empty());
  CHECK(children(dir.path() + "/sandboxes").empty());
  CHECK(nft_ruleset() == ruleset_before);
}

TEST_CASE("the API needs the agent token and calls are idempotent by id and serialised") {
  enter_private_netns();
  TempDir dir;
  AgentProcess agent(dir.path());
  {
    connect::Client anon("127.0.0.1", agent.port());
    CHECK(error_code_of([&] { list_sandboxes(anon); }) == Code::kUnauthenticated);
    anon.default_headers()["Authorization"] = "Bearer not-the-token";
    CHECK(error_code_of([&] { list_sandboxes(anon); }) == Code::kUnauthenticated);
    auto res = http_request(agent.port(), bhttp::verb::get, "/proxy/x/49983/health");
    CHECK(res.result_int() == 401);
    CHECK(http_request(agent.port(), bhttp::verb::get, "/health").result_int() == 200);
  }
  auto c = agent.client();
  // Two concurrent creates of one id: one sandbox, both answers describe it.
  auto f1 =
      std::async(std::launch::async, [&] { return create_sandbox(*agent.client(), "sb-same"); });
  auto f2 =
      std::async(std::launch::async, [&] { return create_sandbox(*agent.client(), "sb-same"); });
  auto a = f1.get(), b = f2.get();
  CHECK(a.sandbox_id() == "sb-same");
  CHECK(a.address() == b.address());
  CHECK(a.created_at_unix() == b.created_at_unix());
  CHECK(list_sandboxes(*c).size() == 1);
  // A repeat after the fact returns the same sandbox too.
  CHECK(create_sandbox(*c, "sb-same").address() == a.address());

  // Bad input gets a clear error naming what is wrong.
  pb::CreateSandboxRequest bad;
  bad.set_sandbox_id("Bad Id");
  bad.set_template_("busybox");
  pb::CreateSandboxResponse resp;
  try {
    c->unary(kSvc + "CreateSandbox", bad, resp);
    FAIL("accepted a bad id");
  } catch (const Error& e) {
    CHECK(e.code() == Code::kInvalidArgument);
    CHECK(std::string(e.what()).find("sandbox_id") != std::string::npos);
  }
  bad.set_sandbox_id("sb-x");
  bad.set_template_("no-such-template");
  CHECK(error_code_of([&] { c->unary(kSvc + "CreateSandbox", bad, resp); }) == Code::kNotFound);
  bad.set_template_("../../etc");
  CHECK(error_code_of([&] { c->unary(kSvc + "CreateSandbox", bad, resp); }) ==
        Code::kInvalidArgument);
  bad.set_template_("busybox");
  bad.set_memory_mb(1);
  CHECK(error_code_of([&] { c->unary(kSvc + "CreateSandbox", bad, resp); }) ==
        Code::kInvalidArgument);
  // A default user that does not exist in the template fails the create, leaving nothing.
  bad.set_memory_mb(128);
  bad.set_default_user("ghost");
  CHECK(error_code_of([&] { c->unary(kSvc + "CreateSandbox", bad, resp); }) ==
        Code::kInvalidArgument);
  CHECK(list_sandboxes(*c).size() == 1);
  CHECK_FALSE(fs::exists(dir.path() + "/sandboxes/sb-x"));

  pb::PauseSandboxRequest p;
  p.set_sandbox_id("nope");
  pb::PauseSandboxResponse pr;
  CHECK(error_code_of([&] { c->unary(kSvc + "PauseSandbox", p, pr); }) == Code::kNotFound);

  pb::HostInfoResponse host;
  c->unary(kSvc + "HostInfo", pb::HostInfoRequest{}, host);
  CHECK(host.cpus() >= 1);
  CHECK(host.memory_bytes() > 0);
  CHECK(host.runtimes_size() >= 1);
  CHECK(host.runtimes(0) == "ns");
  CHECK(host.sandboxes() == 1);
  CHECK(host.slots_in_use() == 1);
  CHECK(std::find(host.templates().begin(), host.templates().end(), "busybox") !=
        host.templates().end());
  CHECK(!host.kernel().empty());
}

TEST_CASE("defaults from create apply to commands and timeouts pause or destroy") {
  enter_private_netns();
  TempDir dir;
  AgentProcess agent(dir.path());
  auto c = agent.client();
  pb::CreateSandboxRequest req;
  req.set_sandbox_id("sb-defaults");
  req.set_template_("busybox");
  req.set_memory_mb(128);
  req.set_default_user("wrenn-user");
  req.set_default_workdir("/tmp");
  (*req.mutable_env())["GREETING"] = "hi there";
  req.set_timeout_sec(2);
  pb::CreateSandboxResponse resp;
  c->unary(kSvc + "CreateSandbox", req, resp);
  CHECK(resp.sandbox().timeout_sec() == 2);
  // No explicit user: the default one, its cwd and env.
  connect::Client envd("127.0.0.1", agent.port());
  envd.default_headers()["X-Wrenn-Agent-Token"] = agent.token();
  process::StartRequest start;
  start.mutable_process()->set_cmd("/bin/sh");
  start.mutable_process()->add_args("-c");
  start.mutable_process()->add_args("echo $(id -un) $PWD $GREETING");
  auto s = envd.server_stream("/proxy/sb-defaults/49983/process.Process/Start", start);
  std::string out;
  process::StartResponse ev;
  while (s->next(ev))
    if (ev.event().has_data()) out += ev.event().data().stdout();
  CHECK(out == "wrenn-user /tmp hi there\n");

  // Idle for longer than the timeout: paused (policy pause, the default).
  CHECK(eventually(
      [&] { return get_sandbox(*c, "sb-defaults").state() == pb::SANDBOX_STATE_PAUSED; }, 6000ms));
  CHECK(get_sandbox(*c, "sb-defaults").paused_reason() == "timeout");

  req.set_sandbox_id("sb-doomed");
  req.set_timeout_policy(pb::TIMEOUT_POLICY_DESTROY);
  req.set_timeout_sec(3);
  c->unary(kSvc + "CreateSandbox", req, resp);
  // Activity (pings) keeps it alive past its timeout...
  for (int i = 0; i < 8; ++i) {
    pb::PingSandboxRequest ping;
    ping.set_sandbox_id("sb-doomed");
    pb::PingSandboxResponse pr;
    c->unary(kSvc + "PingSandbox", ping, pr);
    std::this_thread::sleep_for(500ms);
  }
  CHECK(get_sandbox(*c, "sb-doomed").state() == pb::SANDBOX_STATE_RUNNING);
  // ...and without it the sandbox is destroyed.
  CHECK(eventually(
      [&] { return error_code_of([&] { get_sandbox(*c, "sb-doomed"); }) == Code::kNotFound; },
      7000ms));
}
