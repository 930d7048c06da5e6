#include "store/templates.h"

#include "store/sql.h"

namespace wrenn::cp::store {

namespace {

std::string columns() {
  return "id, team_id, name, type, vcpus, memory_mb, size_bytes, default_user, "
         "default_env::text AS env, metadata::text AS meta, host_id, " +
         ts("created_at") + " AS created";
}

Template row(const pg::Result& r, int i) {
  Template t;
  t.id = r.text(i, "id");
  t.team_id = r.text(i, "team_id");
  t.name = r.text(i, "name");
  t.type = r.text(i, "type");
  t.vcpus = static_cast<int>(r.as_int64(i, "vcpus"));
  t.memory_mb = static_cast<int>(r.as_int64(i, "memory_mb"));
  t.size_bytes = r.as_int64(i, "size_bytes");
  t.default_user = r.text(i, "default_user");
  t.default_env = r.text(i, "env");
  t.metadata = r.text(i, "meta");
  if (auto h = r.opt_text(i, "host_id")) t.host_id = std::string(*h);
  t.created_at = r.text(i, "created");
  return t;
}

std::optional<Template> first(const pg::Result& r) {
  if (r.empty()) return std::nullopt;
  return row(r, 0);
}

}  // namespace

bool Template::platform() const {
  return team_id == kPlatformTeamId;
}

std::string agent_template_name(const Template& t) {
  return t.platform() ? t.name : t.id;
}

std::optional<Template> find_template(pg::Connection& c, std::string_view team_id,
                                      std::string_view name) {
  static const std::string q = "SELECT " + columns() +
                               " FROM templates WHERE name = $1 AND team_id IN ($2, $3) "
                               "ORDER BY (team_id = $2) DESC LIMIT 1";
  return first(c.exec(q, name, team_id, kPlatformTeamId));
}

std::optional<Template> find_team_template_for_update(pg::Connection& c, std::string_view team_id,
                                                      std::string_view name) {
  static const std::string q =
      "SELECT " + columns() + " FROM templates WHERE name = $1 AND team_id = $2 FOR UPDATE";
  return first(c.exec(q, name, team_id));
}

Template insert_template(pg::Connection& c, const Template& t) {
  static const std::string q =
      "INSERT INTO templates (id, team_id, name, type, vcpus, memory_mb, size_bytes, "
      "default_user, default_env, metadata, host_id) "
      "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10::jsonb, $11) RETURNING " +
      columns();
  return row(c.exec(q, t.id, t.team_id, t.name, t.type, t.vcpus, t.memory_mb, t.size_bytes,
                    t.default_user, t.default_env, t.metadata, t.host_id),
             0);
}

std::vector<Template> list_templates(pg::Connection& c, std::string_view team_id,
                                     std::string_view type) {
  static const std::string q = "SELECT " + columns() +
                               " FROM templates WHERE team_id IN ($1, $2) "
                               "AND ($3 = '' OR type = $3) "
                               "ORDER BY templates.created_at DESC, name";
  auto r = c.exec(q, team_id, kPlatformTeamId, type);
  std::vector<Template> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(row(r, i));
  return out;
}

bool delete_template(pg::Connection& c, std::string_view team_id, std::string_view id) {
  return c.exec("DELETE FROM templates WHERE id = $1 AND team_id = $2", id, team_id)
             .affected_rows() > 0;
}

std::vector<std::string> live_capsules_of_template(pg::Connection& c, std::string_view id) {
  auto r = c.exec(
      "SELECT id FROM sandboxes WHERE template_id = $1 AND status NOT IN ('stopped', 'error') "
      "ORDER BY created_at",
      id);
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i) out.emplace_back(r.text(i, 0));
  return out;
}

}  // namespace wrenn::cp::store
