#include "api/proxy.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/json.hpp>
#include <charconv>
#include <memory>
#include <optional>
#include <tuple>
#include <vector>

#include "error.h"
#include "log.h"

namespace wrenn::agent {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kBufSize = 64 * 1024;
constexpr std::uint32_t kMaxResponseHeader = 64 * 1024;

struct Target {
  std::string id;
  std::uint16_t port = 0;
  std::string rest;  // upstream target: path + query, raw
  std::string prefix() const { return "/proxy/" + id + "/" + std::to_string(port); }
};

enum class Framing { kNone, kLength, kChunked };

// One proxied request's upstream side. Shared with the callbacks (header timer, request
// pump completion) that may outlive a step of serve_proxy.
struct Upstream {
  explicit Upstream(const asio::any_io_executor& ex) : sock(ex), header_timer(ex), pump_timer(ex) {}
  tcp::socket sock;
  asio::steady_timer header_timer;
  bool header_received = false;
  bool timed_out = false;
  asio::steady_timer pump_timer;  // cancelled when the request pump ends
  bool pump_running = false;
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

bhttp::response<bhttp::string_body> error_response(unsigned status, std::string_view code,
                                                   std::string_view message) {
  boost::json::object inner;
  inner["code"] = code;
  inner["message"] = message;
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return http::make_response(static_cast<bhttp::status>(status), "application/json",
                             boost::json::serialize(outer));
}

// Status, code and message for a connector failure.
bhttp::response<bhttp::string_body> connect_error_response(const Error& e) {
  switch (e.code()) {
    case Code::kNotFound:
      return error_response(404, code_name(e.code()), e.what());
    case Code::kFailedPrecondition:
      return error_response(503, code_name(e.code()), "sandbox is not running");
    case Code::kUnavailable:
      return error_response(502, code_name(e.code()), std::string("proxy error: ") + e.what());
    default:
      return error_response(http_status(e.code()), code_name(e.code()), e.what());
  }
}

asio::awaitable<void> send_quietly(http::Exchange& ex, bhttp::response<bhttp::string_body> res) {
  if (ex.responded()) co_return;
  try {
    co_await ex.send(std::move(res));
  } catch (const std::exception&) {
    // The client went away; the server closes the connection.
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

// Header names listed in a Connection header (they are hop-by-hop too).
std::vector<std::string> connection_tokens(const bhttp::fields& f) {
  std::vector<std::string> out;
  auto [begin, end] = f.equal_range(bhttp::field::connection);
  for (auto it = begin; it != end; ++it)
    for (auto tok : bhttp::token_list(it->value())) out.emplace_back(tok);
  return out;
}

bool is_hop_by_hop(std::string_view name, const std::vector<std::string>& listed) {
  static constexpr std::string_view kHop[] = {"connection", "keep-alive",        "te",
                                              "trailer",    "transfer-encoding", "upgrade"};
  for (auto h : kHop)
    if (iequals(name, h)) return true;
  if (istarts_with(name, "proxy-")) return true;
  for (const auto& l : listed)
    if (iequals(name, l)) return true;
  return false;
}

bool wants_upgrade(const bhttp::fields& f) {
  if (f[bhttp::field::upgrade].empty()) return false;
  for (const auto& tok : connection_tokens(f))
    if (iequals(tok, "upgrade")) return true;
  return false;
}

std::string client_ip(const http::Exchange& ex) {
  auto ep = ex.remote();
  auto addr = ep.address();
  if (addr.is_v6() && addr.to_v6().is_v4_mapped())
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  return addr.to_string();
}

bhttp::request<bhttp::empty_body> upstream_request(const http::Exchange& ex, const Target& t,
                                                   bool upgrade, Framing framing,
                                                   const ProxyOptions& opts) {
  const auto& req = ex.request();
  bhttp::request<bhttp::empty_body> up;
  up.version(11);
  if (req.method() == bhttp::verb::unknown)
    up.method_string(req.method_string());
  else
    up.method(req.method());
  up.target(t.rest);
  auto listed = connection_tokens(req);
  std::string xff;
  bool has_xfh = false, has_xfp = false;
  for (const auto& f : req) {
    std::string_view name = f.name_string();
    std::string_view value = f.value();
    if (is_hop_by_hop(name, listed)) continue;
    if (iequals(name, "host") || iequals(name, "content-length") || iequals(name, "expect"))
      continue;
    if (iequals(name, "x-forwarded-for")) {
      if (!xff.empty()) xff += ", ";
      xff += value;
      continue;
    }
    if (opts.strip_bearer && iequals(name, "authorization") && istarts_with(value, "bearer "))
      continue;
    // The agent's own token header never reaches a sandbox.
    if (iequals(name, "x-wrenn-agent-token")) continue;
    if (iequals(name, "x-forwarded-host")) has_xfh = true;
    if (iequals(name, "x-forwarded-proto")) has_xfp = true;
    up.insert(name, value);
  }
  up.set(bhttp::field::host, "127.0.0.1:" + std::to_string(t.port));
  std::string ip = client_ip(ex);
  if (!ip.empty()) xff += (xff.empty() ? "" : ", ") + ip;
  if (!xff.empty()) up.set("X-Forwarded-For", xff);
  auto host = req[bhttp::field::host];
  if (!has_xfh && !host.empty()) up.set("X-Forwarded-Host", host);
  if (!has_xfp) up.set("X-Forwarded-Proto", "http");
  if (framing == Framing::kLength)
    up.set(bhttp::field::content_length, req[bhttp::field::content_length]);
  else if (framing == Framing::kChunked)
    up.chunked(true);
  if (upgrade) {
    up.set(bhttp::field::connection, "Upgrade");
    up.set(bhttp::field::upgrade, req[bhttp::field::upgrade]);
  } else {
    // One upstream connection per request: no pool to manage, evict or keep consistent
    // across sandbox pause/resume; a loopback-ish connect costs little next to a request.
    up.set(bhttp::field::connection, "close");
  }
  return up;
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

bhttp::response<bhttp::empty_body> client_response(const bhttp::response_header<>& up,
                                                   const Target& t) {
  bhttp::response<bhttp::empty_body> res;
  res.result(up.result_int());
  res.reason(up.reason());
  auto listed = connection_tokens(up);
  for (const auto& f : up) {
    std::string_view name = f.name_string();
    if (is_hop_by_hop(name, listed)) continue;
    if (iequals(name, "location")) {
      res.insert(name, rewrite_location(f.value(), t));
      continue;
    }
    res.insert(name, f.value());
  }
  return res;
}

// Copies the client's request body to the upstream. Never throws; on a client failure it
// closes the upstream (which then sees a truncated body); on an upstream failure it stops
// reading the client (the server drains or closes the connection later).
asio::awaitable<void> pump_request(http::Exchange& ex, std::shared_ptr<Upstream> up, bool chunked) {
  auto buf = std::make_unique<char[]>(kBufSize);
  try {
    for (;;) {
      std::size_t n = co_await ex.read_some(buf.get(), kBufSize);
      error_code ec;
      if (n == 0) {
        if (chunked)
          std::tie(ec, std::ignore) =
              co_await asio::async_write(up->sock, bhttp::make_chunk_last(), tuple_awaitable);
        co_return;
      }
      if (chunked) {
        std::tie(ec, std::ignore) = co_await asio::async_write(
            up->sock, bhttp::make_chunk(asio::buffer(buf.get(), n)), tuple_awaitable);
      } else {
        std::tie(ec, std::ignore) =
            co_await asio::async_write(up->sock, asio::buffer(buf.get(), n), tuple_awaitable);
      }
      if (ec) co_return;
    }
  } catch (const std::exception& e) {
    log::debug("proxy: client request body failed", {{"error", e.what()}});
    error_code ig;
    up->sock.close(ig);
  }
}

// Copies bytes one way until EOF (passed on as a half-close) or an error (which ends both
// directions).
asio::awaitable<void> pipe(tcp::socket& from, tcp::socket& to, std::string initial) {
  error_code ec, ig;
  if (!initial.empty())
    std::tie(ec, std::ignore) =
        co_await asio::async_write(to, asio::buffer(initial), tuple_awaitable);
  auto buf = std::make_unique<char[]>(kBufSize);
  while (!ec) {
    std::size_t n = 0;
    std::tie(ec, n) =
        co_await from.async_read_some(asio::buffer(buf.get(), kBufSize), tuple_awaitable);
    if (ec == asio::error::eof) {
      to.shutdown(tcp::socket::shutdown_send, ig);
      co_return;
    }
    if (!ec)
      std::tie(ec, std::ignore) =
          co_await asio::async_write(to, asio::buffer(buf.get(), n), tuple_awaitable);
  }
  from.close(ig);
  to.close(ig);
}

asio::awaitable<void> tunnel(http::Exchange& ex, Upstream& up, std::string to_client) {
  using namespace asio::experimental::awaitable_operators;
  std::string to_upstream = ex.take_buffered();
  auto& client = ex.stream();  // takes the connection over
  client.expires_never();
  auto up_pipe = pipe(client.socket(), up.sock, std::move(to_upstream));
  auto down_pipe = pipe(up.sock, client.socket(), std::move(to_client));
  auto both = std::move(up_pipe) && std::move(down_pipe);
  co_await std::move(both);
}

// Relays the upstream's response body; false when either side failed mid-way.
asio::awaitable<bool> relay_body(http::Exchange& ex, Upstream& up, beast::flat_buffer& ubuf,
                                 bhttp::response_parser<bhttp::buffer_body>& parser,
                                 std::string& failure) {
  auto buf = std::make_unique<char[]>(kBufSize);
  while (!parser.is_done()) {
    parser.get().body().data = buf.get();
    parser.get().body().size = kBufSize;
    auto [ec, _] = co_await bhttp::async_read_some(up.sock, ubuf, parser, tuple_awaitable);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) {
      failure = "reading upstream response: " + ec.message();
      co_return false;
    }
    std::size_t n = kBufSize - parser.get().body().size;
    if (n == 0) continue;
    bool ok = true;
    try {
      co_await ex.write_body(std::string_view(buf.get(), n));
    } catch (const std::exception& e) {
      failure = e.what();
      ok = false;
    }
    if (!ok) co_return false;
  }
  try {
    co_await ex.finish_body();
  } catch (const std::exception& e) {
    failure = e.what();
    co_return false;
  }
  co_return true;
}

asio::awaitable<void> proxy_connected(http::Exchange& ex, const ProxyOptions& opts, const Target& t,
                                      std::shared_ptr<Upstream> up) {
  const auto& req = ex.request();
  bool upgrade = wants_upgrade(req);
  Framing framing = req.chunked()              ? Framing::kChunked
                    : req.has_content_length() ? Framing::kLength
                                               : Framing::kNone;
  std::optional<bhttp::response<bhttp::string_body>> error;
  std::string failure;  // set when the response broke off after it started

  auto head = upstream_request(ex, t, upgrade, framing, opts);
  bhttp::request_serializer<bhttp::empty_body> sr(head);
  auto [wec, _] = co_await bhttp::async_write_header(up->sock, sr, tuple_awaitable);
  if (wec) error = error_response(502, "unavailable", "proxy error: " + wec.message());

  // The request body goes up concurrently with the response coming down: an upstream may
  // answer (or echo) while it still reads.
  // (Nothing else in a statement with co_await: GCC 12 destroys the temporaries of such a
  // full-expression twice.)
  auto exec = co_await asio::this_coro::executor;
  if (!error && framing != Framing::kNone && !ex.body_done()) {
    up->pump_running = true;
    auto pump = pump_request(ex, up, framing == Framing::kChunked);
    auto on_done = [up](std::exception_ptr) {
      up->pump_running = false;
      up->pump_timer.cancel();
    };
    asio::co_spawn(exec, std::move(pump), std::move(on_done));
  }

  beast::flat_buffer ubuf;
  ubuf.reserve(kBufSize);
  std::optional<bhttp::response_parser<bhttp::buffer_body>> parser;
  if (!error) {
    up->header_timer.expires_after(opts.header_timeout);
    up->header_timer.async_wait([w = std::weak_ptr<Upstream>(up)](error_code ec) {
      auto u = w.lock();
      if (ec || !u || u->header_received) return;
      u->timed_out = true;
      error_code ig;
      u->sock.close(ig);
    });
    // Interim answers (100 Continue, 103 Early Hints) are not relayed.
    for (;;) {
      parser.emplace();
      parser->header_limit(kMaxResponseHeader);
      parser->body_limit(boost::none);
      if (req.method() == bhttp::verb::head) parser->skip(true);
      auto [ec, n] = co_await bhttp::async_read_header(up->sock, ubuf, *parser, tuple_awaitable);
      if (ec) {
        if (up->timed_out)
          error = error_response(504, "deadline_exceeded",
                                 "proxy error: the upstream sent no response header in time");
        else
          error = error_response(502, "unavailable", "proxy error: " + ec.message());
        break;
      }
      unsigned status = parser->get().result_int();
      if (status / 100 != 1 || status == 101) break;
    }
    up->header_received = true;
    up->header_timer.cancel();
  }

  bool switched = !error && parser->get().result_int() == 101;
  if (switched && !upgrade)
    error = error_response(502, "unavailable", "proxy error: unexpected 101 from upstream");

  if (!error && !switched) {
    bool sent = true;
    try {
      auto res = client_response(parser->get().base(), t);
      co_await ex.send_header(std::move(res));
    } catch (const std::exception& e) {
      failure = e.what();
      sent = false;
    }
    if (sent) {
      bool complete = co_await relay_body(ex, *up, ubuf, *parser, failure);
      if (!complete && failure.empty()) failure = "response broke off";
    }
  }
  if (error) {
    log::warn("proxy request failed", {{"sandbox", t.id},
                                       {"port", std::to_string(t.port)},
                                       {"status", std::to_string(error->result_int())}});
    co_await send_quietly(ex, std::move(*error));
  }

  if (!switched) {
    // Ends a pump still writing upstream; one still waiting for the client's body is
    // unblocked by cancelling the client read, and that connection then closes.
    error_code ig;
    up->sock.close(ig);
    if (up->pump_running) ex.stream().socket().cancel(ig);
  }
  while (up->pump_running) {
    up->pump_timer.expires_at(asio::steady_timer::time_point::max());
    co_await up->pump_timer.async_wait(tuple_awaitable);
  }
  if (!failure.empty()) {
    // Already streaming: the only way to tell the client is to close without finishing.
    log::warn("proxy response broke off",
              {{"sandbox", t.id}, {"port", std::to_string(t.port)}, {"error", failure}});
    ex.close_after();
    co_return;
  }
  if (!switched) co_return;

  // 101: send the upstream's head as is, then relay bytes both ways.
  notify_activity(opts, t.id);
  bhttp::response<bhttp::empty_body> head101(parser->release().base());
  auto& client = ex.stream();
  client.expires_never();
  auto [ec101, n101] = co_await bhttp::async_write(client.socket(), head101, tuple_awaitable);
  if (ec101) co_return;
  auto leftover = ubuf.data();
  std::string to_client(static_cast<const char*>(leftover.data()), leftover.size());
  ubuf.consume(leftover.size());
  co_await tunnel(ex, *up, std::move(to_client));
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
    error = error_response(400, code_name(e.code()), e.what());
  }
  if (error) {
    co_await send_quietly(ex, std::move(*error));
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
    co_await send_quietly(ex, std::move(*error));
    co_return;
  }

  auto exec = co_await asio::this_coro::executor;
  auto up = std::make_shared<Upstream>(exec);
  sockaddr_storage addr{};
  socklen_t len = sizeof addr;
  error_code ec;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    error = error_response(502, "unavailable", "proxy error: the connector returned a bad socket");
  } else {
    up->sock.assign(addr.ss_family == AF_INET6 ? tcp::v6() : tcp::v4(), fd, ec);
    if (ec) {
      ::close(fd);
      error = error_response(502, "unavailable", "proxy error: " + ec.message());
    }
  }
  if (error) {
    co_await send_quietly(ex, std::move(*error));
    co_return;
  }
  up->sock.set_option(tcp::no_delay(true), ec);
  co_await proxy_connected(ex, opts, t, std::move(up));
}

}  // namespace wrenn::agent
