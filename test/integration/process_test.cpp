// process.Process against the real envd over real sockets, both codecs.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <random>
#include <thread>

#include "connect/client.h"
#include "envd/process.pb.h"
#include "envd_fixture.h"
#include "error.h"

using namespace wrenn;
using connect::Client;
using connect::Codec;
using test::error_code_of;

namespace {

struct RunResult {
  std::uint32_t pid = 0;
  std::string out, err, pty;
  int exit_code = -100;
  bool exited = false;
  std::string status;
  int keepalives = 0;
  bool start_first = false;
  bool saw_end = false;
};

process::StartRequest cmd(const std::string& shell, std::optional<std::string> cwd = std::nullopt) {
  process::StartRequest req;
  req.mutable_process()->set_cmd("/bin/sh");
  req.mutable_process()->add_args("-c");
  req.mutable_process()->add_args(shell);
  if (cwd) req.mutable_process()->set_cwd(*cwd);
  return req;
}

void collect(Client::Stream& s, RunResult& r) {
  process::StartResponse resp;
  bool first = true;
  while (s.next(resp)) {
    const auto& ev = resp.event();
    if (first) r.start_first = ev.has_start();
    first = false;
    REQUIRE_FALSE(r.saw_end);  // nothing after end
    if (ev.has_start()) r.pid = ev.start().pid();
    if (ev.has_data()) {
      if (ev.data().has_stdout()) r.out += ev.data().stdout();
      if (ev.data().has_stderr()) r.err += ev.data().stderr();
      if (ev.data().has_pty()) r.pty += ev.data().pty();
    }
    if (ev.has_keepalive()) ++r.keepalives;
    if (ev.has_end()) {
      r.saw_end = true;
      r.exit_code = ev.end().exit_code();
      r.exited = ev.end().exited();
      r.status = ev.end().status();
    }
  }
}

RunResult run(Client& c, const process::StartRequest& req, const connect::Headers& h = {}) {
  RunResult r;
  auto s = c.server_stream("/process.Process/Start", req, h);
  collect(*s, r);
  return r;
}

std::string basic(const std::string& user) {
  // base64("<user>:") for the few names the tests use.
  if (user == "nobody") return "Basic bm9ib2R5Og==";
  if (user == "root") return "Basic cm9vdDo=";
  if (user == "ghost") return "Basic Z2hvc3Q6";
  FAIL("no encoding for " << user);
  return "";
}

process::ProcessSelector by_pid(std::uint32_t pid) {
  process::ProcessSelector s;
  s.set_pid(pid);
  return s;
}

}  // namespace

TEST_CASE("commands run as root with cwd and env, in both codecs") {
  test::EnvdProcess envd;
  for (Codec codec : {Codec::kJson, Codec::kProto}) {
    Client c("127.0.0.1", envd.port(), codec);
    auto req = cmd("echo \"$(id -un):$PWD:$FOO:$HOME\"; echo oops >&2; exit 7", "/tmp");
    (*req.mutable_process()->mutable_envs())["FOO"] = "bar baz";
    auto r = run(c, req);
    CHECK(r.start_first);
    CHECK(r.pid > 0);
    CHECK(r.out == "root:/tmp:bar baz:/root\n");
    CHECK(r.err == "oops\n");
    CHECK(r.exit_code == 7);
    CHECK(r.exited);
    CHECK(r.status == "exit status: 7");
  }
}

TEST_CASE("commands run as an unprivileged user named by Basic auth, with its groups") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  auto r = run(c, cmd("id -u; id -g; id -G; echo $USER $LOGNAME", "/tmp"),
               {{"Authorization", basic("nobody")}});
  CHECK(r.out == "65534\n65534\n65534\nnobody nobody\n");
  CHECK(r.exit_code == 0);
  // A user that does not exist is refused, not silently run as root.
  CHECK(error_code_of([&] {
          run(c, cmd("true", "/tmp"), {{"Authorization", basic("ghost")}});
        }) == Code::kUnauthenticated);
}

TEST_CASE("default cwd is the user's home; ~ and relative cwd resolve against it") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  CHECK(run(c, cmd("pwd")).out == "/root\n");
  CHECK(run(c, cmd("pwd", "~")).out == "/root\n");
  CHECK(run(c, cmd("pwd", "/")).out == "/\n");
  CHECK(error_code_of([&] { run(c, cmd("pwd", "/no/such/dir")); }) == Code::kInvalidArgument);
  CHECK(error_code_of([&] { run(c, cmd("pwd", "/tmp/../etc")); }) == Code::kInvalidArgument);
}

TEST_CASE("10 MiB of mixed stdout and stderr arrive byte for byte") {
  test::EnvdProcess envd;
  test::TempDir dir;
  std::mt19937 rng(42);
  std::string a(5 << 20, '\0'), b(5 << 20, '\0');
  for (auto& ch : a) ch = static_cast<char>(rng());
  for (auto& ch : b) ch = static_cast<char>(rng());
  test::write_file(dir.path() + "/a", a);
  test::write_file(dir.path() + "/b", b);
  for (Codec codec : {Codec::kProto, Codec::kJson}) {
    Client c("127.0.0.1", envd.port(), codec);
    auto r = run(c, cmd("cat a & cat b >&2; wait", dir.path()));
    CHECK(r.exit_code == 0);
    CHECK(r.out.size() == a.size());
    CHECK(r.err.size() == b.size());
    CHECK(r.out == a);
    CHECK(r.err == b);
  }
}

TEST_CASE("a slow reader loses nothing: output waits for it (backpressure)") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  // 32 MiB is far above the per-subscriber high-water mark; the client sleeps before
  // reading so envd must hold the child back rather than drop output.
  auto s = c.server_stream("/process.Process/Start",
                           cmd("head -c 33554432 /dev/zero | tr '\\0' 'x'; echo done >&2"));
  std::this_thread::sleep_for(std::chrono::seconds(2));
#ifndef WRENN_SANITIZE_BUILD
  CHECK(envd.rss_bytes() < 64u << 20);  // envd did not buffer the whole output
#endif
  RunResult r;
  collect(*s, r);
  CHECK(r.out.size() == 33554432u);
  CHECK(r.out.find_first_not_of('x') == std::string::npos);
  CHECK(r.err == "done\n");
  CHECK(r.exit_code == 0);
}

TEST_CASE("100 concurrent processes each get exactly their own output") {
  test::EnvdProcess envd;
  constexpr int kN = 100;
  std::vector<std::thread> threads;
  std::vector<RunResult> results(kN);
  std::atomic<int> errors{0};
  for (int i = 0; i < kN; ++i) {
    threads.emplace_back([&, i] {
      try {
        Client c("127.0.0.1", envd.port(), i % 2 ? Codec::kJson : Codec::kProto);
        results[i] = run(
            c, cmd("sleep 0.2; echo " + std::to_string(i) + "; exit " + std::to_string(i % 50)));
      } catch (...) {
        ++errors;
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  std::set<std::uint32_t> pids;
  for (int i = 0; i < kN; ++i) {
    CHECK(results[i].out == std::to_string(i) + "\n");
    CHECK(results[i].exit_code == i % 50);
    pids.insert(results[i].pid);
  }
  CHECK(pids.size() == kN);
  // Every finished process has left the table.
  Client c("127.0.0.1", envd.port());
  process::ListResponse list;
  c.unary("/process.Process/List", process::ListRequest{}, list);
  CHECK(list.processes_size() == 0);
}

TEST_CASE("PTY: echo, resize, Ctrl-C") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  Client ctl("127.0.0.1", envd.port());
  auto req = cmd("exec /bin/sh -i", "/tmp");
  req.mutable_pty()->mutable_size()->set_cols(80);
  req.mutable_pty()->mutable_size()->set_rows(24);
  req.mutable_process()->mutable_envs()->insert({"PS1", "$ "});
  auto s = c.server_stream("/process.Process/Start", req);
  process::StartResponse resp;
  REQUIRE(s->next(resp));
  REQUIRE(resp.event().has_start());
  auto pid = resp.event().start().pid();
  std::string screen;
  auto send = [&](const std::string& bytes) {
    process::SendInputRequest in;
    *in.mutable_process() = by_pid(pid);
    in.mutable_input()->set_pty(bytes);
    process::SendInputResponse out;
    ctl.unary("/process.Process/SendInput", in, out);
  };
  auto read_until = [&](const std::string& needle) {
    INFO("waiting for \"" << needle << "\"; screen so far: " << screen);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (screen.find(needle) == std::string::npos &&
           std::chrono::steady_clock::now() < deadline) {
      REQUIRE(s->next(resp));
      if (resp.event().has_data()) screen += resp.event().data().pty();
      REQUIRE_FALSE(resp.event().has_end());
    }
    REQUIRE(screen.find(needle) != std::string::npos);
  };
  send("echo hel''lo\n");
  read_until("hello");
  process::UpdateRequest up;
  *up.mutable_process() = by_pid(pid);
  up.mutable_pty()->mutable_size()->set_cols(123);
  up.mutable_pty()->mutable_size()->set_rows(45);
  process::UpdateResponse upr;
  ctl.unary("/process.Process/Update", up, upr);
  send("stty size\n");
  read_until("45 123");
  send("sleep 100; echo after''sleep\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  send("\x03");  // Ctrl-C interrupts sleep, not the shell
  send("echo still''here\n");
  read_until("stillhere");
  CHECK(screen.find("aftersleep") == std::string::npos);
  send("exit 4\n");
  RunResult r;
  collect(*s, r);
  CHECK(r.exit_code == 4);
  // CloseStdin has no meaning on a PTY.
  CHECK(error_code_of([&] {
          process::CloseStdinRequest cr;
          *cr.mutable_process() = by_pid(pid);
          process::CloseStdinResponse o;
          ctl.unary("/process.Process/CloseStdin", cr, o);
        }) == Code::kNotFound);  // it has exited by now
}

TEST_CASE("stdin: StreamInput in order, then CloseStdin ends the input") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  Client ctl("127.0.0.1", envd.port());
  auto req = cmd("cat; echo eof-seen", "/tmp");
  req.set_tag("cat-1");
  auto s = c.server_stream("/process.Process/Start", req);
  process::StartResponse first;
  REQUIRE(s->next(first));
  auto pid = first.event().start().pid();
  auto up = ctl.client_stream("/process.Process/StreamInput");
  process::StreamInputRequest m;
  m.mutable_start()->mutable_process()->set_tag("cat-1");
  up->send(m);
  std::string expected;
  for (int i = 0; i < 200; ++i) {
    process::StreamInputRequest d;
    std::string chunk = "line " + std::to_string(i) + "\n";
    expected += chunk;
    d.mutable_data()->mutable_input()->set_stdin(chunk);
    up->send(d);
  }
  process::StreamInputResponse done;
  up->finish(done);
  process::SendInputRequest one;
  *one.mutable_process() = by_pid(pid);
  one.mutable_input()->set_stdin("last\n");
  process::SendInputResponse ok;
  ctl.unary("/process.Process/SendInput", one, ok);
  expected += "last\n";
  process::CloseStdinRequest close;
  *close.mutable_process() = by_pid(pid);
  process::CloseStdinResponse closed;
  ctl.unary("/process.Process/CloseStdin", close, closed);
  RunResult r;
  collect(*s, r);
  CHECK(r.out == expected + "eof-seen\n");
  CHECK(r.exit_code == 0);
}

TEST_CASE("stdin: false gives /dev/null; input to such a process is refused") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  auto req = cmd("cat; echo $?; sleep 0.5");
  req.set_stdin(false);
  auto s = c.server_stream("/process.Process/Start", req);
  process::StartResponse first;
  REQUIRE(s->next(first));
  Client ctl("127.0.0.1", envd.port());
  process::SendInputRequest in;
  *in.mutable_process() = by_pid(first.event().start().pid());
  in.mutable_input()->set_stdin("x");
  process::SendInputResponse o;
  CHECK(error_code_of([&] { ctl.unary("/process.Process/SendInput", in, o); }) ==
        Code::kFailedPrecondition);
  in.mutable_input()->set_pty("x");
  CHECK(error_code_of([&] { ctl.unary("/process.Process/SendInput", in, o); }) ==
        Code::kFailedPrecondition);
  RunResult r;
  collect(*s, r);
  CHECK(r.out == "0\n");
}

TEST_CASE("SendSignal: SIGTERM and SIGKILL; other signals refused") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  Client ctl("127.0.0.1", envd.port());
  for (auto [sig, status] : {std::pair{process::SIGNAL_SIGTERM, "signal: 15 (SIGTERM)"},
                             std::pair{process::SIGNAL_SIGKILL, "signal: 9 (SIGKILL)"}}) {
    auto s = c.server_stream("/process.Process/Start", cmd("exec sleep 100"));
    process::StartResponse first;
    REQUIRE(s->next(first));
    process::SendSignalRequest bad;
    *bad.mutable_process() = by_pid(first.event().start().pid());
    bad.set_signal(static_cast<process::Signal>(2));
    process::SendSignalResponse o;
    CHECK(error_code_of([&] { ctl.unary("/process.Process/SendSignal", bad, o); }) ==
          Code::kInvalidArgument);
    process::SendSignalRequest req = bad;
    req.set_signal(sig);
    ctl.unary("/process.Process/SendSignal", req, o);
    RunResult r;
    collect(*s, r);
    CHECK(r.status == status);
    CHECK_FALSE(r.exited);
    CHECK(r.exit_code == -1);
  }
  process::SendSignalRequest none;
  none.mutable_process()->set_pid(999999);
  none.set_signal(process::SIGNAL_SIGKILL);
  process::SendSignalResponse o;
  CHECK(error_code_of([&] { ctl.unary("/process.Process/SendSignal", none, o); }) ==
        Code::kNotFound);
}

TEST_CASE("Connect attaches mid-run by pid or tag; List shows running processes with tags") {
  test::EnvdProcess envd;
  Client starter("127.0.0.1", envd.port());
  auto req = cmd("for i in 1 2 3 4 5 6 7 8; do echo tick$i; sleep 0.2; done; exit 5", "/tmp");
  req.set_tag("ticker");
  auto s = starter.server_stream("/process.Process/Start", req);
  process::StartResponse first;
  REQUIRE(s->next(first));
  auto pid = first.event().start().pid();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));

  Client lister("127.0.0.1", envd.port(), Codec::kJson);
  process::ListResponse list;
  lister.unary("/process.Process/List", process::ListRequest{}, list);
  REQUIRE(list.processes_size() == 1);
  CHECK(list.processes(0).pid() == pid);
  CHECK(list.processes(0).tag() == "ticker");
  CHECK(list.processes(0).config().cmd() == "/bin/sh");
  CHECK(list.processes(0).config().cwd() == "/tmp");

  // Two clients attach at once, one by tag and one by pid.
  Client by_tag_client("127.0.0.1", envd.port(), Codec::kJson);
  Client by_pid_client("127.0.0.1", envd.port(), Codec::kProto);
  process::ConnectRequest tag_req, pid_req;
  tag_req.mutable_process()->set_tag("ticker");
  pid_req.mutable_process()->set_pid(pid);
  auto a = by_tag_client.server_stream("/process.Process/Connect", tag_req);
  auto b = by_pid_client.server_stream("/process.Process/Connect", pid_req);
  for (auto* stream : {a.get(), b.get()}) {
    RunResult r;
    collect(*stream, r);
    CHECK(r.start_first);
    CHECK(r.pid == pid);
    CHECK(r.out.find("tick8\n") != std::string::npos);
    CHECK(r.out.find("tick1\n") == std::string::npos);  // live output only
    CHECK(r.exit_code == 5);
  }
  // Attaching after the process ended: not found.
  CHECK(error_code_of([&] {
          by_pid_client.server_stream("/process.Process/Connect", pid_req)->next(first);
        }) == Code::kNotFound);
  RunResult all;
  collect(*s, all);
  CHECK(all.out.find("tick1\n") != std::string::npos);
  lister.unary("/process.Process/List", process::ListRequest{}, list);
  CHECK(list.processes_size() == 0);
}

TEST_CASE("a process outlives its client") {
  test::EnvdProcess envd;
  test::TempDir dir;
  {
    Client c("127.0.0.1", envd.port());
    auto s = c.server_stream("/process.Process/Start",
                             cmd("sleep 0.5; echo survived > out", dir.path()));
    process::StartResponse first;
    REQUIRE(s->next(first));
  }  // client and stream gone
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  CHECK(test::read_file(dir.path() + "/out") == "survived\n");
}

TEST_CASE("end arrives promptly even when a background child keeps the pipe open") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  auto t0 = std::chrono::steady_clock::now();
  auto r = run(c, cmd("sleep 30 & echo started"));
  CHECK(r.out == "started\n");
  CHECK(r.exit_code == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
}

TEST_CASE("keepalive events at the interval the client asks for") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  auto r = run(c, cmd("sleep 2.5; echo done"), {{"Keepalive-Ping-Interval", "1"}});
  CHECK(r.keepalives >= 2);
  CHECK(r.out == "done\n");
}

TEST_CASE("Connect-Timeout-Ms kills the process and ends the stream with deadline_exceeded") {
  test::EnvdProcess envd;
  test::TempDir dir;
  Client c("127.0.0.1", envd.port());
  RunResult r;
  auto t0 = std::chrono::steady_clock::now();
  auto s =
      c.server_stream("/process.Process/Start", cmd("echo $$ > pid; exec sleep 100", dir.path()),
                      {{"Connect-Timeout-Ms", "700"}});
  CHECK(error_code_of([&] { collect(*s, r); }) == Code::kDeadlineExceeded);
  CHECK(r.saw_end);
  CHECK(r.status == "signal: 9 (SIGKILL)");
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
  auto pid = std::stoi(test::read_file(dir.path() + "/pid"));
  CHECK(::kill(pid, 0) != 0);
}

TEST_CASE("Connect-Timeout-Ms bounds a unary call") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  // A process that never reads stdin: once the pipe is full, SendInput cannot finish.
  auto s = c.server_stream("/process.Process/Start", cmd("exec sleep 100"));
  process::StartResponse first;
  REQUIRE(s->next(first));
  Client ctl("127.0.0.1", envd.port());
  process::SendInputRequest in;
  *in.mutable_process() = by_pid(first.event().start().pid());
  in.mutable_input()->set_stdin(std::string(1 << 20, 'x'));
  process::SendInputResponse out;
  auto t0 = std::chrono::steady_clock::now();
  CHECK(error_code_of([&] {
          ctl.unary("/process.Process/SendInput", in, out, {{"Connect-Timeout-Ms", "300"}});
        }) == Code::kDeadlineExceeded);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(3));
  // envd is still responsive and the process can still be signalled.
  process::SendSignalRequest kill;
  *kill.mutable_process() = by_pid(first.event().start().pid());
  kill.set_signal(process::SIGNAL_SIGKILL);
  process::SendSignalResponse ko;
  ctl.unary("/process.Process/SendSignal", kill, ko);
  RunResult r;
  collect(*s, r);
  CHECK(r.status == "signal: 9 (SIGKILL)");
}

TEST_CASE("bad input gets the right error and envd stays up") {
  test::EnvdProcess envd;
  namespace bhttp = boost::beast::http;
  auto post = [&](const std::string& path, const std::string& ct, const std::string& body) {
    return test::http_request(envd.port(), bhttp::verb::post, path, body, {{"Content-Type", ct}});
  };
  // Malformed JSON and protobuf.
  auto r = post("/process.Process/List", "application/json", "{nope");
  CHECK(r.result_int() == 400);
  CHECK(r.body().find("\"code\":\"invalid_argument\"") != std::string::npos);
  r = post("/process.Process/SendSignal", "application/proto", std::string("\x0a\x05\x08", 3));
  CHECK(r.result_int() == 400);
  // Unknown method and unknown service.
  r = post("/process.Process/Fly", "application/json", "{}");
  CHECK(r.result_int() == 501);
  CHECK(r.body().find("unimplemented") != std::string::npos);
  r = post("/nosuch.Service/Do", "application/json", "{}");
  CHECK(r.result_int() == 404);
  // Wrong content type, wrong method.
  r = post("/process.Process/List", "text/plain", "{}");
  CHECK(r.result_int() == 415);
  r = test::http_request(envd.port(), bhttp::verb::get, "/process.Process/List");
  CHECK(r.result_int() == 405);
  // Oversized message: refused from its Content-Length, before any of it is read.
  {
    boost::asio::io_context io;
    boost::asio::ip::tcp::socket sock(io);
    sock.connect({boost::asio::ip::make_address("127.0.0.1"), envd.port()});
    std::string head =
        "POST /process.Process/SendInput HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 17825792\r\n\r\n{";
    boost::asio::write(sock, boost::asio::buffer(head));
    boost::beast::flat_buffer buf;
    test::Response big;
    bhttp::read(sock, buf, big);
    CHECK(big.result_int() == 429);
    CHECK(big.body().find("resource_exhausted") != std::string::npos);
  }
  // A stream envelope announcing 1 GiB.
  r = post("/process.Process/Start", "application/connect+json",
           std::string("\x00\x40\x00\x00\x00", 5));
  CHECK(r.result_int() == 200);
  CHECK(r.body().find("resource_exhausted") != std::string::npos);
  // Bad timeout header.
  r = test::http_request(envd.port(), bhttp::verb::post, "/process.Process/List", "{}",
                         {{"Content-Type", "application/json"}, {"Connect-Timeout-Ms", "soon"}});
  CHECK(r.result_int() == 400);
  // Missing executable, empty command, empty selector, NUL in args, bad env name.
  Client c("127.0.0.1", envd.port(), Codec::kJson);
  process::StartRequest req;
  req.mutable_process()->set_cmd("no-such-program-xyz");
  CHECK(error_code_of([&] { run(c, req); }) == Code::kInvalidArgument);
  req.mutable_process()->set_cmd("");
  CHECK(error_code_of([&] { run(c, req); }) == Code::kInvalidArgument);
  process::ConnectRequest empty;
  CHECK(error_code_of([&] { c.server_stream("/process.Process/Connect", empty)->next(req); }) ==
        Code::kInvalidArgument);
  req = cmd("true");
  req.mutable_process()->add_args(std::string("a\0b", 3));
  CHECK(error_code_of([&] { run(c, req); }) == Code::kInvalidArgument);
  req = cmd("true");
  (*req.mutable_process()->mutable_envs())["A=B"] = "x";
  CHECK(error_code_of([&] { run(c, req); }) == Code::kInvalidArgument);
  req = cmd("true");
  req.mutable_pty()->mutable_size()->set_cols(0);
  CHECK(error_code_of([&] { run(c, req); }) == Code::kInvalidArgument);
  // Duplicate tag while the first is running.
  auto t1 = cmd("sleep 1");
  t1.set_tag("dup");
  Client c2("127.0.0.1", envd.port());
  auto s1 = c2.server_stream("/process.Process/Start", t1);
  process::StartResponse first;
  REQUIRE(s1->next(first));
  CHECK(error_code_of([&] { run(c, t1); }) == Code::kAlreadyExists);
  // Garbage on the socket.
  r = test::http_request(envd.port(), bhttp::verb::get, "/health");
  CHECK(r.result_int() == 200);
  CHECK(envd.running());
}

TEST_CASE("a unary call with Connect-Timeout-Ms that fails reports its own error at once") {
  test::EnvdProcess envd;
  Client c("127.0.0.1", envd.port());
  process::SendSignalRequest kill;
  kill.mutable_process()->set_pid(999999);
  kill.set_signal(process::SIGNAL_SIGKILL);
  process::SendSignalResponse out;
  auto t0 = std::chrono::steady_clock::now();
  CHECK(error_code_of([&] {
          c.unary("/process.Process/SendSignal", kill, out, {{"Connect-Timeout-Ms", "5000"}});
        }) == Code::kNotFound);
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(1));
  // The connection stays usable after an error whose request body was read.
  CHECK(error_code_of([&] { c.unary("/process.Process/SendSignal", kill, out); }) ==
        Code::kNotFound);
}
