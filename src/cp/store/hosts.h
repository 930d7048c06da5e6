// Host agents in PostgreSQL: the hosts table, their one-time registration tokens
// (host_tokens) and rotating refresh tokens (host_refresh_tokens). Tokens are stored only
// as sha256_hex; the plaintext exists once, in the value a function returns. The agent's
// bearer token (the interim CP -> agent credential until mutual TLS) is stored sealed
// (AES-256-GCM, crypto/aead.h, with the host id as associated data) in
// hosts.metadata->>'agent_token_sealed' (base64); never in plain text and never returned
// by the API.
#pragma once

#include <boost/json/object.hpp>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pg/connection.h"

namespace wrenn::cp::store {

struct Host {
  std::string id;  // "host-…"
  std::string type = "regular";
  std::string team_id;  // BYOC hosts only
  std::string team_name;
  std::string provider;
  std::string availability_zone;
  std::string arch;
  std::int64_t cpu_cores = 0;
  std::int64_t memory_mb = 0;
  std::int64_t disk_gb = 0;
  std::string address;  // "ip:port" of the agent API; "" until registered
  std::vector<std::string> runtimes;
  std::string status;             // pending | online | unreachable | draining | offline
  std::string last_heartbeat_at;  // RFC 3339 or ""
  std::string created_by;         // "usr-…" or ""
  std::string created_at;
  std::string updated_at;
  std::string agent_token_sealed;  // base64 of the sealed token, "" when none
};

// The API's Host object (reference §3.10): empty strings and zero numbers omitted;
// team_name only when with_team_name.
boost::json::object host_json(const Host& h, bool with_team_name = false);

std::optional<Host> get_host(pg::Connection& c, const std::string& id);
// All hosts, oldest first; team_id non-empty: only that team's BYOC hosts.
std::vector<Host> list_hosts(pg::Connection& c, const std::string& team_id = {});

// Inserts a pending host. created_by: "usr-…" or "".
Host create_host(pg::Connection& c, const std::string& type, const std::string& team_id,
                 const std::string& provider, const std::string& availability_zone,
                 const std::string& created_by);

// A one-time registration token (64 hex) for the host, valid for ttl.
std::string create_registration_token(pg::Connection& c, const std::string& host_id,
                                      const std::string& created_by, std::chrono::seconds ttl);
// Marks the token used and returns its host, or nullopt when the token is unknown, used or
// expired.
std::optional<std::string> consume_registration_token(pg::Connection& c, const std::string& token);

struct HostSpecs {
  std::string arch;
  std::int64_t cpu_cores = 0;
  std::int64_t memory_mb = 0;
  std::int64_t disk_gb = 0;
  std::vector<std::string> runtimes;
};
// Stores specs, address and the sealed agent token of a pending host and makes it online
// (last_heartbeat_at = now). False when the host does not exist or is not pending.
bool register_host(pg::Connection& c, const std::string& host_id, const HostSpecs& specs,
                   const std::string& address, const std::string& agent_token_sealed);

// Records a heartbeat: last_heartbeat_at = now, unreachable -> online. Returns the status
// before, nullopt when the host does not exist. A pending host stays pending.
std::optional<std::string> heartbeat(pg::Connection& c, const std::string& host_id);

// A new refresh token (64 hex) for the host, valid for ttl.
std::string issue_refresh_token(pg::Connection& c, const std::string& host_id,
                                std::chrono::seconds ttl);
// Rotation: the valid (unrevoked, unexpired) token is revoked and its host returned; nullopt
// when the token is not valid.
std::optional<std::string> use_refresh_token(pg::Connection& c, const std::string& token);
void revoke_refresh_tokens(pg::Connection& c, const std::string& host_id);

// Online hosts whose last heartbeat is older than timeout (or missing) become unreachable;
// returns them.
std::vector<Host> mark_unreachable(pg::Connection& c, std::chrono::seconds timeout);

// Sandboxes on the host that still exist somewhere (pending, starting, running, paused,
// missing), by id.
std::vector<std::string> live_sandboxes_on_host(pg::Connection& c, const std::string& host_id);

// Deletes the host row (tokens cascade; sandboxes keep their rows with host_id NULL).
bool delete_host(pg::Connection& c, const std::string& host_id);

}  // namespace wrenn::cp::store
