// The audit log (reference §3.12, §11.1): who did what to which resource, with what
// outcome. Entries are written in the same transaction as the change they describe, so an
// entry exists exactly when the change committed.
//
// Actor: Caller::Kind kApiKey -> actor_type "api_key", kUser -> "user", kHost -> "host",
// kAnonymous -> "system" (background work); actor_id / actor_name from the Caller.
// team_id: the caller's team unless Entry::team_id says otherwise (host and system entries
// belong to the host's team or the platform team).
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "api/router.h"
#include "pg/connection.h"

namespace wrenn::cp::audit {

struct Entry {
  std::string team_id;             // empty: the caller's team (the platform team if it has none)
  std::string action;              // "create", "delete", "pause", ...
  std::string resource_type;       // "sandbox", "host", "snapshot", ...
  std::string resource_id;         // "cl-…" (empty: none)
  std::string status = "success";  // success | info | warning | error
  std::string scope = "team";      // team | admin (admin: visible to team owners/admins)
  boost::json::object metadata;
};

// Inserts one entry; throws SqlError like any statement (so a failed audit write fails the
// caller's transaction, as it should).
void record(pg::Connection& c, const Caller& caller, const Entry& entry);

// Shorthand for the common case (scope "team", the caller's team).
void record(pg::Connection& c, const Caller& caller, std::string_view action,
            std::string_view resource_type, std::string_view resource_id,
            std::string_view status = "success", const boost::json::object& metadata = {});

struct Query {
  std::string team_id;
  bool include_admin_scope = false;
  // Cursor: entries strictly older than this entry ("log-…", same team), newest first.
  std::string before_id;
  // Or: entries strictly before this time (RFC 3339), then before_id breaks ties.
  std::string before_time;
  std::size_t limit = 50;                   // 1..200
  std::vector<std::string> resource_types;  // OR-matched; empty: all
  std::vector<std::string> actions;         // OR-matched; empty: all
};

struct Page {
  boost::json::array items;  // reference §3.12 item objects
  std::string next_before;   // id of the last item when the page is full, else ""
};

// Error(not_found) when before_id names no entry of the team.
Page list(pg::Connection& c, const Query& q);

}  // namespace wrenn::cp::audit
