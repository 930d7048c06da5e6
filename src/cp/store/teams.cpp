#include "store/teams.h"

#include "crypto/ids.h"

namespace wrenn::cp::store {

std::optional<Team> find_team(pg::Connection& c, const std::string& id) {
  auto r =
      c.exec("SELECT id, name, slug, is_byoc, deleted_at IS NOT NULL FROM teams WHERE id = $1", id);
  if (r.empty()) return std::nullopt;
  Team t;
  t.id = r.text(0, 0);
  t.name = r.text(0, 1);
  t.slug = r.text(0, 2);
  t.is_byoc = r.as_bool(0, 3);
  t.deleted = r.as_bool(0, 4);
  return t;
}

Team create_team(pg::Connection& c, const std::string& name, const std::string& slug,
                 bool is_byoc) {
  Team t;
  t.id = ids::new_id(ids::Kind::kTeam);
  t.name = name;
  t.slug = slug;
  t.is_byoc = is_byoc;
  c.exec("INSERT INTO teams (id, name, slug, is_byoc) VALUES ($1, $2, $3, $4)", t.id, name, slug,
         is_byoc);
  return t;
}

void ensure_platform_team(pg::Connection& c) {
  c.exec(
      "INSERT INTO teams (id, name, slug) VALUES ($1, 'Platform', 'platform') "
      "ON CONFLICT (id) DO NOTHING",
      std::string(kPlatformTeamId));
}

}  // namespace wrenn::cp::store
