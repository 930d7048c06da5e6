#include "events/channel_store.h"

#include <boost/json.hpp>

#include "crypto/encoding.h"
#include "error.h"
#include "store/sql.h"

namespace wrenn::cp::events {

namespace json = boost::json;

namespace {

std::string columns() {
  return "id, team_id, name, provider, target, array_to_json(events)::text, options::text, "
         "apply_set, secrets_sealed, " +
         store::ts("created_at") + ", " + store::ts("updated_at");
}

std::map<std::string, std::string> string_map(std::string_view text) {
  std::map<std::string, std::string> out;
  if (text.empty()) return out;
  json::value v = json::parse(text);
  if (!v.is_object()) return out;
  for (auto& [k, val] : v.as_object())
    if (val.is_string()) out[std::string(k)] = std::string(val.as_string());
  return out;
}

std::string map_json(const std::map<std::string, std::string>& m) {
  json::object o;
  for (auto& [k, v] : m) o[k] = v;
  return json::serialize(o);
}

std::vector<ChannelRow> rows_of(const pg::Result& r) {
  std::vector<ChannelRow> out;
  for (int i = 0; i < r.rows(); ++i) {
    ChannelRow row;
    row.id = r.text(i, 0);
    row.team_id = r.text(i, 1);
    row.name = r.text(i, 2);
    row.provider = r.text(i, 3);
    row.target = r.text(i, 4);
    row.events = store::json_string_array(r.text(i, 5));
    row.options = string_map(r.text(i, 6));
    if (auto s = r.opt_text(i, 7)) row.apply_set = std::string(*s);
    row.secrets_sealed = r.text(i, 8);
    row.created_at = r.text(i, 9);
    row.updated_at = r.text(i, 10);
    out.push_back(std::move(row));
  }
  return out;
}

}  // namespace

std::string seal_secrets(const crypto::AeadKey& key, const std::string& channel_id,
                         const std::map<std::string, std::string>& secrets) {
  if (secrets.empty()) return {};
  return crypto::base64_encode(crypto::seal(key, map_json(secrets), channel_id));
}

ChannelConfig open_config(const ChannelRow& row, const crypto::AeadKey& key) {
  ChannelConfig c;
  c.id = row.id;
  c.provider = row.provider;
  c.target = row.target;
  c.options = row.options;
  if (row.secrets_sealed.empty()) return c;
  bool ok = true;
  try {
    const std::string plain = crypto::open(key, crypto::base64_decode(row.secrets_sealed), row.id);
    json::value v = json::parse(plain);
    if (!v.is_object()) {
      ok = false;
    } else {
      for (auto& [k, val] : v.as_object()) {
        if (!val.is_string())
          ok = false;
        else
          c.secrets[std::string(k)] = std::string(val.as_string());
      }
    }
  } catch (const std::exception&) {
    ok = false;
  }
  if (!ok)
    throw Error(Code::kDataLoss, "the secrets of channel " + row.id + " (\"" + row.name +
                                     "\") do not open: wrong encryption key or a tampered row");
  return c;
}

std::optional<ChannelRow> get_channel(pg::Connection& c, const std::string& team_id,
                                      const std::string& id) {
  auto rows = rows_of(
      c.exec("SELECT " + columns() + " FROM channels WHERE id = $1 AND team_id = $2", id, team_id));
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

std::optional<ChannelRow> get_channel_any(pg::Connection& c, const std::string& id) {
  auto rows = rows_of(c.exec("SELECT " + columns() + " FROM channels WHERE id = $1", id));
  if (rows.empty()) return std::nullopt;
  return std::move(rows.front());
}

std::vector<ChannelRow> list_channels(pg::Connection& c, const std::string& team_id) {
  return rows_of(c.exec(
      "SELECT " + columns() + " FROM channels WHERE team_id = $1 ORDER BY created_at DESC, id DESC",
      team_id));
}

bool channel_name_taken(pg::Connection& c, const std::string& team_id, const std::string& name,
                        const std::string& except_id) {
  return !c.exec("SELECT 1 FROM channels WHERE team_id = $1 AND name = $2 AND id <> $3", team_id,
                 name, except_id)
              .empty();
}

void insert_channel(pg::Connection& tx, const ChannelRow& row) {
  tx.exec(
      "INSERT INTO channels (id, team_id, name, provider, target, events, options, "
      "secrets_sealed) VALUES ($1, $2, $3, $4, $5, $6::text[], $7::jsonb, $8)",
      row.id, row.team_id, row.name, row.provider, row.target, store::text_array(row.events),
      map_json(row.options), row.secrets_sealed);
}

void update_channel(pg::Connection& tx, const ChannelRow& row) {
  tx.exec(
      "UPDATE channels SET name = $3, target = $4, events = $5::text[], options = $6::jsonb, "
      "secrets_sealed = $7 WHERE id = $1 AND team_id = $2",
      row.id, row.team_id, row.name, row.target, store::text_array(row.events),
      map_json(row.options), row.secrets_sealed);
}

bool delete_channel(pg::Connection& tx, const std::string& team_id, const std::string& id) {
  return tx.exec("DELETE FROM channels WHERE id = $1 AND team_id = $2", id, team_id)
             .affected_rows() > 0;
}

json::array list_deliveries(pg::Connection& c, const std::string& channel_id, std::size_t limit,
                            const std::string& before_id) {
  if (!before_id.empty() &&
      c.exec("SELECT 1 FROM deliveries WHERE id = $1 AND channel_id = $2", before_id, channel_id)
          .empty())
    throw Error(Code::kInvalidArgument,
                "before: " + before_id + " is not a delivery of this channel");
  auto r = c.exec(
      "SELECT d.id, d.event_id, e.type, d.state, d.attempts, " + store::ts("d.next_attempt_at") +
          ", d.last_error, " + store::ts("d.created_at") +
          " FROM deliveries d JOIN events e ON e.id = d.event_id WHERE d.channel_id = $1 "
          "AND ($2 = '' OR (d.created_at, d.id) < (SELECT b.created_at, b.id FROM deliveries b "
          "WHERE b.id = $2)) ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
      channel_id, before_id, static_cast<std::int64_t>(limit));
  json::array out;
  std::vector<std::string> ids;
  std::map<std::string, std::size_t> index;
  for (int i = 0; i < r.rows(); ++i) {
    const std::string id(r.text(i, 0));
    index[id] = out.size();
    ids.push_back(id);
    out.push_back(json::object{{"id", id},
                               {"event_id", r.text(i, 1)},
                               {"event", r.text(i, 2)},
                               {"state", r.text(i, 3)},
                               {"attempts", r.as_int64(i, 4)},
                               {"next_attempt_at", r.text(i, 5)},
                               {"last_error", r.text(i, 6)},
                               {"created_at", r.text(i, 7)},
                               {"attempt_log", json::array{}}});
  }
  if (ids.empty()) return out;
  auto a = c.exec("SELECT delivery_id, attempt, request_id, " + store::ts("started_at") +
                      ", duration_ms, status_code, error, outcome FROM delivery_attempts "
                      "WHERE delivery_id = ANY($1::text[]) ORDER BY delivery_id, attempt",
                  store::text_array(ids));
  for (int i = 0; i < a.rows(); ++i) {
    json::object o{{"attempt", a.as_int64(i, 1)}, {"request_id", a.text(i, 2)},
                   {"started_at", a.text(i, 3)},  {"duration_ms", a.as_int64(i, 4)},
                   {"status_code", nullptr},      {"error", a.text(i, 6)},
                   {"outcome", a.text(i, 7)}};
    if (auto s = a.opt_int64(i, 5)) o["status_code"] = *s;
    out[index.at(std::string(a.text(i, 0)))].as_object()["attempt_log"].as_array().push_back(
        std::move(o));
  }
  return out;
}

}  // namespace wrenn::cp::events
