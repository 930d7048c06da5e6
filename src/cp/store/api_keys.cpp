#include "store/api_keys.h"

#include "crypto/hash.h"
#include "crypto/ids.h"
#include "error.h"

namespace wrenn::cp::store {

namespace {

ApiKey insert(pg::Connection& c, const std::string& team_id, const std::string& name,
              const std::string& plaintext, const std::string& created_by) {
  ApiKey k;
  k.id = ids::new_id(ids::Kind::kApiKey);
  k.team_id = team_id;
  k.name = name;
  k.key_prefix = ids::api_key_prefix(plaintext);
  c.exec(
      "INSERT INTO team_api_keys (id, team_id, name, key_hash, key_prefix, created_by) "
      "VALUES ($1, $2, $3, $4, $5, $6)",
      k.id, team_id, name, crypto::sha256_hex(plaintext), k.key_prefix,
      created_by.empty() ? pg::Param() : pg::Param(created_by));
  return k;
}

}  // namespace

NewApiKey create_api_key(pg::Connection& c, const std::string& team_id, const std::string& name,
                         const std::string& created_by) {
  NewApiKey out;
  out.plaintext = ids::new_api_key();
  out.key = insert(c, team_id, name, out.plaintext, created_by);
  return out;
}

ApiKey adopt_api_key(pg::Connection& c, const std::string& team_id, const std::string& name,
                     const std::string& plaintext) {
  if (!ids::looks_like_api_key(plaintext))
    throw Error(Code::kInvalidArgument, "not an API key (wrn_ followed by 32 hex characters)");
  return insert(c, team_id, name, plaintext, {});
}

bool team_has_api_key(pg::Connection& c, const std::string& team_id) {
  return !c.exec("SELECT 1 FROM team_api_keys WHERE team_id = $1 LIMIT 1", team_id).empty();
}

std::optional<ApiKeyMatch> find_api_key_by_hash(pg::Connection& c, const std::string& key_hash) {
  auto r = c.exec(
      "SELECT k.id, k.team_id, k.name, k.key_prefix, "
      "       k.last_used IS NULL OR k.last_used < now() - interval '1 minute' "
      "FROM team_api_keys k JOIN teams t ON t.id = k.team_id "
      "WHERE k.key_hash = $1 AND t.deleted_at IS NULL",
      key_hash);
  if (r.empty()) return std::nullopt;
  ApiKeyMatch m;
  m.key.id = r.text(0, 0);
  m.key.team_id = r.text(0, 1);
  m.key.name = r.text(0, 2);
  m.key.key_prefix = r.text(0, 3);
  m.stale_last_used = r.as_bool(0, 4);
  return m;
}

void touch_api_key(pg::Connection& c, const std::string& id) {
  c.exec(
      "UPDATE team_api_keys SET last_used = now() WHERE id = $1 "
      "AND (last_used IS NULL OR last_used < now() - interval '1 minute')",
      id);
}

}  // namespace wrenn::cp::store
