#include "hosts/host_monitor.h"

#include <algorithm>
#include <map>
#include <set>

#include "error.h"
#include "events/event.h"
#include "fleet/reconciler.h"
#include "log.h"
#include "store/audit.h"
#include "store/hosts.h"
#include "store/sql.h"

namespace wrenn::cp {

namespace pb = wrenn::agent::v1;

namespace {

constexpr auto kListTimeout = std::chrono::seconds(10);
constexpr auto kDestroyTimeout = std::chrono::seconds(30);

Caller system_caller() {
  return Caller{};
}

}  // namespace

ReconcileResult reconcile_host(pg::Pool& db, HostClient& client, const std::string& host_id,
                               const Hooks* hooks, std::chrono::seconds orphan_grace) {
  std::string asked_at;
  {
    auto lease = db.acquire();
    asked_at = std::string(lease->exec("SELECT now()::text").text(0, 0));
  }
  const auto listed = client.list_sandboxes(kListTimeout);
  std::map<std::string, const pb::SandboxInfo*> agent;
  std::vector<std::string> agent_ids;
  for (const auto& s : listed) {
    agent[s.sandbox_id()] = &s;
    agent_ids.push_back(s.sandbox_id());
  }

  struct Change {
    std::string id, team_id, status;
  };
  ReconcileResult out;
  std::vector<Change> changes;
  std::set<std::string> owned;
  db.with_transaction([&](pg::Connection& c) {
    out = ReconcileResult{};
    changes.clear();
    owned.clear();
    auto rows = c.exec(
        "SELECT id, status, team_id FROM sandboxes "
        "WHERE host_id = $1 AND status IN ('running', 'paused', 'missing') "
        "AND last_updated < $2::timestamptz ORDER BY id FOR UPDATE",
        host_id, asked_at);
    for (int i = 0; i < rows.rows(); ++i) {
      const std::string id(rows.text(i, 0));
      const std::string status(rows.text(i, 1));
      const std::string team(rows.text(i, 2));
      auto it = agent.find(id);
      std::string next;
      if (it == agent.end()) {
        if (status != "missing") next = "missing";
      } else {
        const auto state = it->second->state();
        const bool paused = state == pb::SANDBOX_STATE_PAUSED;
        const bool running =
            state == pb::SANDBOX_STATE_RUNNING || state == pb::SANDBOX_STATE_STARTING;
        if (status == "missing" && (paused || running)) next = paused ? "paused" : "running";
        if (status == "running" && paused) next = "paused";
      }
      if (next.empty()) continue;
      c.exec("UPDATE sandboxes SET status = $2 WHERE id = $1", id, next);
      if (next == "missing") {
        out.marked_missing.push_back(id);
      } else if (status == "missing") {
        out.restored.push_back(id);
      } else {
        out.paused.push_back(id);
        audit::Entry e;
        e.team_id = team;
        e.action = "pause";
        e.resource_type = "sandbox";
        e.resource_id = id;
        e.status = "info";
        e.metadata["reason"] = "timeout";
        audit::record(c, system_caller(), e);
        // The agent paused it when its timeout passed; we only see the result.
        auto ev = events::capsule_event("pause", system_caller(), team, id);
        ev.metadata["reason"] = "ttl_expired";
        ev.metadata["inferred"] = "true";
        events::record(c, ev);
      }
      changes.push_back({id, team, next});
    }
    // Creates that died half-way: settle them once they are older than the grace.
    auto stale = c.exec(
        "SELECT id, status, team_id FROM sandboxes "
        "WHERE host_id = $1 AND status IN ('pending', 'starting') "
        "AND last_updated < $2::timestamptz "
        "AND created_at < $2::timestamptz - $3 * interval '1 second' ORDER BY id FOR UPDATE",
        host_id, asked_at, static_cast<std::int64_t>(orphan_grace.count()));
    for (int i = 0; i < stale.rows(); ++i) {
      const std::string id(stale.text(i, 0));
      const std::string status(stale.text(i, 1));
      const std::string team(stale.text(i, 2));
      auto it = agent.find(id);
      std::string next = "error";
      if (it != agent.end()) {
        const auto state = it->second->state();
        if (state == pb::SANDBOX_STATE_PAUSED) next = "paused";
        if (state == pb::SANDBOX_STATE_RUNNING || state == pb::SANDBOX_STATE_STARTING)
          next = "running";
      }
      if (next == "error") {
        auto r = c.exec("UPDATE sandboxes SET status = 'error' WHERE id = $1 AND status = $2", id,
                        status);
        if (r.affected_rows() > 0) {
          auto ev = events::capsule_event("create", system_caller(), team, id,
                                          "the create never finished and its host has no such "
                                          "sandbox");
          ev.metadata["reason"] = "host_state_sync";
          ev.metadata["inferred"] = "true";
          events::record(c, ev);
        }
        out.failed.push_back(id);
      } else {
        c.exec(
            "UPDATE sandboxes SET status = $3, host_ip = $4, "
            "started_at = coalesce(started_at, now()), last_active_at = now() "
            "WHERE id = $1 AND status = $2",
            id, status, next, it->second->address());
        out.promoted.push_back(id);
      }
      changes.push_back({id, team, next});
    }
    if (!agent_ids.empty()) {
      auto own = c.exec(
          "SELECT id FROM sandboxes WHERE id = ANY ($1::text[]) AND host_id = $2 "
          "AND status NOT IN ('stopped', 'error')",
          store::text_array(agent_ids), host_id);
      for (int i = 0; i < own.rows(); ++i) owned.insert(std::string(own.text(i, 0)));
    }
  });

  if (hooks) {
    for (const auto& ch : changes) {
      SandboxEvent ev;
      ev.type = "capsule." + ch.status;
      ev.sandbox_id = ch.id;
      ev.team_id = ch.team_id;
      ev.host_id = host_id;
      hooks->sandbox_event(ev);
    }
  }
  if (!changes.empty())
    log::info("reconciled sandboxes", {{"host_id", host_id},
                                       {"missing", std::to_string(out.marked_missing.size())},
                                       {"restored", std::to_string(out.restored.size())},
                                       {"paused", std::to_string(out.paused.size())},
                                       {"promoted", std::to_string(out.promoted.size())},
                                       {"failed", std::to_string(out.failed.size())}});

  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  for (const auto& s : listed) {
    if (owned.count(s.sandbox_id())) continue;
    // Unknown age (0) or younger than the grace: possibly a create in flight. The fleet
    // reconciler's template builds have no capsule row and get longer.
    const auto grace = s.metadata().count(fleet::kBuildSandboxMetadataKey)
                           ? std::max(orphan_grace, fleet::kBuildSandboxGrace)
                           : orphan_grace;
    if (s.created_at_unix() <= 0 || now - s.created_at_unix() < grace.count()) continue;
    try {
      client.destroy_sandbox(s.sandbox_id(), kDestroyTimeout);
      out.destroyed.push_back(s.sandbox_id());
      log::info("destroyed an orphan sandbox",
                {{"host_id", host_id}, {"sandbox_id", s.sandbox_id()}});
    } catch (const std::exception& e) {
      log::warn("destroying an orphan sandbox failed",
                {{"host_id", host_id}, {"sandbox_id", s.sandbox_id()}, {"error", e.what()}});
    }
  }
  return out;
}

std::vector<std::string> check_heartbeats(pg::Pool& db, std::chrono::seconds timeout,
                                          const Hooks* hooks) {
  struct Down {
    store::Host host;
    std::vector<std::pair<std::string, std::string>> sandboxes;  // id, team
  };
  std::vector<Down> down;
  db.with_transaction([&](pg::Connection& c) {
    down.clear();
    for (auto& h : store::mark_unreachable(c, timeout)) {
      Down d;
      auto r = c.exec(
          "UPDATE sandboxes SET status = 'missing' WHERE host_id = $1 AND status = 'running' "
          "RETURNING id, team_id",
          h.id);
      for (int i = 0; i < r.rows(); ++i)
        d.sandboxes.emplace_back(std::string(r.text(i, 0)), std::string(r.text(i, 1)));
      audit::Entry e;
      e.team_id = h.team_id;
      e.action = "marked_down";
      e.resource_type = "host";
      e.resource_id = h.id;
      e.status = "error";
      e.scope = "admin";
      audit::record(c, system_caller(), e);
      events::record(c, events::host_event("host.down", h.id, h.team_id));
      d.host = std::move(h);
      down.push_back(std::move(d));
    }
  });
  std::vector<std::string> ids;
  for (const auto& d : down) {
    ids.push_back(d.host.id);
    log::warn("host missed its heartbeats; marked unreachable",
              {{"host_id", d.host.id},
               {"last_heartbeat_at", d.host.last_heartbeat_at},
               {"sandboxes_missing", std::to_string(d.sandboxes.size())}});
    if (!hooks) continue;
    hooks->host_event(HostEvent{"host.down", d.host.id, d.host.team_id});
    for (const auto& [id, team] : d.sandboxes) {
      SandboxEvent ev;
      ev.type = "capsule.missing";
      ev.sandbox_id = id;
      ev.team_id = team;
      ev.host_id = d.host.id;
      hooks->sandbox_event(ev);
    }
  }
  return ids;
}

HostMonitor::HostMonitor(pg::Pool& db, PgHostDirectory& hosts, const Hooks& hooks,
                         const CpConfig& config)
    : db_(db), hosts_(hosts), hooks_(hooks), config_(config) {}

HostMonitor::~HostMonitor() {
  stop();
}

void HostMonitor::start() {
  thread_ = std::thread([this] { run(); });
}

void HostMonitor::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void HostMonitor::reconcile_all() {
  auto lease = db_.acquire();
  if (!lease->exec("SELECT pg_try_advisory_lock($1)", kReconcileLockKey).as_bool(0, 0)) return;
  struct Unlock {
    pg::Connection& c;
    ~Unlock() {
      try {
        if (!c.broken()) c.exec("SELECT pg_advisory_unlock($1)", kReconcileLockKey);
      } catch (const std::exception&) {
      }
    }
  } unlock{*lease};
  std::vector<store::Host> online;
  for (auto& h : store::list_hosts(*lease))
    if (h.status == "online" && !h.address.empty()) online.push_back(std::move(h));
  for (const auto& h : online) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    try {
      auto client = hosts_.client_for(h);
      reconcile_host(db_, *client, h.id, &hooks_, config_.orphan_grace);
    } catch (const std::exception& e) {
      log::warn("reconciling a host failed", {{"host_id", h.id}, {"error", e.what()}});
    }
  }
}

void HostMonitor::run() {
  auto next_reconcile = std::chrono::steady_clock::now() + config_.reconcile_interval;
  for (;;) {
    try {
      check_heartbeats(db_, config_.heartbeat_timeout, &hooks_);
    } catch (const std::exception& e) {
      log::warn("host monitor: heartbeat check failed", {{"error", e.what()}});
    }
    if (std::chrono::steady_clock::now() >= next_reconcile) {
      try {
        reconcile_all();
      } catch (const std::exception& e) {
        log::warn("host monitor: reconcile pass failed", {{"error", e.what()}});
      }
      next_reconcile = std::chrono::steady_clock::now() + config_.reconcile_interval;
    }
    std::unique_lock lock(mu_);
    auto wait = std::min<std::chrono::steady_clock::duration>(
        config_.monitor_interval, next_reconcile - std::chrono::steady_clock::now());
    if (wait < std::chrono::milliseconds(10)) wait = std::chrono::milliseconds(10);
    if (cv_.wait_for(lock, wait, [this] { return stopping_; })) return;
  }
}

}  // namespace wrenn::cp
