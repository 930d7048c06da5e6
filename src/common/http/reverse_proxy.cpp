#include "http/reverse_proxy.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <optional>
#include <tuple>

#include "log.h"

namespace wrenn::http {

namespace {

using boost::system::error_code;

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kBufSize = 64 * 1024;
constexpr std::uint32_t kMaxResponseHeader = 64 * 1024;

enum class Framing { kNone, kLength, kChunked };

// One proxied request's upstream side. Shared with the callbacks (header timer, request
// pump completion) that may outlive a step of the relay.
template <class Stream>
struct Upstream {
  Upstream(Stream s, const asio::any_io_executor& ex)
      : sock(std::move(s)), header_timer(ex), pump_timer(ex) {}
  Stream sock;
  asio::steady_timer header_timer;
  bool header_received = false;
  bool timed_out = false;
  asio::steady_timer pump_timer;  // cancelled when the request pump ends
  bool pump_running = false;

  void close() {
    error_code ig;
    beast::get_lowest_layer(sock).close(ig);
  }
};

// The end of one direction of a tunnel. TLS has no half-close of its own that every peer
// understands mid-stream, so for TLS the TCP send side is shut (the peer sees the end).
void shutdown_send(tcp::socket& s) {
  error_code ig;
  s.shutdown(tcp::socket::shutdown_send, ig);
}
void shutdown_send(TlsUpstream& s) {
  error_code ig;
  s.next_layer().shutdown(tcp::socket::shutdown_send, ig);
}

bool iequals(std::string_view a, std::string_view b) {
  return beast::iequals(a, b);
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
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

std::string client_ip(const Exchange& ex) {
  auto ep = ex.remote();
  auto addr = ep.address();
  if (addr.is_v6() && addr.to_v6().is_v4_mapped())
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  return addr.to_string();
}

bhttp::request<bhttp::empty_body> upstream_request(const Exchange& ex, const ProxyRoute& route,
                                                   bool upgrade, Framing framing) {
  const auto& req = ex.request();
  bhttp::request<bhttp::empty_body> up;
  up.version(11);
  if (req.method() == bhttp::verb::unknown)
    up.method_string(req.method_string());
  else
    up.method(req.method());
  up.target(route.target);
  auto listed = connection_tokens(req);
  std::string xff;
  bool has_xfh = false, has_xfp = false;
  for (const auto& f : req) {
    std::string_view name = f.name_string();
    std::string_view value = f.value();
    if (is_hop_by_hop(name, listed)) continue;
    if (iequals(name, "host") || iequals(name, "content-length") || iequals(name, "expect"))
      continue;
    bool dropped = false;
    for (const auto& d : route.drop_headers) dropped = dropped || iequals(name, d);
    if (dropped) continue;
    if (iequals(name, "x-forwarded-for")) {
      if (!xff.empty()) xff += ", ";
      xff += value;
      continue;
    }
    if (route.drop_bearer && iequals(name, "authorization") && istarts_with(value, "bearer "))
      continue;
    if (iequals(name, "x-forwarded-host")) has_xfh = true;
    if (iequals(name, "x-forwarded-proto")) has_xfp = true;
    up.insert(name, value);
  }
  up.set(bhttp::field::host, route.host);
  std::string ip = client_ip(ex);
  if (!ip.empty()) xff += (xff.empty() ? "" : ", ") + ip;
  if (!xff.empty()) up.set("X-Forwarded-For", xff);
  auto host = req[bhttp::field::host];
  if (!has_xfh && !host.empty()) up.set("X-Forwarded-Host", host);
  if (!has_xfp) up.set("X-Forwarded-Proto", "http");
  for (const auto& [name, value] : route.set_headers) up.set(name, value);
  if (framing == Framing::kLength)
    up.set(bhttp::field::content_length, req[bhttp::field::content_length]);
  else if (framing == Framing::kChunked)
    up.chunked(true);
  if (upgrade) {
    up.set(bhttp::field::connection, "Upgrade");
    up.set(bhttp::field::upgrade, req[bhttp::field::upgrade]);
  } else {
    // One upstream connection per request: no pool to manage, evict or keep consistent
    // across sandbox pause/resume; a nearby connect costs little next to a request.
    up.set(bhttp::field::connection, "close");
  }
  return up;
}

bhttp::response<bhttp::empty_body> client_response(const bhttp::response_header<>& up,
                                                   const ProxyRoute& route) {
  bhttp::response<bhttp::empty_body> res;
  res.result(up.result_int());
  res.reason(up.reason());
  auto listed = connection_tokens(up);
  for (const auto& f : up) {
    std::string_view name = f.name_string();
    if (is_hop_by_hop(name, listed)) continue;
    if (iequals(name, "location") && route.rewrite_location) {
      res.insert(name, route.rewrite_location(f.value()));
      continue;
    }
    res.insert(name, f.value());
  }
  return res;
}

// Copies the client's request body to the upstream. Never throws; on a client failure it
// closes the upstream (which then sees a truncated body); on an upstream failure it stops
// reading the client (the server drains or closes the connection later).
template <class Stream>
asio::awaitable<void> pump_request(Exchange& ex, std::shared_ptr<Upstream<Stream>> up,
                                   bool chunked) {
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
    up->close();
  }
}

// Copies bytes one way until EOF (passed on as a half-close) or an error (which ends both
// directions).
template <class From, class To>
asio::awaitable<void> pipe(From& from, To& to, std::string initial) {
  error_code ec, ig;
  if (!initial.empty())
    std::tie(ec, std::ignore) =
        co_await asio::async_write(to, asio::buffer(initial), tuple_awaitable);
  auto buf = std::make_unique<char[]>(kBufSize);
  while (!ec) {
    std::size_t n = 0;
    std::tie(ec, n) =
        co_await from.async_read_some(asio::buffer(buf.get(), kBufSize), tuple_awaitable);
    if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) {
      shutdown_send(to);
      co_return;
    }
    if (!ec)
      std::tie(ec, std::ignore) =
          co_await asio::async_write(to, asio::buffer(buf.get(), n), tuple_awaitable);
  }
  beast::get_lowest_layer(from).close(ig);
  beast::get_lowest_layer(to).close(ig);
}

template <class Stream>
asio::awaitable<void> tunnel(Exchange& ex, Upstream<Stream>& up, std::string to_client) {
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
template <class Stream>
asio::awaitable<bool> relay_body(Exchange& ex, Upstream<Stream>& up, beast::flat_buffer& ubuf,
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

template <class Stream>
asio::awaitable<void> relay(Exchange& ex, std::shared_ptr<Upstream<Stream>> up,
                            const ProxyRoute& route) {
  const auto& req = ex.request();
  bool upgrade = wants_upgrade(req);
  Framing framing = req.chunked()              ? Framing::kChunked
                    : req.has_content_length() ? Framing::kLength
                                               : Framing::kNone;
  std::optional<bhttp::response<bhttp::string_body>> error;
  std::string failure;  // set when the response broke off after it started

  auto head = upstream_request(ex, route, upgrade, framing);
  bhttp::request_serializer<bhttp::empty_body> sr(head);
  auto [wec, _] = co_await bhttp::async_write_header(up->sock, sr, tuple_awaitable);
  if (wec) error = proxy_error_response(502, "unavailable", "proxy error: " + wec.message());

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
    up->header_timer.expires_after(route.header_timeout);
    up->header_timer.async_wait([w = std::weak_ptr<Upstream<Stream>>(up)](error_code ec) {
      auto u = w.lock();
      if (ec || !u || u->header_received) return;
      u->timed_out = true;
      u->close();
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
          error = proxy_error_response(504, "deadline_exceeded",
                                       "proxy error: the upstream sent no response header in time");
        else
          error = proxy_error_response(502, "unavailable", "proxy error: " + ec.message());
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
    error = proxy_error_response(502, "unavailable", "proxy error: unexpected 101 from upstream");

  if (!error && !switched) {
    bool sent = true;
    try {
      auto res = client_response(parser->get().base(), route);
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
    log::warn("proxy request failed",
              {{"route", route.label}, {"status", std::to_string(error->result_int())}});
    co_await send_quietly(ex, std::move(*error));
  }

  if (!switched) {
    // Ends a pump still writing upstream; one still waiting for the client's body is
    // unblocked by cancelling the client read, and that connection then closes.
    up->close();
    error_code ig;
    if (up->pump_running) ex.stream().socket().cancel(ig);
  }
  while (up->pump_running) {
    up->pump_timer.expires_at(asio::steady_timer::time_point::max());
    co_await up->pump_timer.async_wait(tuple_awaitable);
  }
  if (!failure.empty()) {
    // Already streaming: the only way to tell the client is to close without finishing.
    log::warn("proxy response broke off", {{"route", route.label}, {"error", failure}});
    ex.close_after();
    co_return;
  }
  if (!switched) co_return;

  // 101: send the upstream's head as is, then relay bytes both ways.
  if (route.on_upgrade) {
    try {
      route.on_upgrade();
    } catch (const std::exception& e) {
      log::warn("proxy upgrade callback failed", {{"route", route.label}, {"error", e.what()}});
    }
  }
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

bhttp::response<bhttp::string_body> proxy_error_response(unsigned status, std::string_view code,
                                                         std::string_view message) {
  boost::json::object inner;
  inner["code"] = code;
  inner["message"] = message;
  boost::json::object outer;
  outer["error"] = std::move(inner);
  return make_response(static_cast<bhttp::status>(status), "application/json",
                       boost::json::serialize(outer));
}

asio::awaitable<void> send_quietly(Exchange& ex, bhttp::response<bhttp::string_body> res) {
  if (ex.responded()) co_return;
  try {
    co_await ex.send(std::move(res));
  } catch (const std::exception&) {
    // The client went away; the server closes the connection.
  }
}

asio::awaitable<void> relay_to_upstream(Exchange& ex, PlainUpstream upstream,
                                        const ProxyRoute& route) {
  auto exec = co_await asio::this_coro::executor;
  auto up = std::make_shared<Upstream<PlainUpstream>>(std::move(upstream), exec);
  co_await relay(ex, std::move(up), route);
}

asio::awaitable<void> relay_to_upstream(Exchange& ex, std::unique_ptr<TlsUpstream> upstream,
                                        const ProxyRoute& route) {
  auto exec = co_await asio::this_coro::executor;
  auto up = std::make_shared<Upstream<TlsUpstream>>(std::move(*upstream), exec);
  upstream.reset();
  co_await relay(ex, std::move(up), route);
}

}  // namespace wrenn::http
