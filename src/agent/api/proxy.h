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
//  - The request is relayed by http/reverse_proxy.h (headers, streaming bodies, upgrades,
//    error envelopes): upstream target {rest}, Host 127.0.0.1:{port}; the agent's token
//    (X-Wrenn-Agent-Token, and "Authorization: Bearer ..." when strip_bearer) and any
//    X-API-Key never reach the sandbox.
//  - Response Location "/x", or an absolute URL on 127.0.0.1/localhost/[::1]:{port}, becomes
//    "/proxy/{id}/{port}/x".
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
