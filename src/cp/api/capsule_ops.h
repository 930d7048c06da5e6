// Capsule lifecycle changes callable outside a request (the fleet reconciler drains hosts
// with them): the same code paths as DELETE /v1/capsules/{id} and POST .../pause
// (capsules.cpp), blocking, for a worker thread.
//
// Contract: as the routes (capsule_routes.h): compare-and-set on the row's status, audited
// in the same transaction with caller as the actor (Caller{} = the system), extensions
// told after the commit.
//  - destroy_capsule_blocking: any status -> stopped, then the sandbox is destroyed on its
//    host (best effort; the capsule reconciler finishes when the host is unreachable).
//    A stopped capsule is left alone; ApiError not_found when there is no such capsule.
//  - pause_capsule_blocking: running -> paused and the agent pauses the sandbox; the row
//    is put back to running when the agent fails (the error propagates). ApiError
//    invalid_state when the capsule is not running.
#pragma once

#include <string>

#include "api/router.h"
#include "server_context.h"
#include "store/capsules.h"

namespace wrenn::cp {

void destroy_capsule_blocking(ServerContext& ctx, const Caller& caller, const std::string& team,
                              const std::string& id);
store::Capsule pause_capsule_blocking(ServerContext& ctx, const Caller& caller,
                                      const std::string& team, const std::string& id);

}  // namespace wrenn::cp
