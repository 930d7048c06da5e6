// HTTP/1.1 server on Boost.Beast with C++20 coroutines.
//
// Contract:
//  - One Handler serves every request; it gets an Exchange with the parsed request header
//    and reads the body itself (streamed, never buffered by the server), then sends exactly
//    one response, either whole (send) or streamed (send_header + write_body + finish_body).
//  - If the handler returns without responding, the server answers 500. If it throws
//    wrenn::Error before responding, the server answers with the Error's HTTP status and
//    a plain-text message; handlers that need a particular error format catch first.
//  - Unread request body is drained (up to a bound) so keep-alive connections stay usable;
//    past the bound the connection is closed instead.
//  - Everything runs on the io_context passed in; the server itself takes no locks, so run
//    that io_context on one thread (or give each connection's work to one strand).
//  - A streamed response that cannot carry a body (to HEAD, or status 1xx/204/304) and has
//    no Content-Length is not chunked; write nothing but finish_body() for it.
//  - Taking over the connection (take_over() or stream(), for upgrades and tunnels): the
//    server then neither answers for the handler nor reads another request; it drops the
//    connection once the handler returns (the handler does its I/O before returning).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace wrenn::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

class Server;
struct Connection;

class Exchange {
 public:
  Exchange(Connection& conn, bhttp::request_parser<bhttp::buffer_body>& parser);

  const bhttp::request<bhttp::buffer_body>& request() const { return parser_.get(); }
  bhttp::verb method() const { return request().method(); }
  std::string_view target() const { return request().target(); }
  // The target's path, percent-decoding not applied (routes match raw paths).
  std::string_view path() const;
  // A query parameter, percent-decoded; nullopt when absent.
  std::optional<std::string> query(std::string_view name) const;
  // A request header value or "" when absent.
  std::string_view header(std::string_view name) const;
  std::string_view header(bhttp::field f) const;
  tcp::endpoint remote() const;

  // Reads up to n body bytes into data; returns 0 once the body is complete.
  asio::awaitable<std::size_t> read_some(char* data, std::size_t n);
  // Reads the whole body; throws Error(resource_exhausted) past limit bytes.
  asio::awaitable<std::string> read_all(std::size_t limit);
  bool body_done() const { return parser_.is_done(); }

  // Sends a complete response (Content-Length set, keep-alive decided by the server).
  asio::awaitable<void> send(bhttp::response<bhttp::string_body> res);
  // Convenience: status + content type + body.
  asio::awaitable<void> send(bhttp::status status, std::string_view content_type, std::string body);
  // Streamed response: the header goes out first. If res has no Content-Length the body is
  // sent chunked. Then write_body() any number of times and finish_body() once.
  asio::awaitable<void> send_header(bhttp::response<bhttp::empty_body> res);
  asio::awaitable<void> write_body(std::string_view bytes);
  asio::awaitable<void> finish_body();

  bool responded() const { return responded_; }
  // Ask for the connection to close after this response.
  void close_after() { close_after_ = true; }
  // The connection's stream, for protocol upgrades (WebSocket) that take it over; calling it
  // takes the connection over (see take_over).
  beast::tcp_stream& stream();
  // Marks the connection as consumed by the handler: after the handler returns the server
  // sends nothing (not even a 500) and closes the connection instead of reading the next
  // request.
  void take_over();
  // Removes and returns the bytes the server has read from the connection beyond what the
  // request parser consumed. Meaningful once the body is complete (body_done()), e.g. for
  // an upgrade whose client spoke the new protocol before seeing the 101 answer.
  std::string take_buffered();
  Server& server();
  std::uint64_t connection_id() const;

 private:
  friend class Server;
  bool keep_alive() const;
  Connection& conn_;
  bhttp::request_parser<bhttp::buffer_body>& parser_;
  bool responded_ = false;
  bool finished_ = false;
  bool chunked_ = false;
  bool close_after_ = false;
  std::optional<bhttp::response<bhttp::empty_body>> streamed_;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> serializer_;
};

// A complete response to fill in further (headers) before Exchange::send. (Building
// responses outside coroutines also sidesteps GCC 12's trouble with braced lists there.)
bhttp::response<bhttp::string_body> make_response(bhttp::status status, std::string_view content_type,
                                                  std::string body);

using Handler = std::function<asio::awaitable<void>(Exchange&)>;

struct ServerOptions {
  std::chrono::seconds header_timeout{30};
  std::chrono::seconds idle_timeout{620};  // longer than a typical 600 s LB idle timeout
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t drain_limit = 1 << 20;  // unread body bytes drained to keep a connection alive
};

class Server {
 public:
  Server(asio::io_context& io, Handler handler, ServerOptions opts = {});
  ~Server();
  // Binds and starts accepting. Throws Error(unavailable) naming the address on failure.
  void listen(const tcp::endpoint& ep);
  tcp::endpoint local_endpoint() const;
  void stop();

  // Snapshot support (zombie TCP after restore): stop keep-alive reuse, close idle
  // connections, and remember every live connection except `keep` so that
  // close_remembered() can close them after a restore.
  void prepare_for_snapshot(std::uint64_t keep);
  bool snapshot_prepared() const { return snapshot_prepared_; }
  // Closes the connections remembered by prepare_for_snapshot (except `keep`) and
  // re-enables keep-alive.
  void restore_after_snapshot(std::uint64_t keep);
  std::size_t connection_count() const { return connections_.size(); }

 private:
  friend class Exchange;
  friend struct Connection;
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> serve(std::shared_ptr<Connection> conn);

  asio::io_context& io_;
  Handler handler_;
  ServerOptions opts_;
  tcp::acceptor acceptor_;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, std::weak_ptr<Connection>> connections_;
  std::set<std::uint64_t> remembered_;
  bool keep_alive_enabled_ = true;
  bool snapshot_prepared_ = false;
  bool stopped_ = false;
};

}  // namespace wrenn::http
