// Teams (the tenancy unit) in PostgreSQL. Functions take the caller's connection so they
// compose into its transaction.
#pragma once

#include <optional>
#include <string>

#include "pg/connection.h"
#include "store/sql.h"

namespace wrenn::cp::store {

struct Team {
  std::string id;  // "team-…"
  std::string name;
  std::string slug;
  bool is_byoc = false;
  bool deleted = false;
};

// A team by id, deleted ones included (Team::deleted); nullopt when there is none.
std::optional<Team> find_team(pg::Connection& c, const std::string& id);

// Inserts a team with a fresh id. slug must be unique ([a-z0-9][a-z0-9-]{0,62});
// SqlError(already_exists) otherwise.
Team create_team(pg::Connection& c, const std::string& name, const std::string& slug,
                 bool is_byoc = false);

// Makes sure the platform team exists (the migration seeds it; this repairs a deleted row).
void ensure_platform_team(pg::Connection& c);

}  // namespace wrenn::cp::store
