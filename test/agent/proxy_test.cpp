// The /proxy/ reverse proxy over real loopback sockets: a wrenn::http::Server running
// serve_proxy, upstreams that are real HTTP/WebSocket servers, and the real envd.
#include "api/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "envd_fixture.h"
#include "error.h"
#include "http/server.h"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ws = boost::beast::websocket;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using wrenn::Code;
using wrenn::Error;
using wrenn::test::http_request;

// Runs an http::Server on 127.0.0.1:0 in a background thread.
class ServerThread {
 public:
  explicit ServerThread(wrenn::http::Handler handler)
      : server_(std::make_unique<wrenn::http::Server>(io_, std::move(handler))) {
    server_->listen(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port_ = server_->local_endpoint().port();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~ServerThread() {
    asio::post(io_, [this] { server_->stop(); });
    io_.stop();
    thread_.join();
    server_.reset();
  }
  unsigned short port() const { return port_; }

 private:
  asio::io_context io_;
  std::unique_ptr<wrenn::http::Server> server_;
  unsigned short port_ = 0;
  std::thread thread_;
};

// This process's resident set size in bytes.
std::size_t rss_bytes() {
  std::ifstream f("/proc/self/status");
  std::string key;
  while (f >> key) {
    if (key == "VmRSS:") {
      std::size_t kb = 0;
      f >> kb;
      return kb * 1024;
    }
    std::string rest;
    std::getline(f, rest);
  }
  return 0;
}

// Deterministic test bytes.
char pattern(std::uint64_t i) {
  return static_cast<char>((i * 2654435761u) >> 13);
}

// --- upstream ------------------------------------------------------------------------------

asio::awaitable<void> upstream_echo(wrenn::http::Exchange& ex) {
  // Echoes while it reads, so a proxy that sends the request before reading the response
  // would deadlock on big bodies.
  bhttp::response<bhttp::empty_body> head{bhttp::status::ok, 11};
  head.set(bhttp::field::content_type, "application/octet-stream");
  if (auto cl = ex.header(bhttp::field::content_length); !cl.empty())
    head.set(bhttp::field::content_length, cl);
  head.set("X-Upstream-Framing", ex.request().chunked() ? "chunked" : "length");
  co_await ex.send_header(std::move(head));
  std::vector<char> buf(64 * 1024);
  for (;;) {
    std::size_t n = co_await ex.read_some(buf.data(), buf.size());
    if (n == 0) break;
    co_await ex.write_body(std::string_view(buf.data(), n));
  }
  co_await ex.finish_body();
}

asio::awaitable<void> upstream_inspect(wrenn::http::Exchange& ex) {
  std::string out = "method: " + std::string(ex.request().method_string()) + "\n";
  out += "target: " + std::string(ex.target()) + "\n";
  for (const auto& f : ex.request())
    out += std::string(f.name_string()) + ": " + std::string(f.value()) + "\n";
  co_await ex.send(bhttp::status::ok, "text/plain", out);
}

asio::awaitable<void> upstream_slow(wrenn::http::Exchange& ex) {
  bhttp::response<bhttp::empty_body> head{bhttp::status::ok, 11};
  head.set(bhttp::field::content_type, "text/event-stream");
  co_await ex.send_header(std::move(head));
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int i = 0; i < 10; ++i) {
    std::string event = "data: " + std::to_string(i) + "\n\n";
    co_await ex.write_body(event);
    timer.expires_after(100ms);
    co_await timer.async_wait(asio::use_awaitable);
  }
  co_await ex.finish_body();
}

asio::awaitable<void> upstream_redirect(wrenn::http::Exchange& ex, const std::string& location) {
  auto res = wrenn::http::make_response(bhttp::status::found, "text/plain", "moved\n");
  res.set(bhttp::field::location, location);
  co_await ex.send(std::move(res));
}

asio::awaitable<void> upstream_websocket(wrenn::http::Exchange& ex) {
  ws::stream<beast::tcp_stream> s(std::move(ex.stream()));
  beast::get_lowest_layer(s).expires_never();
  auto [aec] = co_await s.async_accept(ex.request(), asio::as_tuple(asio::use_awaitable));
  if (aec) co_return;
  beast::flat_buffer b;
  for (;;) {
    auto [ec, n] = co_await s.async_read(b, asio::as_tuple(asio::use_awaitable));
    if (ec) break;
    s.text(s.got_text());
    auto [wec, m] = co_await s.async_write(b.data(), asio::as_tuple(asio::use_awaitable));
    if (wec) break;
    b.consume(b.size());
  }
}

asio::awaitable<void> upstream_handler(wrenn::http::Exchange& ex, unsigned short self_port) {
  std::string path(ex.path());
  std::string location;
  if (path == "/redirect-relative") location = "/elsewhere/x?y=1";
  if (path == "/redirect-absolute")
    location = "http://127.0.0.1:" + std::to_string(self_port) + "/abs/path?q=2";
  if (path == "/redirect-localhost") location = "http://localhost:" + std::to_string(self_port);
  if (path == "/redirect-external") location = "http://example.com:8080/z";
  if (!location.empty()) {
    co_await upstream_redirect(ex, location);
  } else if (path == "/echo") {
    co_await upstream_echo(ex);
  } else if (path == "/slow") {
    co_await upstream_slow(ex);
  } else if (path == "/ws") {
    co_await upstream_websocket(ex);
  } else {
    co_await upstream_inspect(ex);
  }
}

class Upstream {
 public:
  Upstream()
      : server_([this](wrenn::http::Exchange& ex) { return upstream_handler(ex, server_port()); }) {
  }
  unsigned short port() const { return server_.port(); }

 private:
  unsigned short server_port() const { return server_.port(); }
  ServerThread server_;
};

// A port with nothing listening on it.
unsigned short free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// --- proxy ---------------------------------------------------------------------------------

struct Counters {
  std::atomic<int> connects{0};
  std::mutex mu;
  std::vector<std::string> activity;
};

// The test connector: ids "sbx"/"sbx-2" reach loopback ports, "paused" is paused, the rest
// do not exist.
int loopback_connect(Counters& c, const std::string& id, std::uint16_t port) {
  ++c.connects;
  if (id == "paused") throw Error(Code::kFailedPrecondition, "sandbox paused is not running");
  if (id != "sbx" && id != "sbx-2") throw Error(Code::kNotFound, "sandbox " + id + " not found");
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int err = errno;
    ::close(fd);
    throw Error(err == ECONNREFUSED ? Code::kUnavailable : Code::kInternal,
                std::string("connect: ") + std::strerror(err));
  }
  return fd;
}

class Proxy {
 public:
  explicit Proxy(std::chrono::milliseconds header_timeout = 60s) {
    opts_.connect = [this](const std::string& id, std::uint16_t port) {
      return loopback_connect(counters_, id, port);
    };
    opts_.on_activity = [this](const std::string& id) {
      std::lock_guard lock(counters_.mu);
      counters_.activity.push_back(id);
    };
    opts_.header_timeout = header_timeout;
    server_ =
        std::make_unique<ServerThread>([this](wrenn::http::Exchange& ex) -> asio::awaitable<void> {
          if (wrenn::agent::is_proxy_path(ex.path()))
            co_return co_await wrenn::agent::serve_proxy(ex, opts_);
          co_await ex.send(bhttp::status::not_found, "text/plain", "not a proxy path\n");
        });
  }
  unsigned short port() const { return server_->port(); }
  Counters& counters() { return counters_; }
  std::vector<std::string> activity() {
    std::lock_guard lock(counters_.mu);
    return counters_.activity;
  }

 private:
  Counters counters_;
  wrenn::agent::ProxyOptions opts_;
  std::unique_ptr<ServerThread> server_;
};

std::string prefix(unsigned short port, const std::string& id = "sbx") {
  return "/proxy/" + id + "/" + std::to_string(port);
}

// Lines "name: value" of the inspect upstream, name lowercased -> value (repeats joined).
std::map<std::string, std::string> inspected(const std::string& body) {
  std::map<std::string, std::string> out;
  std::size_t pos = 0;
  while (pos < body.size()) {
    auto nl = body.find('\n', pos);
    std::string line = body.substr(pos, nl - pos);
    pos = nl == std::string::npos ? body.size() : nl + 1;
    auto colon = line.find(": ");
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    auto& v = out[name];
    v += (v.empty() ? "" : "|") + line.substr(colon + 2);
  }
  return out;
}

tcp::socket connect_to(asio::io_context& io, unsigned short port) {
  tcp::socket s(io);
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port));
  return s;
}

}  // namespace

TEST_CASE("proxy: GET passes the raw path and query through and rewrites Host and auth headers") {
  Upstream up;
  Proxy proxy;
  auto res =
      http_request(proxy.port(), bhttp::verb::get, prefix(up.port()) + "/a%2Fb/c/?x=1&y=%20z", "",
                   {{"Authorization", "Bearer agent-secret-token"}, {"X-Custom", "kept"}});
  REQUIRE(res.result_int() == 200);
  auto h = inspected(res.body());
  CHECK(h["target"] == "/a%2Fb/c/?x=1&y=%20z");
  CHECK(h["method"] == "GET");
  CHECK(h["host"] == "127.0.0.1:" + std::to_string(up.port()));
  CHECK(h["x-forwarded-for"] == "127.0.0.1");
  CHECK(h["x-forwarded-host"] == "127.0.0.1");
  CHECK(h["x-forwarded-proto"] == "http");
  CHECK(h["x-custom"] == "kept");
  CHECK(h.count("authorization") == 0);
  CHECK(h["connection"] == "close");
  CHECK(res.body().find("agent-secret-token") == std::string::npos);
  CHECK(proxy.activity() == std::vector<std::string>{"sbx"});

  SECTION("Basic auth passes, X-Forwarded-For is appended to, hop-by-hop headers go") {
    auto r = http_request(proxy.port(), bhttp::verb::get, prefix(up.port()), "",
                          {{"Authorization", "Basic dXNlcjo="},
                           {"X-Wrenn-Agent-Token", "agent-secret-token"},
                           {"X-Forwarded-For", "203.0.113.7"},
                           {"X-Forwarded-Proto", "https"},
                           {"Connection", "keep-alive, X-Hop"},
                           {"X-Hop", "drop me"},
                           {"Proxy-Authorization", "Basic Zm9vOmJhcg=="},
                           {"TE", "trailers"}});
    REQUIRE(r.result_int() == 200);
    auto g = inspected(r.body());
    CHECK(g["target"] == "/");  // "/proxy/sbx/port" without a rest
    CHECK(g["authorization"] == "Basic dXNlcjo=");
    CHECK(g["x-forwarded-for"] == "203.0.113.7, 127.0.0.1");
    CHECK(g["x-forwarded-proto"] == "https");
    CHECK(g.count("x-hop") == 0);
    CHECK(g.count("proxy-authorization") == 0);
    CHECK(g.count("x-wrenn-agent-token") == 0);
    CHECK(r.body().find("agent-secret-token") == std::string::npos);
    CHECK(g.count("te") == 0);
  }
  SECTION("a rest-less path with a query") {
    auto r = http_request(proxy.port(), bhttp::verb::get, prefix(up.port()) + "?q=1");
    CHECK(inspected(r.body())["target"] == "/?q=1");
  }
}

TEST_CASE("proxy: path and sandbox errors are JSON with the right status") {
  Upstream up;
  Proxy proxy;
  auto check = [&](const std::string& target, unsigned status, const std::string& code,
                   const std::string& message_part) {
    INFO(target);
    auto r = http_request(proxy.port(), bhttp::verb::get, target);
    CHECK(r.result_int() == status);
    CHECK(r[bhttp::field::content_type] == "application/json");
    CHECK(r.body().find("{\"error\":{\"code\":\"" + code + "\"") == 0);
    CHECK(r.body().find(message_part) != std::string::npos);
  };
  check("/proxy/sbx/0/", 400, "invalid_argument", "invalid port");
  check("/proxy/sbx/65536/", 400, "invalid_argument", "invalid port");
  check("/proxy/sbx/80x/", 400, "invalid_argument", "invalid port");
  check("/proxy/sbx//", 400, "invalid_argument", "invalid port");
  check("/proxy/sbx", 400, "invalid_argument", "");
  check("/proxy/Bad_Id/80/", 400, "invalid_argument", "invalid sandbox id");
  check("/proxy/" + std::string(64, 'a') + "/80/", 400, "invalid_argument", "invalid sandbox id");
  check(prefix(up.port(), "nosuch") + "/", 404, "not_found", "nosuch");
  check(prefix(up.port(), "paused") + "/", 503, "failed_precondition", "sandbox is not running");
  CHECK(proxy.counters().connects == 2);  // invalid paths never reach the connector
}

TEST_CASE("proxy: nothing listening is a 502 after three attempts") {
  Proxy proxy;
  auto start = std::chrono::steady_clock::now();
  auto r = http_request(proxy.port(), bhttp::verb::get, prefix(free_port()) + "/");
  auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(r.result_int() == 502);
  CHECK(r.body().find("\"code\":\"unavailable\"") != std::string::npos);
  CHECK(r.body().find("proxy error: ") != std::string::npos);
  CHECK(proxy.counters().connects == 3);
  CHECK(elapsed >= 300ms);
}

TEST_CASE("proxy: an upstream that sends no header in time is a 504") {
  // Listening but never accepting: the kernel completes the connection, nobody answers.
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(fd, 8) == 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  Proxy proxy(300ms);
  auto start = std::chrono::steady_clock::now();
  auto r = http_request(proxy.port(), bhttp::verb::get, prefix(ntohs(a.sin_port)) + "/");
  CHECK(r.result_int() == 504);
  CHECK(r.body().find("deadline_exceeded") != std::string::npos);
  CHECK(std::chrono::steady_clock::now() - start >= 300ms);
  ::close(fd);
}

TEST_CASE("proxy: a 50 MiB body streams both ways byte-exact") {
  Upstream up;
  Proxy proxy;
  constexpr std::uint64_t kSize = 50ull << 20;
  [[maybe_unused]] std::size_t rss_before = rss_bytes();
  asio::io_context io;
  auto s = connect_to(io, proxy.port());
  std::string head =
      "POST " + prefix(up.port()) + "/echo HTTP/1.1\r\nHost: agent\r\n" +
      "Content-Type: application/octet-stream\r\nContent-Length: " + std::to_string(kSize) +
      "\r\n\r\n";
  asio::write(s, asio::buffer(head));
  // Write from another thread: the echo comes back while the body still goes up.
  std::thread writer([&] {
    std::vector<char> buf(256 * 1024);
    for (std::uint64_t off = 0; off < kSize; off += buf.size()) {
      for (std::size_t i = 0; i < buf.size(); ++i) buf[i] = pattern(off + i);
      asio::write(s, asio::buffer(buf));
    }
  });
  beast::flat_buffer fb;
  bhttp::response_parser<bhttp::buffer_body> p;
  p.body_limit(boost::none);
  bhttp::read_header(s, fb, p);
  CHECK(p.get().result_int() == 200);
  CHECK(p.get()[bhttp::field::content_length] == std::to_string(kSize));
  std::vector<char> buf(64 * 1024);
  std::uint64_t got = 0;
  bool exact = true;
  while (!p.is_done()) {
    p.get().body().data = buf.data();
    p.get().body().size = buf.size();
    beast::error_code ec;
    bhttp::read_some(s, fb, p, ec);
    if (ec == bhttp::error::need_buffer) ec = {};
    REQUIRE(!ec);
    std::size_t n = buf.size() - p.get().body().size;
    for (std::size_t i = 0; i < n && exact; ++i) exact = buf[i] == pattern(got + i);
    got += n;
  }
  writer.join();
  CHECK(got == kSize);
  CHECK(exact);
#ifndef WRENN_SANITIZE_BUILD
  // Client, proxy and upstream share this process; none of them may hold the body.
  CHECK(rss_bytes() < rss_before + (16u << 20));
#endif
}

TEST_CASE("proxy: a chunked request body is forwarded chunked") {
  Upstream up;
  Proxy proxy;
  asio::io_context io;
  auto s = connect_to(io, proxy.port());
  std::string req = "POST " + prefix(up.port()) + "/echo HTTP/1.1\r\nHost: agent\r\n" +
                    "Transfer-Encoding: chunked\r\n\r\n";
  std::string expected;
  for (int i = 0; i < 20; ++i) {
    std::string piece(1000 + i * 37, static_cast<char>('a' + i));
    expected += piece;
    char size[16];
    std::snprintf(size, sizeof size, "%zx", piece.size());
    req += std::string(size) + "\r\n" + piece + "\r\n";
  }
  req += "0\r\n\r\n";
  asio::write(s, asio::buffer(req));
  beast::flat_buffer fb;
  bhttp::response_parser<bhttp::string_body> p;
  bhttp::read(s, fb, p);
  CHECK(p.get().result_int() == 200);
  CHECK(p.get()["X-Upstream-Framing"] == "chunked");
  CHECK(p.get().chunked());
  CHECK(p.get().body() == expected);
}

TEST_CASE("proxy: a slow stream reaches the client as it is produced") {
  Upstream up;
  Proxy proxy;
  asio::io_context io;
  auto s = connect_to(io, proxy.port());
  std::string req = "GET " + prefix(up.port()) + "/slow HTTP/1.1\r\nHost: agent\r\n\r\n";
  auto start = std::chrono::steady_clock::now();
  asio::write(s, asio::buffer(req));
  beast::flat_buffer fb;
  bhttp::response_parser<bhttp::buffer_body> p;
  bhttp::read_header(s, fb, p);
  REQUIRE(p.get().result_int() == 200);
  CHECK(p.get()[bhttp::field::content_type] == "text/event-stream");
  std::vector<char> buf(4096);
  std::string body;
  std::optional<std::chrono::steady_clock::time_point> first;
  while (!p.is_done()) {
    p.get().body().data = buf.data();
    p.get().body().size = buf.size();
    beast::error_code ec;
    bhttp::read_some(s, fb, p, ec);
    if (ec == bhttp::error::need_buffer) ec = {};
    REQUIRE(!ec);
    std::size_t n = buf.size() - p.get().body().size;
    if (n > 0 && !first) first = std::chrono::steady_clock::now();
    body.append(buf.data(), n);
  }
  auto end = std::chrono::steady_clock::now();
  REQUIRE(first);
  CHECK(body.substr(0, 9) == "data: 0\n\n");
  CHECK(body.find("data: 9\n\n") != std::string::npos);
  CHECK(*first - start < 500ms);  // the first event, long before the stream ends
  CHECK(end - *first >= 700ms);
}

TEST_CASE("proxy: Location headers point back through the proxy") {
  Upstream up;
  Proxy proxy;
  auto p = prefix(up.port());
  auto rel = http_request(proxy.port(), bhttp::verb::get, p + "/redirect-relative");
  CHECK(rel.result_int() == 302);
  CHECK(rel[bhttp::field::location] == p + "/elsewhere/x?y=1");
  CHECK(rel.body() == "moved\n");
  auto abs = http_request(proxy.port(), bhttp::verb::get, p + "/redirect-absolute");
  CHECK(abs[bhttp::field::location] == p + "/abs/path?q=2");
  auto lh = http_request(proxy.port(), bhttp::verb::get, p + "/redirect-localhost");
  CHECK(lh[bhttp::field::location] == p + "/");
  auto ext = http_request(proxy.port(), bhttp::verb::get, p + "/redirect-external");
  CHECK(ext[bhttp::field::location] == "http://example.com:8080/z");
}

TEST_CASE("proxy: keep-alive client connections carry several proxied requests") {
  Upstream up;
  Proxy proxy;
  asio::io_context io;
  beast::tcp_stream s(connect_to(io, proxy.port()));
  beast::flat_buffer fb;
  for (int i = 0; i < 3; ++i) {
    bhttp::request<bhttp::string_body> req{bhttp::verb::post, prefix(up.port()) + "/echo", 11};
    req.set(bhttp::field::host, "agent");
    req.body() = "request " + std::to_string(i);
    req.prepare_payload();
    bhttp::write(s, req);
    bhttp::response<bhttp::string_body> res;
    bhttp::read(s, fb, res);
    CHECK(res.result_int() == 200);
    CHECK(res.body() == "request " + std::to_string(i));
    CHECK(res.keep_alive());
  }
  // A slow stream on the same connection, then one more request.
  bhttp::request<bhttp::string_body> req{bhttp::verb::get, prefix(up.port()) + "/slow", 11};
  req.set(bhttp::field::host, "agent");
  bhttp::write(s, req);
  bhttp::response<bhttp::string_body> res;
  bhttp::read(s, fb, res);
  CHECK(res.body().find("data: 9") != std::string::npos);
  req.target(prefix(up.port()) + "/after");
  bhttp::write(s, req);
  bhttp::response<bhttp::string_body> res2;
  bhttp::read(s, fb, res2);
  CHECK(inspected(res2.body())["target"] == "/after");
}

TEST_CASE("proxy: a close-delimited upstream response reaches the client chunked") {
  // A hand-written upstream: no Content-Length, no chunking, the body ends at EOF.
  asio::io_context uio;
  tcp::acceptor acc(uio, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::thread upstream([&] {
    auto s = acc.accept();
    asio::streambuf sb;
    asio::read_until(s, sb, "\r\n\r\n");
    std::string head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nhello ";
    asio::write(s, asio::buffer(head));
    std::this_thread::sleep_for(50ms);
    asio::write(s, asio::buffer(std::string("until close")));
    s.close();
  });
  Proxy proxy;
  asio::io_context io;
  beast::tcp_stream c(connect_to(io, proxy.port()));
  bhttp::request<bhttp::empty_body> req{bhttp::verb::get, prefix(acc.local_endpoint().port()) + "/",
                                        11};
  req.set(bhttp::field::host, "agent");
  bhttp::write(c, req);
  beast::flat_buffer fb;
  bhttp::response<bhttp::string_body> res;
  bhttp::read(c, fb, res);
  upstream.join();
  CHECK(res.result_int() == 200);
  CHECK(res.chunked());
  CHECK(res.keep_alive());  // the client connection outlives the upstream one
  CHECK(res.body() == "hello until close");
}

TEST_CASE("proxy: WebSocket messages flow both ways and close cleanly") {
  Upstream up;
  Proxy proxy;
  asio::io_context io;
  ws::stream<beast::tcp_stream> c(connect_to(io, proxy.port()));
  c.handshake("agent", prefix(up.port()) + "/ws");
  c.text(true);
  c.write(asio::buffer(std::string("hello through the proxy")));
  beast::flat_buffer b;
  c.read(b);
  CHECK(c.got_text());
  CHECK(beast::buffers_to_string(b.data()) == "hello through the proxy");
  b.consume(b.size());
  std::string bin(300 * 1024, '\0');
  for (std::size_t i = 0; i < bin.size(); ++i) bin[i] = pattern(i);
  c.binary(true);
  c.write(asio::buffer(bin));
  c.read(b);
  CHECK(!c.got_text());
  CHECK(beast::buffers_to_string(b.data()) == bin);
  b.consume(b.size());
  for (int i = 0; i < 50; ++i) {
    c.text(true);
    c.write(asio::buffer("m" + std::to_string(i)));
    c.read(b);
    CHECK(beast::buffers_to_string(b.data()) == "m" + std::to_string(i));
    b.consume(b.size());
  }
  // close() sends the close frame, waits for the upstream's, then waits for the TCP EOF the
  // upstream (server role) starts: all of it has to cross the tunnel, half-close included.
  beast::get_lowest_layer(c).expires_after(10s);
  CHECK_NOTHROW(c.close(ws::close_code::normal));
  CHECK(!c.is_open());
  CHECK(proxy.activity().size() == 2);  // the request, and the upgrade starting
}

TEST_CASE("proxy: an upgrade the upstream refuses is relayed as a normal response") {
  Upstream up;
  Proxy proxy;
  auto r = http_request(proxy.port(), bhttp::verb::get, prefix(up.port()) + "/not-ws", "",
                        {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}});
  CHECK(r.result_int() == 200);
  auto h = inspected(r.body());
  CHECK(h["upgrade"] == "websocket");
  CHECK(h["connection"] == "Upgrade");
}

TEST_CASE("proxy: Connect unary call and /health through to the real envd") {
  wrenn::test::EnvdProcess envd;
  Proxy proxy;
  auto p = prefix(envd.port());
  auto list = http_request(proxy.port(), bhttp::verb::post, p + "/process.Process/List", "{}",
                           {{"Content-Type", "application/json"}});
  CHECK(list.result_int() == 200);
  CHECK(list[bhttp::field::content_type] == "application/json");
  CHECK(list.body().front() == '{');
  auto health = http_request(proxy.port(), bhttp::verb::get, p + "/health");
  CHECK(health.result_int() / 100 == 2);
}
