#include "store/audit.h"

#include <algorithm>
#include <boost/json.hpp>

#include "crypto/ids.h"
#include "error.h"
#include "store/sql.h"

namespace wrenn::cp::audit {

namespace {

std::string_view actor_type(Caller::Kind k) {
  switch (k) {
    case Caller::Kind::kApiKey:
      return "api_key";
    case Caller::Kind::kUser:
      return "user";
    case Caller::Kind::kHost:
      return "host";
    case Caller::Kind::kAnonymous:
      return "system";
  }
  return "system";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += ',';
    out += s;
  }
  return out;
}

}  // namespace

void record(pg::Connection& c, const Caller& caller, const Entry& e) {
  std::string team = e.team_id;
  if (team.empty()) team = caller.team_id;
  if (team.empty()) team = std::string(store::kPlatformTeamId);
  const bool system = caller.kind == Caller::Kind::kAnonymous;
  c.exec(
      "INSERT INTO audit_logs (id, team_id, actor_type, actor_id, actor_name, resource_type, "
      "resource_id, action, scope, status, metadata) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb)",
      ids::new_id(ids::Kind::kAuditLog), team, actor_type(caller.kind),
      system || caller.actor_id.empty() ? pg::Param() : pg::Param(caller.actor_id),
      system ? std::string() : caller.actor_name, e.resource_type,
      e.resource_id.empty() ? pg::Param() : pg::Param(e.resource_id), e.action, e.scope, e.status,
      boost::json::serialize(e.metadata));
}

void record(pg::Connection& c, const Caller& caller, std::string_view action,
            std::string_view resource_type, std::string_view resource_id, std::string_view status,
            const boost::json::object& metadata) {
  Entry e;
  e.action = action;
  e.resource_type = resource_type;
  e.resource_id = resource_id;
  e.status = status;
  e.metadata = metadata;
  record(c, caller, e);
}

Page list(pg::Connection& c, const Query& q) {
  static const std::string kSql =
      "WITH cursor AS ("
      "  SELECT created_at, id FROM audit_logs WHERE team_id = $1 AND id = $3"
      ") "
      "SELECT a.id, a.actor_type, a.actor_id, a.actor_name, a.resource_type, a.resource_id, "
      "       a.action, a.scope, a.status, a.metadata::text, " +
      store::ts("a.created_at") +
      " FROM audit_logs a "
      "WHERE a.team_id = $1 "
      "  AND (a.scope = 'team' OR $2::boolean) "
      "  AND ($3::text IS NULL OR $4::timestamptz IS NOT NULL OR "
      "       (a.created_at, a.id) < (SELECT created_at, id FROM cursor)) "
      "  AND ($4::timestamptz IS NULL OR a.created_at < $4::timestamptz OR "
      "       ($3::text IS NOT NULL AND a.created_at = $4::timestamptz AND a.id < $3)) "
      "  AND ($5::text IS NULL OR a.resource_type = ANY (string_to_array($5, ','))) "
      "  AND ($6::text IS NULL OR a.action = ANY (string_to_array($6, ','))) "
      "ORDER BY a.created_at DESC, a.id DESC LIMIT $7";
  if (!q.before_id.empty() && q.before_time.empty()) {
    auto r =
        c.exec("SELECT 1 FROM audit_logs WHERE team_id = $1 AND id = $2", q.team_id, q.before_id);
    if (r.empty()) throw Error(Code::kNotFound, "audit log entry " + q.before_id + " not found");
  }
  const std::size_t limit = std::clamp<std::size_t>(q.limit, 1, 200);
  auto r = c.exec(kSql, q.team_id, q.include_admin_scope,
                  q.before_id.empty() ? pg::Param() : pg::Param(q.before_id),
                  q.before_time.empty() ? pg::Param() : pg::Param(q.before_time),
                  q.resource_types.empty() ? pg::Param() : pg::Param(join(q.resource_types)),
                  q.actions.empty() ? pg::Param() : pg::Param(join(q.actions)),
                  static_cast<std::int64_t>(limit));
  Page page;
  for (int i = 0; i < r.rows(); ++i) {
    boost::json::object o;
    o["id"] = r.text(i, 0);
    o["actor_type"] = r.text(i, 1);
    if (auto v = r.opt_text(i, 2)) o["actor_id"] = *v;
    if (!r.text(i, 3).empty()) o["actor_name"] = r.text(i, 3);
    o["resource_type"] = r.text(i, 4);
    if (auto v = r.opt_text(i, 5)) o["resource_id"] = *v;
    o["action"] = r.text(i, 6);
    o["scope"] = r.text(i, 7);
    o["status"] = r.text(i, 8);
    boost::system::error_code ec;
    auto meta = boost::json::parse(r.text(i, 9), ec);
    if (!ec && meta.is_object() && !meta.as_object().empty()) o["metadata"] = std::move(meta);
    o["created_at"] = r.text(i, 10);
    page.items.push_back(std::move(o));
  }
  if (page.items.size() == limit && !page.items.empty())
    page.next_before = std::string(page.items.back().as_object().at("id").as_string());
  return page;
}

}  // namespace wrenn::cp::audit
