// SQL for templates (table `templates`, sql/0001_init.sql + 0002_template_host.sql): the
// lookup capsule create needs and the snapshot routes' insert, list, find and delete.
//
// Contract:
//  - A team sees its own templates and the platform team's (global, e.g. the seeded
//    `minimal`); names are unique per team and a team may not reuse a platform name (the
//    table's trigger raises unique_violation, constraint "templates_platform_name").
//  - Functions run one statement on the connection they are given (inside the caller's
//    transaction when there is one); errors are pg::SqlError (wrenn::Error).
//  - created_at is RFC 3339 UTC, second precision; default_env and metadata are jsonb
//    object text.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pg/connection.h"

namespace wrenn::cp::store {

struct Template {
  std::string id;  // "tmpl-…"
  std::string team_id;
  std::string name;
  std::string type = "base";  // base | snapshot
  int vcpus = 1;
  int memory_mb = 512;
  std::int64_t size_bytes = 0;
  std::string default_user = "root";
  std::string default_env = "{}";  // jsonb object text
  std::string metadata = "{}";     // jsonb object text
  // Snapshot templates: the host holding the files (capsules from it are placed there);
  // nullopt for base templates, which every host has (or when that host was deleted).
  std::optional<std::string> host_id;
  std::string created_at;  // RFC 3339
  bool platform() const;
};

// What the agent calls the template (images/<name> on a host): platform templates by name
// (the same on every host), team templates by their id (names are only unique per team).
std::string agent_template_name(const Template& t);

// By name, visible to the team: its own or the platform's (the team's own wins).
std::optional<Template> find_template(pg::Connection& c, std::string_view team_id,
                                      std::string_view name);
// By name among the team's own templates only, locking the row (FOR UPDATE).
std::optional<Template> find_team_template_for_update(pg::Connection& c, std::string_view team_id,
                                                      std::string_view name);
// Inserts t (id, team, name, type, sizes, size_bytes, default_user, default_env, metadata,
// host_id; created_at from the database) and returns it as stored.
Template insert_template(pg::Connection& c, const Template& t);
// The team's templates and the platform's, newest first (ties: by name); type filters
// when non-empty (an unknown type matches nothing).
std::vector<Template> list_templates(pg::Connection& c, std::string_view team_id,
                                     std::string_view type);
// Deletes the team's template with this id; false when there was none.
bool delete_template(pg::Connection& c, std::string_view team_id, std::string_view id);
// Capsules created from the template that still exist (any status but stopped and error).
std::vector<std::string> live_capsules_of_template(pg::Connection& c, std::string_view id);

}  // namespace wrenn::cp::store
