// Routes about the control plane itself:
//   GET /health          public  {"status":"ok","version":"…"}
//   GET /metrics         public  Prometheus text format 0.0.4: HTTP requests by route,
//                                method and status with a latency histogram (router
//                                metrics), sandboxes by state and hosts by status (SQL)
//   GET /openapi.yaml    public  the API description (src/cp/api/openapi.yaml, embedded)
//   GET /v1/audit-logs   team    the caller's team's audit log, newest first:
//       ?limit=1..200 (default 50; larger values are clamped), ?before=<log-id> (cursor:
//       entries older than that one; an RFC 3339 time is accepted too, with ?before_id as
//       the tie-break), ?resource_type=a,b and ?action=x,y (OR-matched).
//       -> {"items":[…], "next_before":"log-…", "next_before_id":"log-…"} (next_* only
//       when the page is full). Entries of scope "admin" are included for owners/admins
//       of the team and for platform admins (platform-team API keys included).
#pragma once

#include <string_view>

#include "server_context.h"

namespace wrenn::cp {

void register_system_routes(ServerContext& ctx);

// The embedded openapi.yaml.
std::string_view openapi_yaml();

// Renders Prometheus text for the router's metrics plus the gauges (for tests).
std::string render_metrics(const std::vector<RouteStats>& routes,
                           const std::vector<std::pair<std::string, std::int64_t>>& sandboxes,
                           const std::vector<std::pair<std::string, std::int64_t>>& hosts);

}  // namespace wrenn::cp
