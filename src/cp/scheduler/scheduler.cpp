#include "scheduler/scheduler.h"

#include <algorithm>

#include "api/api_error.h"
#include "store/teams.h"

namespace wrenn::cp {

LeastLoadedScheduler::LeastLoadedScheduler(SchedulerOptions options, const Hooks* hooks)
    : options_(options), hooks_(hooks) {}

std::vector<HostLoad> LeastLoadedScheduler::loads(pg::Connection& c,
                                                  const std::string& team_id) const {
  bool byoc = false;
  if (auto t = store::find_team(c, team_id)) byoc = t->is_byoc;
  // Lock the eligible hosts (in a stable order, so concurrent placements queue instead of
  // deadlocking) until the caller's transaction ends.
  c.exec(
      "SELECT id FROM hosts WHERE status = 'online' AND address <> '' "
      "AND (CASE WHEN $1::boolean THEN type = 'byoc' AND team_id = $2 ELSE type = 'regular' END) "
      "ORDER BY id FOR UPDATE",
      byoc, team_id);
  auto r = c.exec(
      "SELECT h.id, h.cpu_cores, h.memory_mb, h.disk_gb, "
      "  coalesce(sum(s.vcpus) FILTER (WHERE s.status <> 'paused'), 0), "
      "  coalesce(sum(s.memory_mb), 0), coalesce(sum(s.disk_size_mb), 0) "
      "FROM hosts h LEFT JOIN sandboxes s ON s.host_id = h.id "
      "  AND s.status IN ('pending', 'starting', 'running', 'paused', 'missing') "
      "WHERE h.status = 'online' AND h.address <> '' "
      "AND (CASE WHEN $1::boolean THEN h.type = 'byoc' AND h.team_id = $2 "
      "     ELSE h.type = 'regular' END) "
      "GROUP BY h.id ORDER BY h.created_at, h.id",
      byoc, team_id);
  std::vector<HostLoad> out;
  for (int i = 0; i < r.rows(); ++i) {
    HostLoad l;
    l.host_id = r.text(i, 0);
    l.vcpus_total = static_cast<double>(r.as_int64(i, 1)) * options_.vcpu_overcommit;
    l.memory_total = static_cast<double>(r.as_int64(i, 2)) * options_.memory_overcommit;
    l.disk_total = static_cast<double>(r.as_int64(i, 3)) * 1024.0 * options_.disk_overcommit;
    l.vcpus_used = static_cast<double>(r.as_int64(i, 4));
    l.memory_used = static_cast<double>(r.as_int64(i, 5));
    l.disk_used = static_cast<double>(r.as_int64(i, 6));
    out.push_back(l);
  }
  return out;
}

namespace {

// The least loaded of hosts with room for req (see scheduler.h), or ApiError.
std::string pick(const std::vector<HostLoad>& hosts, const PlacementRequest& req) {
  const double vcpus = req.vcpus, mem = static_cast<double>(req.memory_mb),
               disk = static_cast<double>(req.disk_mb);
  const HostLoad* best = nullptr;
  double best_score = -1;
  bool disk_short = false;
  for (const auto& h : hosts) {
    const double free_cpu = h.vcpus_total - h.vcpus_used - vcpus;
    const double free_mem = h.memory_total - h.memory_used - mem;
    const bool cpu_mem_ok =
        h.vcpus_total > 0 && h.memory_total > 0 && free_cpu >= 0 && free_mem >= 0;
    const bool disk_ok = h.disk_total <= 0 || h.disk_total - h.disk_used - disk >= 0;
    if (cpu_mem_ok && !disk_ok) disk_short = true;
    if (!cpu_mem_ok || !disk_ok) continue;
    double score = std::min(free_cpu / h.vcpus_total, free_mem / h.memory_total);
    if (h.disk_total > 0)
      score = std::min(score, (h.disk_total - h.disk_used - disk) / h.disk_total);
    if (score > best_score) {
      best_score = score;
      best = &h;
    }
  }
  if (!best) {
    std::string msg = "no host has room for " + std::to_string(req.vcpus) + " vCPUs, " +
                      std::to_string(req.memory_mb) + " MiB";
    if (disk_short) msg += ", " + std::to_string(req.disk_mb) + " MiB of disk";
    throw ApiError(ApiCode::kNoHostsAvailable, msg);
  }
  return best->host_id;
}

}  // namespace

std::string LeastLoadedScheduler::place(pg::Connection& c, const PlacementRequest& req) {
  if (hooks_) hooks_->check_limits(c, req);
  const auto hosts = loads(c, req.team_id);
  if (hosts.empty()) throw ApiError(ApiCode::kNoHostsAvailable, "no online hosts");
  return pick(hosts, req);
}

std::string place_on_host(const ServerContext& ctx, pg::Connection& tx, const PlacementRequest& req,
                          const std::string& host_id) {
  ctx.hooks.check_limits(tx, req);
  SchedulerOptions o;
  o.vcpu_overcommit = ctx.config.vcpu_overcommit;
  o.memory_overcommit = ctx.config.memory_overcommit;
  o.disk_overcommit = ctx.config.disk_overcommit;
  std::vector<HostLoad> only;
  for (auto& h : LeastLoadedScheduler(o, nullptr).loads(tx, req.team_id))
    if (h.host_id == host_id) only.push_back(h);
  if (only.empty())
    throw ApiError(ApiCode::kNoHostsAvailable,
                   "host " + host_id + " holding the template is not online");
  return pick(only, req);
}

}  // namespace wrenn::cp
