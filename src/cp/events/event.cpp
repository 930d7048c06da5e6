#include "events/event.h"

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <ctime>

#include "crypto/ids.h"
#include "store/sql.h"

namespace wrenn::cp::events {

namespace json = boost::json;

bool is_event_type(std::string_view type) {
  return std::find(kEventTypes.begin(), kEventTypes.end(), type) != kEventTypes.end();
}

std::optional<std::string> canonical_event_type(std::string_view name) {
  if (is_event_type(name)) return std::string(name);
  static const std::pair<std::string_view, std::string_view> kUpstream[] = {
      {"capsule.created", "capsule.create"},
      {"capsule.running", "capsule.resume"},
      {"capsule.paused", "capsule.pause"},
      {"capsule.destroyed", "capsule.destroy"},
      {"template.snapshot.created", "template.snapshot.create"},
      {"template.snapshot.deleted", "template.snapshot.delete"},
  };
  for (const auto& [up, ours] : kUpstream)
    if (up == name) return std::string(ours);
  return std::nullopt;
}

Actor actor_of(const Caller& caller) {
  Actor a;
  switch (caller.kind) {
    case Caller::Kind::kUser:
      a.type = "user";
      break;
    case Caller::Kind::kApiKey:
      a.type = "api_key";
      break;
    default:
      return a;  // the system: no id, no name
  }
  a.id = caller.actor_id;
  a.name = caller.actor_name;
  return a;
}

std::string now_rfc3339() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json::object payload(const Event& ev, std::string_view timestamp) {
  json::object o;
  o["event"] = ev.type;
  if (!ev.outcome.empty()) o["outcome"] = ev.outcome;
  o["timestamp"] = timestamp;
  o["team_id"] = ev.team_id;
  json::object actor;
  actor["type"] = ev.actor.type;
  if (ev.actor.type != "system") {
    if (!ev.actor.id.empty()) actor["id"] = ev.actor.id;
    if (!ev.actor.name.empty()) actor["name"] = ev.actor.name;
  }
  o["actor"] = std::move(actor);
  json::object res;
  res["id"] = ev.resource_id;
  res["type"] = ev.resource_type;
  o["resource"] = std::move(res);
  if (!ev.metadata.empty()) {
    json::object m;
    for (const auto& [k, v] : ev.metadata) m[k] = v;
    o["metadata"] = std::move(m);
  }
  if (!ev.error.empty()) o["error"] = ev.error;
  return o;
}

std::string record(pg::Connection& tx, const Event& ev) {
  const std::string id = ids::new_id(ids::Kind::kEvent);
  const std::string body = json::serialize(payload(ev, now_rfc3339()));
  // The event, a delivery for every subscribed channel of the team, and the wake-up of
  // the dispatchers and live streams (sent by PostgreSQL only if this transaction commits).
  tx.exec(
      "WITH ev AS (INSERT INTO events (id, team_id, type, payload) "
      "            VALUES ($1, $2, $3, $4::json) RETURNING id), "
      "d AS (INSERT INTO deliveries (id, event_id, channel_id) "
      "      SELECT 'dl-' || substr(md5(random()::text || c.id), 1, 25), ev.id, c.id "
      "      FROM ev, channels c WHERE c.team_id = $2 AND $3 = ANY (c.events)) "
      "SELECT pg_notify($5, id) FROM ev",
      id, ev.team_id, ev.type, body, std::string(kEventsChannel));
  return id;
}

void publish_capsule_state(pg::Connection& c, const std::string& team_id,
                           const std::string& capsule_id, std::string_view state) {
  json::object o;
  o["event"] = "capsule.state.changed";
  o["timestamp"] = now_rfc3339();
  o["team_id"] = team_id;
  json::object res;
  res["id"] = capsule_id;
  res["type"] = "sandbox";
  o["resource"] = std::move(res);
  o["state"] = state;
  c.exec("SELECT pg_notify($1, $2)", std::string(kLiveChannel), json::serialize(o));
}

Event capsule_event(std::string_view action, const Caller& caller, const std::string& team_id,
                    const std::string& capsule_id, const std::string& error) {
  Event ev;
  ev.type = "capsule." + std::string(action);
  ev.outcome = error.empty() ? "success" : "error";
  ev.error = error;
  ev.team_id = team_id;
  ev.actor = actor_of(caller);
  ev.resource_id = capsule_id;
  ev.resource_type = "sandbox";
  return ev;
}

Event host_event(std::string_view type, const std::string& host_id, const std::string& team_id) {
  Event ev;
  ev.type = type;
  ev.team_id = team_id.empty() ? std::string(store::kPlatformTeamId) : team_id;
  ev.resource_id = host_id;
  ev.resource_type = "host";
  return ev;
}

}  // namespace wrenn::cp::events
