// The control plane's REST router: method + path pattern -> handler, with authentication
// and error rendering in one place.
//
// Contract:
//  - Patterns are absolute "/v1/..." paths with "{name}" segments ("/v1/capsules/{id}/exec").
//    Every route is also served under "/api" ("/api/v1/..."), and a trailing "/" is
//    ignored. A path no route matches is 404 not_found; a path that matches with another
//    method is 405 method_not_allowed (with an Allow header). When several patterns match,
//    the one whose first differing segment is literal wins ("/v1/hosts/register" before
//    "/v1/hosts/{id}").
//  - Before the handler runs, the route's Access is enforced by the Authenticator (401
//    unauthorized / 403 forbidden as ApiError). RequestContext::caller() is then set.
//  - A handler responds exactly once (send_json / send_empty / send / send_header +
//    exchange() for streamed bodies). Anything it throws before responding becomes the error
//    envelope via to_api_error(); internal errors are logged with the route and a request
//    id, never with bodies or credentials. After a response has started, a failure closes
//    the connection. Every response sent through RequestContext carries X-Request-Id.
//  - Each request is counted per route pattern, method and status, with its latency
//    (metrics()). Requests that match no route are counted under route "unmatched".
//  - Handlers run on the I/O thread: blocking work (SQL, host calls) goes through
//    run_blocking() (src/common/blocking.h) on the server's worker pool.
#pragma once

#include <array>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/verb.hpp>
#include <boost/json.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http/server.h"

namespace wrenn::cp {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;

// Who may call a route.
enum class Access {
  kPublic,  // no credentials (health, host registration)
  kTeam,    // X-API-Key or a user's Bearer JWT; scoped to the caller's team
  kUser,    // a user's Bearer JWT only
  // A platform admin: a user JWT whose user has users.is_admin, or an API key of the
  // platform team (team-0000000000000000000000000) — the bootstrap admin key is one.
  kAdmin,
  kHost,       // X-Host-Token of a registered host
  kWebSocket,  // header credentials if present and valid (kTeam rules; invalid ones are
               // ignored), else an anonymous caller: the handler then authenticates with
               // the first frame (Authenticator::authenticate_token)
};

// The authenticated caller.
struct Caller {
  enum class Kind { kAnonymous, kApiKey, kUser, kHost };
  Kind kind = Kind::kAnonymous;
  std::string team_id;     // "team-…" (empty for hosts and anonymous callers)
  std::string actor_id;    // "key-…", "usr-…" or "host-…"
  std::string actor_name;  // key name, user email, host address
  std::string role;        // owner | admin | member, for users
  bool is_admin = false;   // platform admin (admin users and platform-team API keys)
};

class RequestContext {
 public:
  RequestContext(http::Exchange& ex, std::map<std::string, std::string> params, std::string route,
                 std::string request_id);
  http::Exchange& exchange() { return ex_; }
  const Caller& caller() const { return caller_; }
  void set_caller(Caller c) { caller_ = std::move(c); }
  // A "{name}" path segment, percent-decoded; "" when the route has none of that name.
  const std::string& param(const std::string& name) const;
  const std::string& route() const { return route_; }
  // Random per request; logged with internal errors and sent as X-Request-Id.
  const std::string& request_id() const { return request_id_; }
  // A query parameter, percent-decoded; nullopt when absent.
  std::optional<std::string> query(std::string_view name) const { return ex_.query(name); }

  // The body parsed as a JSON object; an empty or malformed body or a non-object is
  // ApiError invalid_request "invalid JSON body"; past `limit` bytes, too_large.
  asio::awaitable<boost::json::object> json_body(std::size_t limit = 1 << 20);
  // Sends status + JSON (Content-Type application/json, body followed by "\n"). The body is
  // taken by value: a coroutine must not keep a reference to a temporary (a json::object
  // passed here converts to a temporary json::value).
  asio::awaitable<void> send_json(bhttp::status status, boost::json::value body);
  // 204 or another body-less status.
  asio::awaitable<void> send_empty(bhttp::status status = bhttp::status::no_content);
  // Any complete response (X-Request-Id added).
  asio::awaitable<void> send(bhttp::response<bhttp::string_body> res);
  // The header of a streamed response (X-Request-Id added); continue with
  // exchange().write_body() / finish_body().
  asio::awaitable<void> send_header(bhttp::response<bhttp::empty_body> res);
  // For handlers that answer through exchange() directly. A WebSocket handler calls
  // note_status(101) BEFORE accepting the upgrade: the router then never writes an HTTP
  // error onto the taken-over connection (a failure after that just closes it), and the
  // metrics count 101.
  void note_status(unsigned status) { status_ = status; }
  // The status sent (0 before a response).
  unsigned status() const { return status_; }

 private:
  http::Exchange& ex_;
  std::map<std::string, std::string> params_;
  std::string route_;
  std::string request_id_;
  Caller caller_;
  unsigned status_ = 0;
};

using RouteHandler = std::function<asio::awaitable<void>(RequestContext&)>;

class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // Checks the request's credentials for `access`; returns the caller or throws ApiError
  // (unauthorized / forbidden). For kPublic it returns an anonymous caller.
  virtual asio::awaitable<Caller> authenticate(http::Exchange& ex, Access access) = 0;
  // A user's JWT or an API key presented in a WebSocket's first frame ({"type":"auth",
  // "token":…}); the same checks as the headers under kTeam. Throws ApiError.
  virtual asio::awaitable<Caller> authenticate_token(std::string token) = 0;
};

// Upper bounds (seconds) of the latency histogram buckets; +Inf is implied.
inline constexpr std::array<double, 11> kLatencyBuckets = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                           0.1,   0.25,   0.5,   1.0,  5.0};

struct RouteStats {
  std::string method, route;
  unsigned status = 0;
  std::uint64_t count = 0;
  double seconds_sum = 0;
  // Requests with latency <= kLatencyBuckets[i] (cumulative, as Prometheus wants).
  std::array<std::uint64_t, kLatencyBuckets.size()> buckets{};
};

class Router {
 public:
  explicit Router(Authenticator& auth);
  // Registers a route; a duplicate method + pattern throws Error(already_exists), a
  // pattern not starting with "/" Error(invalid_argument). Not thread-safe: register
  // every route before serving.
  void add(bhttp::verb method, std::string pattern, Access access, RouteHandler handler);
  // Serves one request (the http::Server's handler calls this).
  asio::awaitable<void> serve(http::Exchange& ex);
  // Per route, method and status: count and latency. Thread-safe.
  std::vector<RouteStats> metrics() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace wrenn::cp
