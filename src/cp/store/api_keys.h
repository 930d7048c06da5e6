// Team API keys ("wrn_" + 32 hex). Only sha256_hex(key) is stored; the plaintext exists
// once, in the value create_api_key returns.
#pragma once

#include <optional>
#include <string>

#include "pg/connection.h"

namespace wrenn::cp::store {

struct ApiKey {
  std::string id;  // "key-…"
  std::string team_id;
  std::string name;
  std::string key_prefix;  // first 10 characters ("wrn_" + 6 hex)
};

struct NewApiKey {
  ApiKey key;
  std::string plaintext;  // shown once, never stored or logged
};

// Creates a key for the team. created_by: a "usr-…" id or empty.
NewApiKey create_api_key(pg::Connection& c, const std::string& team_id, const std::string& name,
                         const std::string& created_by = {});

// Stores an existing plaintext key (e.g. one found in $WRENN_DIR/admin-api-key whose row
// was lost) for the team. Error(invalid_argument) unless it has the API key shape.
ApiKey adopt_api_key(pg::Connection& c, const std::string& team_id, const std::string& name,
                     const std::string& plaintext);

bool team_has_api_key(pg::Connection& c, const std::string& team_id);

// The key with this sha256 hex whose team is not deleted. stale_last_used: last_used is
// unset or more than a minute old (the caller then calls touch_api_key).
struct ApiKeyMatch {
  ApiKey key;
  bool stale_last_used = false;
};
std::optional<ApiKeyMatch> find_api_key_by_hash(pg::Connection& c, const std::string& key_hash);
void touch_api_key(pg::Connection& c, const std::string& id);

}  // namespace wrenn::cp::store
