// Lifecycle events: what a team can subscribe to, the payload every channel receives, and
// the outbox write that makes an event exist exactly when its state change committed.
//
// Contract:
//  - Subscribable types (kEventTypes): capsule.create, capsule.pause, capsule.resume,
//    capsule.destroy, template.snapshot.create, template.snapshot.delete (each with outcome
//    "success" or "error"), host.up, host.down (no outcome).
//  - record(tx, ev) inserts the event into `events` and one pending row into `deliveries`
//    for every channel of ev.team_id subscribed to ev.type, and NOTIFYs kEventsChannel
//    with the event id. Call it inside the transaction of the state change: if that
//    transaction rolls back, the event never existed; PostgreSQL delivers the NOTIFY only
//    at commit. Throws what the SQL throws (so a failed write fails the change).
//  - payload(ev, id, timestamp) is the JSON body every channel gets (webhooks verbatim,
//    chat providers as text): event, outcome (omitted for host events), timestamp
//    (RFC 3339 UTC, seconds), team_id, actor {type: user | api_key | system, id, name}
//    (id and name omitted for the system), resource {id, type: sandbox | snapshot | host},
//    metadata (string map, omitted when empty), error (omitted when empty).
//  - publish_capsule_state(c, team, capsule, state) sends a transient event
//    (capsule.state.changed: not subscribable, never stored) to the live streams of every
//    replica through pg_notify(kLiveChannel). Inside a transaction it is sent at commit
//    (so "starting" is never seen for a create that rolled back); it throws like any
//    statement.
#pragma once

#include <array>
#include <boost/json/object.hpp>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "api/router.h"
#include "pg/connection.h"

namespace wrenn::cp::events {

inline constexpr std::array<std::string_view, 8> kEventTypes = {"capsule.create",
                                                                "capsule.pause",
                                                                "capsule.resume",
                                                                "capsule.destroy",
                                                                "template.snapshot.create",
                                                                "template.snapshot.delete",
                                                                "host.up",
                                                                "host.down"};

// LISTEN/NOTIFY channels: durable events (payload: the event id) and transient ones
// (payload: the JSON of the event, at most a few hundred bytes).
inline constexpr const char* kEventsChannel = "wrenn_events";
inline constexpr const char* kLiveChannel = "wrenn_live";

// True for a subscribable type.
bool is_event_type(std::string_view type);
// The subscribable type for an upstream name (capsule.created -> capsule.create,
// capsule.running -> capsule.resume, capsule.paused -> capsule.pause, capsule.destroyed ->
// capsule.destroy, template.snapshot.created/.deleted -> .create/.delete), or the name
// itself when it is already ours; nullopt for anything else.
std::optional<std::string> canonical_event_type(std::string_view name);

struct Actor {
  std::string type = "system";  // user | api_key | system
  std::string id;               // "usr-…" / "key-…"; empty for the system
  std::string name;             // email / key name; empty for the system
};
// The actor of a Caller: kUser -> user, kApiKey -> api_key, anything else -> system.
Actor actor_of(const Caller& caller);

struct Event {
  std::string type;     // one of kEventTypes
  std::string outcome;  // "success" | "error"; empty for host events
  std::string team_id;
  Actor actor;
  std::string resource_id;
  std::string resource_type;                    // sandbox | snapshot | host
  std::map<std::string, std::string> metadata;  // reason, inferred, ...
  std::string error;                            // with outcome "error"
};

// The delivered body of an event (see the contract above).
boost::json::object payload(const Event& ev, std::string_view timestamp);

// Writes the event and its pending deliveries; returns the event id ("ev-…").
std::string record(pg::Connection& tx, const Event& ev);

// A transient capsule state change: {"event":"capsule.state.changed","timestamp",
// "team_id","resource":{"id","type":"sandbox"},"state"} with state starting | pausing |
// resuming.
void publish_capsule_state(pg::Connection& c, const std::string& team_id,
                           const std::string& capsule_id, std::string_view state);

// An event about a sandbox: type "capsule.<action>", outcome success (error when `error`
// is not empty), resource {capsule_id, sandbox}, actor from caller.
Event capsule_event(std::string_view action, const Caller& caller, const std::string& team_id,
                    const std::string& capsule_id, const std::string& error = {});

// host.up / host.down of a host, by the system, for the host's team (a shared host's:
// the platform team's).
Event host_event(std::string_view type, const std::string& host_id, const std::string& team_id);

// RFC 3339 UTC with seconds ("2026-11-23T15:30:00Z") of now.
std::string now_rfc3339();

}  // namespace wrenn::cp::events
