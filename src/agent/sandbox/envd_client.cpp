#include "sandbox/envd_client.h"

#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <thread>

#include "error.h"

namespace wrenn::agent {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;

namespace {

void set_timeouts(int fd, std::chrono::milliseconds t) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(t.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// The message envd put in its JSON error body, or the body itself.
std::string envd_message(const std::string& body) {
  boost::system::error_code ec;
  auto v = boost::json::parse(body, ec);
  if (!ec && v.is_object()) {
    if (auto* m = v.as_object().if_contains("message"); m && m->is_string())
      return std::string(m->as_string());
  }
  return body.substr(0, 200);
}

}  // namespace

EnvdResponse envd_request(const EnvdConnector& connect, const std::string& method,
                          const std::string& target, const std::string& body,
                          std::chrono::milliseconds timeout) {
  int fd = connect();
  set_timeouts(fd, timeout);
  asio::io_context io;
  asio::ip::tcp::socket sock(io);
  boost::system::error_code ec;
  sock.assign(asio::ip::tcp::v4(), fd, ec);
  if (ec) {
    ::close(fd);
    throw Error(Code::kInternal, "envd socket: " + ec.message());
  }
  bhttp::request<bhttp::string_body> req(bhttp::string_to_verb(method), target, 11);
  req.set(bhttp::field::host, "envd");
  req.set(bhttp::field::connection, "close");
  if (!body.empty()) req.set(bhttp::field::content_type, "application/json");
  req.body() = body;
  req.prepare_payload();
  bhttp::write(sock, req, ec);
  if (ec) throw Error(Code::kUnavailable, "envd " + target + ": " + ec.message());
  boost::beast::flat_buffer buf;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(1 << 20);
  bhttp::read(sock, buf, parser, ec);
  if (ec) throw Error(Code::kUnavailable, "envd " + target + ": " + ec.message());
  EnvdResponse r;
  r.status = parser.get().result_int();
  r.body = parser.get().body();
  return r;
}

void wait_envd_ready(const EnvdConnector& connect, std::chrono::milliseconds budget,
                     const std::function<bool()>& still_alive) {
  const auto deadline = std::chrono::steady_clock::now() + budget;
  std::string last = "no answer";
  // envd usually listens within a few milliseconds of its exec, and a refused connect
  // costs microseconds: poll every 500 us for the first 100 ms, then back off.
  const auto fast_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  auto pause = std::chrono::microseconds(500);
  for (;;) {
    try {
      EnvdResponse r = envd_request(connect, "GET", "/health", "", std::chrono::milliseconds(2000));
      if (r.status / 100 == 2) return;
      last = "GET /health answered " + std::to_string(r.status);
    } catch (const Error& e) {
      last = e.what();
    }
    if (still_alive && !still_alive())
      throw Error(Code::kInternal, "envd exited before it was ready (" + last + ")");
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(Code::kDeadlineExceeded,
                  "envd was not ready within " + std::to_string(budget.count()) + " ms: " + last);
    std::this_thread::sleep_for(pause);
    if (std::chrono::steady_clock::now() >= fast_until)
      pause = std::min<std::chrono::microseconds>(pause * 2, std::chrono::milliseconds(50));
  }
}

void envd_init(const EnvdConnector& connect, const EnvdDefaults& d,
               std::chrono::milliseconds timeout) {
  boost::json::object o;
  if (!d.env.empty()) {
    boost::json::object env;
    for (const auto& [k, v] : d.env) env[k] = v;
    o["envVars"] = std::move(env);
  }
  if (!d.user.empty()) o["defaultUser"] = d.user;
  if (!d.workdir.empty()) o["defaultWorkdir"] = d.workdir;
  EnvdResponse r = envd_request(connect, "POST", "/init", boost::json::serialize(o), timeout);
  if (r.status / 100 == 2) return;
  Code c = r.status == 400 ? Code::kInvalidArgument : Code::kInternal;
  throw Error(c, "envd refused the sandbox defaults: " + envd_message(r.body));
}

}  // namespace wrenn::agent
