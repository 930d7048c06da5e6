// REST routes of the declarative fleet (all Access::kAdmin: a platform admin's JWT or an
// API key of the platform team, such as the bootstrap admin key).
//
//   POST   /v1/fleet/plan     {"apply_set", "prune", "files": [{"name", "text"}]}
//   POST   /v1/fleet/apply    same + "revision" (the plan's)
//          -> {"apply_set", "revision", "applied", "actionable", "entries": [...],
//              "summary": {"create", "update", "delete", "drift"}, "unpruned": [...]}
//             (plan.h explains the entries); 400 invalid_spec with "diagnostics"
//             ["file:line:column: message", ...]; 409 revision_conflict.
//   GET    /v1/fleet/resources[?kind=K&apply_set=S]    status and live columns
//   GET    /v1/fleet/resources/{kind}/{name}           + "spec" (+ template build logs)
//   DELETE /v1/fleet/resources/{kind}/{name}           the object and its inventory row
//   GET    /v1/fleet/apply-sets
//   POST   /v1/fleet/hosts/{name}/registration-token   for a declared host: a one-time
//          token and the wrenn-agent command line that registers it
//
// The spec files travel as text and are parsed here with the same library wrennctl uses
// (src/spec), so the server never trusts a client's parse. Bodies are limited to 64 MiB
// and 10,000 files.
#pragma once

#include "auth/bootstrap.h"
#include "server_context.h"

namespace wrenn::cp {

void register_fleet_routes(ServerContext& ctx, const auth::Secrets& secrets);

}  // namespace wrenn::cp
