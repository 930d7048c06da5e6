#include "api/port_proxy.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cctype>
#include <charconv>
#include <memory>

#include "api/api_error.h"
#include "auth/host_ca.h"
#include "blocking.h"
#include "crypto/ids.h"
#include "crypto/tls.h"
#include "hosts/host_client.h"
#include "hosts/host_directory.h"
#include "http/reverse_proxy.h"
#include "log.h"
#include "store/capsules.h"

namespace wrenn::cp {

namespace {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

constexpr auto tuple_awaitable = asio::as_tuple(asio::use_awaitable);
// Connecting and the TLS handshake to an agent; the relay has its own bounds.
constexpr auto kConnectTimeout = std::chrono::seconds(5);

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Where to send the request: the capsule's host, checked afresh on every request.
struct Upstream {
  HostEndpoint endpoint;
  std::shared_ptr<asio::ssl::context> tls;  // null: the host takes plain HTTP
};

Upstream resolve(ServerContext& ctx, const std::string& capsule_id) {
  std::optional<store::Capsule> c;
  {
    auto lease = ctx.db.acquire();
    c = store::get_capsule_any_team(*lease, capsule_id);
  }
  if (!c) throw ApiError(ApiCode::kNotFound, "capsule not found");
  if (c->status != "running")
    throw ApiError(ApiCode::kInvalidState, "capsule is not running (status: " + c->status + ")");
  if (!c->host_id) throw ApiError(ApiCode::kHostUnavailable, "capsule has no host");
  auto client = ctx.hosts.client(*c->host_id);  // host_unavailable unless online
  Upstream up{client->endpoint(), nullptr};
  // With a host CA every registered host is reached over mutual TLS (as HostClient does).
  if (ctx.host_tls) up.tls = ctx.host_tls->client_context();
  return up;
}

// Runs op (which completes by itself or fails when the socket closes) with a deadline
// that closes the socket.
template <class Op>
asio::awaitable<error_code> with_deadline(tcp::socket& sock, Op op) {
  asio::steady_timer timer(sock.get_executor(), kConnectTimeout);
  bool expired = false;
  timer.async_wait([&](error_code ec) {
    if (ec) return;
    expired = true;
    error_code ig;
    sock.close(ig);
  });
  error_code ec = co_await std::move(op);
  timer.cancel();
  if (expired) ec = asio::error::timed_out;
  co_return ec;
}

asio::awaitable<error_code> connect_op(tcp::socket& sock, tcp::endpoint ep) {
  auto [ec] = co_await sock.async_connect(ep, tuple_awaitable);
  co_return ec;
}

asio::awaitable<error_code> handshake_op(http::TlsUpstream& s) {
  auto [ec] = co_await s.async_handshake(asio::ssl::stream_base::client, tuple_awaitable);
  co_return ec;
}

}  // namespace

std::optional<PortProxyTarget> match_port_proxy_host(std::string_view host,
                                                     std::string_view domain) {
  // Strip ":port" (an IPv6 literal is never a capsule host name).
  if (auto colon = host.rfind(':'); colon != std::string_view::npos) host = host.substr(0, colon);
  std::string h = lower(host);
  auto dash = h.find('-');
  if (dash == std::string::npos || dash == 0 || dash > 6) return std::nullopt;
  unsigned port = 0;
  auto [end, ec] = std::from_chars(h.data(), h.data() + dash, port);
  if (ec != std::errc() || end != h.data() + dash) return std::nullopt;
  auto dot = h.find('.', dash + 1);
  if (dot == std::string::npos) return std::nullopt;
  std::string id = h.substr(dash + 1, dot - dash - 1);
  if (!ids::try_parse_id(ids::Kind::kCapsule, id)) return std::nullopt;
  std::string_view rest = std::string_view(h).substr(dot + 1);
  if (!domain.empty() && rest != lower(domain)) return std::nullopt;
  if (rest.empty()) return std::nullopt;
  return PortProxyTarget{port, std::move(id)};
}

asio::awaitable<void> serve_port_proxy(http::Exchange& ex, ServerContext& ctx,
                                       PortProxyTarget target) {
  std::optional<ApiError> failure;
  std::optional<Upstream> up;
  if (target.port < 1 || target.port > 65535) {
    failure = ApiError(ApiCode::kInvalidRequest, "invalid port " + std::to_string(target.port));
  } else if (ex.target().empty() || ex.target()[0] != '/') {
    failure = ApiError(ApiCode::kInvalidRequest, "request target must be a path");
  } else {
    try {
      auto task =
          run_blocking(ctx.workers, [&ctx, &target] { return resolve(ctx, target.capsule_id); });
      up = co_await std::move(task);
    } catch (const std::exception& e) {
      failure = to_api_error(e);
      if (is_internal(e)) log::error("port proxy lookup failed", {{"error", e.what()}});
    }
  }

  auto exec = co_await asio::this_coro::executor;
  tcp::socket sock(exec);
  std::unique_ptr<http::TlsUpstream> tls;
  if (!failure) {
    auto addr = parse_host_address(up->endpoint.address());
    error_code ec;
    if (!addr) {
      ec = asio::error::invalid_argument;
    } else {
      tcp::endpoint ep(asio::ip::make_address(addr->first, ec), addr->second);
      if (!ec) {
        auto op = connect_op(sock, ep);
        auto run = with_deadline(sock, std::move(op));
        ec = co_await std::move(run);
      }
    }
    if (!ec) {
      error_code ig;
      sock.set_option(tcp::no_delay(true), ig);
      if (up->tls) {
        tls = std::make_unique<http::TlsUpstream>(std::move(sock), *up->tls);
        crypto::expect_peer(tls->native_handle(), up->endpoint.host);
        auto op = handshake_op(*tls);
        auto run = with_deadline(tls->next_layer(), std::move(op));
        ec = co_await std::move(run);
      }
    }
    if (ec)
      failure = ApiError(ApiCode::kHostUnavailable, "host agent " + up->endpoint.address() +
                                                        " is unreachable: " + ec.message());
  }
  if (failure) {
    auto res = http::make_response(static_cast<bhttp::status>(failure->status()),
                                   "application/json", error_body(*failure));
    co_await http::send_quietly(ex, std::move(res));
    co_return;
  }

  const std::string prefix = "/proxy/" + target.capsule_id + "/" + std::to_string(target.port);
  http::ProxyRoute route;
  route.target = prefix + std::string(ex.target());
  route.host = up->endpoint.address();
  // Wrenn credentials stay out of the capsule; a client cannot forge the agent's token.
  route.drop_headers = {"x-api-key", "x-wrenn-agent-token"};
  route.drop_bearer = true;
  route.set_headers = {{"X-Wrenn-Agent-Token", up->endpoint.agent_token}};
  route.rewrite_location = [prefix](std::string_view loc) {
    if (loc.substr(0, prefix.size()) != prefix) return std::string(loc);
    std::string rest(loc.substr(prefix.size()));
    if (rest.empty() || (rest[0] != '/' && rest[0] != '?')) rest.insert(0, "/");
    return rest;
  };
  route.label = "capsule " + target.capsule_id + " port " + std::to_string(target.port);
  if (tls) {
    co_await http::relay_to_upstream(ex, std::move(tls), route);
  } else {
    co_await http::relay_to_upstream(ex, std::move(sock), route);
  }
}

}  // namespace wrenn::cp
