#include "http/server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/url/parse.hpp>

#include "error.h"
#include "log.h"

namespace wrenn::http {

using asio::use_awaitable;
constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);

struct Connection {
  Connection(tcp::socket s, std::uint64_t id, Server& srv) : stream(std::move(s)), id(id), server(srv) {}
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  std::uint64_t id;
  Server& server;
  bool idle = true;  // waiting for the next request header
  bool upgraded = false;
};

Exchange::Exchange(Connection& conn, bhttp::request_parser<bhttp::buffer_body>& parser)
    : conn_(conn), parser_(parser) {}

std::string_view Exchange::path() const {
  auto t = target();
  auto q = t.find('?');
  return q == std::string_view::npos ? t : t.substr(0, q);
}

std::optional<std::string> Exchange::query(std::string_view name) const {
  auto r = boost::urls::parse_origin_form(target());
  if (!r) return std::nullopt;
  for (auto p : r->params()) {
    if (p.key == name) return std::string(p.value);
  }
  return std::nullopt;
}

std::string_view Exchange::header(std::string_view name) const {
  auto it = request().find(name);
  if (it == request().end()) return {};
  return std::string_view(it->value().data(), it->value().size());
}

std::string_view Exchange::header(bhttp::field f) const {
  auto it = request().find(f);
  if (it == request().end()) return {};
  return std::string_view(it->value().data(), it->value().size());
}

tcp::endpoint Exchange::remote() const {
  boost::system::error_code ec;
  auto ep = conn_.stream.socket().remote_endpoint(ec);
  return ec ? tcp::endpoint() : ep;
}

beast::tcp_stream& Exchange::stream() {
  conn_.upgraded = true;
  return conn_.stream;
}
void Exchange::take_over() { conn_.upgraded = true; }
std::string Exchange::take_buffered() {
  auto data = conn_.buffer.data();
  std::string out(static_cast<const char*>(data.data()), data.size());
  conn_.buffer.consume(data.size());
  return out;
}
Server& Exchange::server() { return conn_.server; }
std::uint64_t Exchange::connection_id() const { return conn_.id; }

asio::awaitable<std::size_t> Exchange::read_some(char* data, std::size_t n) {
  if (parser_.is_done() || n == 0) co_return 0;
  conn_.stream.expires_never();
  // Beast sizes each socket read from the buffer's free capacity; without room, big
  // bodies arrive 512 bytes at a time.
  if (conn_.buffer.capacity() < 65536) conn_.buffer.reserve(65536);
  for (;;) {
    parser_.get().body().data = data;
    parser_.get().body().size = n;
    auto [ec, _] = co_await bhttp::async_read_some(conn_.stream, conn_.buffer, parser_, tuple_awaitable);
    if (ec == bhttp::error::need_buffer) ec = {};
    if (ec) throw Error(Code::kCanceled, "reading request body: " + ec.message());
    std::size_t got = n - parser_.get().body().size;
    if (got > 0 || parser_.is_done()) co_return got;
  }
}

asio::awaitable<std::string> Exchange::read_all(std::size_t limit) {
  std::string out;
  if (auto cl = parser_.content_length(); cl && *cl > limit)
    throw Error(Code::kResourceExhausted, "request body of " + std::to_string(*cl) +
                                              " bytes exceeds the limit of " + std::to_string(limit) + " bytes");
  char buf[16384];
  for (;;) {
    std::size_t got = co_await read_some(buf, sizeof buf);
    if (got == 0) break;
    if (out.size() + got > limit)
      throw Error(Code::kResourceExhausted,
                  "request body exceeds the limit of " + std::to_string(limit) + " bytes");
    out.append(buf, got);
  }
  co_return out;
}

bool Exchange::keep_alive() const {
  return request().keep_alive() && !close_after_ && conn_.server.keep_alive_enabled_ &&
         !conn_.server.stopped_;
}

asio::awaitable<void> Exchange::send(bhttp::response<bhttp::string_body> res) {
  if (responded_) throw Error(Code::kInternal, "response already sent");
  responded_ = finished_ = true;
  res.version(11);
  res.keep_alive(keep_alive());
  res.prepare_payload();
  conn_.stream.expires_never();
  auto [ec, _] = co_await bhttp::async_write(conn_.stream, res, tuple_awaitable);
  if (ec) throw Error(Code::kCanceled, "writing response: " + ec.message());
}

bhttp::response<bhttp::string_body> make_response(bhttp::status status, std::string_view content_type,
                                                  std::string body) {
  bhttp::response<bhttp::string_body> res{status, 11};
  if (!content_type.empty()) res.set(bhttp::field::content_type, content_type);
  res.body() = std::move(body);
  return res;
}

asio::awaitable<void> Exchange::send(bhttp::status status, std::string_view content_type, std::string body) {
  return send(make_response(status, content_type, std::move(body)));
}

asio::awaitable<void> Exchange::send_header(bhttp::response<bhttp::empty_body> res) {
  if (responded_) throw Error(Code::kInternal, "response already sent");
  responded_ = true;
  res.version(11);
  res.keep_alive(keep_alive());
  // No chunked framing where no body may follow (HEAD, 1xx, 204, 304): the client would not
  // read the last-chunk marker and would take it for the next response.
  auto status = res.result_int();
  bool bodiless = request().method() == bhttp::verb::head || status / 100 == 1 || status == 204 ||
                  status == 304;
  chunked_ = !res.has_content_length() && !bodiless;
  if (chunked_) res.chunked(true);
  streamed_.emplace(std::move(res));
  serializer_.emplace(*streamed_);
  conn_.stream.expires_never();
  auto [ec, _] = co_await bhttp::async_write_header(conn_.stream, *serializer_, tuple_awaitable);
  if (ec) throw Error(Code::kCanceled, "writing response header: " + ec.message());
}

asio::awaitable<void> Exchange::write_body(std::string_view bytes) {
  if (!serializer_ || finished_) throw Error(Code::kInternal, "write_body without an open streamed response");
  if (bytes.empty()) co_return;
  boost::system::error_code ec;
  if (chunked_) {
    std::tie(ec, std::ignore) = co_await asio::async_write(
        conn_.stream, bhttp::make_chunk(asio::buffer(bytes.data(), bytes.size())), tuple_awaitable);
  } else {
    std::tie(ec, std::ignore) =
        co_await asio::async_write(conn_.stream, asio::buffer(bytes.data(), bytes.size()), tuple_awaitable);
  }
  if (ec) throw Error(Code::kCanceled, "writing response body: " + ec.message());
}

asio::awaitable<void> Exchange::finish_body() {
  if (!serializer_ || finished_) co_return;
  finished_ = true;
  if (chunked_) {
    auto [ec, _] = co_await asio::async_write(conn_.stream, bhttp::make_chunk_last(), tuple_awaitable);
    if (ec) throw Error(Code::kCanceled, "finishing response body: " + ec.message());
  }
}

Server::Server(asio::io_context& io, Handler handler, ServerOptions opts)
    : io_(io), handler_(std::move(handler)), opts_(opts), acceptor_(io) {}

Server::~Server() { stop(); }

void Server::listen(const tcp::endpoint& ep) {
  boost::system::error_code ec;
  acceptor_.open(ep.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(ep, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    std::string addr = ep.address().to_string() + ":" + std::to_string(ep.port());
    throw Error(Code::kUnavailable, "cannot listen on " + addr + ": " + ec.message());
  }
  asio::co_spawn(io_, accept_loop(), asio::detached);
}

tcp::endpoint Server::local_endpoint() const { return acceptor_.local_endpoint(); }

void Server::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ec;
  acceptor_.close(ec);
  for (auto& [id, w] : connections_)
    if (auto c = w.lock()) c->stream.socket().close(ec);
}

void Server::prepare_for_snapshot(std::uint64_t keep) {
  keep_alive_enabled_ = false;
  snapshot_prepared_ = true;
  remembered_.clear();
  boost::system::error_code ec;
  for (auto& [id, w] : connections_) {
    if (id == keep) continue;
    auto c = w.lock();
    if (!c) continue;
    if (c->idle) {
      c->stream.socket().close(ec);
    } else {
      remembered_.insert(id);
    }
  }
}

void Server::restore_after_snapshot(std::uint64_t keep) {
  boost::system::error_code ec;
  for (auto id : remembered_) {
    if (id == keep) continue;
    auto it = connections_.find(id);
    if (it == connections_.end()) continue;
    if (auto c = it->second.lock()) c->stream.socket().close(ec);
  }
  remembered_.clear();
  keep_alive_enabled_ = true;
  snapshot_prepared_ = false;
}

asio::awaitable<void> Server::accept_loop() {
  while (!stopped_) {
    auto [ec, sock] = co_await acceptor_.async_accept(tuple_awaitable);
    if (ec) {
      if (stopped_ || ec == asio::error::operation_aborted) break;
      log::warn("accept failed", {{"error", ec.message()}});
      continue;
    }
    boost::system::error_code ig;
    sock.set_option(tcp::no_delay(true), ig);
    sock.set_option(asio::socket_base::keep_alive(true), ig);
    int idle = 30, intvl = 10, cnt = 3;
    ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    ::setsockopt(sock.native_handle(), IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
    auto conn = std::make_shared<Connection>(std::move(sock), next_id_++, *this);
    connections_[conn->id] = conn;
    asio::co_spawn(io_, serve(conn), asio::detached);
  }
}

asio::awaitable<void> Server::serve(std::shared_ptr<Connection> conn) {
  bool first = true;
  for (;;) {
    bhttp::request_parser<bhttp::buffer_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(opts_.max_header_bytes));
    parser.body_limit(boost::none);  // handlers bound what they read
    conn->idle = true;
    conn->stream.expires_after(first ? opts_.header_timeout : opts_.idle_timeout);
    auto [ec, _] = co_await bhttp::async_read_header(conn->stream, conn->buffer, parser, tuple_awaitable);
    first = false;
    if (ec) {
      if (ec != bhttp::error::end_of_stream && ec != asio::error::operation_aborted &&
          ec != beast::error::timeout && ec != asio::error::connection_reset &&
          ec != asio::error::eof && ec != asio::error::bad_descriptor) {
        // Malformed request line or headers: say so, then close.
        bhttp::response<bhttp::string_body> res{bhttp::status::bad_request, 11};
        res.set(bhttp::field::content_type, "text/plain");
        res.body() = "malformed HTTP request: " + ec.message() + "\n";
        res.keep_alive(false);
        res.prepare_payload();
        conn->stream.expires_after(std::chrono::seconds(5));
        co_await bhttp::async_write(conn->stream, res, tuple_awaitable);
      }
      break;
    }
    conn->idle = false;
    Exchange ex(*conn, parser);
    // HTTP/1.1 clients may wait for 100-continue before sending a body.
    if (beast::iequals(ex.header(bhttp::field::expect), "100-continue")) {
      bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, 11};
      co_await bhttp::async_write(conn->stream, cont, tuple_awaitable);
    }
    bool failed = false;
    std::optional<Error> error;
    try {
      co_await handler_(ex);
    } catch (const Error& e) {
      failed = true;
      error = e;
    } catch (const std::exception& e) {
      failed = true;
      log::error("handler failed", {{"error", e.what()}, {"path", std::string(ex.path())}});
      error = Error(Code::kInternal, "internal error");
    }
    if (error && !ex.responded() && !conn->upgraded) {
      ex.close_after();
      try {
        co_await ex.send(static_cast<bhttp::status>(http_status(error->code())), "text/plain",
                         std::string(error->what()) + "\n");
      } catch (const std::exception&) {
      }
    }
    if (conn->upgraded) {
      connections_.erase(conn->id);
      co_return;
    }
    if (!ex.responded()) {
      ex.close_after();
      try {
        co_await ex.send(bhttp::status::internal_server_error, "text/plain", "no response\n");
      } catch (const std::exception&) {
        failed = true;
      }
    }
    if (failed || !ex.finished_ || !ex.keep_alive()) break;
    // Drain what the handler left unread so the next request parses cleanly.
    if (!parser.is_done()) {
      std::size_t drained = 0;
      char sink[8192];
      try {
        while (drained <= opts_.drain_limit) {
          auto n = co_await ex.read_some(sink, sizeof sink);
          if (n == 0) break;
          drained += n;
        }
      } catch (const std::exception&) {
        break;
      }
      if (!parser.is_done()) break;
    }
  }
  boost::system::error_code ig;
  conn->stream.socket().shutdown(tcp::socket::shutdown_send, ig);
  conn->stream.socket().close(ig);
  connections_.erase(conn->id);
}

}  // namespace wrenn::http
