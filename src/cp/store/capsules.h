// SQL for capsules (table `sandboxes`, sql/0001_init.sql); the template lookup the create
// route needs is in store/templates.h (included). Every function takes the caller's team
// and matches it in the WHERE clause: a capsule of another team is indistinguishable from
// a missing one.
//
// Contract:
//  - Functions run one or two statements on the connection they are given (inside the
//    caller's transaction when there is one); errors are pg::SqlError (wrenn::Error).
//  - Status changes are conditional on the current status (compare-and-set): they return
//    the updated row, or nullopt when the row is missing or in another status, so two
//    racing requests cannot both move a capsule.
//  - Timestamps are unix seconds (floor); metadata is the jsonb object's text.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pg/connection.h"
#include "store/sql.h"
#include "store/templates.h"

namespace wrenn::cp::store {

struct Capsule {
  std::string id;       // "cl-…"
  std::string team_id;  // "team-…"
  std::optional<std::string> host_id;
  std::string template_name = "minimal";
  std::optional<std::string> template_id;
  std::string status = "pending";
  int vcpus = 1;
  int memory_mb = 512;
  int disk_size_mb = 5120;
  int timeout_sec = 0;
  std::string guest_ip;
  std::string host_ip;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> started_at;
  std::optional<std::int64_t> last_active_at;
  std::int64_t last_updated = 0;
  std::string metadata = "{}";  // jsonb object text
  std::optional<std::string> idempotency_key;
  std::optional<std::string> request_hash;
};

// Statuses a sandbox on an agent may legitimately have a row in (the reconciler destroys
// agent sandboxes whose row is in none of them).
inline constexpr std::string_view kLiveStatuses[] = {"pending", "running", "paused"};

std::optional<Capsule> get_capsule(pg::Connection& c, std::string_view team_id,
                                   std::string_view id);
// Any team's capsule by id: only for the port proxy, whose callers have no team.
std::optional<Capsule> get_capsule_any_team(pg::Connection& c, std::string_view id);
// Same, locking the row (SELECT … FOR UPDATE) until the transaction ends.
std::optional<Capsule> get_capsule_for_update(pg::Connection& c, std::string_view team_id,
                                              std::string_view id);
// The team's capsules except stopped and error ones, newest first.
std::vector<Capsule> list_capsules(pg::Connection& c, std::string_view team_id);
std::optional<Capsule> find_by_idempotency_key(pg::Connection& c, std::string_view team_id,
                                               std::string_view key);

// Inserts a new row (status, host, template, sizes, idempotency columns from `cap`;
// timestamps from the database). Returns it as stored. A duplicate idempotency key is
// SqlError(kAlreadyExists) with constraint "sandboxes_idempotency_key".
Capsule insert_capsule(pg::Connection& c, const Capsule& cap);

// status := to where status is one of `from`. Other columns untouched.
std::optional<Capsule> set_status(pg::Connection& c, std::string_view team_id, std::string_view id,
                                  std::initializer_list<std::string_view> from,
                                  std::string_view to);

// pending|paused -> running, with the agent's view: host_ip, metadata (jsonb text),
// started_at = last_active_at = now().
std::optional<Capsule> mark_running(pg::Connection& c, std::string_view team_id,
                                    std::string_view id, std::string_view from,
                                    std::string_view host_ip, std::string_view metadata_json);

// last_active_at := now() for a running capsule; nullopt when it is missing or not running.
std::optional<Capsule> touch_running(pg::Connection& c, std::string_view team_id,
                                     std::string_view id);

// Templates (Template, find_template): store/templates.h.

}  // namespace wrenn::cp::store
