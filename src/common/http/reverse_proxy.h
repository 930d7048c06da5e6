// Relaying one HTTP/1.1 request — or a protocol upgrade such as WebSocket — to an upstream
// over a connection the caller has already opened, and streaming the answer back. The
// agent's /proxy/{sandbox}/{port}/ (to a port inside a sandbox) and the control plane's
// {port}-{capsule}.<domain> port proxy (to the capsule's agent, over mutual TLS) are both
// this relay with a different route and upstream connection.
//
// Contract:
//  - Upstream request: method, route.target, the client's headers minus hop-by-hop ones
//    (Connection and what it names, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding,
//    Expect, and Upgrade unless this is an upgrade), minus route.drop_headers, minus
//    "Authorization: Bearer ..." when route.drop_bearer; Host set to route.host,
//    X-Forwarded-For appended with the client address, X-Forwarded-Host and
//    X-Forwarded-Proto kept when the client set them, otherwise set from Host and "http";
//    then route.set_headers. One upstream connection per request (Connection: close).
//  - Bodies stream both ways concurrently with constant memory (64 KiB buffers): a request
//    body keeps its Content-Length or is re-chunked; a response keeps its Content-Length
//    or goes out chunked. Interim 1xx answers (other than 101) are not relayed.
//  - Response Location headers pass through route.rewrite_location when set.
//  - Upgrade: when the upstream answers 101 the client connection is taken over and bytes
//    are pumped both ways (half-closes passed on) until both directions end;
//    route.on_upgrade runs first. Any other answer is relayed as a normal response.
//  - Errors are the JSON envelope {"error":{"code","message"}}: 502 "proxy error: ..." when
//    the upstream fails before answering, 504 when it sends no response header within
//    route.header_timeout. After the response started, a failure closes the connection.
//  - Never throws for upstream or client failures. Runs on the exchange's executor.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/server.h"

namespace wrenn::http {

struct ProxyRoute {
  std::string target;                     // request target sent upstream: path + query, raw
  std::string host;                       // Host header sent upstream
  std::vector<std::string> drop_headers;  // request headers never forwarded (any case)
  bool drop_bearer = false;               // drop "Authorization: Bearer ..."
  std::vector<std::pair<std::string, std::string>> set_headers;   // added upstream
  std::function<std::string(std::string_view)> rewrite_location;  // null: unchanged
  std::chrono::milliseconds header_timeout{std::chrono::seconds(60)};
  std::function<void()> on_upgrade;
  std::string label;  // names the route in log lines ("sandbox X port N")
};

using PlainUpstream = boost::asio::ip::tcp::socket;
using TlsUpstream = boost::asio::ssl::stream<boost::asio::ip::tcp::socket>;

boost::asio::awaitable<void> relay_to_upstream(Exchange& ex, PlainUpstream upstream,
                                               const ProxyRoute& route);
// upstream has completed its TLS handshake.
boost::asio::awaitable<void> relay_to_upstream(Exchange& ex, std::unique_ptr<TlsUpstream> upstream,
                                               const ProxyRoute& route);

// The JSON error envelope as a response.
bhttp::response<bhttp::string_body> proxy_error_response(unsigned status, std::string_view code,
                                                         std::string_view message);
// Sends res unless a response was already sent; a client gone away is ignored.
boost::asio::awaitable<void> send_quietly(Exchange& ex, bhttp::response<bhttp::string_body> res);

}  // namespace wrenn::http
