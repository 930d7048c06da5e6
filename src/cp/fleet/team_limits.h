// Team limits (teams.limits, declared in team specs: concurrent_sandboxes, vcpus,
// memory_mb) enforced at placement and resume. A built-in Extension: the control plane
// registers it before any other, so an embedding distribution's limits provider runs after
// it and sees only requests within the declared limits.
//
// Contract: check_limits() locks the team's row (serialising concurrent creates of one
// team, so a limit is exact), adds the request to the team's live usage (sandboxes pending,
// starting or running; paused ones hold no CPU or memory) and throws ApiError 402
// concurrent_sandbox_limit / vcpu_limit / memory_limit naming the limit and the usage. A
// team without limits (the default) is never refused.
#pragma once

#include "server.h"

namespace wrenn::cp::fleet {

class TeamLimits : public Extension {
 public:
  std::string name() const override { return "team-limits"; }
  void check_limits(pg::Connection& tx, const PlacementRequest& req) override;
};

}  // namespace wrenn::cp::fleet
