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
// Transport to agents: mutual TLS. Register and refresh answer with the agent's server
// certificate, its key and the CA (cert_pem, key_pem, ca_cert_pem; auth/host_ca.h); the
// control plane calls agents with its "wrenn-cp" client certificate. The agent's own bearer
// token (agent_token, stored sealed: store/hosts.h) is still sent on every call as a
// second factor.
#pragma once

#include "auth/bootstrap.h"
#include "server_context.h"

namespace wrenn::cp {

void register_host_routes(ServerContext& ctx, const auth::Secrets& secrets);

}  // namespace wrenn::cp
