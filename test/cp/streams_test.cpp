// The capsule WebSocket routes end to end (reference §4): exec stream, process attach and
// PTY through a real wrenn-cp with a real wrenn-agent running busybox sandboxes, driven by
// a Beast WebSocket client the way the Python SDK and browsers drive them: frame order and
// shapes, header and first-frame authentication (and its 5 s window), team scoping, the
// HTTP 400 for a malformed id, PTY input/resize/kill/re-attach, and that closing an exec
// stream stops its process.
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include "cp_fixture.h"
#include "crypto/encoding.h"

using namespace wrenn;
using namespace wrenn::test;
using namespace std::chrono_literals;
namespace json = boost::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace websocket = boost::beast::websocket;
using tcp = asio::ip::tcp;

namespace {

// A WebSocket client. Every wait is bounded (a stuck server fails the test, never hangs it).
class Ws {
 public:
  // Connects and upgrades (X-API-Key when api_key is set). upgraded() tells whether the
  // server answered 101; http_status() is its answer either way.
  Ws(unsigned short port, const std::string& target, const std::string& api_key = "") : ws_(io_) {
    auto& tcp_layer = beast::get_lowest_layer(ws_);
    tcp_layer.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
    ws_.set_option(websocket::stream_base::decorator([api_key](websocket::request_type& req) {
      if (!api_key.empty()) req.set("X-API-Key", api_key);
    }));
    websocket::response_type res;
    beast::error_code ec;
    tcp_layer.expires_after(10s);
    ws_.async_handshake(res, "127.0.0.1", target, [&ec](beast::error_code e) { ec = e; });
    run();
    status_ = res.result_int();
    body_ = res.body();
    upgraded_ = !ec;
  }

  bool upgraded() const { return upgraded_; }
  unsigned http_status() const { return status_; }
  const std::string& http_body() const { return body_; }

  void send(const json::object& o) {
    const std::string text = json::serialize(o);
    beast::error_code ec;
    beast::get_lowest_layer(ws_).expires_after(10s);
    ws_.text(true);
    ws_.async_write(asio::buffer(text), [&ec](beast::error_code e, std::size_t) { ec = e; });
    run();
    if (ec) throw beast::system_error(ec);
  }

  // The next frame, or nullopt once the connection is closed (close_code() says how).
  std::optional<json::object> next(std::chrono::seconds timeout = 20s) {
    if (closed_) return std::nullopt;
    beast::flat_buffer buf;
    beast::error_code ec;
    beast::get_lowest_layer(ws_).expires_after(timeout);
    ws_.async_read(buf, [&ec](beast::error_code e, std::size_t) { ec = e; });
    run();
    if (ec) {
      closed_ = true;
      close_code_ = ec == websocket::error::closed ? static_cast<int>(ws_.reason().code) : -1;
      return std::nullopt;
    }
    return json::parse(beast::buffers_to_string(buf.data())).as_object();
  }

  // Frames until one of type `until` (included), an error frame, or the close.
  std::vector<json::object> until(const std::string& until) {
    std::vector<json::object> frames;
    while (auto f = next()) {
      frames.push_back(*f);
      const auto& t = f->at("type").as_string();
      if (t == until || t == "error") break;
    }
    return frames;
  }

  // The close code the server sent (-1: the connection ended without a close frame).
  int close_code() const { return close_code_; }
  bool closed() const { return closed_; }

  void close() {
    beast::error_code ec;
    beast::get_lowest_layer(ws_).expires_after(10s);
    ws_.async_close(websocket::close_code::normal, [&ec](beast::error_code e) { ec = e; });
    run();
    closed_ = true;
  }
  // Drops the TCP connection without a close frame.
  void drop() {
    beast::get_lowest_layer(ws_).close();
    closed_ = true;
  }

 private:
  void run() {
    io_.restart();
    io_.run();
  }

  asio::io_context io_;
  websocket::stream<beast::tcp_stream> ws_;
  unsigned status_ = 0;
  std::string body_;
  bool upgraded_ = false;
  bool closed_ = false;
  int close_code_ = 0;
};

std::string type(const json::object& f) {
  return std::string(f.at("type").as_string());
}
std::string data(const json::object& f) {
  return std::string(f.at("data").as_string());
}

json::object start_frame(const std::string& script) {
  json::object o;
  o["type"] = "start";
  o["cmd"] = "/bin/sh";
  json::array args;
  args.emplace_back("-c");
  args.emplace_back(script);
  o["args"] = std::move(args);
  return o;
}

json::object typed(const std::string& t) {
  json::object o;
  o["type"] = t;
  return o;
}

// A control plane with one registered agent whose "minimal" template is the busybox test
// image, and two teams with an API key each.
class Env {
 public:
  Env() {
    enter_private_netns();
    cp_ = std::make_unique<CpProcess>();
    const std::string dir = tmp_.path() + "/agent";
    std::filesystem::create_directories(dir + "/images");
    std::filesystem::create_directory_symlink(busybox_template(), dir + "/images/minimal");
    agent_ = std::make_unique<AgentProcess>(
        dir, std::vector<std::string>{"--warm-slots", "0", "--ready-disks", "0"});
    cp_->register_agent(*agent_);
    a_ = cp_->create_team("alpha");
    b_ = cp_->create_team("beta");
  }
  CpProcess& cp() { return *cp_; }
  unsigned short port() const { return cp_->port(); }
  const std::string& key_a() const { return a_.api_key; }
  const std::string& key_b() const { return b_.api_key; }

  std::string create_capsule() {
    json::object o;
    o["memory_mb"] = 256;
    auto r = cp_->post("/v1/capsules", json::serialize(o), a_.api_key);
    INFO(r.body);
    REQUIRE(r.status == 201);
    return std::string(r.json().at("id").as_string());
  }
  // Pids of the capsule's processes (GET …/processes).
  std::vector<std::int64_t> pids(const std::string& id) {
    auto r = cp_->get("/v1/capsules/" + id + "/processes", a_.api_key);
    REQUIRE(r.status == 200);
    std::vector<std::int64_t> out;
    const json::value body = r.json();  // kept: a range-for over a temporary's member dangles
    for (const auto& p : body.at("processes").as_array()) out.push_back(p.at("pid").as_int64());
    return out;
  }

 private:
  TempDir tmp_;
  std::unique_ptr<CpProcess> cp_;
  std::unique_ptr<AgentProcess> agent_;
  TeamCreds a_, b_;
};

// Output frames' decoded bytes until `needle` shows up (or the budget passes).
std::string pty_output_until(Ws& ws, const std::string& needle, std::chrono::seconds budget = 15s) {
  std::string seen;
  const auto end = std::chrono::steady_clock::now() + budget;
  while (std::chrono::steady_clock::now() < end && seen.find(needle) == std::string::npos) {
    auto f = ws.next();
    if (!f) break;
    if (type(*f) == "output") seen += crypto::base64_decode(data(*f));
  }
  return seen;
}

}  // namespace

TEST_CASE("streams: exec stream sends start then stdout and stderr then exit") {
  Env env;
  const std::string id = env.create_capsule();
  const std::string target = "/v1/capsules/" + id + "/exec/stream";

  SECTION("authenticated by the X-API-Key header") {
    Ws ws(env.port(), target, env.key_a());
    REQUIRE(ws.upgraded());
    ws.send(start_frame("echo out; echo err >&2; exit 3"));
    auto frames = ws.until("exit");
    REQUIRE(frames.size() >= 4);
    CHECK(type(frames.front()) == "start");
    CHECK(frames.front().at("pid").as_int64() > 0);
    // stdout and stderr are separate pipes: each keeps its order, not their interleaving.
    std::string out, err;
    for (std::size_t i = 1; i + 1 < frames.size(); ++i) {
      INFO(type(frames[i]));
      REQUIRE((type(frames[i]) == "stdout" || type(frames[i]) == "stderr"));
      (type(frames[i]) == "stdout" ? out : err) += data(frames[i]);
    }
    CHECK(out == "out\n");
    CHECK(err == "err\n");
    CHECK(type(frames.back()) == "exit");
    CHECK(frames.back().at("exit_code").as_int64() == 3);
    // Then a proper close frame.
    CHECK_FALSE(ws.next().has_value());
    CHECK(ws.close_code() == static_cast<int>(websocket::close_code::normal));
  }
  SECTION("authenticated by a first auth frame with an API key") {
    Ws ws(env.port(), target);
    REQUIRE(ws.upgraded());
    json::object auth = typed("auth");
    auth["token"] = env.key_a();
    ws.send(auth);
    ws.send(start_frame("echo ok"));
    auto frames = ws.until("exit");
    REQUIRE(frames.size() == 3);
    CHECK(type(frames[0]) == "start");
    CHECK(data(frames[1]) == "ok\n");
    CHECK(frames[2].at("exit_code").as_int64() == 0);
  }
  SECTION("a character split between output pieces arrives whole and bad bytes are flagged") {
    Ws ws(env.port(), target, env.key_a());
    ws.send(
        start_frame("printf '\\303'; sleep 0.3; printf '\\251\\n'; sleep 0.3; printf 'a\\377b'"));
    auto frames = ws.until("exit");
    std::string text;
    std::vector<json::object> lossy;
    for (const auto& f : frames)
      if (type(f) == "stdout") {
        text += data(f);
        if (f.contains("data_base64")) lossy.push_back(f);
      }
    CHECK(text ==
          "\xC3\xA9\na\xEF\xBF\xBD"
          "b");
    REQUIRE(lossy.size() == 1);
    CHECK(crypto::base64_decode(std::string(lossy[0].at("data_base64").as_string())) ==
          "a\xFF"
          "b");
    CHECK(type(frames.back()) == "exit");
  }
  SECTION("a first frame that is not start is a fatal error") {
    Ws ws(env.port(), target, env.key_a());
    ws.send(typed("stdin"));
    auto f = ws.next();
    REQUIRE(f);
    CHECK(type(*f) == "error");
    CHECK(data(*f) == "first message must be type 'start' with a 'cmd' field");
    CHECK_FALSE(ws.next().has_value());
  }
}

TEST_CASE("streams: authentication failures end the socket with an error frame") {
  Env env;
  const std::string id = env.create_capsule();
  const std::string target = "/v1/capsules/" + id + "/exec/stream";

  SECTION("no credentials and a start frame") {
    Ws ws(env.port(), target);
    REQUIRE(ws.upgraded());
    ws.send(start_frame("echo never"));
    auto f = ws.next();
    REQUIRE(f);
    CHECK(type(*f) == "error");
    CHECK(data(*f) == "authentication failed");
    CHECK_FALSE(ws.next().has_value());
    CHECK(ws.close_code() == static_cast<int>(websocket::close_code::policy_error));
  }
  SECTION("a wrong token in the auth frame") {
    Ws ws(env.port(), target);
    json::object auth = typed("auth");
    auth["token"] = "wrn_0000000000000000000000000000000000";
    ws.send(auth);
    auto f = ws.next();
    REQUIRE(f);
    CHECK(data(*f) == "authentication failed");
    CHECK_FALSE(ws.next().has_value());
  }
  SECTION("an auth frame later than 5 s") {
    Ws ws(env.port(), target);
    const auto t0 = std::chrono::steady_clock::now();
    auto f = ws.next();
    const auto waited = std::chrono::steady_clock::now() - t0;
    REQUIRE(f);
    CHECK(type(*f) == "error");
    CHECK(data(*f) == "authentication timed out");
    CHECK(waited >= 4500ms);
    CHECK(waited < 8s);
    CHECK_FALSE(ws.next().has_value());  // closed before the late auth frame
    CHECK(ws.closed());
  }
}

TEST_CASE("streams: team scoping and malformed ids") {
  Env env;
  const std::string id = env.create_capsule();

  // Another team's capsule: upgraded, then "capsule not found" (as upstream, never 404).
  Ws other(env.port(), "/v1/capsules/" + id + "/exec/stream", env.key_b());
  REQUIRE(other.upgraded());
  other.send(start_frame("echo hi"));
  auto f = other.next();
  REQUIRE(f);
  CHECK(type(*f) == "error");
  CHECK(data(*f) == "capsule not found");
  CHECK_FALSE(other.next().has_value());

  Ws attach(env.port(), "/v1/capsules/" + id + "/processes/1/stream", env.key_b());
  f = attach.next();
  REQUIRE(f);
  CHECK(data(*f) == "capsule not found");

  // A malformed id: HTTP 400 before the upgrade.
  for (const char* path : {"/v1/capsules/not-an-id/exec/stream", "/v1/capsules/cl-x/pty",
                           "/v1/capsules/nope/processes/1/stream"}) {
    Ws bad(env.port(), path, env.key_a());
    INFO(path);
    CHECK_FALSE(bad.upgraded());
    CHECK(bad.http_status() == 400);
  }
}

TEST_CASE("streams: attach to a background process receives its later output and exit") {
  Env env;
  const std::string id = env.create_capsule();
  json::object body = start_frame("sleep 0.5; echo late");
  body.erase("type");
  body["background"] = true;
  auto r = env.cp().post("/v1/capsules/" + id + "/exec", json::serialize(body), env.key_a());
  INFO(r.body);
  REQUIRE(r.status == 202);
  const auto pid = r.json().at("pid").as_int64();

  Ws ws(env.port(), "/v1/capsules/" + id + "/processes/" + std::to_string(pid) + "/stream",
        env.key_a());
  REQUIRE(ws.upgraded());
  auto frames = ws.until("exit");
  REQUIRE(frames.size() == 3);
  CHECK(type(frames[0]) == "start");
  CHECK(frames[0].at("pid").as_int64() == pid);
  CHECK(type(frames[1]) == "stdout");
  CHECK(data(frames[1]) == "late\n");
  CHECK(frames[2].at("exit_code").as_int64() == 0);

  // A process that no longer exists: an error frame.
  Ws gone(env.port(), "/v1/capsules/" + id + "/processes/" + std::to_string(pid) + "/stream",
          env.key_a());
  auto f = gone.next();
  REQUIRE(f);
  CHECK(type(*f) == "error");
}

TEST_CASE("streams: pty input resize reconnect by tag and kill") {
  Env env;
  const std::string id = env.create_capsule();
  const std::string target = "/v1/capsules/" + id + "/pty";
  auto input = [](const std::string& text) {
    json::object o = typed("input");
    o["data"] = crypto::base64_encode(text);
    return o;
  };

  std::string tag;
  std::int64_t pid = 0;
  {
    Ws ws(env.port(), target, env.key_a());
    json::object start = typed("start");
    start["cmd"] = "/bin/sh";
    ws.send(start);
    auto f = ws.next();
    REQUIRE(f);
    INFO(json::serialize(*f));
    REQUIRE(type(*f) == "started");
    tag = std::string(f->at("tag").as_string());
    pid = f->at("pid").as_int64();
    CHECK(tag.size() == 12);
    CHECK(tag.rfind("pty-", 0) == 0);
    CHECK(pid > 0);

    // The typed line echoes as `echo h""i`; only the command's output contains "hi\r".
    ws.send(input("echo h\"\"i\n"));
    CHECK(pty_output_until(ws, "hi\r").find("hi\r") != std::string::npos);

    json::object resize = typed("resize");
    resize["cols"] = 100;
    resize["rows"] = 40;
    ws.send(resize);
    ws.send(input("stty size\n"));
    CHECK(pty_output_until(ws, "40 100").find("40 100") != std::string::npos);
    ws.close();  // the shell survives
  }
  {
    Ws ws(env.port(), target, env.key_a());
    json::object connect = typed("connect");
    connect["tag"] = tag;
    ws.send(connect);
    ws.send(input("echo again$((1+1))\n"));
    CHECK(pty_output_until(ws, "again2").find("again2") != std::string::npos);
    ws.send(typed("kill"));
    auto frames = ws.until("exit");
    REQUIRE_FALSE(frames.empty());
    CHECK(type(frames.back()) == "exit");
    CHECK_FALSE(ws.next().has_value());
  }
  CHECK(wait_until([&] {
    auto p = env.pids(id);
    return std::find(p.begin(), p.end(), pid) == p.end();
  }));
}

TEST_CASE("streams: closing an exec stream or sending stop kills the process") {
  Env env;
  const std::string id = env.create_capsule();
  const std::string target = "/v1/capsules/" + id + "/exec/stream";
  auto running = [&](std::int64_t pid) {
    auto p = env.pids(id);
    return std::find(p.begin(), p.end(), pid) != p.end();
  };

  SECTION("the client disconnects") {
    Ws ws(env.port(), target, env.key_a());
    ws.send(start_frame("sleep 60"));
    auto f = ws.next();
    REQUIRE(f);
    REQUIRE(type(*f) == "start");
    const auto pid = f->at("pid").as_int64();
    CHECK(running(pid));
    ws.drop();
    CHECK(wait_until([&] { return !running(pid); }));
  }
  SECTION("the client sends stop and still gets the exit frame") {
    Ws ws(env.port(), target, env.key_a());
    ws.send(start_frame("sleep 60"));
    auto f = ws.next();
    REQUIRE(f);
    const auto pid = f->at("pid").as_int64();
    ws.send(typed("stop"));
    auto frames = ws.until("exit");
    REQUIRE_FALSE(frames.empty());
    CHECK(type(frames.back()) == "exit");
    CHECK(frames.back().at("exit_code").as_int64() != 0);
    CHECK(wait_until([&] { return !running(pid); }));
  }
}
