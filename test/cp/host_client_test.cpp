// The control plane's host client (src/cp/hosts) end to end: a real wrenn-agent in the
// test's own network namespace with real busybox sandboxes, driven only through
// wrenn::cp::HostClient — plus a scripted fake agent for what a healthy agent never does
// (drop a kept-alive connection, hang, answer oddly).
#include "hosts/host_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <thread>

#include "agent_fixture.h"

using namespace wrenn;
using namespace wrenn::test;
using namespace std::chrono_literals;
namespace pb = wrenn::agent::v1;
using cp::ExecRequest;
using cp::FileType;
using cp::HostClient;
using cp::HostEndpoint;

namespace {

template <class F>
bool eventually(F pred, std::chrono::milliseconds budget = 5000ms) {
  auto deadline = std::chrono::steady_clock::now() + budget;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return pred();
}

std::string error_message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

pb::CreateSandboxRequest sandbox_request(const std::string& id) {
  pb::CreateSandboxRequest req;
  req.set_sandbox_id(id);
  req.set_template_("busybox");
  req.set_memory_mb(256);
  req.set_disk_mb(512);
  return req;
}

ExecRequest shell(const std::string& script, std::chrono::milliseconds timeout = 20s) {
  ExecRequest r;
  r.cmd = "/bin/sh";
  r.args = {"-c", script};
  r.timeout = timeout;
  return r;
}

// An agent in this test's own network namespace, one running sandbox, and a client.
struct AgentWithSandbox {
  // The namespace is entered before the agent starts (hence the comma expression).
  explicit AgentWithSandbox(const std::string& sandbox_id)
      : agent((enter_private_netns(), dir.path()), {"--warm-slots", "0"}),
        client(HostEndpoint{"127.0.0.1", agent.port(), agent.token()}),
        id(sandbox_id) {
    auto info = client.create_sandbox(sandbox_request(id), 60s);
    REQUIRE(info.state() == pb::SANDBOX_STATE_RUNNING);
  }
  TempDir dir;
  AgentProcess agent;
  HostClient client;
  std::string id;
};

// FNV-1a over a byte stream.
struct Fnv {
  std::uint64_t h = 1469598103934665603ull;
  void add(std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ull;
    }
  }
};

// Memory of this process in bytes, from /proc/self/status ("VmRSS", "VmHWM").
std::size_t proc_status_bytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stoull(line.substr(field.size() + 1)) * 1024;
  return 0;
}

}  // namespace

TEST_CASE("host_client agent API: create get list ping pause resume metrics destroy") {
  enter_private_netns();
  TempDir dir;
  AgentProcess agent(dir.path(), {"--warm-slots", "0"});
  HostClient c(HostEndpoint{"127.0.0.1", agent.port(), agent.token()});

  auto host = c.host_info(10s);
  CHECK(host.cpus() > 0);
  CHECK(host.memory_bytes() > 0);
  CHECK(!host.agent_version().empty());
  CHECK(std::find(host.templates().begin(), host.templates().end(), "busybox") !=
        host.templates().end());
  CHECK(host.sandboxes() == 0);

  auto req = sandbox_request("hc-life");
  (*req.mutable_metadata())["team"] = "t-1";
  auto info = c.create_sandbox(req, 60s);
  CHECK(info.sandbox_id() == "hc-life");
  CHECK(info.state() == pb::SANDBOX_STATE_RUNNING);
  CHECK(info.template_() == "busybox");
  CHECK(info.memory_mb() == 256);
  CHECK(info.metadata().at("team") == "t-1");
  CHECK(!info.address().empty());
  // Idempotent by id: the same sandbox again.
  CHECK(c.create_sandbox(req, 60s).created_at_unix() == info.created_at_unix());

  CHECK(c.get_sandbox("hc-life", 5s).state() == pb::SANDBOX_STATE_RUNNING);
  auto listed = c.list_sandboxes(5s);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].sandbox_id() == "hc-life");
  c.ping_sandbox("hc-life", 5s);
  CHECK(c.exec("hc-life", shell("echo up")).stdout_data == "up\n");
  CHECK(c.stat("hc-life", "/tmp", 5s).type == FileType::kDirectory);
  // Sequential calls share one kept-alive connection, proxied envd calls included. (The
  // agent closes a connection after an error answer, so this is checked before any.)
  CHECK(c.connections_opened() == 1);
  CHECK(c.idle_connections() == 1);

  auto paused = c.pause_sandbox("hc-life", 30s);
  CHECK(paused.state() == pb::SANDBOX_STATE_PAUSED);
  CHECK(paused.paused_reason() == "api");
  CHECK(c.get_sandbox("hc-life", 5s).state() == pb::SANDBOX_STATE_PAUSED);
  // envd of a paused sandbox: the agent's proxy says it is not running.
  CHECK(error_code_of([&] { c.exec("hc-life", shell("true")); }) == Code::kFailedPrecondition);
  CHECK(error_code_of([&] { c.stat("hc-life", "/tmp", 5s); }) == Code::kFailedPrecondition);

  auto resumed = c.resume_sandbox("hc-life", 0, 30s);
  CHECK(resumed.state() == pb::SANDBOX_STATE_RUNNING);
  CHECK(resumed.paused_reason().empty());
  CHECK(c.exec("hc-life", shell("echo back")).stdout_data == "back\n");

  CHECK(eventually([&] { return !c.sandbox_metrics("hc-life", "5m", 5s).empty(); }, 5000ms));
  CHECK(c.host_info(5s).sandboxes() == 1);

  // Unknown sandboxes: the agent's not_found, for its API and for envd behind the proxy.
  CHECK(error_code_of([&] { c.get_sandbox("no-such", 5s); }) == Code::kNotFound);
  CHECK(error_code_of([&] { c.pause_sandbox("no-such", 5s); }) == Code::kNotFound);
  CHECK(error_code_of([&] { c.exec("no-such", shell("true")); }) == Code::kNotFound);
  // Ids are checked before anything is sent (they become part of a URL path).
  CHECK(error_code_of([&] { c.get_sandbox("../etc", 5s); }) == Code::kInvalidArgument);
  CHECK(error_code_of([&] {
          c.read_file(
              "Bad_Id", "/x", [](std::string_view) {}, 5s);
        }) == Code::kInvalidArgument);

  c.destroy_sandbox("hc-life", 30s);
  CHECK(c.list_sandboxes(5s).empty());
  CHECK(error_code_of([&] { c.get_sandbox("hc-life", 5s); }) == Code::kNotFound);
  c.destroy_sandbox("hc-life", 30s);  // idempotent

  // A wrong token: unauthenticated, for the API and for the proxy alike.
  HostClient wrong(HostEndpoint{"127.0.0.1", agent.port(), "not-the-token"});
  CHECK(error_code_of([&] { wrong.list_sandboxes(5s); }) == Code::kUnauthenticated);
  CHECK(error_code_of([&] { wrong.host_info(5s); }) == Code::kUnauthenticated);
  CHECK(error_code_of([&] { wrong.exec("hc-life", shell("true")); }) == Code::kUnauthenticated);
  CHECK(error_code_of([&] { wrong.stat("hc-life", "/", 5s); }) == Code::kUnauthenticated);
}

TEST_CASE("host_client exec: output envs cwd user exit code timeout output cap concurrency") {
  AgentWithSandbox s("hc-exec");
  auto& c = s.client;

  auto req = shell("echo $FOO; pwd; echo err >&2; exit 3");
  req.envs = {{"FOO", "bar baz"}};
  req.cwd = "/tmp";
  auto r = c.exec(s.id, req);
  CHECK(r.stdout_data == "bar baz\n/tmp\n");
  CHECK(r.stderr_data == "err\n");
  CHECK(r.exit_code == 3);
  CHECK(r.status == "exit status: 3");
  CHECK_FALSE(r.stdout_truncated);
  CHECK_FALSE(r.stderr_truncated);
  CHECK(r.duration.count() >= 0);
  CHECK(r.duration < 10s);

  // The default user is root (home /root); another user by name.
  CHECK(c.exec(s.id, shell("id -un; pwd")).stdout_data == "root\n/root\n");
  auto as_user = shell("id -un; pwd");
  as_user.user = "wrenn-user";
  CHECK(c.exec(s.id, as_user).stdout_data == "wrenn-user\n/home/wrenn-user\n");
  as_user.user = "nobody-here";
  CHECK(error_code_of([&] { c.exec(s.id, as_user); }) == Code::kUnauthenticated);

  // Not a shell: cmd is argv[0] and args are passed as they are.
  ExecRequest direct;
  direct.cmd = "echo";
  direct.args = {"a  b", "$HOME"};
  direct.timeout = 10s;
  CHECK(c.exec(s.id, direct).stdout_data == "a  b $HOME\n");
  direct.cmd = "no-such-command";
  CHECK(error_code_of([&] { c.exec(s.id, direct); }) == Code::kInvalidArgument);
  direct.cwd = "/no/such/dir";
  direct.cmd = "true";
  CHECK(error_code_of([&] { c.exec(s.id, direct); }) == Code::kInvalidArgument);

  SECTION("a command past its timeout is killed and reported as deadline_exceeded") {
    auto t0 = std::chrono::steady_clock::now();
    auto slow = shell("echo started; exec sleep 30", 1000ms);
    CHECK(error_code_of([&] { c.exec(s.id, slow); }) == Code::kDeadlineExceeded);
    CHECK(seconds_since(t0) < 4.0);
    // Killed, not left running: envd no longer tracks it, and no sleep is left.
    CHECK(eventually([&] {
      auto ps = c.list_processes(s.id, 5s);
      return std::none_of(ps.begin(), ps.end(), [](const auto& p) { return p.cmd == "/bin/sh"; });
    }));
    CHECK(c.exec(s.id, shell("ps -o comm | grep -c '^sleep$' || true")).stdout_data == "0\n");
  }

  SECTION("output beyond max_output_bytes is dropped and flagged, the command completes") {
    auto big = shell("head -c 3000000 /dev/zero; echo small >&2; echo done > /tmp/cap-done");
    big.max_output_bytes = 1 << 20;
    auto res = c.exec(s.id, big);
    CHECK(res.exit_code == 0);
    CHECK(res.stdout_data.size() == (1u << 20));
    CHECK(res.stdout_truncated);
    CHECK(res.stderr_data == "small\n");
    CHECK_FALSE(res.stderr_truncated);
    CHECK(c.exec(s.id, shell("cat /tmp/cap-done")).stdout_data == "done\n");
  }

  SECTION("background processes: start with a tag, list, kill by tag and by pid") {
    ExecRequest bg = shell("echo $MODE > /tmp/bg-mode; exec sleep 300", 10s);
    bg.envs = {{"MODE", "background"}};
    bg.cwd = "/tmp";
    auto t0 = std::chrono::steady_clock::now();
    std::uint32_t pid = c.start_background(s.id, bg, "bg-one");
    CHECK(pid > 0);
    CHECK(seconds_since(t0) < 5.0);  // returns once started, not when the process ends
    std::uint32_t pid2 = c.start_background(s.id, shell("exec sleep 300", 10s), "");
    CHECK(pid2 != pid);

    auto ps = c.list_processes(s.id, 5s);
    auto it = std::find_if(ps.begin(), ps.end(), [&](const auto& p) { return p.pid == pid; });
    REQUIRE(it != ps.end());
    CHECK(it->tag == "bg-one");
    CHECK(it->cmd == "/bin/sh");
    CHECK(it->args == std::vector<std::string>{"-c", "echo $MODE > /tmp/bg-mode; exec sleep 300"});
    CHECK(it->cwd == "/tmp");
    auto it2 = std::find_if(ps.begin(), ps.end(), [&](const auto& p) { return p.pid == pid2; });
    REQUIRE(it2 != ps.end());
    CHECK(it2->tag.empty());
    CHECK(eventually([&] {
      return c.exec(s.id, shell("cat /tmp/bg-mode 2>/dev/null")).stdout_data == "background\n";
    }));

    c.kill(s.id, std::string("bg-one"), cp::Signal::kKill, 5s);
    CHECK(eventually([&] {
      auto now = c.list_processes(s.id, 5s);
      return std::none_of(now.begin(), now.end(), [&](const auto& p) { return p.pid == pid; });
    }));
    c.kill(s.id, pid2, cp::Signal::kTerm, 5s);
    CHECK(eventually([&] { return c.list_processes(s.id, 5s).empty(); }));
    CHECK(error_code_of([&] { c.kill(s.id, std::string("bg-one"), cp::Signal::kKill, 5s); }) ==
          Code::kNotFound);
    CHECK(error_code_of([&] { c.kill(s.id, 999999u, cp::Signal::kKill, 5s); }) == Code::kNotFound);
  }

  SECTION("8 concurrent execs from 8 threads all succeed, in parallel") {
    constexpr int kThreads = 8;
    std::vector<std::string> out(kThreads);
    std::vector<int> codes(kThreads, -99);
    std::vector<std::string> errors(kThreads);
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
      threads.emplace_back([&, i] {
        try {
          auto q = shell("sleep 0.5; echo $N", 15s);
          q.envs = {{"N", std::to_string(i)}};
          auto res = c.exec(s.id, q);
          out[i] = res.stdout_data;
          codes[i] = res.exit_code;
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    const double elapsed = seconds_since(t0);
    for (int i = 0; i < kThreads; ++i) {
      INFO("thread " << i << ": " << errors[i]);
      CHECK(errors[i].empty());
      CHECK(codes[i] == 0);
      CHECK(out[i] == std::to_string(i) + "\n");
    }
    // Serialised they would take at least 8 x 0.5 s.
    CHECK(elapsed < 3.5);
    CHECK(c.connections_opened() >= 2);
    CHECK(c.idle_connections() <= 16);
  }
}

TEST_CASE(
    "host_client files: 64 MiB streamed both ways in bounded memory and errors and directories") {
  AgentWithSandbox s("hc-files");
  auto& c = s.client;

  SECTION("a 64 MiB file goes up and comes back intact without buffering it") {
    constexpr std::size_t kSize = 64u << 20;
    constexpr std::size_t kPiece = 256u << 10;
    // Drop the high-water mark so VmHWM measures this transfer only.
    { std::ofstream("/proc/self/clear_refs") << "5"; }
    const std::size_t rss_before = proc_status_bytes("VmRSS");

    Fnv sent;
    std::uint64_t state = 0x9e3779b97f4a7c15ull;
    std::size_t produced = 0;
    auto source = [&]() -> std::string {
      if (produced == kSize) return {};
      std::string piece(kPiece, '\0');
      for (std::size_t i = 0; i < kPiece; i += 8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::memcpy(piece.data() + i, &state, 8);
      }
      produced += kPiece;
      sent.add(piece);
      return piece;
    };
    auto t0 = std::chrono::steady_clock::now();
    CHECK(c.write_file(s.id, "/home/wrenn-user/big/data.bin", source, 60s) == kSize);
    auto st = c.stat(s.id, "/home/wrenn-user/big/data.bin", 5s);
    CHECK(st.type == FileType::kFile);
    CHECK(st.size == static_cast<std::int64_t>(kSize));
    CHECK(st.name == "data.bin");

    Fnv got;
    std::size_t largest_piece = 0;
    auto n = c.read_file(
        s.id, "/home/wrenn-user/big/data.bin",
        [&](std::string_view piece) {
          largest_piece = std::max(largest_piece, piece.size());
          got.add(piece);
        },
        60s);
    const double elapsed = seconds_since(t0);
    CHECK(n == kSize);
    CHECK(got.h == sent.h);
    CHECK(largest_piece <= (64u << 10));
    const std::size_t peak = proc_status_bytes("VmHWM");
    INFO("RSS before " << rss_before / 1024 << " KiB, peak " << peak / 1024 << " KiB, took "
                       << elapsed << " s");
#ifndef WRENN_SANITIZE_BUILD
    CHECK(peak < rss_before + (32u << 20));
#endif
    c.remove(s.id, "/home/wrenn-user/big", 10s);
    CHECK(error_code_of([&] { c.stat(s.id, "/home/wrenn-user/big", 5s); }) == Code::kNotFound);
  }

  SECTION("small files, empty files, errors") {
    auto from = [](std::string data) {
      return [data, done = false]() mutable -> std::string {
        if (done) return {};
        done = true;
        return data;
      };
    };
    CHECK(c.write_file(s.id, "/tmp/hello.txt", from("hello\n"), 10s) == 6);
    std::string back;
    c.read_file(
        s.id, "/tmp/hello.txt", [&](std::string_view p) { back += p; }, 10s);
    CHECK(back == "hello\n");
    // Replaced whole, and written as the default user (root).
    CHECK(c.write_file(s.id, "/tmp/hello.txt", from("bye"), 10s) == 3);
    CHECK(c.exec(s.id, shell("cat /tmp/hello.txt; stat -c %U /tmp/hello.txt")).stdout_data ==
          "byeroot\n");
    CHECK(c.write_file(
              s.id, "/tmp/empty", [] { return std::string(); }, 10s) == 0);
    CHECK(c.stat(s.id, "/tmp/empty", 5s).size == 0);
    // Relative paths are the user's home; odd characters survive the query string.
    c.write_file(s.id, "odd name+&?=%.txt", from("x"), 10s);
    CHECK(c.stat(s.id, "/root/odd name+&?=%.txt", 5s).type == FileType::kFile);

    CHECK(error_code_of([&] {
            c.read_file(
                s.id, "/tmp/missing", [](std::string_view) {}, 5s);
          }) == Code::kNotFound);
    CHECK(error_code_of([&] {
            c.read_file(
                s.id, "/tmp", [](std::string_view) {}, 5s);
          }) == Code::kInvalidArgument);
    CHECK(error_code_of([&] { c.write_file(s.id, "/tmp", from("x"), 5s); }) ==
          Code::kInvalidArgument);
    // A big upload that envd refuses at once: the answer is noticed between chunks and the
    // rest is not sent.
    std::size_t pulled = 0;
    auto endless = [&]() -> std::string {
      ++pulled;
      return std::string(256 << 10, 'q');
    };
    auto t0 = std::chrono::steady_clock::now();
    CHECK(error_code_of([&] { c.write_file(s.id, "/tmp", endless, 20s); }) ==
          Code::kInvalidArgument);
    INFO("pulled " << pulled << " pieces of 256 KiB");
    CHECK(seconds_since(t0) < 5.0);
    CHECK(error_code_of([&] { c.stat(s.id, "/tmp/missing", 5s); }) == Code::kNotFound);
    CHECK(error_code_of([&] { c.list_dir(s.id, "/tmp/missing", 1, 5s); }) == Code::kNotFound);

    // A sink that throws aborts the transfer; the client stays usable.
    struct Stop {};
    CHECK_THROWS_AS(c.read_file(
                        s.id, "/tmp/hello.txt", [](std::string_view) { throw Stop{}; }, 5s),
                    Stop);
    // A source that throws aborts the upload and leaves the old file as it was.
    CHECK_THROWS_AS(c.write_file(
                        s.id, "/tmp/hello.txt",
                        [n = 0]() mutable -> std::string {
                          if (++n > 3) throw Stop{};
                          return std::string(1000, 'z');
                        },
                        5s),
                    Stop);
    CHECK(
        eventually([&] { return c.exec(s.id, shell("cat /tmp/hello.txt")).stdout_data == "bye"; }));
  }

  SECTION("make_dir, list_dir depth, symlinks, remove") {
    auto d = c.make_dir(s.id, "/tmp/tree/a/b", 5s);
    CHECK(d.type == FileType::kDirectory);
    CHECK(d.name == "b");
    CHECK(d.path == "/tmp/tree/a/b");
    CHECK(d.permissions.front() == 'd');
    CHECK(d.owner == "root");
    CHECK(error_code_of([&] { c.make_dir(s.id, "/tmp/tree/a/b", 5s); }) == Code::kAlreadyExists);
    c.write_file(
        s.id, "/tmp/tree/a/b/deep.txt",
        [done = false]() mutable -> std::string { return std::exchange(done, true) ? "" : "deep"; },
        5s);
    c.exec(s.id, shell("echo top > /tmp/tree/top.txt; ln -s top.txt /tmp/tree/link"));

    auto paths = [&](std::uint32_t depth) {
      std::vector<std::string> out;
      for (const auto& e : c.list_dir(s.id, "/tmp/tree", depth, 5s)) out.push_back(e.path);
      return out;
    };
    using V = std::vector<std::string>;
    CHECK(paths(0) == V{"/tmp/tree/a", "/tmp/tree/link", "/tmp/tree/top.txt"});
    CHECK(paths(1) == V{"/tmp/tree/a", "/tmp/tree/link", "/tmp/tree/top.txt"});
    CHECK(paths(2) == V{"/tmp/tree/a", "/tmp/tree/a/b", "/tmp/tree/link", "/tmp/tree/top.txt"});
    CHECK(paths(3) == V{"/tmp/tree/a", "/tmp/tree/a/b", "/tmp/tree/a/b/deep.txt", "/tmp/tree/link",
                        "/tmp/tree/top.txt"});

    auto entries = c.list_dir(s.id, "/tmp/tree", 1, 5s);
    REQUIRE(entries.size() == 3);
    CHECK(entries[0].type == FileType::kDirectory);
    CHECK(entries[1].type == FileType::kSymlink);
    CHECK(entries[1].symlink_target == std::optional<std::string>("top.txt"));
    CHECK(entries[2].type == FileType::kFile);
    CHECK(entries[2].size == 4);
    CHECK(entries[2].permissions == "-rw-r--r--");
    CHECK(entries[2].mode == 0644);
    CHECK_FALSE(entries[2].symlink_target.has_value());
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
    CHECK(std::abs(entries[2].modified_at - now) < 60);
    CHECK(cp::file_type_name(entries[1].type) == "symlink");

    c.remove(s.id, "/tmp/tree/a", 5s);
    CHECK(error_code_of([&] { c.stat(s.id, "/tmp/tree/a/b/deep.txt", 5s); }) == Code::kNotFound);
    CHECK(paths(3) == V{"/tmp/tree/link", "/tmp/tree/top.txt"});
  }
}

TEST_CASE("host_client unreachable host is unavailable and named by its address") {
  enter_private_netns();
  // Nothing listens on this port (bound, then closed).
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  const auto port = ntohs(sa.sin_port);
  ::close(fd);

  HostClient closed(HostEndpoint{"127.0.0.1", port, "t"});
  auto t0 = std::chrono::steady_clock::now();
  CHECK(error_code_of([&] { closed.list_sandboxes(5s); }) == Code::kUnavailable);
  CHECK_THAT(error_message_of([&] { closed.host_info(5s); }),
             Catch::Contains("127.0.0.1:" + std::to_string(port)));
  CHECK(error_code_of([&] { closed.exec("sb", shell("true")); }) == Code::kUnavailable);
  CHECK(seconds_since(t0) < 2.0);

  // No route at all (this namespace has only lo).
  HostClient nowhere(HostEndpoint{"192.0.2.1", 9000, "t"});
  auto msg = error_message_of([&] { nowhere.get_sandbox("sb", 2s); });
  CHECK_THAT(msg, Catch::Contains("192.0.2.1:9000"));
  CHECK(error_code_of([&] { nowhere.get_sandbox("sb", 2s); }) == Code::kUnavailable);
  CHECK(closed.connections_opened() == 0);
}

namespace {

// A scripted stand-in for an agent: answers every request with an empty protobuf (valid
// for HostInfo, Stat-less calls and so on) unless told otherwise, over keep-alive
// connections, on a poll loop in its own thread.
class FakeAgent {
 public:
  enum class Mode {
    kAnswer,
    kDropNextRequest,
    kCloseAfterAnswer,
    kHang,
    kNotFoundJson,
    kBadGateway
  };

  FakeAgent() {
    listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listener_, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
    socklen_t len = sizeof sa;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&sa), &len);
    port_ = ntohs(sa.sin_port);
    ::listen(listener_, 16);
    thread_ = std::thread([this] { loop(); });
  }
  ~FakeAgent() {
    stop_ = true;
    thread_.join();
    for (auto& c : conns_) ::close(c.fd);
    ::close(listener_);
  }
  std::uint16_t port() const { return port_; }
  void mode(Mode m) { mode_ = m; }
  int accepted() const { return accepted_; }
  int requests() const { return requests_; }

 private:
  struct Conn {
    int fd;
    std::string in;
  };

  void loop() {
    while (!stop_) {
      std::vector<pollfd> fds{{listener_, POLLIN, 0}};
      for (auto& c : conns_) fds.push_back({c.fd, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), 20) <= 0) continue;
      if (fds[0].revents & POLLIN) {
        int fd = ::accept4(listener_, nullptr, nullptr, SOCK_CLOEXEC);
        if (fd >= 0) {
          conns_.push_back({fd, {}});
          ++accepted_;
        }
      }
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        auto& c = conns_[i - 1];
        char buf[65536];
        ssize_t n = ::read(c.fd, buf, sizeof buf);
        if (n <= 0) {
          ::close(c.fd);
          c.fd = -1;
          continue;
        }
        c.in.append(buf, static_cast<std::size_t>(n));
        while (c.fd >= 0 && complete_request(c.in)) serve(c);
      }
      conns_.erase(std::remove_if(conns_.begin(), conns_.end(), [](auto& c) { return c.fd < 0; }),
                   conns_.end());
    }
  }

  // Consumes one whole request (header + Content-Length body) from in when there is one.
  static bool complete_request(std::string& in) {
    auto end = in.find("\r\n\r\n");
    if (end == std::string::npos) return false;
    std::string head = in.substr(0, end);
    std::transform(head.begin(), head.end(), head.begin(), ::tolower);
    std::size_t body = 0;
    if (auto p = head.find("content-length:"); p != std::string::npos)
      body = std::stoul(head.substr(p + 15));
    if (in.size() < end + 4 + body) return false;
    in.erase(0, end + 4 + body);
    return true;
  }

  void serve(Conn& c) {
    ++requests_;
    auto send = [&](const std::string& s) { (void)!::write(c.fd, s.data(), s.size()); };
    switch (mode_.load()) {
      case Mode::kDropNextRequest:
        mode_ = Mode::kAnswer;
        ::close(c.fd);
        c.fd = -1;
        return;
      case Mode::kHang:
        return;
      case Mode::kNotFoundJson: {
        std::string body = "{\"code\":404,\"message\":\"path '/nope' does not exist\"}";
        send("HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: " +
             std::to_string(body.size()) + "\r\n\r\n" + body);
        return;
      }
      case Mode::kBadGateway:
        send("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 7\r\n\r\nupstrea");
        return;
      default:
        break;
    }
    send("HTTP/1.1 200 OK\r\nContent-Type: application/proto\r\nContent-Length: 0\r\n\r\n");
    if (mode_ == Mode::kCloseAfterAnswer) {
      mode_ = Mode::kAnswer;
      ::close(c.fd);
      c.fd = -1;
    }
  }

  int listener_ = -1;
  std::uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<Mode> mode_{Mode::kAnswer};
  std::atomic<int> accepted_{0};
  std::atomic<int> requests_{0};
  std::vector<Conn> conns_;
};

}  // namespace

TEST_CASE("host_client keep-alive reuse and one retry of a stale connection for idempotent calls") {
  enter_private_netns();
  FakeAgent fake;
  HostClient c(HostEndpoint{"127.0.0.1", fake.port(), "t"});

  for (int i = 0; i < 5; ++i) c.host_info(5s);
  CHECK(fake.accepted() == 1);
  CHECK(fake.requests() == 5);
  CHECK(c.connections_opened() == 1);
  CHECK(c.idle_connections() == 1);

  // The server drops the kept-alive connection as the request arrives: an idempotent call
  // goes again on a new connection and succeeds.
  fake.mode(FakeAgent::Mode::kDropNextRequest);
  c.list_sandboxes(5s);
  CHECK(fake.accepted() == 2);
  CHECK(fake.requests() == 7);
  CHECK(c.connections_opened() == 2);

  // The same for a call that must not run twice: an error, and it was sent once.
  fake.mode(FakeAgent::Mode::kDropNextRequest);
  CHECK(error_code_of([&] { c.make_dir("sb", "/x", 5s); }) == Code::kUnavailable);
  CHECK(fake.requests() == 8);

  // A connection the server closed after answering is noticed before reuse (no failure,
  // no retry needed).
  c.host_info(5s);
  fake.mode(FakeAgent::Mode::kCloseAfterAnswer);
  c.host_info(5s);
  std::this_thread::sleep_for(50ms);
  const int before = fake.requests();
  c.make_dir("sb", "/x", 5s);  // not idempotent, yet fine: it went on a fresh connection
  CHECK(fake.requests() == before + 1);

  // Error bodies: envd's numeric {"code":404}, a bare 502.
  fake.mode(FakeAgent::Mode::kNotFoundJson);
  CHECK(error_code_of([&] {
          c.read_file(
              "sb", "/nope", [](std::string_view) {}, 5s);
        }) == Code::kNotFound);
  CHECK(error_message_of([&] { c.stat("sb", "/nope", 5s); }) == "path '/nope' does not exist");
  fake.mode(FakeAgent::Mode::kBadGateway);
  CHECK(error_code_of([&] { c.host_info(5s); }) == Code::kUnavailable);

  // A server that never answers: the call's own timeout, not a hidden one.
  fake.mode(FakeAgent::Mode::kHang);
  auto t0 = std::chrono::steady_clock::now();
  CHECK(error_code_of([&] { c.host_info(300ms); }) == Code::kDeadlineExceeded);
  const double took = seconds_since(t0);
  CHECK(took >= 0.29);
  CHECK(took < 1.5);
  // exec hands its timeout to envd, which answers when it kills the command; should that
  // answer not come, the client gives up a little later (2 s) on its own.
  t0 = std::chrono::steady_clock::now();
  CHECK(error_code_of([&] { c.exec("sb", shell("sleep 60", 300ms)); }) == Code::kDeadlineExceeded);
  CHECK(seconds_since(t0) < 3.5);
  // A hung call is not retried, and its connection is not reused.
  fake.mode(FakeAgent::Mode::kAnswer);
  c.host_info(5s);

  CHECK(error_code_of([&] { c.host_info(0ms); }) == Code::kInvalidArgument);
}

TEST_CASE("host_client process streams: start_stream attach pty input resize and cancel") {
  AgentWithSandbox s("hc-stream");
  auto& c = s.client;
  using Kind = cp::ProcessEvent::Kind;
  // Events gathered by a sink, readable from the test thread while the stream runs.
  struct Events {
    std::mutex mu;
    std::vector<cp::ProcessEvent> list;
    void add(cp::ProcessEvent&& e) {
      std::lock_guard lk(mu);
      list.push_back(std::move(e));
    }
    std::string text(Kind k) {
      std::lock_guard lk(mu);
      std::string out;
      for (const auto& e : list)
        if (e.kind == k) out += e.data;
      return out;
    }
    std::optional<std::uint32_t> pid() {
      std::lock_guard lk(mu);
      for (const auto& e : list)
        if (e.kind == Kind::kStart) return e.pid;
      return std::nullopt;
    }
  };

  SECTION("start_stream delivers start output and end in order with no time limit") {
    Events ev;
    cp::StreamCancel cancel;
    auto req = shell("echo out; echo err >&2; exit 3", 1ms);  // req.timeout does not apply
    auto end = c.start_stream(
        s.id, req, "", std::nullopt, [&](cp::ProcessEvent&& e) { ev.add(std::move(e)); }, cancel);
    CHECK(end == cp::StreamEnd::kEnded);
    REQUIRE(ev.list.size() == 4);
    CHECK(ev.list[0].kind == Kind::kStart);
    CHECK(ev.list[0].pid > 0);
    // Separate pipes: stdout and stderr may arrive in either order.
    const auto& o = ev.list[1].kind == Kind::kStdout ? ev.list[1] : ev.list[2];
    const auto& e = ev.list[1].kind == Kind::kStdout ? ev.list[2] : ev.list[1];
    CHECK(o.kind == Kind::kStdout);
    CHECK(o.data == "out\n");
    CHECK(e.kind == Kind::kStderr);
    CHECK(e.data == "err\n");
    CHECK(ev.list[3].kind == Kind::kEnd);
    CHECK(ev.list[3].exit_code == 3);
    // An unknown command: envd's error (invalid_argument "executable … not found"), thrown.
    CHECK(error_code_of([&] {
            ExecRequest bad;
            bad.cmd = "/no/such/binary";
            c.start_stream(
                s.id, bad, "", std::nullopt, [](cp::ProcessEvent&&) {}, cancel);
          }) == Code::kInvalidArgument);
    // Cancelled before it starts: nothing is sent.
    cp::StreamCancel cancelled;
    cancelled.cancel();
    CHECK(c.start_stream(
              s.id, shell("touch /tmp/never"), "", std::nullopt, [](cp::ProcessEvent&&) {},
              cancelled) == cp::StreamEnd::kCancelled);
    CHECK(c.exec(s.id, shell("test -e /tmp/never || echo absent")).stdout_data == "absent\n");
  }

  SECTION("attach sees later output and cancel leaves the process running") {
    const std::uint32_t pid =
        c.start_background(s.id, shell("sleep 0.5; echo late; exec sleep 300"), "hc-att");
    Events ev;
    cp::StreamCancel cancel;
    std::atomic<bool> done{false};
    std::optional<cp::StreamEnd> end;
    std::thread t([&] {
      end = c.attach(
          s.id, std::string("hc-att"), [&](cp::ProcessEvent&& e) { ev.add(std::move(e)); }, cancel);
      done = true;
    });
    CHECK(eventually([&] { return ev.text(Kind::kStdout) == "late\n"; }));
    CHECK(ev.pid() == pid);
    const auto t0 = std::chrono::steady_clock::now();
    cancel.cancel();
    CHECK(eventually([&] { return done.load(); }, 3000ms));
    t.join();
    CHECK(seconds_since(t0) < 2.5);  // noticed within kStreamPoll
    CHECK(end == cp::StreamEnd::kCancelled);
    auto procs = c.list_processes(s.id, 5s);
    CHECK(std::any_of(procs.begin(), procs.end(), [&](const auto& p) { return p.pid == pid; }));
    c.kill(s.id, pid, cp::Signal::kKill, 5s);
    cp::StreamCancel fresh;
    CHECK(error_code_of([&] {
            c.attach(
                s.id, std::string("no-such-tag"), [](cp::ProcessEvent&&) {}, fresh);
          }) == Code::kNotFound);
  }

  SECTION("a pty process takes input and resizes") {
    Events ev;
    cp::StreamCancel cancel;
    std::optional<cp::StreamEnd> end;
    ExecRequest sh;
    sh.cmd = "/bin/sh";
    std::thread t([&] {
      end = c.start_stream(
          s.id, sh, "hc-pty", cp::PtySize{80, 24},
          [&](cp::ProcessEvent&& e) { ev.add(std::move(e)); }, cancel);
    });
    REQUIRE(eventually([&] { return ev.pid().has_value(); }));
    c.resize_pty(s.id, std::string("hc-pty"), cp::PtySize{100, 40}, 5s);
    c.send_input(s.id, std::string("hc-pty"), "stty size; exit 7\n", cp::InputTarget::kPty, 5s);
    t.join();
    CHECK(end == cp::StreamEnd::kEnded);
    CHECK(ev.text(Kind::kPty).find("40 100") != std::string::npos);
    CHECK(ev.text(Kind::kStdout).empty());
    REQUIRE(!ev.list.empty());
    CHECK(ev.list.back().kind == Kind::kEnd);
    CHECK(ev.list.back().exit_code == 7);
    CHECK(error_code_of([&] {
            c.resize_pty(s.id, std::string("hc-pty"), cp::PtySize{0, 10}, 5s);
          }) == Code::kInvalidArgument);
  }
}
