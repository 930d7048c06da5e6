// Host management and the agent-facing host API (reference §3.10):
//   POST   /v1/hosts                  admin  pending host + one-time registration token (1 h)
//   GET    /v1/hosts                  team   admins: every host; others: their BYOC hosts
//   GET    /v1/hosts/{id}             team   same visibility (others: 404)
//   GET    /v1/hosts/{id}/delete-preview  admin  the host and its live sandboxes
//   DELETE /v1/hosts/{id}[?force=true] admin 409 has_active_sandboxes (+ error.sandbox_ids)
//                                            unless forced
//   POST   /v1/hosts/register         public the agent registers with its token
//   POST   /v1/hosts/{id}/heartbeat   host   X-Host-Token
//   POST   /v1/hosts/auth/refresh     public rotates the refresh token, new host token
// "admin" includes API keys of the platform team (router.h Access::kAdmin).
//
// Interim transport: the control plane reaches an agent with the agent's own bearer token,
// which the agent sends at registration (agent_token) and which is stored sealed
// (store/hosts.h). Mutual TLS replaces it later: the register/refresh responses will then
// also carry cert_pem/key_pem/ca_cert_pem, and HostDirectory's client options a TLS
// transport (hosts/transport.h) — nothing else here changes.
#pragma once

#include "auth/bootstrap.h"
#include "server_context.h"

namespace wrenn::cp {

void register_host_routes(ServerContext& ctx, const auth::Secrets& secrets);

}  // namespace wrenn::cp
