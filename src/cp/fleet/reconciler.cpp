#include "fleet/reconciler.h"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <ctime>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "api/capsule_ops.h"
#include "crypto/ids.h"
#include "log.h"
#include "pg/connection.h"
#include "store/audit.h"
#include "store/templates.h"

namespace wrenn::cp::fleet {

namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxLog = 64 * 1024;
constexpr std::chrono::milliseconds kHostInfoTimeout = 15s;
constexpr std::chrono::milliseconds kBuildCreateTimeout = 120s;
constexpr std::chrono::milliseconds kBuildStepTimeout = 30min;
constexpr std::chrono::milliseconds kSnapshotTimeout = 30min;
constexpr std::chrono::milliseconds kAgentTimeout = 60s;

std::string now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json::object parse_object(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return {};
  return std::move(v.get_object());
}

std::string str_field(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_string()) return {};
  return std::string(it->value().get_string());
}

std::int64_t int_field(const json::object& o, std::string_view key, std::int64_t dflt) {
  auto it = o.find(key);
  if (it == o.end()) return dflt;
  if (it->value().is_int64()) return it->value().get_int64();
  if (it->value().is_uint64()) return static_cast<std::int64_t>(it->value().get_uint64());
  return dflt;
}

std::map<std::string, std::string> map_field(const json::object& o, std::string_view key) {
  std::map<std::string, std::string> out;
  auto it = o.find(key);
  if (it == o.end() || !it->value().is_object()) return out;
  for (const auto& kv : it->value().get_object())
    if (kv.value().is_string()) out[std::string(kv.key())] = std::string(kv.value().get_string());
  return out;
}

struct Condition {
  std::string type;
  std::string status;  // True | False | Unknown
  std::string reason;
  std::string message;
};

// {phase, message, conditions[]}; a condition keeps its last_transition while its status
// is unchanged, so an unchanged world gives an equal object (and no write).
json::object make_status(const std::string& phase, const std::string& message,
                         const std::vector<Condition>& conds, const json::object& prev) {
  std::map<std::string, std::pair<std::string, std::string>> before;  // type -> status, time
  if (auto it = prev.find("conditions"); it != prev.end() && it->value().is_array())
    for (const auto& c : it->value().get_array())
      if (c.is_object())
        before[str_field(c.get_object(), "type")] = {str_field(c.get_object(), "status"),
                                                     str_field(c.get_object(), "last_transition")};
  json::array arr;
  for (const auto& c : conds) {
    std::string lt = now_rfc3339();
    if (auto b = before.find(c.type); b != before.end() && b->second.first == c.status)
      lt = b->second.second;
    arr.push_back(json::object{{"type", c.type},
                               {"status", c.status},
                               {"reason", c.reason},
                               {"message", c.message},
                               {"last_transition", lt}});
  }
  return {{"phase", phase}, {"message", message}, {"conditions", std::move(arr)}};
}

// The previous status of a condition type ("" when absent).
std::string condition_status(const json::object& status, std::string_view type) {
  if (auto it = status.find("conditions"); it != status.end() && it->value().is_array())
    for (const auto& c : it->value().get_array())
      if (c.is_object() && str_field(c.get_object(), "type") == type)
        return str_field(c.get_object(), "status");
  return {};
}

struct Resource {
  std::string kind, name, resource_id, spec_hash;
  json::object spec;
  std::int64_t generation = 0;
  json::object status;
  std::int64_t observed_generation = 0;
};

struct HostRow {
  std::string id, name, status, state, address, type, team_id;
  std::map<std::string, std::string> labels;
};

void audit_system(pg::Connection& c, const std::string& team_id, const std::string& action,
                  const std::string& type, const std::string& id, const std::string& status,
                  json::object meta) {
  audit::Entry e;
  e.team_id = team_id;
  e.action = action;
  e.resource_type = type;
  e.resource_id = id;
  e.status = status;
  e.scope = "admin";
  e.metadata = std::move(meta);
  audit::record(c, Caller{}, e);
}

}  // namespace

struct Reconciler::Impl {
  explicit Impl(ServerContext& c) : ctx(c) {}

  ServerContext& ctx;
  std::unique_ptr<pg::Connection> leader_conn;
  std::stop_token stop;
  // Per pass: the images each host lists (HostInfo.templates); nullopt when unreachable.
  std::map<std::string, std::optional<std::set<std::string>>> host_images;

  void pass();
  void reconcile_host(pg::Connection& c, const Resource& r,
                      const std::map<std::string, HostRow>& hosts);
  void report_undeclared(pg::Connection& c, const std::map<std::string, HostRow>& hosts,
                         const std::set<std::string>& declared);
  void drain(const HostRow& h);
  void reconcile_template(const Resource& r, const std::vector<HostRow>& hosts);
  // Brings template_builds(template, host) to 'ready' for spec_hash; returns nothing, the
  // row records the outcome.
  void ensure_built(const Resource& r, const store::Template& t, const HostRow& h);
  void build(const Resource& r, const store::Template& t, const HostRow& h,
             const std::string& base_agent_name, bool replace);
  const std::optional<std::set<std::string>>& images_of(const std::string& host_id);
  void write_status(pg::Connection& c, const Resource& r, const json::object& status,
                    std::int64_t observed_generation);
  void set_build(const std::string& template_id, const std::string& host_id,
                 const std::string& spec_hash, const std::string& state, const std::string& message,
                 bool bump_attempts, bool reset_log);
  void append_log(const std::string& template_id, const std::string& host_id,
                  const std::string& text);
};

Reconciler::Reconciler(ServerContext& ctx) : ctx_(ctx), impl_(std::make_unique<Impl>(ctx)) {}
Reconciler::~Reconciler() = default;

namespace {

// Waits up to d for a NOTIFY on the leader connection (or the stop request). Returns false
// when the connection broke.
bool wait_for_wake(pg::Connection* conn, std::chrono::milliseconds d, const std::stop_token& stop) {
  const auto deadline = std::chrono::steady_clock::now() + d;
  while (!stop.stop_requested()) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left <= 0ms) return true;
    const int slice = static_cast<int>(std::min<std::int64_t>(left.count(), 200));
    if (!conn) {
      std::this_thread::sleep_for(std::chrono::milliseconds(slice));
      continue;
    }
    pg_conn* pc = conn->native();
    pollfd p{PQsocket(pc), POLLIN, 0};
    if (p.fd < 0) return false;
    ::poll(&p, 1, slice);
    if (PQconsumeInput(pc) == 0) return false;
    bool woke = false;
    while (PGnotify* n = PQnotifies(pc)) {
      PQfreemem(n);
      woke = true;
    }
    if (woke) return true;
  }
  return true;
}

}  // namespace

void Reconciler::run(std::stop_token stop) {
  Impl& m = *impl_;
  m.stop = stop;
  const std::string conninfo = ctx_.db.options().conninfo;
  const auto interval = std::chrono::milliseconds(
      std::max<std::int64_t>(1, static_cast<std::int64_t>(ctx_.config.fleet_interval.count())) *
      1000);
  while (!stop.stop_requested()) {
    if (!leader_.load()) {
      try {
        if (!m.leader_conn || m.leader_conn->broken())
          m.leader_conn = std::make_unique<pg::Connection>(conninfo);
        auto r = m.leader_conn->exec("SELECT pg_try_advisory_lock($1)", kLeaderLockKey);
        if (r.as_bool(0, 0)) {
          m.leader_conn->exec(std::string("LISTEN ") + kWakeChannel);
          leader_.store(true);
          log::info("fleet reconciler: leading");
        }
      } catch (const std::exception& e) {
        log::warn("fleet reconciler: cannot compete for leadership", {{"error", e.what()}});
        m.leader_conn.reset();
      }
    }
    if (leader_.load()) {
      try {
        m.pass();
      } catch (const std::exception& e) {
        log::warn("fleet reconciler pass failed", {{"error", e.what()}});
      }
    }
    const bool ok = wait_for_wake(leader_.load() ? m.leader_conn.get() : nullptr, interval, stop);
    if (leader_.load() && (!ok || m.leader_conn->broken())) {
      leader_.store(false);
      m.leader_conn.reset();
      log::warn("fleet reconciler: no longer leading (lost the database connection)");
    }
  }
  if (leader_.load()) {
    leader_.store(false);
    m.leader_conn.reset();  // ends the session: PostgreSQL releases the lock
    log::info("fleet reconciler: no longer leading (stopping)");
  }
}

// ---- One pass ----

void Reconciler::Impl::pass() {
  host_images.clear();
  std::vector<Resource> resources;
  std::map<std::string, HostRow> hosts;
  {
    auto lease = ctx.db.acquire();
    auto r = lease->exec(
        "SELECT kind, name, resource_id, spec::text, spec_hash, generation, status::text, "
        "observed_generation FROM fleet_resources ORDER BY kind, name");
    for (int i = 0; i < r.rows(); ++i) {
      Resource x;
      x.kind = r.text(i, 0);
      x.name = r.text(i, 1);
      x.resource_id = r.text(i, 2);
      x.spec = parse_object(r.text(i, 3));
      x.spec_hash = r.text(i, 4);
      x.generation = r.as_int64(i, 5);
      x.status = parse_object(r.text(i, 6));
      x.observed_generation = r.as_int64(i, 7);
      resources.push_back(std::move(x));
    }
    auto h = lease->exec(
        "SELECT id, coalesce(name, ''), status, state, address, type, coalesce(team_id, ''), "
        "labels::text FROM hosts ORDER BY created_at, id");
    for (int i = 0; i < h.rows(); ++i) {
      HostRow x;
      x.id = h.text(i, 0);
      x.name = h.text(i, 1);
      x.status = h.text(i, 2);
      x.state = h.text(i, 3);
      x.address = h.text(i, 4);
      x.type = h.text(i, 5);
      x.team_id = h.text(i, 6);
      x.labels = map_field(json::object{{"l", parse_object(h.text(i, 7))}}, "l");
      hosts.emplace(x.id, std::move(x));
    }
  }
  if (resources.empty()) return;

  std::set<std::string> declared;
  for (const auto& r : resources) {
    if (stop.stop_requested()) return;
    if (r.kind == "host") {
      declared.insert(r.resource_id);
      auto lease = ctx.db.acquire();
      reconcile_host(*lease, r, hosts);
    } else if (r.kind == "team" || r.kind == "channel") {
      // Apply converges their rows; the reconciler only reports them.
      auto lease = ctx.db.acquire();
      write_status(
          *lease, r,
          make_status("Ready", "", {{"Ready", "True", "Applied", "the live rows match the spec"}},
                      r.status),
          r.generation);
    }
  }
  {
    auto lease = ctx.db.acquire();
    report_undeclared(*lease, hosts, declared);
  }
  // Draining hosts: pause or destroy what runs there.
  for (const auto& [id, h] : hosts)
    if (h.state == "draining" && h.status == "online" && !stop.stop_requested()) drain(h);

  // Templates: the ones built from an image first, so that a base is ready before the
  // templates built on it (deeper chains converge over further passes).
  std::vector<const Resource*> templates;
  for (const auto& r : resources)
    if (r.kind == "template") templates.push_back(&r);
  std::stable_sort(templates.begin(), templates.end(), [](const Resource* a, const Resource* b) {
    return str_field(a->spec, "base").empty() && !str_field(b->spec, "base").empty();
  });
  std::vector<HostRow> host_list;
  for (const auto& [id, h] : hosts) host_list.push_back(h);
  for (const Resource* r : templates) {
    if (stop.stop_requested()) return;
    try {
      reconcile_template(*r, host_list);
    } catch (const std::exception& e) {
      log::warn("fleet reconciler: template failed", {{"template", r->name}, {"error", e.what()}});
    }
  }
}

void Reconciler::Impl::write_status(pg::Connection& c, const Resource& r,
                                    const json::object& status, std::int64_t observed) {
  if (status == r.status && observed == r.observed_generation) return;
  c.exec(
      "UPDATE fleet_resources SET status = $3::jsonb, observed_generation = $4, "
      "status_changed_at = CASE WHEN status = $3::jsonb THEN status_changed_at ELSE now() END "
      "WHERE kind = $1 AND name = $2",
      r.kind, r.name, json::serialize(status), observed);
}

// ---- Hosts ----

void Reconciler::Impl::reconcile_host(pg::Connection& c, const Resource& r,
                                      const std::map<std::string, HostRow>& hosts) {
  auto it = hosts.find(r.resource_id);
  if (it == hosts.end()) {
    write_status(c, r,
                 make_status("Missing", "the host row is gone; apply the spec again",
                             {{"Registered", "False", "Missing", "no such host"}}, r.status),
                 r.generation);
    return;
  }
  const HostRow& h = it->second;
  const bool registered = h.status != "pending";
  const bool online = h.status == "online";
  const bool schedulable = online && h.state == "active";
  std::string phase, message;
  if (!registered) {
    phase = "AwaitingRegistration";
    message = "waiting for the agent to register: run `wrennctl host token " + r.name +
              "` and start wrenn-agent with the command it prints";
  } else if (h.state == "cordoned") {
    phase = "Cordoned";
    message = "receives no new sandboxes";
  } else if (h.state == "draining") {
    auto n = c.exec(
        "SELECT count(*) FROM sandboxes WHERE host_id = $1 AND status = ANY($2::text[])", h.id,
        ctx.config.drain_policy == "destroy" ? "{pending,starting,running,paused,missing}"
                                             : "{pending,starting,running}");
    const std::int64_t left = n.as_int64(0, 0);
    phase = left == 0 ? "Drained" : "Draining";
    message = left == 0 ? "no running sandboxes are left"
                        : std::to_string(left) + " sandboxes left to " +
                              (ctx.config.drain_policy == "destroy" ? "destroy" : "pause");
    if (!online) message += " (host is " + h.status + ")";
  } else if (online) {
    phase = "Online";
  } else if (h.status == "unreachable") {
    phase = "Unreachable";
    message = "no heartbeat from the agent";
  } else {
    phase = "Offline";
    message = "the host is " + h.status;
  }
  std::vector<Condition> conds = {
      {"Registered", registered ? "True" : "False",
       registered ? "AgentRegistered" : "AwaitingRegistration", ""},
      {"Online", online ? "True" : "False",
       online ? "Heartbeating" : (registered ? "NoHeartbeat" : "NotRegistered"),
       registered ? "host status " + h.status : ""},
      {"Schedulable", schedulable ? "True" : "False",
       schedulable ? "Active" : (online ? "NotActive" : "NotOnline"),
       schedulable ? "" : "state " + h.state + ", status " + h.status},
  };
  json::object status = make_status(phase, message, conds, r.status);
  // Online transitions of declared hosts go to the audit log (once: the recorded condition
  // is the memory, so a new leader does not repeat them).
  const std::string before = condition_status(r.status, "Online");
  const std::string now = online ? "True" : "False";
  if (!before.empty() && before != now) {
    json::object meta{{"name", r.name}, {"status", h.status}};
    audit_system(c, h.team_id, online ? "host.up" : "host.down", "host", h.id,
                 online ? "info" : "warning", std::move(meta));
  }
  write_status(c, r, status, r.generation);
}

void Reconciler::Impl::report_undeclared(pg::Connection& c,
                                         const std::map<std::string, HostRow>& hosts,
                                         const std::set<std::string>& declared) {
  for (const auto& [id, h] : hosts) {
    if (h.status == "pending" || declared.count(id)) continue;
    auto seen = c.exec(
        "SELECT 1 FROM audit_logs WHERE action = 'drift' AND resource_type = 'host' "
        "AND resource_id = $1 LIMIT 1",
        id);
    if (!seen.empty()) continue;
    json::object meta{{"message", "registered host " + (h.name.empty() ? id : h.name) +
                                      " is not declared in any fleet spec"},
                      {"address", h.address}};
    audit_system(c, h.team_id, "drift", "host", id, "warning", std::move(meta));
    log::info("fleet reconciler: undeclared host", {{"host_id", id}});
  }
}

void Reconciler::Impl::drain(const HostRow& h) {
  const bool destroy = ctx.config.drain_policy == "destroy";
  std::vector<std::pair<std::string, std::string>> victims;  // team, id
  {
    auto lease = ctx.db.acquire();
    auto r = lease->exec(
        "SELECT team_id, id FROM sandboxes WHERE host_id = $1 AND status = ANY($2::text[]) "
        "ORDER BY created_at",
        h.id, destroy ? "{running,paused,missing}" : "{running}");
    for (int i = 0; i < r.rows(); ++i)
      victims.emplace_back(std::string(r.text(i, 0)), std::string(r.text(i, 1)));
  }
  for (const auto& [team, id] : victims) {
    if (stop.stop_requested()) return;
    // The system acts, in the capsule's team (so the team sees it in its audit log).
    Caller system;
    system.team_id = team;
    system.actor_name = "fleet reconciler";
    try {
      if (destroy)
        destroy_capsule_blocking(ctx, system, team, id);
      else
        pause_capsule_blocking(ctx, system, team, id);
      log::info("fleet reconciler: drained a capsule",
                {{"host_id", h.id}, {"capsule", id}, {"action", destroy ? "destroy" : "pause"}});
    } catch (const std::exception& e) {
      log::warn("fleet reconciler: draining a capsule failed",
                {{"host_id", h.id}, {"capsule", id}, {"error", e.what()}});
    }
  }
}

// ---- Templates ----

const std::optional<std::set<std::string>>& Reconciler::Impl::images_of(
    const std::string& host_id) {
  auto it = host_images.find(host_id);
  if (it != host_images.end()) return it->second;
  std::optional<std::set<std::string>> images;
  try {
    auto info = ctx.hosts.client(host_id)->host_info(kHostInfoTimeout);
    images.emplace(info.templates().begin(), info.templates().end());
  } catch (const std::exception& e) {
    log::warn("fleet reconciler: host info failed", {{"host_id", host_id}, {"error", e.what()}});
  }
  return host_images.emplace(host_id, std::move(images)).first->second;
}

void Reconciler::Impl::set_build(const std::string& template_id, const std::string& host_id,
                                 const std::string& spec_hash, const std::string& state,
                                 const std::string& message, bool bump_attempts, bool reset_log) {
  auto lease = ctx.db.acquire();
  lease->exec(
      "INSERT INTO template_builds (template_id, host_id, spec_hash, state, message, attempts) "
      "VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN 1 ELSE 0 END) "
      "ON CONFLICT (template_id, host_id) DO UPDATE SET spec_hash = $3, state = $4, "
      "message = $5, updated_at = now(), "
      "attempts = CASE WHEN $6 THEN template_builds.attempts + 1 "
      "                WHEN $4 = 'ready' THEN 0 ELSE template_builds.attempts END, "
      "log = CASE WHEN $7 THEN '' ELSE template_builds.log END",
      template_id, host_id, spec_hash, state, message, bump_attempts, reset_log);
}

void Reconciler::Impl::append_log(const std::string& template_id, const std::string& host_id,
                                  const std::string& text) {
  if (text.empty()) return;
  auto lease = ctx.db.acquire();
  lease->exec(
      "UPDATE template_builds SET log = right(log || $3, $4), updated_at = now() "
      "WHERE template_id = $1 AND host_id = $2",
      template_id, host_id, text, static_cast<std::int64_t>(kMaxLog));
}

void Reconciler::Impl::reconcile_template(const Resource& r, const std::vector<HostRow>& hosts) {
  std::optional<store::Template> t;
  {
    auto lease = ctx.db.acquire();
    auto row = lease->exec("SELECT team_id, name FROM templates WHERE id = $1", r.resource_id);
    if (!row.empty()) t = store::find_template(*lease, row.text(0, 0), std::string(row.text(0, 1)));
  }
  if (!t || t->id != r.resource_id) {
    auto lease = ctx.db.acquire();
    write_status(*lease, r,
                 make_status("Failed", "the template row is gone; apply the spec again",
                             {{"Built", "False", "Missing", "no such template"}}, r.status),
                 r.generation);
    return;
  }
  const auto present_on = map_field(r.spec, "present_on");
  std::vector<const HostRow*> targets;
  for (const auto& h : hosts) {
    if (h.status != "online" || h.state != "active" || h.address.empty()) continue;
    if (h.type == "byoc" && h.team_id != t->team_id) continue;
    bool match = true;
    for (const auto& [k, v] : present_on) {
      auto l = h.labels.find(k);
      if (l == h.labels.end() || l->second != v) match = false;
    }
    if (match) targets.push_back(&h);
  }
  for (const HostRow* h : targets) {
    if (stop.stop_requested()) return;
    try {
      ensure_built(r, *t, *h);
    } catch (const std::exception& e) {
      log::warn("fleet reconciler: template on host failed",
                {{"template", r.name}, {"host_id", h->id}, {"error", e.what()}});
    }
  }
  // Status: a summary of the builds on the target hosts.
  std::map<std::string, std::pair<std::string, std::string>> builds;  // host -> state, message
  {
    auto lease = ctx.db.acquire();
    auto b = lease->exec(
        "SELECT host_id, state, message, spec_hash FROM template_builds WHERE template_id = $1",
        t->id);
    for (int i = 0; i < b.rows(); ++i) {
      std::string state(b.text(i, 1));
      if (b.text(i, 3) != r.spec_hash && state == "ready") state = "pending";  // outdated
      builds[std::string(b.text(i, 0))] = {state, std::string(b.text(i, 2))};
    }
  }
  int ready = 0, failed = 0;
  std::string fail_msg;
  for (const HostRow* h : targets) {
    auto it = builds.find(h->id);
    if (it == builds.end()) continue;
    if (it->second.first == "ready") ++ready;
    if (it->second.first == "failed") {
      ++failed;
      if (fail_msg.empty())
        fail_msg = "on host " + (h->name.empty() ? h->id : h->name) + ": " + it->second.second;
    }
  }
  const int n = static_cast<int>(targets.size());
  std::string phase, message, reason;
  if (n == 0) {
    phase = "Pending";
    reason = "NoHosts";
    message = "no online, active host matches present_on";
  } else if (ready == n) {
    phase = "Ready";
    reason = "AllHostsReady";
  } else if (failed > 0) {
    phase = "Failed";
    reason = "BuildFailed";
    message = fail_msg;
  } else {
    phase = "Building";
    reason = "Building";
  }
  const std::string summary =
      "ready on " + std::to_string(ready) + " of " + std::to_string(n) + " hosts";
  if (message.empty()) message = summary;
  json::object status =
      make_status(phase, message,
                  {{"Built", n > 0 && ready == n ? "True" : "False", reason, summary}}, r.status);
  const bool settled = phase == "Ready" || phase == "Failed";
  auto lease = ctx.db.acquire();
  write_status(*lease, r, status, settled ? r.generation : r.observed_generation);
}

void Reconciler::Impl::ensure_built(const Resource& r, const store::Template& t, const HostRow& h) {
  const std::string agent_name = store::agent_template_name(t);
  const auto& images = images_of(h.id);
  if (!images) return;  // unreachable now; the next pass tries again
  const bool has_image = images->count(agent_name) > 0;

  std::optional<std::string> state, hash;
  double age = 0;
  std::int64_t attempts = 0;
  {
    auto lease = ctx.db.acquire();
    auto b = lease->exec(
        "SELECT state, spec_hash, extract(epoch FROM now() - updated_at)::float8, attempts "
        "FROM template_builds WHERE template_id = $1 AND host_id = $2",
        t.id, h.id);
    if (!b.empty()) {
      state = std::string(b.text(0, 0));
      hash = std::string(b.text(0, 1));
      age = std::stod(std::string(b.text(0, 2)));
      attempts = b.as_int64(0, 3);
    }
  }
  if (agent_name.rfind("tmpl-", 0) != 0) {
    // A platform template lives under its name, which the agent cannot build into
    // (CreateSnapshot stores only template ids): it is ready where the host has it.
    if (has_image) {
      if (!state || *state != "ready" || *hash != r.spec_hash)
        set_build(t.id, h.id, r.spec_hash, "ready", "present on the host", false, false);
    } else if (!state || *state != "failed" || *hash != r.spec_hash) {
      set_build(t.id, h.id, r.spec_hash, "failed",
                "platform template \"" + t.name +
                    "\" is not on this host and cannot be built by the reconciler: install its "
                    "tree as WRENN_DIR/images/" +
                    agent_name + " on the host",
                true, false);
    }
    return;
  }
  if (!state && has_image) {
    // An image already there without a record of its build: adopt it.
    set_build(t.id, h.id, r.spec_hash, "ready", "adopted the image already on the host", false,
              false);
    return;
  }
  bool replace = has_image;
  if (state && *hash == r.spec_hash) {
    if (*state == "ready") {
      if (has_image) return;
      set_build(t.id, h.id, r.spec_hash, "missing", "the image is gone from the host; rebuilding",
                false, false);
      replace = false;
    } else if (*state == "failed") {
      // Retry with backoff: 10 s, 20 s, 40 s, ... up to 10 minutes.
      const double delay = std::min(
          600.0, 10.0 * static_cast<double>(1LL << std::min<std::int64_t>(
                                                std::max<std::int64_t>(attempts - 1, 0), 6)));
      if (age < delay) return;
    }
  } else if (state && *hash != r.spec_hash) {
    // A changed spec: rebuild from scratch (attempts start over).
    auto lease = ctx.db.acquire();
    lease->exec("UPDATE template_builds SET attempts = 0 WHERE template_id = $1 AND host_id = $2",
                t.id, h.id);
  }

  // The base: an image builder's tree, or another template ready on this host.
  std::string base_agent_name = str_field(r.spec, "image");
  const std::string base = str_field(r.spec, "base");
  if (!base.empty()) {
    std::optional<store::Template> bt;
    bool base_ready = false;
    {
      auto lease = ctx.db.acquire();
      bt = store::find_template(*lease, t.team_id, base);
      if (bt) {
        auto b =
            lease->exec("SELECT state FROM template_builds WHERE template_id = $1 AND host_id = $2",
                        bt->id, h.id);
        base_ready = (!b.empty() && b.text(0, 0) == "ready") ||
                     (b.empty() && images->count(store::agent_template_name(*bt)) > 0);
      }
    }
    if (!bt || !base_ready) {
      set_build(t.id, h.id, r.spec_hash, "pending",
                "waiting for base template \"" + base + "\" to be ready on this host", false,
                false);
      return;
    }
    base_agent_name = store::agent_template_name(*bt);
  }
  build(r, t, h, base_agent_name, replace);
}

void Reconciler::Impl::build(const Resource& r, const store::Template& t, const HostRow& h,
                             const std::string& base_agent_name, bool replace) {
  const std::string agent_name = store::agent_template_name(t);
  const std::string host_name = h.name.empty() ? h.id : h.name;
  set_build(t.id, h.id, r.spec_hash, "building", "building from " + base_agent_name, true, true);
  log::info("fleet reconciler: building a template",
            {{"template", r.name}, {"host_id", h.id}, {"base", base_agent_name}});
  auto client = ctx.hosts.client(h.id);
  const std::string sandbox_id = "fleet-build-" + ids::new_id(ids::Kind::kCapsule).substr(3, 20);
  const std::string user = str_field(r.spec, "user");
  const std::string workdir = str_field(r.spec, "workdir");
  const auto env = map_field(r.spec, "env");

  std::string failure;  // empty: success
  bool stopped = false;
  const auto started = std::chrono::steady_clock::now();
  bool created = false;
  try {
    agentpb::CreateSandboxRequest req;
    req.set_sandbox_id(sandbox_id);
    req.set_template_(base_agent_name);
    req.set_vcpus(static_cast<std::uint32_t>(int_field(r.spec, "vcpus", 1)));
    req.set_memory_mb(static_cast<std::uint64_t>(int_field(r.spec, "memory_mb", 512)));
    req.set_disk_mb(static_cast<std::uint64_t>(int_field(r.spec, "disk_mb", 4096)));
    req.set_default_user(user);
    req.set_default_workdir(workdir);
    for (const auto& [k, v] : env) (*req.mutable_env())[k] = v;
    (*req.mutable_metadata())[kBuildSandboxMetadataKey] = r.name;
    client->create_sandbox(req, kBuildCreateTimeout);
    created = true;
    append_log(t.id, h.id, "# build sandbox " + sandbox_id + " from " + base_agent_name + "\n");
    std::size_t n = 0;
    for (const auto& v : r.spec.contains("build") && r.spec.at("build").is_array()
                             ? r.spec.at("build").get_array()
                             : json::array{}) {
      ++n;
      if (stop.stop_requested()) {
        stopped = true;
        break;
      }
      if (!v.is_string()) continue;
      const std::string step(v.get_string());
      append_log(t.id, h.id, "$ " + step + "\n");
      ExecRequest ex;
      ex.cmd = "/bin/sh";
      ex.args = {"-c", step};
      ex.user = user;
      ex.cwd = workdir;
      ex.envs = env;
      ex.timeout = kBuildStepTimeout;
      ex.max_output_bytes = kMaxLog;
      ExecResult res = client->exec(sandbox_id, ex);
      append_log(t.id, h.id, res.stdout_data + res.stderr_data);
      if (res.exit_code != 0) {
        failure =
            "build step " + std::to_string(n) + " (" + step + ") failed: " +
            (res.status.empty() ? "exit status " + std::to_string(res.exit_code) : res.status);
        break;
      }
    }
    if (failure.empty() && !stopped) {
      // A rebuild replaces the old image (the agent keeps an existing id as it is).
      if (replace) {
        try {
          client->delete_snapshot(agent_name, kAgentTimeout);
        } catch (const Error& e) {
          if (e.code() != Code::kNotFound) throw;
        }
      }
      client->create_snapshot(sandbox_id, agent_name, kSnapshotTimeout);
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (created) {
    try {
      client->destroy_sandbox(sandbox_id, kAgentTimeout);
    } catch (const std::exception& e) {
      log::warn("fleet reconciler: destroying a build sandbox failed",
                {{"sandbox_id", sandbox_id}, {"error", e.what()}});
    }
  }
  if (stopped) {
    set_build(t.id, h.id, r.spec_hash, "pending", "build interrupted by shutdown", false, false);
    return;
  }
  const auto secs =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
          .count();
  auto lease = ctx.db.acquire();
  json::object meta{
      {"template", r.name}, {"host_id", h.id}, {"host", host_name}, {"spec_hash", r.spec_hash}};
  if (failure.empty()) {
    set_build(t.id, h.id, r.spec_hash, "ready", "built in " + std::to_string(secs) + " s", false,
              false);
    append_log(t.id, h.id, "# ready\n");
    audit_system(*lease, t.team_id, "template.built", "template", t.id, "success", std::move(meta));
    log::info("fleet reconciler: template built", {{"template", r.name}, {"host_id", h.id}});
  } else {
    set_build(t.id, h.id, r.spec_hash, "failed", failure, false, false);
    append_log(t.id, h.id, "# failed: " + failure + "\n");
    meta["error"] = failure;
    audit_system(*lease, t.team_id, "template.build_failed", "template", t.id, "error",
                 std::move(meta));
    log::warn("fleet reconciler: template build failed",
              {{"template", r.name}, {"host_id", h.id}, {"error", failure}});
  }
}

}  // namespace wrenn::cp::fleet
