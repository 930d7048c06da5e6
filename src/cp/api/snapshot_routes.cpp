// Snapshots (reference §3.9): a capsule's file system as a new template.
//
//   POST   /v1/snapshots[?overwrite=true]  {sandbox_id, name?}  -> 201 Template
//   GET    /v1/snapshots[?type=base|snapshot]                   -> 200 [Template]
//   DELETE /v1/snapshots/{name}                                 -> 204
//
// Deliberate differences from upstream (documented in openapi.yaml):
//  - The capsule keeps its state: a running one is frozen on its host only for the copy
//    and runs on afterwards (upstream leaves it paused); a paused one stays paused.
//  - ?overwrite=true replaces the team's own template of that name (upstream ignores it
//    and answers 409). The old template must not be in use: while capsules created from
//    it still exist (any status but stopped/error) the answer is 409 conflict, because
//    on the ns runtime a template is the lower layer of those capsules' file systems.
//  - DELETE likewise refuses (409 conflict) while capsules created from the template
//    exist, instead of pulling the files from under them.
//  - A snapshot lives on the capsule's host only (templates.host_id); capsules created
//    from it are placed on that host (scheduler.h, place_on_host).
// Names are unique per team and may not shadow a platform template (409 name_reserved).
#include <boost/json.hpp>
#include <chrono>

#include "api/capsule_json.h"
#include "api/capsule_routes.h"
#include "api/json_fields.h"
#include "blocking.h"
#include "crypto/ids.h"
#include "crypto/random.h"
#include "events/event.h"
#include "log.h"
#include "store/audit.h"
#include "store/templates.h"

namespace wrenn::cp {

namespace {

namespace json = boost::json;
using namespace capsule_routes;
using namespace std::chrono_literals;

// Upstream's snapshot RPC bound: a large root tree takes a while to copy.
constexpr std::chrono::milliseconds kSnapshotTimeout = 300s;
constexpr std::chrono::milliseconds kDeleteSnapshotTimeout = 60s;

// template.snapshot.<action>; the resource is the template's name, as upstream's.
events::Event snapshot_event(std::string_view action, const Caller& caller, const std::string& team,
                             const std::string& name, const std::string& error = {}) {
  events::Event ev;
  ev.type = "template.snapshot." + std::string(action);
  ev.outcome = error.empty() ? "success" : "error";
  ev.error = error;
  ev.team_id = team;
  ev.actor = events::actor_of(caller);
  ev.resource_id = name;
  ev.resource_type = "snapshot";
  return ev;
}

// Best effort: the failure itself is what the caller reports.
void record_snapshot_failure(ServerContext& ctx, const Caller& caller, const std::string& team,
                             const std::string& name, std::string_view action,
                             std::exception_ptr failure) {
  std::string why = "unknown error";
  try {
    std::rethrow_exception(failure);
  } catch (const std::exception& e) {
    why = e.what();
  } catch (...) {
  }
  try {
    ctx.db.with_transaction([&](pg::Connection& tx) {
      json::object m;
      m["error"] = why;
      audit::record(tx, caller, action, "snapshot", name, "error", m);
      events::record(tx, snapshot_event(action, caller, team, name, why));
    });
  } catch (const std::exception& e) {
    log::error("recording a failed snapshot operation failed",
               {{"template", name}, {"error", e.what()}});
  }
}

json::object template_json(const store::Template& t) {
  json::object o;
  o["name"] = t.name;
  o["type"] = t.type;
  if (t.vcpus) o["vcpus"] = t.vcpus;
  if (t.memory_mb) o["memory_mb"] = t.memory_mb;
  o["size_bytes"] = t.size_bytes;
  o["created_at"] = t.created_at;
  o["platform"] = t.platform();
  boost::system::error_code ec;
  json::value meta = json::parse(t.metadata, ec);
  if (!ec && meta.is_object() && !meta.get_object().empty()) o["metadata"] = std::move(meta);
  return o;
}

void check_name(const std::string& name) {
  if (!valid_template_name(name))
    throw ApiError(ApiCode::kInvalidRequest,
                   "invalid snapshot name: must be 1-64 characters of letters, digits, '.', "
                   "'_' and '-', starting with a letter or digit");
}

// 409 when capsules created from the template still exist (see the file comment).
void check_unused(pg::Connection& tx, const store::Template& t, std::string_view doing) {
  auto users = store::live_capsules_of_template(tx, t.id);
  if (users.empty()) return;
  std::string list;
  for (std::size_t i = 0; i < users.size() && i < 5; ++i) list += (i ? ", " : "") + users[i];
  if (users.size() > 5) list += ", …";
  throw ApiError(ApiCode::kConflict, "cannot " + std::string(doing) + " template \"" + t.name +
                                         "\": capsules created from it still exist (" + list +
                                         "); destroy them first");
}

// Removes a snapshot's files from its host. not_found (already gone) is success.
void delete_files(ServerContext& ctx, const store::Template& t) {
  if (!t.host_id) return;  // its host was deleted, and the files with it
  try {
    agent_call(
        [&] { ctx.hosts.client(*t.host_id)->delete_snapshot(t.id, kDeleteSnapshotTimeout); });
  } catch (const Error& e) {
    if (e.code() == Code::kNotFound) return;
    if (e.code() == Code::kFailedPrecondition) throw ApiError(ApiCode::kConflict, e.what());
    throw;
  }
}

struct CreateSnapshotRequest {
  std::string sandbox_id;
  std::string name;
  bool overwrite = false;
};

store::Template create_snapshot(ServerContext& ctx, const Caller& caller, const std::string& team,
                                const CreateSnapshotRequest& req) {
  // 1. Checks (nothing changes): the name is free (or may be replaced) and the capsule can
  //    be copied.
  auto cap = ctx.db.with_transaction([&](pg::Connection& tx) {
    auto visible = store::find_template(tx, team, req.name);
    if (visible && visible->platform())
      throw ApiError(ApiCode::kNameReserved,
                     "template name \"" + req.name + "\" is reserved by a platform template");
    if (visible && !req.overwrite)
      throw ApiError(ApiCode::kTemplateNameTaken,
                     "template \"" + req.name +
                         "\" already exists in this team (use ?overwrite=true to replace it)");
    if (visible) check_unused(tx, *visible, "overwrite");
    auto c = store::get_capsule(tx, team, req.sandbox_id);
    if (!c) throw ApiError(ApiCode::kNotFound, "capsule not found");
    if (c->status != "running" && c->status != "paused")
      throw ApiError(ApiCode::kInvalidState,
                     "capsule must be running or paused (status: " + c->status + ")");
    return *c;
  });

  // 2. The copy, on the capsule's host. The capsule's row does not change: a running
  //    capsule is frozen by its agent for the copy only.
  store::Template t;
  t.id = ids::new_id(ids::Kind::kTemplate);
  t.team_id = team;
  t.name = req.name;
  t.type = "snapshot";
  t.vcpus = cap.vcpus;
  t.memory_mb = cap.memory_mb;
  t.metadata = cap.metadata;
  t.host_id = cap.host_id;
  std::uint64_t size = 0;
  try {
    auto client = host_for(ctx, cap);
    size = agent_call([&] { return client->create_snapshot(cap.id, t.id, kSnapshotTimeout); });
  } catch (...) {
    record_snapshot_failure(ctx, caller, team, req.name, "create", std::current_exception());
    throw;
  }
  t.size_bytes = static_cast<std::int64_t>(size);

  // 3. The row (replacing the old one on overwrite), audited in the same transaction.
  std::optional<store::Template> replaced;
  try {
    t = ctx.db.with_transaction([&](pg::Connection& tx) {
      replaced = store::find_team_template_for_update(tx, team, req.name);
      if (replaced) {
        if (!req.overwrite)  // created by a concurrent request meanwhile
          throw ApiError(ApiCode::kTemplateNameTaken,
                         "template \"" + req.name + "\" already exists in this team");
        check_unused(tx, *replaced, "overwrite");
        store::delete_template(tx, team, replaced->id);
      }
      auto row = store::insert_template(tx, t);
      json::object m;
      m["template_id"] = row.id;
      m["sandbox_id"] = cap.id;
      m["size_bytes"] = row.size_bytes;
      if (replaced) m["replaced_template_id"] = replaced->id;
      audit::record(tx, caller, "create", "snapshot", row.name, "success", m);
      events::record(tx, snapshot_event("create", caller, team, row.name));
      return row;
    });
  } catch (...) {
    auto failure = std::current_exception();
    record_snapshot_failure(ctx, caller, team, req.name, "create", failure);
    try {
      delete_files(ctx, t);  // no row names them
    } catch (const std::exception& e) {
      log::warn("removing an unrecorded snapshot failed",
                {{"template_id", t.id}, {"error", e.what()}});
    }
    try {
      std::rethrow_exception(failure);
    } catch (const pg::SqlError& e) {
      // A concurrent request took the name, or a platform template appeared.
      if (e.code() == Code::kAlreadyExists)
        throw ApiError(e.constraint() == "templates_platform_name" ? ApiCode::kNameReserved
                                                                   : ApiCode::kTemplateNameTaken,
                       "template name \"" + req.name + "\" is taken");
      throw;
    }
  }
  if (replaced) {
    try {
      delete_files(ctx, *replaced);
    } catch (const std::exception& e) {
      log::warn("removing a replaced snapshot's files failed",
                {{"template_id", replaced->id}, {"error", e.what()}});
    }
  }
  log::info(
      "snapshot created",
      {{"template_id", t.id}, {"capsule", cap.id}, {"size_bytes", std::to_string(t.size_bytes)}});
  return t;
}

asio::awaitable<void> post_snapshot(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  auto body_task = rc.json_body();
  json::object body = co_await std::move(body_task);
  CreateSnapshotRequest req;
  req.sandbox_id = json_fields::string_or(body, "sandbox_id");
  if (req.sandbox_id.empty()) throw ApiError(ApiCode::kInvalidRequest, "sandbox_id is required");
  if (!ids::try_parse_id(ids::Kind::kCapsule, req.sandbox_id))
    throw ApiError(ApiCode::kInvalidRequest, "invalid sandbox_id");
  req.name = json_fields::string_or(body, "name", "template-" + crypto::random_hex(4));
  check_name(req.name);
  const auto ow = rc.query("overwrite");
  req.overwrite = ow && (*ow == "true" || *ow == "1");
  const Caller caller = rc.caller();
  auto task = run_blocking(ctx.workers, [&] { return create_snapshot(ctx, caller, team, req); });
  store::Template t = co_await std::move(task);
  auto send = rc.send_json(bhttp::status::created, template_json(t));
  co_await std::move(send);
}

asio::awaitable<void> list_snapshots(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  const std::string type = rc.query("type").value_or("");
  auto task = run_blocking(ctx.workers, [&] {
    auto lease = ctx.db.acquire();
    return store::list_templates(*lease, team, type);
  });
  std::vector<store::Template> all = co_await std::move(task);
  json::array out;
  for (const auto& t : all) out.push_back(template_json(t));
  auto send = rc.send_json(bhttp::status::ok, std::move(out));
  co_await std::move(send);
}

asio::awaitable<void> delete_snapshot(ServerContext& ctx, RequestContext& rc) {
  const std::string team = team_of(rc);
  const std::string name = rc.param("name");
  check_name(name);
  const Caller caller = rc.caller();
  auto task = run_blocking(ctx.workers, [&] {
    auto t = ctx.db.with_transaction([&](pg::Connection& tx) {
      auto found = store::find_template(tx, team, name);
      if (!found) throw ApiError(ApiCode::kNotFound, "template not found");
      if (found->platform())
        throw ApiError(ApiCode::kForbidden, found->name == "minimal"
                                                ? "the minimal template cannot be deleted"
                                                : "platform templates cannot be deleted here");
      check_unused(tx, *found, "delete");
      return *found;
    });
    // Files first: a row without files cannot start capsules, files without a row would
    // never be removed.
    try {
      delete_files(ctx, t);
    } catch (...) {
      record_snapshot_failure(ctx, caller, team, t.name, "delete", std::current_exception());
      throw;
    }
    ctx.db.with_transaction([&](pg::Connection& tx) {
      if (!store::delete_template(tx, team, t.id)) return;  // a concurrent delete won
      json::object m;
      m["template_id"] = t.id;
      audit::record(tx, caller, "delete", "snapshot", t.name, "warning", m);
      events::record(tx, snapshot_event("delete", caller, team, t.name));
    });
    return true;
  });
  co_await std::move(task);
  auto send = rc.send_empty();
  co_await std::move(send);
}

}  // namespace

void register_snapshot_routes(ServerContext& ctx) {
  Router& r = ctx.router;
  ServerContext* c = &ctx;
  r.add(bhttp::verb::post, "/v1/snapshots", Access::kTeam,
        [c](RequestContext& rc) { return post_snapshot(*c, rc); });
  r.add(bhttp::verb::get, "/v1/snapshots", Access::kTeam,
        [c](RequestContext& rc) { return list_snapshots(*c, rc); });
  r.add(bhttp::verb::delete_, "/v1/snapshots/{name}", Access::kTeam,
        [c](RequestContext& rc) { return delete_snapshot(*c, rc); });
}

}  // namespace wrenn::cp
