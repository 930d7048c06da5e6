// The capsule routes of the v1 API (reference wrenn-control-plane.md §3.5-§3.7, §14):
// lifecycle (capsules.cpp), exec and processes (exec_routes.cpp), files (file_routes.cpp),
// WebSocket streams (stream_routes.cpp). Snapshots (snapshot_routes.cpp) are registered
// with them.
// register_capsule_routes() is called by ControlPlane::start() after the core routes.
//
// Contract (every route):
//  - Access::kTeam (the WebSocket routes: Access::kWebSocket, authenticated by header or
//    first frame, errors as frames; see stream_routes.cpp). Every query is scoped to the
//    caller's team; another team's capsule, a malformed id and a missing one are all 404
//    not_found "capsule not found".
//  - Runtime routes (exec, processes, files, ping) need status running, else 409
//    invalid_state "capsule is not running (status: X)".
//  - Lifecycle changes are compare-and-set on the row's status and audited in the same
//    transaction as the status change; extensions hear of them (Hooks::sandbox_event)
//    after the commit. Agent failures surface through to_api_error() (api_error.h): a
//    missing sandbox file is 404 not_found, an existing directory on mkdir 409 conflict, a
//    foreground command past its timeout_sec 504 agent_error (kAgentTimeout: the command
//    was killed), an unreachable host 503 host_unavailable.
//  - Create is crash-safe: the row is committed as `pending` (with its host) before the
//    agent is asked, so a sandbox never exists on a host without a row naming it; the
//    reconciler settles rows left pending by a crash (see capsules.cpp).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "api/api_error.h"
#include "api/router.h"
#include "error.h"
#include "server_context.h"
#include "store/capsules.h"

namespace wrenn::cp {

void register_capsule_routes(ServerContext& ctx);
// POST/GET /v1/snapshots, DELETE /v1/snapshots/{name} (snapshot_routes.cpp).
void register_snapshot_routes(ServerContext& ctx);

// ---- Shared by the capsule route files (not for other route groups) ----
namespace capsule_routes {

using namespace std::chrono_literals;

// Bounds of the agent calls made by these routes. File transfers stream for as long as the
// data keeps coming; their bound only ends a transfer that stalls for hours.
inline constexpr std::chrono::milliseconds kCreateTimeout = 60s;  // clone, mounts, envd up
inline constexpr std::chrono::milliseconds kDestroyTimeout = 30s;
inline constexpr std::chrono::milliseconds kPauseTimeout = 120s;
inline constexpr std::chrono::milliseconds kResumeTimeout = 120s;
inline constexpr std::chrono::milliseconds kQuickTimeout = 15s;  // ping, process list, kill
inline constexpr std::chrono::milliseconds kBackgroundStartTimeout = 30s;  // until the pid
inline constexpr std::chrono::milliseconds kFileOpTimeout = 60s;           // list, mkdir, remove
inline constexpr std::chrono::milliseconds kTransferTimeout = 6h;          // read/write streams

void register_lifecycle_routes(ServerContext& ctx);
void register_exec_routes(ServerContext& ctx);
void register_file_routes(ServerContext& ctx);
// WebSockets: exec stream, process attach, PTY (stream_routes.cpp).
void register_stream_routes(ServerContext& ctx);

// The caller's team ("team-…"); 403 forbidden when the credentials carry none.
const std::string& team_of(const RequestContext& rc);

// The capsule named by the {id} path parameter, in the caller's team, any status (404
// otherwise).
asio::awaitable<store::Capsule> load_capsule(ServerContext& ctx, RequestContext& rc);
// Same, and it must be running (409 invalid_state otherwise). touch: also sets
// last_active_at (exec), in the same statement.
asio::awaitable<store::Capsule> load_running(ServerContext& ctx, RequestContext& rc, bool touch);
// Blocking: 404 when c is empty, else 409 invalid_state "capsule is not <wanted> (status: X)".
[[noreturn]] void throw_not_in_status(const std::optional<store::Capsule>& c,
                                      std::string_view wanted);

// The client of the capsule's host; 503 host_unavailable when the row has none.
std::shared_ptr<HostClient> host_for(ServerContext& ctx, const store::Capsule& c);

// Runs a host call (blocking). A failure of the agent or envd that names no specific cause
// (internal, unknown, data_loss, aborted) becomes 502 agent_error with the agent's
// message, as upstream's agentErrToHTTP; typed ones (not_found, already_exists, invalid
// argument, deadline, unavailable, …) pass on to to_api_error().
template <class F>
auto agent_call(F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Error& e) {
    switch (e.code()) {
      case Code::kInternal:
      case Code::kUnknown:
      case Code::kDataLoss:
      case Code::kAborted:
        throw ApiError(ApiCode::kAgentError, e.what());
      default:
        throw;
    }
  }
}

}  // namespace capsule_routes
}  // namespace wrenn::cp
