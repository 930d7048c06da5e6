#include "api/proxy.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <memory>
#include <optional>

#include "error.h"
#include "http/reverse_proxy.h"
#include "log.h"

namespace wrenn::agent {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct Target {
  std::string id;
  std::uint16_t port = 0;
  std::string rest;  // upstream target: path + query, raw
  std::string prefix() const { return "/proxy/" + id + "/" + std::to_string(port); }
};

bool iequals(std::string_view a, std::string_view b) {
  return beast::iequals(a, b);
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > 63) return false;
  for (char c : id)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}

// "/proxy/{id}/{port}{rest}?{query}" -> Target; throws Error(invalid_argument).
Target parse_target(std::string_view target) {
  std::string_view path = target, query;
  if (auto q = target.find('?'); q != std::string_view::npos) {
    path = target.substr(0, q);
    query = target.substr(q);
  }
  constexpr std::string_view kPrefix = "/proxy/";
  if (path.substr(0, kPrefix.size()) != kPrefix)
    throw Error(Code::kInvalidArgument, "not a proxy path");
  path.remove_prefix(kPrefix.size());
  auto slash = path.find('/');
  if (slash == std::string_view::npos)
    throw Error(Code::kInvalidArgument, "proxy path must be /proxy/{sandbox_id}/{port}/...");
  Target t;
  std::string_view id = path.substr(0, slash);
  if (!valid_id(id)) throw Error(Code::kInvalidArgument, "invalid sandbox id");
  t.id = std::string(id);
  path.remove_prefix(slash + 1);
  slash = path.find('/');
  std::string_view port = path.substr(0, slash);
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || port.size() > 5 || ec != std::errc() || end != port.data() + port.size() ||
      value < 1 || value > 65535)
    throw Error(Code::kInvalidArgument, "invalid port");
  t.port = static_cast<std::uint16_t>(value);
  std::string_view rest = slash == std::string_view::npos ? std::string_view() : path.substr(slash);
  t.rest = rest.empty() ? "/" : std::string(rest);
  t.rest += query;
  return t;
}

// Status, code and message for a connector failure.
bhttp::response<bhttp::string_body> connect_error_response(const Error& e) {
  switch (e.code()) {
    case Code::kNotFound:
      return http::proxy_error_response(404, code_name(e.code()), e.what());
    case Code::kFailedPrecondition:
      return http::proxy_error_response(503, code_name(e.code()), "sandbox is not running");
    case Code::kUnavailable:
      return http::proxy_error_response(502, code_name(e.code()),
                                        std::string("proxy error: ") + e.what());
    default:
      return http::proxy_error_response(http_status(e.code()), code_name(e.code()), e.what());
  }
}

void notify_activity(const ProxyOptions& opts, const std::string& id) {
  try {
    if (opts.on_activity) opts.on_activity(id);
  } catch (const std::exception& e) {
    log::warn("proxy activity callback failed", {{"sandbox", id}, {"error", e.what()}});
  }
}

asio::thread_pool& connector_pool() {
  static asio::thread_pool pool(2);
  return pool;
}

asio::awaitable<int> call_connector(const ProxyOptions& opts, const std::string& id,
                                    std::uint16_t port) {
  if (opts.connect_inline) co_return opts.connect(id, port);
  // The connector blocks (it enters the sandbox's network namespace on a thread); keep it
  // off the io thread. co_spawn delivers the result back on this coroutine's executor.
  auto run = [connect = opts.connect, id, port]() -> asio::awaitable<int> {
    co_return connect(id, port);
  };
  co_return co_await asio::co_spawn(connector_pool(), std::move(run), asio::use_awaitable);
}

// Connects, retrying "nothing listens" briefly: a server (or envd's port forwarder) may be
// just starting. Throws the connector's Error.
asio::awaitable<int> connect_with_retry(const ProxyOptions& opts, const Target& t) {
  auto exec = co_await asio::this_coro::executor;
  for (int attempt = 0;; ++attempt) {
    std::optional<Error> err;
    int fd = -1;
    try {
      fd = co_await call_connector(opts, t.id, t.port);
    } catch (const Error& e) {
      err = e;
    } catch (const std::exception& e) {
      err = Error(Code::kUnavailable, e.what());
    }
    if (!err) co_return fd;
    if (err->code() != Code::kUnavailable || attempt == 2) throw *err;
    asio::steady_timer wait(exec, std::chrono::milliseconds(attempt == 0 ? 100 : 200));
    co_await wait.async_wait(tuple_awaitable);
  }
}

// "/x" and absolute URLs on the upstream's own address point back through the proxy.
std::string rewrite_location(std::string_view loc, const Target& t) {
  if (!loc.empty() && loc[0] == '/' && (loc.size() == 1 || loc[1] != '/'))
    return t.prefix() + std::string(loc);
  std::string_view rest;
  if (istarts_with(loc, "http://"))
    rest = loc.substr(7);
  else if (istarts_with(loc, "https://"))
    rest = loc.substr(8);
  else
    return std::string(loc);
  auto end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view path = end == std::string_view::npos ? std::string_view() : rest.substr(end);
  std::string port = ":" + std::to_string(t.port);
  bool own = iequals(authority, "127.0.0.1" + port) || iequals(authority, "localhost" + port) ||
             iequals(authority, "[::1]" + port);
  if (!own) return std::string(loc);
  std::string out = t.prefix();
  if (path.empty() || path[0] != '/') out += '/';
  out += path;
  return out;
}

}  // namespace

bool is_proxy_path(std::string_view path) {
  return path.substr(0, 7) == "/proxy/";
}

asio::awaitable<void> serve_proxy(http::Exchange& ex, const ProxyOptions& opts) {
  std::optional<Target> target;
  std::optional<bhttp::response<bhttp::string_body>> error;
  try {
    target = parse_target(ex.target());
  } catch (const Error& e) {
    error = http::proxy_error_response(400, code_name(e.code()), e.what());
  }
  if (error) {
    co_await http::send_quietly(ex, std::move(*error));
    co_return;
  }
  const Target& t = *target;
  notify_activity(opts, t.id);

  int fd = -1;
  try {
    fd = co_await connect_with_retry(opts, t);
  } catch (const Error& e) {
    error = connect_error_response(e);
  }
  if (error) {
    co_await http::send_quietly(ex, std::move(*error));
    co_return;
  }

  auto exec = co_await asio::this_coro::executor;
  tcp::socket sock(exec);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  error_code ec;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    error = http::proxy_error_response(502, "unavailable",
                                       "proxy error: the connector returned a bad socket");
  } else {
    sock.assign(addr.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) {
      ::close(fd);
      error = http::proxy_error_response(502, "unavailable", "proxy error: " + ec.message());
    }
  }
  if (error) {
    co_await http::send_quietly(ex, std::move(*error));
    co_return;
  }
  sock.set_option(tcp::no_delay(true), ec);

  http::ProxyRoute route;
  route.target = t.rest;
  route.host = "127.0.0.1:" + std::to_string(t.port);
  // The agent's own token, and a Wrenn API key a client sent along, never reach a sandbox.
  route.drop_headers = {"x-wrenn-agent-token", "x-api-key"};
  route.drop_bearer = opts.strip_bearer;
  route.rewrite_location = [t](std::string_view loc) { return rewrite_location(loc, t); };
  route.header_timeout = opts.header_timeout;
  route.on_upgrade = [&opts, id = t.id] { notify_activity(opts, id); };
  route.label = "sandbox " + t.id + " port " + std::to_string(t.port);
  co_await http::relay_to_upstream(ex, std::move(sock), route);
}

}  // namespace wrenn::agent
