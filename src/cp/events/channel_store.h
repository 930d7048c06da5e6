// Notification channels in PostgreSQL (table channels, sql/0003_fleet.sql + 0004): rows,
// their sealed secrets, and the delivery log of each channel.
//
// Contract:
//  - Secrets are stored only sealed: secrets_sealed = base64(AES-256-GCM seal of the JSON
//    object {name: value}) with the channel id as associated data, so a sealed blob cannot
//    be moved to another row. The same format for channels made by the REST API and by
//    `wrennctl apply` (fleet_store.cpp uses seal_secrets()).
//  - open_config() opens them for delivery; Error(data_loss) when they do not open (wrong
//    key, tampered row) — the message names the channel, never a value.
//  - Every read is scoped to a team except get_channel_any (the dispatcher's).
//  - Writers run in the caller's transaction and throw what the SQL throws (a duplicate
//    (team, name) is a unique violation: check channel_name_taken() first for a clear
//    message).
#pragma once

#include <boost/json/array.hpp>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "crypto/aead.h"
#include "events/providers.h"
#include "pg/connection.h"

namespace wrenn::cp::events {

struct ChannelRow {
  std::string id;
  std::string team_id;
  std::string name;
  std::string provider;
  std::string target;
  std::vector<std::string> events;
  std::map<std::string, std::string> options;
  std::optional<std::string> apply_set;  // set: declared in specs, read-only through REST
  std::string secrets_sealed;
  std::string created_at;  // RFC 3339
  std::string updated_at;
};

std::string seal_secrets(const crypto::AeadKey& key, const std::string& channel_id,
                         const std::map<std::string, std::string>& secrets);
ChannelConfig open_config(const ChannelRow& row, const crypto::AeadKey& key);

std::optional<ChannelRow> get_channel(pg::Connection& c, const std::string& team_id,
                                      const std::string& id);
std::optional<ChannelRow> get_channel_any(pg::Connection& c, const std::string& id);
std::vector<ChannelRow> list_channels(pg::Connection& c, const std::string& team_id);

// True when the team has a channel of that name other than except_id.
bool channel_name_taken(pg::Connection& c, const std::string& team_id, const std::string& name,
                        const std::string& except_id = {});
// Inserts row (id, team_id, name, provider, target, events, options, secrets_sealed; REST
// channels have no apply_set).
void insert_channel(pg::Connection& tx, const ChannelRow& row);
// Stores name, events, target, options and secrets_sealed of the team's row.id.
void update_channel(pg::Connection& tx, const ChannelRow& row);
// False when the team has no such channel.
bool delete_channel(pg::Connection& tx, const std::string& team_id, const std::string& id);

// The delivery log of a channel, newest first: at most `limit` deliveries older than the
// delivery `before_id` (empty: from the newest), each {id, event_id, event, state,
// attempts, next_attempt_at, last_error, created_at, attempt_log:[{attempt, request_id,
// started_at, duration_ms, status_code (null: no answer), error, outcome}]}. Error
// (invalid_argument) when before_id names no delivery of the channel.
boost::json::array list_deliveries(pg::Connection& c, const std::string& channel_id,
                                   std::size_t limit, const std::string& before_id);

}  // namespace wrenn::cp::events
