// Capsule lifecycle: create, list, get, destroy, pause, resume, ping.
//
// Create, step by step (the control plane may die between any two steps):
//  1. One transaction: Idempotency-Key lookup, template resolution, placement
//     (Scheduler::place) and the row inserted as `pending` with its host. Commit.
//     Dying here leaves nothing, or a pending row and no sandbox.
//  2. Agent CreateSandbox with the row's id (the agent is idempotent by id).
//     Dying here leaves a pending row, and maybe a sandbox on the host.
//  3. One transaction: pending -> running (or -> error when step 2 failed, then a
//     best-effort DestroySandbox), with the audit entry.
// A retry with the same Idempotency-Key that finds the row still pending repeats steps 2
// and 3 (harmless: the agent returns the existing sandbox). Without a retry, the
// reconciler settles a row left pending past its grace period (promotes it if the agent
// runs the sandbox, else marks it error) and destroys agent sandboxes whose row is not
// pending/running/paused, so every crash converges to "recorded and running" or "exists
// nowhere".
#include <boost/json.hpp>

#include "api/api_error.h"
#include "api/capsule_json.h"
#include "api/capsule_ops.h"
#include "api/capsule_routes.h"
#include "blocking.h"
#include "crypto/ids.h"
#include "events/event.h"
#include "log.h"
#include "scheduler/scheduler.h"
#include "store/audit.h"

namespace wrenn::cp {

namespace json = boost::json;
using namespace capsule_routes;

namespace capsule_routes {

const std::string& team_of(const RequestContext& rc) {
  const std::string& team = rc.caller().team_id;
  if (team.empty()) throw ApiError(ApiCode::kForbidden, "these credentials belong to no team");
  return team;
}

[[noreturn]] void throw_not_in_status(const std::optional<store::Capsule>& c,
                                      std::string_view wanted) {
  if (!c) throw ApiError(ApiCode::kNotFound, "capsule not found");
  throw ApiError(ApiCode::kInvalidState,
                 "capsule is not " + std::string(wanted) + " (status: " + c->status + ")");
}

asio::awaitable<store::Capsule> load_capsule(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  const std::string id = rc.param("id");
  if (!ids::try_parse_id(ids::Kind::kCapsule, id))
    throw ApiError(ApiCode::kNotFound, "capsule not found");
  auto task = run_blocking(ctx.workers, [&ctx, &team, &id] {
    auto lease = ctx.db.acquire();
    return store::get_capsule(*lease, team, id);
  });
  std::optional<store::Capsule> c = co_await std::move(task);
  if (!c) throw ApiError(ApiCode::kNotFound, "capsule not found");
  co_return std::move(*c);
}

asio::awaitable<store::Capsule> load_running(ServerContext& ctx, RequestContext& rc, bool touch) {
  const std::string team = team_of(rc);
  const std::string id = rc.param("id");
  if (!ids::try_parse_id(ids::Kind::kCapsule, id))
    throw ApiError(ApiCode::kNotFound, "capsule not found");
  auto task = run_blocking(ctx.workers, [&ctx, &team, &id, touch] {
    auto lease = ctx.db.acquire();
    std::optional<store::Capsule> c;
    if (touch) {
      c = store::touch_running(*lease, team, id);
      if (!c) throw_not_in_status(store::get_capsule(*lease, team, id), "running");
    } else {
      c = store::get_capsule(*lease, team, id);
      if (!c || c->status != "running") throw_not_in_status(c, "running");
    }
    return std::move(*c);
  });
  store::Capsule c = co_await std::move(task);
  co_return c;
}

std::shared_ptr<HostClient> host_for(ServerContext& ctx, const store::Capsule& c) {
  if (!c.host_id || c.host_id->empty())
    throw ApiError(ApiCode::kHostUnavailable, "the capsule's host is gone");
  return ctx.hosts.client(*c.host_id);
}

}  // namespace capsule_routes

namespace {

using std::chrono::milliseconds;

// Resource type "sandbox", as upstream's audit log (sandbox/create, sandbox/destroy, …).
void audit_capsule(pg::Connection& tx, const Caller& caller, std::string_view action,
                   const std::string& id, std::string_view status, const json::object& meta) {
  audit::record(tx, caller, action, "sandbox", id, status, meta);
}

// Tells the extensions, after the change committed.
void emit(ServerContext& ctx, std::string type, const store::Capsule& c, const Caller& caller) {
  SandboxEvent ev;
  ev.type = std::move(type);
  ev.sandbox_id = c.id;
  ev.team_id = c.team_id;
  ev.host_id = c.host_id.value_or("");
  ev.actor = caller;
  ctx.hooks.sandbox_event(ev);
}

// The agent's view of a sandbox, kept in the row's metadata (shown as Capsule.metadata).
std::string metadata_of(const agentpb::SandboxInfo& info) {
  json::object o;
  for (const auto& [k, v] : info.metadata()) o[k] = v;
  if (!info.runtime().empty()) o["runtime"] = info.runtime();
  return json::serialize(o);
}

std::string error_text(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
    return "unknown error";
  }
}

struct CreatePlan {
  store::Capsule cap;
  bool replay = false;  // the Idempotency-Key named an earlier request's capsule
  std::optional<store::Template> tmpl;
};

CreatePlan begin_create(ServerContext& ctx, const Caller& caller, const std::string& team,
                        const CreateCapsuleRequest& req, const std::string& key,
                        const std::string& hash) {
  for (int attempt = 0;; ++attempt) {
    try {
      return ctx.db.with_transaction([&](pg::Connection& tx) {
        CreatePlan plan;
        if (!key.empty()) {
          if (auto prev = store::find_by_idempotency_key(tx, team, key)) {
            if (prev->request_hash != hash)
              throw ApiError(ApiCode::kConflict,
                             "Idempotency-Key was already used with a different request");
            plan.replay = true;
            if (prev->status == "pending")
              plan.tmpl = store::find_template(tx, team, prev->template_name);
            plan.cap = std::move(*prev);
            return plan;
          }
        }
        plan.tmpl = store::find_template(tx, team, req.template_name);
        if (!plan.tmpl)
          throw ApiError(ApiCode::kNotFound, "template \"" + req.template_name + "\" not found");
        store::Capsule c;
        c.id = ids::new_id(ids::Kind::kCapsule);
        c.team_id = team;
        c.template_name = plan.tmpl->name;
        c.template_id = plan.tmpl->id;
        c.status = "pending";
        // A snapshot carries its machine's memory image: its size wins over the request's.
        const bool snapshot = plan.tmpl->type == "snapshot";
        c.vcpus = snapshot ? plan.tmpl->vcpus : req.vcpus;
        c.memory_mb = snapshot ? plan.tmpl->memory_mb : req.memory_mb;
        c.disk_size_mb = 5120;
        c.timeout_sec = req.timeout_sec;
        if (!key.empty()) {
          c.idempotency_key = key;
          c.request_hash = hash;
        }
        PlacementRequest pr;
        pr.team_id = team;
        pr.vcpus = static_cast<std::uint32_t>(c.vcpus);
        pr.memory_mb = static_cast<std::uint64_t>(c.memory_mb);
        pr.disk_mb = static_cast<std::uint64_t>(c.disk_size_mb);
        pr.caller = &caller;
        // A snapshot template exists only on the host it was taken on: place there or fail.
        if (snapshot) {
          if (!plan.tmpl->host_id)
            throw ApiError(ApiCode::kNoHostsAvailable,
                           "the host holding template \"" + plan.tmpl->name + "\" is gone");
          c.host_id = place_on_host(ctx, tx, pr, *plan.tmpl->host_id);
        } else if (is_fleet_template(*plan.tmpl)) {
          // Built per host by the fleet reconciler: only where its build is ready.
          c.host_id = place_fleet_template(ctx, tx, pr, *plan.tmpl);
        } else {
          c.host_id = ctx.scheduler.place(tx, pr);
        }
        plan.cap = store::insert_capsule(tx, c);
        events::publish_capsule_state(tx, team, plan.cap.id, "starting");
        return plan;
      });
    } catch (const pg::SqlError& e) {
      // Two requests with one new key raced: the loser re-reads the winner's row.
      if (attempt == 0 && e.code() == Code::kAlreadyExists &&
          e.constraint() == "sandboxes_idempotency_key")
        continue;
      throw;
    }
  }
}

void destroy_quietly(const std::shared_ptr<HostClient>& client, const std::string& id) {
  if (!client) return;
  try {
    client->destroy_sandbox(id, kDestroyTimeout);
  } catch (const std::exception& e) {
    log::warn("capsule destroy on its host failed; the reconciler will retry",
              {{"capsule", id}, {"error", e.what()}});
  }
}

// Steps 2 and 3 of a create (blocking).
store::Capsule finish_create(ServerContext& ctx, const Caller& caller, const CreatePlan& plan) {
  const store::Capsule& cap = plan.cap;
  if (!plan.tmpl)
    throw ApiError(ApiCode::kNotFound, "template \"" + cap.template_name + "\" not found");
  agentpb::CreateSandboxRequest areq;
  areq.set_sandbox_id(cap.id);
  areq.set_template_(store::agent_template_name(*plan.tmpl));
  areq.set_vcpus(static_cast<std::uint32_t>(cap.vcpus));
  areq.set_memory_mb(static_cast<std::uint64_t>(cap.memory_mb));
  areq.set_disk_mb(static_cast<std::uint64_t>(cap.disk_size_mb));
  areq.set_timeout_sec(static_cast<std::uint32_t>(cap.timeout_sec));
  areq.set_default_user(plan.tmpl->default_user);
  boost::system::error_code ec;
  json::value env = json::parse(plan.tmpl->default_env, ec);
  if (!ec && env.is_object())
    for (const auto& kv : env.get_object())
      if (kv.value().is_string())
        (*areq.mutable_env())[std::string(kv.key())] = std::string(kv.value().get_string());

  std::shared_ptr<HostClient> client;
  agentpb::SandboxInfo info;
  try {
    client = host_for(ctx, cap);
    info = agent_call([&] { return client->create_sandbox(areq, kCreateTimeout); });
  } catch (...) {
    auto failure = std::current_exception();
    const std::string why = error_text(failure);
    try {
      bool recorded = ctx.db.with_transaction([&](pg::Connection& tx) {
        if (!store::set_status(tx, cap.team_id, cap.id, {"pending"}, "error")) return false;
        json::object meta;
        meta["error"] = why;
        audit_capsule(tx, caller, "create", cap.id, "error", meta);
        events::record(tx, events::capsule_event("create", caller, cap.team_id, cap.id, why));
        // What the host made of it is destroyed below: that is a destroy by the system.
        auto cleanup = events::capsule_event("destroy", Caller{}, cap.team_id, cap.id);
        cleanup.metadata["reason"] = "cleanup_after_create_error";
        events::record(tx, cleanup);
        return true;
      });
      if (recorded) emit(ctx, "capsule.error", cap, caller);
    } catch (const std::exception& e) {
      // The row stays pending; the reconciler settles it.
      log::error("recording a failed capsule create failed",
                 {{"capsule", cap.id}, {"error", e.what()}});
    }
    log::warn("capsule create failed on its host", {{"capsule", cap.id}, {"error", why}});
    destroy_quietly(client, cap.id);
    std::rethrow_exception(failure);
  }

  const std::string meta = metadata_of(info);
  bool created = false;
  auto row = ctx.db.with_transaction([&](pg::Connection& tx) {
    created = false;
    auto r = store::mark_running(tx, cap.team_id, cap.id, "pending", info.address(), meta);
    if (r) {
      json::object m;
      m["template"] = cap.template_name;
      m["host_id"] = cap.host_id.value_or("");
      audit_capsule(tx, caller, "create", cap.id, "success", m);
      events::record(tx, events::capsule_event("create", caller, cap.team_id, cap.id));
      created = true;
      return r;
    }
    return store::get_capsule(tx, cap.team_id, cap.id);
  });
  if (!row) throw ApiError(ApiCode::kNotFound, "capsule not found");
  if (created) emit(ctx, "capsule.created", *row, caller);
  // Destroyed while it was being created: the sandbox must not outlive its row.
  if (row->status != "running" && row->status != "paused") destroy_quietly(client, cap.id);
  return std::move(*row);
}

std::string idempotency_key(RequestContext& rc) {
  std::string key(rc.exchange().header("Idempotency-Key"));
  if (key.size() > 255)
    throw ApiError(ApiCode::kInvalidRequest, "Idempotency-Key must be at most 255 characters");
  for (char c : key)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) > 0x7e)
      throw ApiError(ApiCode::kInvalidRequest, "Idempotency-Key must be printable ASCII");
  return key;
}

asio::awaitable<void> create_capsule(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  const std::string key = idempotency_key(rc);
  auto body_task = rc.json_body();
  json::object body = co_await std::move(body_task);
  const CreateCapsuleRequest req = parse_create_request(body);
  const std::string hash = create_request_hash(req);
  const Caller caller = rc.caller();

  auto begin =
      run_blocking(ctx.workers, [&] { return begin_create(ctx, caller, team, req, key, hash); });
  CreatePlan plan = co_await std::move(begin);
  if (plan.replay && plan.cap.status == "error")
    throw ApiError(ApiCode::kConflict, "the capsule created with this Idempotency-Key (" +
                                           plan.cap.id + ") failed; retry with a new key");
  if (plan.replay && plan.cap.status != "pending") {
    // A replay of a finished create: the same capsule, nothing created.
    auto send = rc.send_json(bhttp::status::ok, capsule_json(plan.cap));
    co_await std::move(send);
    co_return;
  }
  auto finish = run_blocking(ctx.workers, [&] { return finish_create(ctx, caller, plan); });
  store::Capsule cap = co_await std::move(finish);
  auto send =
      rc.send_json(plan.replay ? bhttp::status::ok : bhttp::status::created, capsule_json(cap));
  co_await std::move(send);
}

asio::awaitable<void> list_capsules(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  auto task = run_blocking(ctx.workers, [&] {
    auto lease = ctx.db.acquire();
    return store::list_capsules(*lease, team);
  });
  std::vector<store::Capsule> list = co_await std::move(task);
  auto send = rc.send_json(bhttp::status::ok, capsules_json(list));
  co_await std::move(send);
}

asio::awaitable<void> get_capsule(ServerContext& ctx, RequestContext& rc) {
  auto load = load_capsule(ctx, rc);
  store::Capsule c = co_await std::move(load);
  auto send = rc.send_json(bhttp::status::ok, capsule_json(c));
  co_await std::move(send);
}

}  // namespace

// ---- capsule_ops.h ----

// Any status -> stopped, then the sandbox is destroyed on its host. The row changes first:
// if the host cannot be reached (or the control plane dies), the reconciler destroys the
// sandbox later because no live row owns it. A stopped capsule is left alone (idempotent).
void destroy_capsule_blocking(ServerContext& ctx, const Caller& caller, const std::string& team,
                              const std::string& id) {
  auto prev = ctx.db.with_transaction([&](pg::Connection& tx) {
    auto c = store::get_capsule_for_update(tx, team, id);
    if (!c) throw ApiError(ApiCode::kNotFound, "capsule not found");
    if (c->status != "stopped") {
      store::set_status(tx, team, id, {c->status}, "stopped");
      json::object m;
      m["previous_status"] = c->status;
      audit_capsule(tx, caller, "destroy", id, "success", m);
      events::record(tx, events::capsule_event("destroy", caller, team, id));
    }
    return *c;
  });
  if (prev.status == "stopped") return;
  emit(ctx, "capsule.destroyed", prev, caller);
  if (!prev.host_id) return;
  std::shared_ptr<HostClient> client;
  try {
    client = host_for(ctx, prev);
  } catch (const std::exception& e) {
    log::warn("capsule destroyed while its host is unavailable; the reconciler will finish",
              {{"capsule", id}, {"error", e.what()}});
    return;
  }
  destroy_quietly(client, id);
}

// running -> paused. The row is marked first (as upstream: a paused sandbox is never taken
// for a vanished running one) and put back when the agent fails.
store::Capsule pause_capsule_blocking(ServerContext& ctx, const Caller& caller,
                                      const std::string& team, const std::string& id) {
  auto marked = ctx.db.with_transaction([&](pg::Connection& tx) {
    auto c = store::set_status(tx, team, id, {"running"}, "paused");
    if (!c) throw_not_in_status(store::get_capsule(tx, team, id), "running");
    events::publish_capsule_state(tx, team, id, "pausing");
    return *c;
  });
  try {
    agent_call([&] { host_for(ctx, marked)->pause_sandbox(id, kPauseTimeout); });
  } catch (...) {
    auto failure = std::current_exception();
    try {
      ctx.db.with_transaction([&](pg::Connection& tx) {
        store::set_status(tx, team, id, {"paused"}, "running");
        json::object m;
        m["error"] = error_text(failure);
        audit_capsule(tx, caller, "pause", id, "error", m);
        events::record(tx, events::capsule_event("pause", caller, team, id, error_text(failure)));
      });
    } catch (const std::exception& e) {
      log::error("reverting a failed pause failed", {{"capsule", id}, {"error", e.what()}});
    }
    std::rethrow_exception(failure);
  }
  auto paused = ctx.db.with_transaction([&](pg::Connection& tx) {
    audit_capsule(tx, caller, "pause", id, "success", {});
    events::record(tx, events::capsule_event("pause", caller, team, id));
    auto c = store::get_capsule(tx, team, id);
    if (!c) throw ApiError(ApiCode::kNotFound, "capsule not found");
    return *c;
  });
  emit(ctx, "capsule.paused", paused, caller);
  return paused;
}

namespace {

asio::awaitable<void> destroy_capsule(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  const std::string id = rc.param("id");
  if (!ids::try_parse_id(ids::Kind::kCapsule, id))
    throw ApiError(ApiCode::kNotFound, "capsule not found");
  const Caller caller = rc.caller();
  auto task = run_blocking(ctx.workers, [&] { destroy_capsule_blocking(ctx, caller, team, id); });
  co_await std::move(task);
  auto send = rc.send_empty();
  co_await std::move(send);
}

asio::awaitable<void> pause_capsule(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  const std::string id = rc.param("id");
  if (!ids::try_parse_id(ids::Kind::kCapsule, id))
    throw ApiError(ApiCode::kNotFound, "capsule not found");
  const Caller caller = rc.caller();
  auto task =
      run_blocking(ctx.workers, [&] { return pause_capsule_blocking(ctx, caller, team, id); });
  store::Capsule c = co_await std::move(task);
  auto send = rc.send_json(bhttp::status::ok, capsule_json(c));
  co_await std::move(send);
}

// paused -> running, on the host that holds its snapshot.
asio::awaitable<void> resume_capsule(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  const std::string id = rc.param("id");
  if (!ids::try_parse_id(ids::Kind::kCapsule, id))
    throw ApiError(ApiCode::kNotFound, "capsule not found");
  const Caller caller = rc.caller();
  auto task = run_blocking(ctx.workers, [&] {
    // A resumed capsule adds load again: the extensions' limits have their say first.
    auto c = ctx.db.with_transaction([&](pg::Connection& tx) {
      auto row = store::get_capsule(tx, team, id);
      if (!row || row->status != "paused") throw_not_in_status(row, "paused");
      PlacementRequest pr;
      pr.team_id = team;
      pr.vcpus = static_cast<std::uint32_t>(row->vcpus);
      pr.memory_mb = static_cast<std::uint64_t>(row->memory_mb);
      pr.disk_mb = static_cast<std::uint64_t>(row->disk_size_mb);
      pr.caller = &caller;
      ctx.hooks.check_limits(tx, pr);
      events::publish_capsule_state(tx, team, id, "resuming");
      return row;
    });
    agentpb::SandboxInfo info;
    try {
      info = agent_call([&] {
        return host_for(ctx, *c)->resume_sandbox(id, static_cast<std::uint32_t>(c->timeout_sec),
                                                 kResumeTimeout);
      });
    } catch (...) {
      auto failure = std::current_exception();
      try {
        ctx.db.with_transaction([&](pg::Connection& tx) {
          json::object m;
          m["error"] = error_text(failure);
          audit_capsule(tx, caller, "resume", id, "error", m);
          events::record(tx,
                         events::capsule_event("resume", caller, team, id, error_text(failure)));
        });
      } catch (const std::exception& e) {
        log::error("recording a failed resume failed", {{"capsule", id}, {"error", e.what()}});
      }
      std::rethrow_exception(failure);
    }
    const std::string meta = metadata_of(info);
    bool resumed = false;
    auto row = ctx.db.with_transaction([&](pg::Connection& tx) {
      auto r = store::mark_running(tx, team, id, "paused", info.address(), meta);
      resumed = r.has_value();
      if (r) {
        audit_capsule(tx, caller, "resume", id, "success", {});
        events::record(tx, events::capsule_event("resume", caller, team, id));
        return r;
      }
      return store::get_capsule(tx, team, id);
    });
    if (!row) throw ApiError(ApiCode::kNotFound, "capsule not found");
    if (resumed) emit(ctx, "capsule.running", *row, caller);
    return std::move(*row);
  });
  store::Capsule cap = co_await std::move(task);
  auto send = rc.send_json(bhttp::status::ok, capsule_json(cap));
  co_await std::move(send);
}

asio::awaitable<void> ping_capsule(ServerContext& ctx, RequestContext& rc) {
  auto load = load_running(ctx, rc, false);
  store::Capsule c = co_await std::move(load);
  auto task = run_blocking(ctx.workers, [&] {
    agent_call([&] { host_for(ctx, c)->ping_sandbox(c.id, kQuickTimeout); });
    auto lease = ctx.db.acquire();
    if (!store::touch_running(*lease, c.team_id, c.id))
      throw_not_in_status(store::get_capsule(*lease, c.team_id, c.id), "running");
  });
  co_await std::move(task);
  auto send = rc.send_empty();
  co_await std::move(send);
}

}  // namespace

namespace capsule_routes {

void register_lifecycle_routes(ServerContext& ctx) {
  Router& r = ctx.router;
  ServerContext* c = &ctx;
  // Each handler is a plain lambda returning the coroutine of a free function, so no
  // coroutine depends on a closure object's lifetime.
  r.add(bhttp::verb::post, "/v1/capsules", Access::kTeam,
        [c](RequestContext& rc) { return create_capsule(*c, rc); });
  r.add(bhttp::verb::get, "/v1/capsules", Access::kTeam,
        [c](RequestContext& rc) { return list_capsules(*c, rc); });
  r.add(bhttp::verb::get, "/v1/capsules/{id}", Access::kTeam,
        [c](RequestContext& rc) { return get_capsule(*c, rc); });
  r.add(bhttp::verb::delete_, "/v1/capsules/{id}", Access::kTeam,
        [c](RequestContext& rc) { return destroy_capsule(*c, rc); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/pause", Access::kTeam,
        [c](RequestContext& rc) { return pause_capsule(*c, rc); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/resume", Access::kTeam,
        [c](RequestContext& rc) { return resume_capsule(*c, rc); });
  r.add(bhttp::verb::post, "/v1/capsules/{id}/ping", Access::kTeam,
        [c](RequestContext& rc) { return ping_capsule(*c, rc); });
}

}  // namespace capsule_routes

void register_capsule_routes(ServerContext& ctx) {
  capsule_routes::register_lifecycle_routes(ctx);
  capsule_routes::register_exec_routes(ctx);
  capsule_routes::register_file_routes(ctx);
  capsule_routes::register_stream_routes(ctx);
  register_snapshot_routes(ctx);
}

}  // namespace wrenn::cp
