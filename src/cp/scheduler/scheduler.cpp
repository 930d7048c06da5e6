#include "scheduler/scheduler.h"

#include <algorithm>
#include <boost/json.hpp>
#include <set>

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
      "SELECT id FROM hosts WHERE status = 'online' AND address <> '' AND state = 'active' "
      "AND (CASE WHEN $1::boolean THEN type = 'byoc' AND team_id = $2 ELSE type = 'regular' END) "
      "ORDER BY id FOR UPDATE",
      byoc, team_id);
  auto r = c.exec(
      "SELECT h.id, "
      "  coalesce((h.capacity_override->>'vcpus')::bigint, h.cpu_cores), "
      "  coalesce((h.capacity_override->>'memory_mb')::bigint, h.memory_mb), "
      "  coalesce((h.capacity_override->>'disk_gb')::bigint, h.disk_gb), "
      "  coalesce(sum(s.vcpus) FILTER (WHERE s.status <> 'paused'), 0), "
      "  coalesce(sum(s.memory_mb), 0), coalesce(sum(s.disk_size_mb), 0), "
      "  count(s.id), (h.capacity_override->>'max_sandboxes')::bigint "
      "FROM hosts h LEFT JOIN sandboxes s ON s.host_id = h.id "
      "  AND s.status IN ('pending', 'starting', 'running', 'paused', 'missing') "
      "WHERE h.status = 'online' AND h.address <> '' AND h.state = 'active' "
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
    l.sandboxes = r.as_int64(i, 7);
    if (auto m = r.opt_int64(i, 8)) l.max_sandboxes = *m;
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
  bool count_short = false;
  for (const auto& h : hosts) {
    const double free_cpu = h.vcpus_total - h.vcpus_used - vcpus;
    const double free_mem = h.memory_total - h.memory_used - mem;
    const bool cpu_mem_ok =
        h.vcpus_total > 0 && h.memory_total > 0 && free_cpu >= 0 && free_mem >= 0;
    const bool disk_ok = h.disk_total <= 0 || h.disk_total - h.disk_used - disk >= 0;
    if (cpu_mem_ok && !disk_ok) disk_short = true;
    if (h.max_sandboxes >= 0 && h.sandboxes >= h.max_sandboxes) {
      count_short = true;
      continue;
    }
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
    if (count_short) msg += " (some hosts are at their max_sandboxes)";
    throw ApiError(ApiCode::kNoHostsAvailable, msg);
  }
  return best->host_id;
}

// Why no host is eligible: none online, or the online ones are cordoned or draining.
std::string no_hosts_message(pg::Connection& c) {
  auto r = c.exec(
      "SELECT count(*) FILTER (WHERE state <> 'active') FROM hosts "
      "WHERE status = 'online' AND address <> ''");
  const std::int64_t unschedulable = r.as_int64(0, 0);
  if (unschedulable > 0)
    return "no online hosts accept new capsules (" + std::to_string(unschedulable) +
           " cordoned or draining)";
  return "no online hosts";
}

}  // namespace

std::string LeastLoadedScheduler::place(pg::Connection& c, const PlacementRequest& req) {
  if (hooks_) hooks_->check_limits(c, req);
  const auto hosts = loads(c, req.team_id);
  if (hosts.empty()) throw ApiError(ApiCode::kNoHostsAvailable, no_hosts_message(c));
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

bool is_fleet_template(const store::Template& t) {
  boost::system::error_code ec;
  auto v = boost::json::parse(t.metadata, ec);
  return !ec && v.is_object() && v.get_object().contains("fleet");
}

std::string place_fleet_template(const ServerContext& ctx, pg::Connection& tx,
                                 const PlacementRequest& req, const store::Template& t) {
  ctx.hooks.check_limits(tx, req);
  auto ready = tx.exec(
      "SELECT host_id FROM template_builds WHERE template_id = $1 AND state = 'ready'", t.id);
  std::set<std::string> ready_hosts;
  for (int i = 0; i < ready.rows(); ++i) ready_hosts.insert(std::string(ready.text(i, 0)));
  SchedulerOptions o;
  o.vcpu_overcommit = ctx.config.vcpu_overcommit;
  o.memory_overcommit = ctx.config.memory_overcommit;
  o.disk_overcommit = ctx.config.disk_overcommit;
  const auto all = LeastLoadedScheduler(o, nullptr).loads(tx, req.team_id);
  if (all.empty()) throw ApiError(ApiCode::kNoHostsAvailable, no_hosts_message(tx));
  std::vector<HostLoad> only;
  for (const auto& h : all)
    if (ready_hosts.count(h.host_id)) only.push_back(h);
  if (only.empty())
    throw ApiError(ApiCode::kNoHostsAvailable,
                   "template \"" + t.name + "\" is not built on any schedulable host yet (" +
                       std::to_string(ready_hosts.size()) +
                       " hosts have it ready): see `wrennctl get template " + t.name + "`");
  return pick(only, req);
}

}  // namespace wrenn::cp
