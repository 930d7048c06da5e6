#include "store/capsules.h"

#include <string>

#include "store/sql.h"

namespace wrenn::cp::store {
namespace {

// The columns every query returns, in the order row() reads them.
constexpr std::string_view kColumns =
    "id, team_id, host_id, template, template_id, status, vcpus, memory_mb, disk_size_mb, "
    "timeout_sec, guest_ip, host_ip, "
    "floor(extract(epoch FROM created_at))::bigint AS created_s, "
    "floor(extract(epoch FROM started_at))::bigint AS started_s, "
    "floor(extract(epoch FROM last_active_at))::bigint AS active_s, "
    "floor(extract(epoch FROM last_updated))::bigint AS updated_s, "
    "metadata::text AS metadata_text, idempotency_key, request_hash";

std::string sql(std::string_view head, std::string_view tail) {
  std::string s(head);
  s += kColumns;
  s += tail;
  return s;
}

std::optional<std::string> opt(const pg::Result& r, int i, std::string_view col) {
  auto v = r.opt_text(i, col);
  if (!v) return std::nullopt;
  return std::string(*v);
}

Capsule row(const pg::Result& r, int i) {
  Capsule c;
  c.id = r.text(i, "id");
  c.team_id = r.text(i, "team_id");
  c.host_id = opt(r, i, "host_id");
  c.template_name = r.text(i, "template");
  c.template_id = opt(r, i, "template_id");
  c.status = r.text(i, "status");
  c.vcpus = static_cast<int>(r.as_int64(i, "vcpus"));
  c.memory_mb = static_cast<int>(r.as_int64(i, "memory_mb"));
  c.disk_size_mb = static_cast<int>(r.as_int64(i, "disk_size_mb"));
  c.timeout_sec = static_cast<int>(r.as_int64(i, "timeout_sec"));
  c.guest_ip = r.text(i, "guest_ip");
  c.host_ip = r.text(i, "host_ip");
  c.created_at = r.as_int64(i, "created_s");
  c.started_at = r.opt_int64(i, "started_s");
  c.last_active_at = r.opt_int64(i, "active_s");
  c.last_updated = r.as_int64(i, "updated_s");
  c.metadata = r.text(i, "metadata_text");
  c.idempotency_key = opt(r, i, "idempotency_key");
  c.request_hash = opt(r, i, "request_hash");
  return c;
}

std::optional<Capsule> first(const pg::Result& r) {
  if (r.empty()) return std::nullopt;
  return row(r, 0);
}

}  // namespace

std::optional<Capsule> get_capsule(pg::Connection& c, std::string_view team_id,
                                   std::string_view id) {
  static const std::string q = sql("SELECT ", " FROM sandboxes WHERE id = $1 AND team_id = $2");
  return first(c.exec(q, id, team_id));
}

std::optional<Capsule> get_capsule_any_team(pg::Connection& c, std::string_view id) {
  static const std::string q = sql("SELECT ", " FROM sandboxes WHERE id = $1");
  return first(c.exec(q, id));
}

std::optional<Capsule> get_capsule_for_update(pg::Connection& c, std::string_view team_id,
                                              std::string_view id) {
  static const std::string q =
      sql("SELECT ", " FROM sandboxes WHERE id = $1 AND team_id = $2 FOR UPDATE");
  return first(c.exec(q, id, team_id));
}

std::vector<Capsule> list_capsules(pg::Connection& c, std::string_view team_id) {
  static const std::string q =
      sql("SELECT ",
          " FROM sandboxes WHERE team_id = $1 AND status NOT IN ('stopped', 'error') "
          "ORDER BY created_at DESC, id DESC");
  auto r = c.exec(q, team_id);
  std::vector<Capsule> out;
  out.reserve(static_cast<std::size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) out.push_back(row(r, i));
  return out;
}

std::optional<Capsule> find_by_idempotency_key(pg::Connection& c, std::string_view team_id,
                                               std::string_view key) {
  static const std::string q =
      sql("SELECT ", " FROM sandboxes WHERE team_id = $1 AND idempotency_key = $2");
  return first(c.exec(q, team_id, key));
}

Capsule insert_capsule(pg::Connection& c, const Capsule& cap) {
  static const std::string q =
      sql("INSERT INTO sandboxes (id, team_id, host_id, template, template_id, status, vcpus, "
          "memory_mb, disk_size_mb, timeout_sec, metadata, idempotency_key, request_hash) "
          "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb, $12, $13) RETURNING ",
          "");
  return row(c.exec(q, cap.id, cap.team_id, cap.host_id, cap.template_name, cap.template_id,
                    cap.status, cap.vcpus, cap.memory_mb, cap.disk_size_mb, cap.timeout_sec,
                    cap.metadata, cap.idempotency_key, cap.request_hash),
             0);
}

std::optional<Capsule> set_status(pg::Connection& c, std::string_view team_id, std::string_view id,
                                  std::initializer_list<std::string_view> from,
                                  std::string_view to) {
  static const std::string q =
      sql("UPDATE sandboxes SET status = $3 "
          "WHERE id = $1 AND team_id = $2 AND status = ANY($4::text[]) RETURNING ",
          "");
  return first(
      c.exec(q, id, team_id, to, text_array(std::vector<std::string>(from.begin(), from.end()))));
}

std::optional<Capsule> mark_running(pg::Connection& c, std::string_view team_id,
                                    std::string_view id, std::string_view from,
                                    std::string_view host_ip, std::string_view metadata_json) {
  static const std::string q =
      sql("UPDATE sandboxes SET status = 'running', host_ip = $4, metadata = $5::jsonb, "
          "started_at = now(), last_active_at = now() "
          "WHERE id = $1 AND team_id = $2 AND status = $3 RETURNING ",
          "");
  return first(c.exec(q, id, team_id, from, host_ip, metadata_json));
}

std::optional<Capsule> touch_running(pg::Connection& c, std::string_view team_id,
                                     std::string_view id) {
  static const std::string q =
      sql("UPDATE sandboxes SET last_active_at = now() "
          "WHERE id = $1 AND team_id = $2 AND status = 'running' RETURNING ",
          "");
  return first(c.exec(q, id, team_id));
}

}  // namespace wrenn::cp::store
