#include "fleet/team_limits.h"

#include <string>

#include "api/api_error.h"

namespace wrenn::cp::fleet {

void TeamLimits::check_limits(pg::Connection& tx, const PlacementRequest& req) {
  auto r = tx.exec(
      "SELECT (limits->>'concurrent_sandboxes')::bigint, (limits->>'vcpus')::bigint, "
      " (limits->>'memory_mb')::bigint FROM teams WHERE id = $1 AND limits <> '{}' FOR UPDATE",
      req.team_id);
  if (r.empty()) return;
  auto u = tx.exec(
      "SELECT count(*), coalesce(sum(vcpus), 0), coalesce(sum(memory_mb), 0) FROM sandboxes "
      "WHERE team_id = $1 AND status IN ('pending', 'starting', 'running')",
      req.team_id);
  const std::int64_t n = u.as_int64(0, 0), vcpus = u.as_int64(0, 1), mem = u.as_int64(0, 2);
  if (auto max = r.opt_int64(0, 0); max && n + 1 > *max)
    throw ApiError(ApiCode::kConcurrentSandboxLimit, "the team's limit of " + std::to_string(*max) +
                                                         " concurrent sandboxes is reached (" +
                                                         std::to_string(n) + " running)");
  if (auto max = r.opt_int64(0, 1); max && vcpus + static_cast<std::int64_t>(req.vcpus) > *max)
    throw ApiError(ApiCode::kVcpuLimit, "the team's limit of " + std::to_string(*max) +
                                            " vCPUs would be exceeded (" + std::to_string(vcpus) +
                                            " in use, " + std::to_string(req.vcpus) + " asked)");
  if (auto max = r.opt_int64(0, 2); max && mem + static_cast<std::int64_t>(req.memory_mb) > *max)
    throw ApiError(ApiCode::kMemoryLimit, "the team's limit of " + std::to_string(*max) +
                                              " MiB of memory would be exceeded (" +
                                              std::to_string(mem) + " MiB in use, " +
                                              std::to_string(req.memory_mb) + " asked)");
}

}  // namespace wrenn::cp::fleet
