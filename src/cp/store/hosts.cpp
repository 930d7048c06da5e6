#include "store/hosts.h"

#include "crypto/hash.h"
#include "crypto/ids.h"
#include "crypto/random.h"
#include "store/sql.h"

namespace wrenn::cp::store {

namespace {

const std::string& host_columns() {
  static const std::string kCols =
      "h.id, h.type, coalesce(h.team_id, ''), coalesce(t.name, ''), h.provider, "
      "h.availability_zone, h.arch, h.cpu_cores, h.memory_mb, h.disk_gb, h.address, "
      "array_to_json(h.runtimes)::text, h.status, coalesce(" +
      ts("h.last_heartbeat_at") + ", ''), coalesce(h.created_by, ''), " + ts("h.created_at") +
      ", " + ts("h.updated_at") +
      ", coalesce(h.metadata->>'agent_token_sealed', '') "
      "FROM hosts h LEFT JOIN teams t ON t.id = h.team_id ";
  return kCols;
}

Host row_to_host(const pg::Result& r, int i) {
  Host h;
  h.id = r.text(i, 0);
  h.type = r.text(i, 1);
  h.team_id = r.text(i, 2);
  h.team_name = r.text(i, 3);
  h.provider = r.text(i, 4);
  h.availability_zone = r.text(i, 5);
  h.arch = r.text(i, 6);
  h.cpu_cores = r.as_int64(i, 7);
  h.memory_mb = r.as_int64(i, 8);
  h.disk_gb = r.as_int64(i, 9);
  h.address = r.text(i, 10);
  h.runtimes = json_string_array(r.text(i, 11));
  h.status = r.text(i, 12);
  h.last_heartbeat_at = r.text(i, 13);
  h.created_by = r.text(i, 14);
  h.created_at = r.text(i, 15);
  h.updated_at = r.text(i, 16);
  h.agent_token_sealed = r.text(i, 17);
  return h;
}

}  // namespace

boost::json::object host_json(const Host& h, bool with_team_name) {
  boost::json::object o;
  auto str = [&](const char* k, const std::string& v) {
    if (!v.empty()) o[k] = v;
  };
  auto num = [&](const char* k, std::int64_t v) {
    if (v != 0) o[k] = v;
  };
  o["id"] = h.id;
  o["type"] = h.type;
  str("team_id", h.team_id);
  if (with_team_name) str("team_name", h.team_name);
  str("provider", h.provider);
  str("availability_zone", h.availability_zone);
  str("arch", h.arch);
  num("cpu_cores", h.cpu_cores);
  num("memory_mb", h.memory_mb);
  num("disk_gb", h.disk_gb);
  str("address", h.address);
  if (!h.runtimes.empty()) {
    boost::json::array a;
    for (const auto& r : h.runtimes) a.emplace_back(r);
    o["runtimes"] = std::move(a);
  }
  o["status"] = h.status;
  str("last_heartbeat_at", h.last_heartbeat_at);
  str("created_by", h.created_by);
  o["created_at"] = h.created_at;
  o["updated_at"] = h.updated_at;
  return o;
}

std::optional<Host> get_host(pg::Connection& c, const std::string& id) {
  auto r = c.exec("SELECT " + host_columns() + "WHERE h.id = $1", id);
  if (r.empty()) return std::nullopt;
  return row_to_host(r, 0);
}

std::vector<Host> list_hosts(pg::Connection& c, const std::string& team_id) {
  auto r = c.exec("SELECT " + host_columns() +
                      "WHERE ($1::text IS NULL OR (h.type = 'byoc' AND h.team_id = $1)) "
                      "ORDER BY h.created_at, h.id",
                  team_id.empty() ? pg::Param() : pg::Param(team_id));
  std::vector<Host> out;
  for (int i = 0; i < r.rows(); ++i) out.push_back(row_to_host(r, i));
  return out;
}

Host create_host(pg::Connection& c, const std::string& type, const std::string& team_id,
                 const std::string& provider, const std::string& availability_zone,
                 const std::string& created_by) {
  const std::string id = ids::new_id(ids::Kind::kHost);
  c.exec(
      "INSERT INTO hosts (id, type, team_id, provider, availability_zone, created_by) "
      "VALUES ($1, $2, $3, $4, $5, $6)",
      id, type, team_id.empty() ? pg::Param() : pg::Param(team_id), provider, availability_zone,
      created_by.empty() ? pg::Param() : pg::Param(created_by));
  return *get_host(c, id);
}

std::string create_registration_token(pg::Connection& c, const std::string& host_id,
                                      const std::string& created_by, std::chrono::seconds ttl) {
  std::string token = crypto::random_hex(32);
  c.exec(
      "INSERT INTO host_tokens (id, host_id, token_hash, created_by, expires_at) "
      "VALUES ($1, $2, $3, $4, now() + $5 * interval '1 second')",
      ids::new_id(ids::Kind::kHostToken), host_id, crypto::sha256_hex(token),
      created_by.empty() ? pg::Param() : pg::Param(created_by),
      static_cast<std::int64_t>(ttl.count()));
  return token;
}

std::optional<std::string> consume_registration_token(pg::Connection& c, const std::string& token) {
  auto r = c.exec(
      "UPDATE host_tokens SET used_at = now() "
      "WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now() RETURNING host_id",
      crypto::sha256_hex(token));
  if (r.empty()) return std::nullopt;
  return std::string(r.text(0, 0));
}

bool register_host(pg::Connection& c, const std::string& host_id, const HostSpecs& s,
                   const std::string& address, const std::string& agent_token_sealed) {
  auto r = c.exec(
      "UPDATE hosts SET arch = $2, cpu_cores = $3, memory_mb = $4, disk_gb = $5, "
      "runtimes = $6::text[], address = $7, status = 'online', last_heartbeat_at = now(), "
      "metadata = metadata || jsonb_build_object('agent_token_sealed', $8::text) "
      "WHERE id = $1 AND status = 'pending'",
      host_id, s.arch, s.cpu_cores, s.memory_mb, s.disk_gb, text_array(s.runtimes), address,
      agent_token_sealed);
  return r.affected_rows() == 1;
}

std::optional<std::string> heartbeat(pg::Connection& c, const std::string& host_id) {
  auto r = c.exec(
      "UPDATE hosts h SET last_heartbeat_at = now(), "
      "  status = CASE WHEN o.status = 'unreachable' THEN 'online' ELSE o.status END "
      "FROM (SELECT id, status FROM hosts WHERE id = $1 FOR UPDATE) o "
      "WHERE h.id = o.id RETURNING o.status",
      host_id);
  if (r.empty()) return std::nullopt;
  return std::string(r.text(0, 0));
}

std::string issue_refresh_token(pg::Connection& c, const std::string& host_id,
                                std::chrono::seconds ttl) {
  std::string token = crypto::random_hex(32);
  c.exec(
      "INSERT INTO host_refresh_tokens (id, host_id, token_hash, expires_at) "
      "VALUES ($1, $2, $3, now() + $4 * interval '1 second')",
      ids::new_id(ids::Kind::kHostRefreshToken), host_id, crypto::sha256_hex(token),
      static_cast<std::int64_t>(ttl.count()));
  return token;
}

std::optional<std::string> use_refresh_token(pg::Connection& c, const std::string& token) {
  auto r = c.exec(
      "UPDATE host_refresh_tokens SET revoked_at = now() "
      "WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now() RETURNING host_id",
      crypto::sha256_hex(token));
  if (r.empty()) return std::nullopt;
  return std::string(r.text(0, 0));
}

void revoke_refresh_tokens(pg::Connection& c, const std::string& host_id) {
  c.exec(
      "UPDATE host_refresh_tokens SET revoked_at = now() WHERE host_id = $1 AND revoked_at IS NULL",
      host_id);
}

std::vector<Host> mark_unreachable(pg::Connection& c, std::chrono::seconds timeout) {
  auto ids = c.exec(
      "UPDATE hosts SET status = 'unreachable' "
      "WHERE status = 'online' AND (last_heartbeat_at IS NULL OR "
      "      last_heartbeat_at < now() - $1 * interval '1 second') RETURNING id",
      static_cast<std::int64_t>(timeout.count()));
  std::vector<Host> out;
  for (int i = 0; i < ids.rows(); ++i)
    if (auto h = get_host(c, std::string(ids.text(i, 0)))) out.push_back(std::move(*h));
  return out;
}

std::vector<std::string> live_sandboxes_on_host(pg::Connection& c, const std::string& host_id) {
  auto r = c.exec(
      "SELECT id FROM sandboxes WHERE host_id = $1 "
      "AND status IN ('pending', 'starting', 'running', 'paused', 'missing') ORDER BY id",
      host_id);
  std::vector<std::string> out;
  for (int i = 0; i < r.rows(); ++i) out.emplace_back(r.text(i, 0));
  return out;
}

bool delete_host(pg::Connection& c, const std::string& host_id) {
  return c.exec("DELETE FROM hosts WHERE id = $1", host_id).affected_rows() == 1;
}

}  // namespace wrenn::cp::store
