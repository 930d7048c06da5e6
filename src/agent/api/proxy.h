// Reverse proxy for /proxy/{sandbox_id}/{port}/{rest...}: forwards the request to {port}
// inside the sandbox and streams the answer back (HTTP/1.1 and any Upgrade, e.g. WebSocket).
//
// Contract:
//  - Path: {sandbox_id} matches [a-z0-9-]{1,63}, {port} is an integer in 1..65535 (else 400).
//    {rest} is passed through raw (not percent-decoded; "" becomes "/", a trailing slash
//    stays) and the query string is kept.
//  - Errors are JSON {"error":{"code":"...","message":"..."}}: 400 for a bad path, 404 when
//    the connector says not_found, 503 "sandbox is not running" for failed_precondition,
//    502 "proxy error: ..." when nothing listens (after 3 attempts, 100 ms then 200 ms
//    apart) or the upstream fails before answering, 504 when the upstream sends no response
//    header within ProxyOptions::header_timeout.
//  - Upstream request: method, rewritten target, headers minus hop-by-hop ones (Connection
//    and what it names, Keep-Alive, Proxy-*, TE, Trailer, Transfer-Encoding, Expect, and
//    Upgrade unless this is an upgrade), minus "Authorization: Bearer ..." when strip_bearer
//    (the agent's own token never reaches a sandbox; Basic auth passes), Host set to
//    127.0.0.1:{port}, X-Forwarded-For appended with the client address, X-Forwarded-Host
//    and X-Forwarded-Proto kept when the client (the control plane) set them, otherwise set
//    from Host and "http". Each request uses its own upstream connection (Connection: close).
//  - Bodies stream both ways concurrently with constant memory (64 KiB buffers): a request
//    body keeps its Content-Length or is re-chunked; a response keeps its Content-Length or
//    goes out chunked. Bytes reach the client as the upstream produces them.
//  - Response Location "/x", or an absolute URL on 127.0.0.1/localhost/[::1]:{port}, becomes
//    "/proxy/{id}/{port}/x".
//  - Upgrade (Connection: upgrade + Upgrade): when the upstream answers 101 the connection
//    is taken over and bytes are pumped both ways (half-closes passed on) until both
//    directions end; any other answer is relayed as a normal response.
//  - If the response ends before the client finished sending its body, the client
//    connection is closed after the response (the rest of the body is not forwarded).
//  - opts.on_activity(id) runs once per request, and again when an upgrade starts.
//  - Runs on the exchange's executor (single-threaded io_context, as http::Server wants).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "http/server.h"

namespace wrenn::agent {

// Opens a connected TCP socket to `port` inside sandbox `id` and returns its fd (caller owns).
// Throws wrenn::Error: not_found when the sandbox does not exist, failed_precondition when it
// is not running (paused), unavailable when nothing listens on the port.
// Called on a thread of the proxy's own small pool (it blocks briefly), so it must be
// thread-safe, unless ProxyOptions::connect_inline is set.
using ProxyConnector = std::function<int(const std::string& sandbox_id, std::uint16_t port)>;

struct ProxyOptions {
  ProxyConnector connect;
  // Called per request with the sandbox id (sandbox activity, for timeouts).
  std::function<void(const std::string&)> on_activity;
  // Drop "Authorization: Bearer ..." request headers (the agent's own token).
  bool strip_bearer = true;
  // Call the connector on the io thread instead of the proxy's pool (for connectors that
  // are not thread-safe; they then block the io thread while they run).
  bool connect_inline = false;
  // Longest wait for the upstream's response header (streams after it are unbounded).
  std::chrono::milliseconds header_timeout{std::chrono::seconds(60)};
};

// True when the path starts with "/proxy/".
bool is_proxy_path(std::string_view path);

// Serves one /proxy/ request end to end (the exchange is consumed; for upgrades the
// connection). Does not throw for upstream or client failures: it answers with an error
// when it still can, and otherwise has the server close the connection.
boost::asio::awaitable<void> serve_proxy(http::Exchange& ex, const ProxyOptions& opts);

}  // namespace wrenn::agent
