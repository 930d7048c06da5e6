// The port proxy (reference §5): a request whose Host is "{port}-{capsule_id}.<domain>"
// reaches that port inside the capsule — plain HTTP and upgrades such as WebSocket — through
// the capsule's host agent (its /proxy/{id}/{port}/ route, over the control plane's mutual
// TLS identity when the host has a certificate).
//
// Contract:
//  - match_port_proxy_host(): the Host header (any ":port" ignored, case-insensitive) must
//    be "{port}-{capsule_id}." followed by the configured domain (WRENN_CP_PROXY_DOMAIN);
//    with no domain configured, any domain. {capsule_id} is "cl-" + base36. nullopt when
//    the Host does not have that shape (the request is an API request); a port outside
//    1..65535 is still a match, rejected by serve_port_proxy with 400.
//  - No credentials are needed: the capsule id (25 random base36 characters) is the
//    capability, as upstream (browsers and Jupyter clients cannot add API keys). Wrenn
//    credentials the client sends along (X-API-Key, Authorization: Bearer) never reach the
//    capsule; the agent's token is added by the control plane and removed by the agent.
//  - Errors are the API's error envelope: 400 invalid_request (bad port or target), 404
//    not_found (no such capsule), 409 invalid_state (not running), 503 host_unavailable
//    (host offline or unreachable), 502/504 from the relay (http/reverse_proxy.h). Each
//    request looks the capsule up afresh (one primary-key query), so a paused or moved
//    capsule is never reached through stale state.
//  - Response Location headers lose the agent's "/proxy/{id}/{port}" prefix.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http/server.h"
#include "server_context.h"

namespace wrenn::cp {

struct PortProxyTarget {
  unsigned port = 0;  // as written; checked by serve_port_proxy
  std::string capsule_id;
};

std::optional<PortProxyTarget> match_port_proxy_host(std::string_view host,
                                                     std::string_view domain);

boost::asio::awaitable<void> serve_port_proxy(http::Exchange& ex, ServerContext& ctx,
                                              PortProxyTarget target);

}  // namespace wrenn::cp
