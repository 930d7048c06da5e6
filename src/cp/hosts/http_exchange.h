// One HTTP/1.1 request and its response on a pooled connection to a host agent, with a
// deadline over the whole exchange, streamed bodies both ways, and the mapping of HTTP
// failures to wrenn::Error.
//
// Contract:
//  - The constructor sends the request and reads the response header. A request body is
//    either `body` (Content-Length) or pulled from `source` chunk by chunk ("" ends it) and
//    sent with chunked transfer encoding, so its size never matters to memory.
//  - Stale keep-alive connections: when a reused connection fails before any response byte
//    arrives (the server closed it while it sat idle), an idempotent request without a
//    `source` is sent again, once, on a new connection. Nothing else is retried.
//  - A server that answers before the whole streamed body is sent (an error, typically)
//    is noticed between chunks: sending stops and that answer is returned.
//  - I/O failures throw Error(kUnavailable) naming the host address; the deadline passing
//    throws Error(kDeadlineExceeded). Both close the connection.
//  - Destruction returns the connection to the pool only when the response was read to
//    its end and the server keeps the connection alive; otherwise it is closed.
#pragma once

#include <boost/beast/http.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "error.h"
#include "hosts/connection_pool.h"

namespace wrenn::cp {

struct HttpRequest {
  boost::beast::http::verb method = boost::beast::http::verb::post;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::function<std::string()> source;  // when set, the body (chunked); "" ends it
  bool idempotent = false;
};

class HttpExchange {
 public:
  HttpExchange(ConnectionPool& pool, HttpRequest request, Deadline deadline);
  ~HttpExchange();
  HttpExchange(const HttpExchange&) = delete;
  HttpExchange& operator=(const HttpExchange&) = delete;

  unsigned status() const { return parser_->get().result_int(); }
  const boost::beast::http::response_header<>& header() const { return parser_->get(); }

  // The next piece of the response body; empty once the body is complete. The view stays
  // valid until the next call.
  std::string_view read_some();
  // The rest of the body; Error(kResourceExhausted) beyond limit bytes.
  std::string read_all(std::size_t limit);
  bool body_done() const { return parser_->is_done(); }

  // The error a non-2xx response stands for (reads its body, up to 1 MiB).
  Error error_from_response();

  const HostEndpoint& endpoint() const { return pool_.endpoint(); }

 private:
  using Parser = boost::beast::http::response_parser<boost::beast::http::buffer_body>;
  boost::system::error_code send(const HttpRequest& req);
  boost::system::error_code send_streamed(const HttpRequest& req, bool& answered_early);
  boost::system::error_code read_header();
  [[noreturn]] void fail(const boost::system::error_code& ec, std::string_view what);
  void discard();

  ConnectionPool& pool_;
  Deadline deadline_;
  std::unique_ptr<PooledConnection> conn_;
  std::optional<Parser> parser_;
  std::unique_ptr<char[]> chunk_;
  bool request_complete_ = true;  // false: the body was cut short, never reuse the connection
};

// Maps an error response to wrenn::Error. Understands Connect's {"code":"not_found",...},
// the agent's {"error":{"code":...,"message":...}} and envd's /files {"code":404,...};
// otherwise the code follows the HTTP status. `where` prefixes messages of bodies that
// carry no message.
Error error_from_http(unsigned status, std::string_view body, std::string_view where);
// The Code an HTTP status stands for when the body names none.
Code code_from_http_status(unsigned status);

}  // namespace wrenn::cp
