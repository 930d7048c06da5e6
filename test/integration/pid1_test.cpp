// envd as PID 1 of its own PID namespace: orphans are reaped, SIGTERM is forwarded.
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <thread>

#include "connect/client.h"
#include "envd/process.pb.h"
#include "envd_fixture.h"

using namespace wrenn;

namespace {

// Children of a host pid, from /proc/<pid>/task/*/children.
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (auto& t : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream f(t.path() / "children");
    pid_t c;
    while (f >> c) out.push_back(c);
  }
  return out;
}

char state_of(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(f)), {});
  auto p = all.rfind(')');
  return p == std::string::npos || p + 2 >= all.size() ? '?' : all[p + 2];
}

void run(unsigned short port, const std::string& shell) {
  connect::Client c("127.0.0.1", port);
  process::StartRequest req;
  req.mutable_process()->set_cmd("/bin/sh");
  req.mutable_process()->add_args("-c");
  req.mutable_process()->add_args(shell);
  req.mutable_process()->set_cwd("/tmp");
  auto s = c.server_stream("/process.Process/Start", req);
  process::StartResponse r;
  while (s->next(r)) {
  }
}

}  // namespace

TEST_CASE("as PID 1, envd reaps orphans and forwards SIGTERM to every process") {
  test::EnvdProcess envd({"unshare", "--pid", "--fork", "--kill-child", "--"}, {});
  auto kids = children_of(envd.pid());
  REQUIRE(kids.size() == 1);
  pid_t envd_host_pid = kids[0];

  // Orphans: the shell exits at once, leaving background children that exit later.
  run(envd.port(), "for i in 1 2 3 4 5; do (sleep 0.2) & done; exit 0");
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  // The orphans were adopted by envd and reaped: no children (zombie or alive) remain.
  auto left = children_of(envd_host_pid);
  for (pid_t c : left) INFO("child " << c << " state " << state_of(c));
  CHECK(left.empty());

  // SIGTERM to PID 1 reaches a long-running process, which gets to clean up.
  test::TempDir dir;
  std::thread bg([&] {
    try {
      run(envd.port(), "trap 'echo got-term > " + dir.path() + "/marker; exit 0' TERM; sleep 100 & wait");
    } catch (...) {
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ::kill(envd_host_pid, SIGTERM);
  bg.join();
  for (int i = 0; i < 50 && test::read_file(dir.path() + "/marker").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(test::read_file(dir.path() + "/marker") == "got-term\n");
}
