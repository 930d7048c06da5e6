#include "fleet/fleet_routes.h"

#include <chrono>
#include <memory>

#include "api/api_error.h"
#include "api/json_fields.h"
#include "auth/tokens.h"
#include "blocking.h"
#include "fleet/fleet_store.h"
#include "fleet/plan.h"
#include "log.h"
#include "store/audit.h"
#include "store/hosts.h"
#include "store/sql.h"

namespace wrenn::cp {

namespace {

namespace json = boost::json;
using bhttp::status;
using bhttp::verb;
namespace jf = json_fields;

struct Deps {
  ServerContext& ctx;
  auth::Secrets secrets;
};

constexpr std::size_t kMaxBody = 64u << 20;
constexpr std::size_t kMaxFiles = 10000;

struct PlanRequest {
  std::string apply_set;
  bool prune = false;
  std::int64_t revision = -1;
  std::vector<spec::SourceFile> files;
};

PlanRequest parse_plan_request(const json::object& body, bool need_revision) {
  PlanRequest r;
  r.apply_set = jf::string_or(body, "apply_set", "", 128);
  if (r.apply_set.empty()) throw ApiError(ApiCode::kInvalidRequest, "apply_set is required");
  if (!fleet::valid_apply_set_name(r.apply_set))
    throw ApiError(ApiCode::kInvalidRequest,
                   "apply_set \"" + r.apply_set +
                       "\" is invalid: 1 to 63 of a-z 0-9 . _ -, starting with a letter or digit");
  if (auto* p = body.if_contains("prune"); p && !p->is_null()) {
    if (!p->is_bool()) throw ApiError(ApiCode::kInvalidRequest, "prune must be a boolean");
    r.prune = p->get_bool();
  }
  if (need_revision) {
    auto* v = body.if_contains("revision");
    if (!v || !v->is_int64() || v->get_int64() < 0)
      throw ApiError(ApiCode::kInvalidRequest,
                     "revision is required: the revision of the plan being applied");
    r.revision = v->get_int64();
  }
  auto* files = body.if_contains("files");
  if (!files || !files->is_array())
    throw ApiError(ApiCode::kInvalidRequest, "files must be an array of {\"name\", \"text\"}");
  if (files->get_array().size() > kMaxFiles)
    throw ApiError(ApiCode::kInvalidRequest, "too many files (" +
                                                 std::to_string(files->get_array().size()) +
                                                 ", at most " + std::to_string(kMaxFiles) + ")");
  std::set<std::string> names;
  for (auto& f : files->get_array()) {
    if (!f.is_object())
      throw ApiError(ApiCode::kInvalidRequest, "files[] entries must be {\"name\", \"text\"}");
    auto& o = f.get_object();
    std::string name = jf::string_or(o, "name", "", 255);
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
      throw ApiError(ApiCode::kInvalidRequest,
                     "files[].name must be a plain file name (no \"/\"), got \"" + name + "\"");
    if (!names.insert(name).second)
      throw ApiError(ApiCode::kInvalidRequest, "file \"" + name + "\" is listed twice");
    auto* t = o.if_contains("text");
    if (!t || !t->is_string())
      throw ApiError(ApiCode::kInvalidRequest, "file \"" + name + "\": text must be a string");
    r.files.push_back({std::move(name), std::string(t->get_string())});
  }
  return r;
}

spec::SpecSet parse_specs(const PlanRequest& r) {
  spec::ParseResult res = spec::parse_spec_files(r.files);
  if (!res.ok()) {
    json::array a;
    const std::size_t shown = std::min<std::size_t>(res.diagnostics.size(), 1000);
    for (std::size_t i = 0; i < shown; ++i) a.push_back(json::value(res.diagnostics[i].str()));
    const std::string msg = res.diagnostics.size() == 1
                                ? res.diagnostics.front().str()
                                : std::to_string(res.diagnostics.size()) + " problems in the specs";
    throw ApiError(ApiCode::kInvalidSpec, msg).with("diagnostics", std::move(a));
  }
  return std::move(res.set);
}

asio::awaitable<void> plan_route(Deps& d, RequestContext& rc, bool apply) {
  auto body_task = rc.json_body(kMaxBody);
  json::object body = co_await std::move(body_task);
  PlanRequest req = parse_plan_request(body, apply);
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, req = std::move(req), apply, caller] {
    const auto t0 = std::chrono::steady_clock::now();
    spec::SpecSet set = parse_specs(req);
    const auto t1 = std::chrono::steady_clock::now();
    fleet::Plan plan;
    if (apply) {
      plan = d.ctx.db.with_transaction([&](pg::Connection& tx) {
        events::ProviderSettings settings;
        settings.allow_private = d.ctx.config.allow_private_targets;
        settings.telegram_api_url = d.ctx.config.telegram_api_url;
        return fleet::apply(tx, req.apply_set, set, req.prune, req.revision, caller,
                            d.secrets.encryption_key, settings);
      });
    } else {
      auto conn = d.ctx.db.acquire();
      plan = fleet::compute_plan(*conn, req.apply_set, set, req.prune);
    }
    const auto t2 = std::chrono::steady_clock::now();
    auto ms = [](auto a, auto b) {
      return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count());
    };
    log::debug(apply ? "fleet apply" : "fleet plan",
               {{"apply_set", req.apply_set},
                {"parse_ms", ms(t0, t1)},
                {"plan_ms", ms(t1, t2)},
                {"entries", std::to_string(plan.entries.size())}});
    return fleet::plan_json(plan);
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

asio::awaitable<void> plan(Deps& d, RequestContext& rc) {
  return plan_route(d, rc, false);
}
asio::awaitable<void> apply(Deps& d, RequestContext& rc) {
  return plan_route(d, rc, true);
}

std::string check_kind(std::string kind) {
  if (!kind.empty() && kind.back() == 's') kind.pop_back();  // "hosts" reads as "host"
  for (auto& k : fleet::kKinds)
    if (k == kind) return kind;
  throw ApiError(ApiCode::kInvalidRequest,
                 "unknown kind \"" + kind + "\": host, template, team or channel");
}

// Live columns of each kind, for the resources listed (by resource id).
std::map<std::string, json::object> live_columns(ServerContext& ctx, pg::Connection& c,
                                                 const std::string& kind,
                                                 const std::vector<std::string>& ids,
                                                 bool with_logs) {
  std::map<std::string, json::object> out;
  if (ids.empty()) return out;
  const std::string arr = store::text_array(ids);
  if (kind == "host") {
    auto r = c.exec("SELECT h.id, h.status, h.state, h.address, coalesce(" +
                        store::ts("h.last_heartbeat_at") +
                        ", ''), array_to_json(h.runtimes)::text, "
                        " coalesce((h.capacity_override->>'vcpus')::bigint, h.cpu_cores), "
                        " coalesce((h.capacity_override->>'memory_mb')::bigint, h.memory_mb), "
                        " count(s.id), coalesce(sum(s.vcpus), 0), coalesce(sum(s.memory_mb), 0) "
                        "FROM hosts h LEFT JOIN sandboxes s ON s.host_id = h.id "
                        " AND s.status IN ('pending', 'starting', 'running') "
                        "WHERE h.id = ANY($1::text[]) GROUP BY h.id",
                    arr);
    for (int i = 0; i < r.rows(); ++i) {
      const std::int64_t cores = r.as_int64(i, 6), mem = r.as_int64(i, 7);
      json::array runtimes;
      for (auto& s : store::json_string_array(r.text(i, 5))) runtimes.push_back(json::value(s));
      out[std::string(r.text(i, 0))] = json::object{
          {"status", r.text(i, 1)},
          {"state", r.text(i, 2)},
          {"address", r.text(i, 3)},
          {"last_heartbeat_at", r.text(i, 4)},
          {"runtimes", std::move(runtimes)},
          {"sandboxes", r.as_int64(i, 8)},
          {"cpu_cores", cores},
          {"memory_mb", mem},
          {"free_vcpus",
           static_cast<std::int64_t>(cores * ctx.config.vcpu_overcommit) - r.as_int64(i, 9)},
          {"free_memory_mb",
           static_cast<std::int64_t>(mem * ctx.config.memory_overcommit) - r.as_int64(i, 10)}};
    }
  } else if (kind == "template") {
    for (auto& id : ids) out[id] = json::object{{"builds", json::array{}}};
    auto r = c.exec(
        "SELECT b.template_id, b.host_id, coalesce(h.name, h.id), b.state, b.message, " +
            store::ts("b.updated_at") + ", b.log, b.attempts FROM template_builds b " +
            "JOIN hosts h ON h.id = b.host_id WHERE b.template_id = ANY($1::text[]) ORDER BY 3",
        arr);
    for (int i = 0; i < r.rows(); ++i) {
      json::object b{{"host_id", r.text(i, 1)},    {"host_name", r.text(i, 2)},
                     {"state", r.text(i, 3)},      {"message", r.text(i, 4)},
                     {"updated_at", r.text(i, 5)}, {"attempts", r.as_int64(i, 7)}};
      if (with_logs) b["log"] = r.text(i, 6);
      out[std::string(r.text(i, 0))]["builds"].as_array().push_back(std::move(b));
    }
  } else if (kind == "team") {
    auto r = c.exec(
        "SELECT t.id, (SELECT count(*) FROM users_teams u WHERE u.team_id = t.id), "
        " (SELECT count(*) FROM team_api_keys k WHERE k.team_id = t.id), "
        " (SELECT count(*) FROM sandboxes s WHERE s.team_id = t.id "
        "   AND s.status IN ('pending', 'starting', 'running', 'paused')) "
        "FROM teams t WHERE t.id = ANY($1::text[])",
        arr);
    for (int i = 0; i < r.rows(); ++i)
      out[std::string(r.text(i, 0))] = json::object{{"members", r.as_int64(i, 1)},
                                                    {"api_keys", r.as_int64(i, 2)},
                                                    {"sandboxes", r.as_int64(i, 3)}};
  } else {
    auto r = c.exec(
        "SELECT id, provider, target, array_to_json(events)::text FROM channels "
        "WHERE id = ANY($1::text[])",
        arr);
    for (int i = 0; i < r.rows(); ++i) {
      json::array events;
      for (auto& s : store::json_string_array(r.text(i, 3))) events.push_back(json::value(s));
      out[std::string(r.text(i, 0))] = json::object{
          {"provider", r.text(i, 1)}, {"target", r.text(i, 2)}, {"events", std::move(events)}};
    }
  }
  return out;
}

json::array list_resources(ServerContext& ctx, pg::Connection& c, const std::string& kind,
                           const std::string& name, const std::string& apply_set, bool detail) {
  auto r = c.exec(
      "SELECT kind, name, apply_set, resource_id, generation, observed_generation, " +
          store::ts("applied_at") + ", status::text, coalesce(" + store::ts("status_changed_at") +
          ", ''), spec::text FROM fleet_resources "
          "WHERE ($1 = '' OR kind = $1) AND ($2 = '' OR name = $2) AND ($3 = '' OR apply_set = $3) "
          "ORDER BY array_position(ARRAY['team','host','template','channel'], kind), name",
      kind, name, apply_set);
  std::map<std::string, std::vector<std::string>> ids;
  for (int i = 0; i < r.rows(); ++i) ids[std::string(r.text(i, 0))].emplace_back(r.text(i, 3));
  std::map<std::string, json::object> live;
  for (auto& [k, v] : ids) live.merge(live_columns(ctx, c, k, v, detail));
  json::array out;
  for (int i = 0; i < r.rows(); ++i) {
    const std::string id(r.text(i, 3));
    json::value status = json::parse(r.text(i, 7));
    json::object o{{"kind", r.text(i, 0)},
                   {"name", r.text(i, 1)},
                   {"apply_set", r.text(i, 2)},
                   {"resource_id", id},
                   {"generation", r.as_int64(i, 4)},
                   {"observed_generation", r.as_int64(i, 5)},
                   {"applied_at", r.text(i, 6)},
                   {"status", std::move(status)},
                   {"status_changed_at", r.text(i, 8)}};
    auto l = live.find(id);
    o["live"] = l == live.end() ? json::value(nullptr) : json::value(l->second);
    if (detail) o["spec"] = json::parse(r.text(i, 9));
    out.push_back(std::move(o));
  }
  return out;
}

asio::awaitable<void> get_resources(Deps& d, RequestContext& rc) {
  std::string kind = rc.query("kind").value_or("");
  if (!kind.empty()) kind = check_kind(kind);
  const std::string set = rc.query("apply_set").value_or("");
  auto task = run_blocking(d.ctx.workers, [&d, kind, set] {
    auto conn = d.ctx.db.acquire();
    return json::object{{"resources", list_resources(d.ctx, *conn, kind, "", set, false)}};
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

// The resource's inventory name: templates are "team/name" (their names are unique per
// team), served as /v1/fleet/resources/template/{team}/{name}.
std::string resource_name(RequestContext& rc) {
  return rc.route().find("{team}") == std::string::npos ? rc.param("name")
                                                        : rc.param("team") + "/" + rc.param("name");
}

asio::awaitable<void> get_resource(Deps& d, RequestContext& rc) {
  const std::string kind = check_kind(rc.param("kind"));
  const std::string name = resource_name(rc);
  auto task = run_blocking(d.ctx.workers, [&d, kind, name] {
    auto conn = d.ctx.db.acquire();
    json::array a = list_resources(d.ctx, *conn, kind, name, "", true);
    if (a.empty())
      throw ApiError(ApiCode::kNotFound,
                     kind + " \"" + name + "\" is not declared in any apply set");
    return a.front().as_object();
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

asio::awaitable<void> delete_resource(Deps& d, RequestContext& rc) {
  const std::string kind = check_kind(rc.param("kind"));
  const std::string name = resource_name(rc);
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, kind, name, caller] {
    return d.ctx.db.with_transaction([&](pg::Connection& tx) {
      const std::int64_t revision = fleet::fleet_revision(tx, true) + 1;
      auto recorded = fleet::load_recorded(tx);
      auto it = recorded.find({kind, name});
      if (it == recorded.end())
        throw ApiError(ApiCode::kNotFound,
                       kind + " \"" + name + "\" is not declared in any apply set");
      if (kind == "team")
        for (auto& [key, rec] : recorded)
          if ((rec.kind == "template" || rec.kind == "channel") &&
              rec.spec().at("team").as_string() == name)
            throw ApiError(ApiCode::kConflict, "team \"" + name + "\" still has " + rec.kind +
                                                   " \"" + rec.name + "\": delete it first");
      fleet::delete_object(tx, it->second);
      fleet::forget_resource(tx, kind, name);
      tx.exec("UPDATE fleet_revision SET revision = $1", revision);
      audit::Entry a;
      a.team_id = std::string(store::kPlatformTeamId);
      a.action = "delete";
      a.resource_type = "fleet." + kind;
      a.resource_id = it->second.resource_id;
      a.scope = "admin";
      a.metadata["name"] = name;
      a.metadata["apply_set"] = it->second.apply_set;
      audit::record(tx, caller, a);
      tx.exec(std::string("NOTIFY wrenn_fleet"));
      return json::object{{"deleted", json::object{{"kind", kind}, {"name", name}}},
                          {"revision", revision}};
    });
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

asio::awaitable<void> get_apply_sets(Deps& d, RequestContext& rc) {
  auto task = run_blocking(d.ctx.workers, [&d] {
    auto conn = d.ctx.db.acquire();
    auto r = conn->exec("SELECT a.name, a.revision, " + store::ts("a.applied_at") +
                        ", a.applied_by, (SELECT count(*) FROM fleet_resources f "
                        "WHERE f.apply_set = a.name) FROM apply_sets a ORDER BY a.name");
    json::array sets;
    for (int i = 0; i < r.rows(); ++i)
      sets.push_back(json::object{{"name", r.text(i, 0)},
                                  {"revision", r.as_int64(i, 1)},
                                  {"applied_at", r.text(i, 2)},
                                  {"applied_by", r.text(i, 3)},
                                  {"resources", r.as_int64(i, 4)}});
    return json::object{{"apply_sets", std::move(sets)},
                        {"revision", fleet::fleet_revision(*conn)}};
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::ok, std::move(out));
  co_await std::move(reply);
}

asio::awaitable<void> registration_token(Deps& d, RequestContext& rc) {
  const std::string name = rc.param("name");
  const Caller caller = rc.caller();
  auto task = run_blocking(d.ctx.workers, [&d, name, caller] {
    return d.ctx.db.with_transaction([&](pg::Connection& tx) {
      auto r = tx.exec(
          "SELECT h.id, h.status, h.address FROM fleet_resources f JOIN hosts h "
          "ON h.id = f.resource_id WHERE f.kind = 'host' AND f.name = $1",
          name);
      if (r.empty())
        throw ApiError(ApiCode::kNotFound,
                       "host \"" + name + "\" is not declared in any apply set");
      const std::string id(r.text(0, 0)), st(r.text(0, 1)), address(r.text(0, 2));
      if (st != "pending")
        throw ApiError(ApiCode::kInvalidState,
                       "host \"" + name + "\" is already registered (status " + st + ")");
      const std::string user = caller.kind == Caller::Kind::kUser ? caller.actor_id : "";
      std::string token =
          store::create_registration_token(tx, id, user, auth::kRegistrationTokenTtl);
      audit::Entry a;
      a.team_id = std::string(store::kPlatformTeamId);
      a.action = "registration_token";
      a.resource_type = "host";
      a.resource_id = id;
      a.scope = "admin";
      audit::record(tx, caller, a);
      return json::object{{"host_id", id},
                          {"registration_token", token},
                          {"address", address},
                          {"command", "wrenn-agent --cp-url <control plane URL> --listen " +
                                          address + " --token " + token}};
    });
  });
  json::object out = co_await std::move(task);
  auto reply = rc.send_json(status::created, std::move(out));
  co_await std::move(reply);
}

}  // namespace

void register_fleet_routes(ServerContext& ctx, const auth::Secrets& secrets) {
  auto d = std::make_shared<Deps>(Deps{ctx, secrets});
  auto route = [d](asio::awaitable<void> (*fn)(Deps&, RequestContext&)) {
    return [d, fn](RequestContext& rc) { return fn(*d, rc); };
  };
  Router& r = ctx.router;
  r.add(verb::post, "/v1/fleet/plan", Access::kAdmin, route(plan));
  r.add(verb::post, "/v1/fleet/apply", Access::kAdmin, route(apply));
  r.add(verb::get, "/v1/fleet/resources", Access::kAdmin, route(get_resources));
  r.add(verb::get, "/v1/fleet/resources/{kind}/{name}", Access::kAdmin, route(get_resource));
  r.add(verb::delete_, "/v1/fleet/resources/{kind}/{name}", Access::kAdmin, route(delete_resource));
  r.add(verb::get, "/v1/fleet/resources/{kind}/{team}/{name}", Access::kAdmin, route(get_resource));
  r.add(verb::delete_, "/v1/fleet/resources/{kind}/{team}/{name}", Access::kAdmin,
        route(delete_resource));
  r.add(verb::get, "/v1/fleet/apply-sets", Access::kAdmin, route(get_apply_sets));
  r.add(verb::post, "/v1/fleet/hosts/{name}/registration-token", Access::kAdmin,
        route(registration_token));
}

}  // namespace wrenn::cp
