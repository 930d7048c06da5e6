// Least-loaded placement (reference §9.3, adapted to small machines: no fixed reservations
// are subtracted; capacity is what the host reported times a configurable overcommit).
//
// Eligible hosts: status online with an address; for a BYOC team only its own BYOC hosts,
// otherwise regular hosts. Per host, the load counts the sandboxes that hold resources on
// it — pending, starting, running, missing (they may come back) and paused (an ns
// sandbox keeps its memory while frozen) — except that paused ones hold no vCPUs:
//   vCPUs   capacity cpu_cores * vcpu_overcommit,      used Σ vcpus (not paused)
//   memory  capacity memory_mb * memory_overcommit,    used Σ memory_mb
//   disk    capacity disk_gb * 1024 * disk_overcommit, used Σ disk_size_mb (ignored when
//           the host reported no disk size)
// A host fits when every free amount covers the request; among those the one whose
// scarcest resource has the largest free fraction after placement wins (ties: the oldest
// host). Errors: ApiError no_hosts_available "no online hosts" when none is eligible, "no
// host has room for N vCPUs, M MiB" (+ ", D MiB of disk" when disk is what is short).
//
// Fleet state (sql/0003_fleet.sql): only hosts whose state is 'active' are eligible
// (cordoned and draining hosts get no new sandboxes; no_hosts_available says so when that
// is why none is eligible). hosts.capacity_override replaces the detected cpu_cores
// ("vcpus"), memory_mb and disk_gb, and "max_sandboxes" caps the sandbox count.
//
// Fleet templates (templates.metadata has key "fleet"): built per host by the reconciler
// (fleet/reconciler.h), so placed only on hosts where template_builds.state is 'ready'
// (place_fleet_template); no_hosts_available names the template when none has it.
//
// Pinned placement (place_on_host): a snapshot template's files exist only on the host it
// was taken on, so capsules from it go there or nowhere: the same limits and capacity
// checks restricted to that host; no_hosts_available "host H holding the template is not
// online" when it is not eligible (offline, unreachable, or not one the team may use).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "server_context.h"
#include "store/templates.h"

namespace wrenn::cp {

struct SchedulerOptions {
  double vcpu_overcommit = 16.0;
  double memory_overcommit = 1.0;
  double disk_overcommit = 1.0;
};

// One host's capacity and load as the scheduler sees it.
struct HostLoad {
  std::string host_id;
  double vcpus_total = 0, vcpus_used = 0;
  double memory_total = 0, memory_used = 0;
  double disk_total = 0, disk_used = 0;  // disk_total 0: not constrained
  std::int64_t sandboxes = 0;            // sandboxes holding resources on it
  std::int64_t max_sandboxes = -1;       // capacity_override.max_sandboxes; -1: no cap
};

class LeastLoadedScheduler : public Scheduler {
 public:
  // hooks may be null (no limits).
  LeastLoadedScheduler(SchedulerOptions options, const Hooks* hooks);
  std::string place(pg::Connection& tx, const PlacementRequest& req) override;
  // The eligible hosts and their load (locks them FOR UPDATE when in a transaction).
  std::vector<HostLoad> loads(pg::Connection& tx, const std::string& team_id) const;

 private:
  SchedulerOptions options_;
  const Hooks* hooks_;
};

// Scheduler::place restricted to host_id (see above). Called inside the caller's
// transaction like place(); runs ctx.hooks.check_limits first.
std::string place_on_host(const ServerContext& ctx, pg::Connection& tx, const PlacementRequest& req,
                          const std::string& host_id);

// True when the template was declared in a fleet spec (metadata key "fleet").
bool is_fleet_template(const store::Template& t);
// Scheduler::place restricted to the hosts where the fleet template is built ('ready');
// runs ctx.hooks.check_limits first.
std::string place_fleet_template(const ServerContext& ctx, pg::Connection& tx,
                                 const PlacementRequest& req, const store::Template& t);

}  // namespace wrenn::cp
