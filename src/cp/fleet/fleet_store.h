// The declarative fleet's rows (sql/0003_fleet.sql): the recorded desired state
// (fleet_resources), the live view of each declared object in its spec's canonical shape,
// and the writers that make the live rows match a spec.
//
// Contract:
//  - Readers never change anything. Writers run inside the caller's transaction and are
//    idempotent: writing the same spec twice leaves the rows as after the first write.
//  - Live views are canonical spec objects (spec::to_json shape) built from the live rows,
//    so field_changes(recorded spec, live view) is exactly the drift. Fields that have no
//    live counterpart (a template's build steps) are taken from the recorded spec.
//  - Writers take the typed spec and the id of the existing object ("" when there is none
//    and one is created); they return the object's id. They throw ApiError with a message
//    naming the resource when the database refuses (a key hash used elsewhere, a name
//    reserved by a platform template).
// Thread-safety: functions use only the connection they are given.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "api/router.h"
#include "crypto/aead.h"
#include "events/providers.h"
#include "pg/connection.h"
#include "spec/spec.h"

namespace wrenn::cp::fleet {

// The four kinds, in the order creates are applied (deletes run in reverse).
inline const std::vector<std::string> kKinds = {"team", "host", "template", "channel"};

struct Recorded {
  std::string kind;
  std::string name;
  std::string apply_set;
  std::string resource_id;
  std::string spec_text;  // canonical form as applied (JSON text; spec() parses it)
  boost::json::object spec() const;
  std::string spec_hash;
  std::int64_t generation = 0;
};

// Every fleet_resources row, by (kind, name). With specs = false, spec_text is left empty
// (a no-op plan of a large fleet compares hashes only); load_specs() fills it for the rows
// that need it.
std::map<std::pair<std::string, std::string>, Recorded> load_recorded(pg::Connection& c,
                                                                      bool specs = true);
void load_specs(pg::Connection& c,
                std::map<std::pair<std::string, std::string>, Recorded>& recorded,
                const std::vector<std::pair<std::string, std::string>>& keys);

// The fleet's current revision (fleet_revision); with lock, the row is locked until the
// transaction ends (applies serialise on it).
std::int64_t fleet_revision(pg::Connection& c, bool lock = false);

// Live state of recorded objects, by resource id.
struct HostObservation {
  std::string status;  // hosts.status
  std::string last_heartbeat_at;
};
struct LiveState {
  // Recorded resources whose live view differs from the recorded spec: resource id -> the
  // live view, or nullopt when the live object is gone. The comparison runs in PostgreSQL
  // (jsonb equality on the canonical shapes), so a fleet without drift costs one query
  // and no per-resource work here.
  std::map<std::string, std::optional<boost::json::object>> drifted;
  std::map<std::string, HostObservation> unhealthy_hosts;  // declared, neither online nor pending
  std::set<std::string> registered_hosts;  // declared hosts an agent registered as (not pending)
  std::map<std::string, std::vector<std::string>> missing_images;  // template id -> host names
  // Registered hosts (not pending) that no fleet resource declares: id -> name or id.
  std::map<std::string, std::string> undeclared_hosts;
};
LiveState load_live(pg::Connection& c);

// Existing objects that no fleet resource records yet (made through the REST API, or
// seeded), for resources about to be created: (team slug or "", object name) -> id. Team
// slugs matter for templates and channels, whose names are unique per team.
std::map<std::pair<std::string, std::string>, std::string> find_unrecorded(
    pg::Connection& c, const std::string& kind,
    const std::vector<std::pair<std::string, std::string>>& wanted);

// Secret values of a channel, read from the control plane's environment or files; throws
// wrenn::Error(kInvalidArgument) naming the secret and its reference when one cannot be read.
std::map<std::string, std::string> resolve_secrets(const spec::ChannelSpec& ch);

struct WriteContext {
  const crypto::AeadKey& key;  // seals channel secrets
  std::string apply_set;
  // A channel's destination is checked against SSRF (events/targets.h) with these (from
  // CpConfig: allow_private_targets, telegram_api_url) when it is written; a refused one
  // fails the apply with ApiError invalid_request naming the channel.
  events::ProviderSettings channel_settings{};
};

std::string write_team(pg::Connection& tx, const spec::TeamSpec& t, const std::string& id);
// A registered host keeps the address its agent registered with (the control plane reaches
// the agent there); the declared address applies until then.
std::string write_host(pg::Connection& tx, const spec::HostSpec& h, const std::string& id);
std::string write_template(pg::Connection& tx, const spec::TemplateSpec& t, const std::string& id);
std::string write_channel(pg::Connection& tx, const WriteContext& wc, const spec::ChannelSpec& ch,
                          const std::string& id);
// Removes the live object of a recorded resource (teams are soft-deleted: deleted_at, and
// their keys and memberships removed; hosts only when no live sandbox runs there).
void delete_object(pg::Connection& tx, const Recorded& r);

// fleet_resources upsert (generation +1 when the hash changed) and delete.
void record_resource(pg::Connection& tx, const std::string& kind, const std::string& name,
                     const std::string& apply_set, const std::string& resource_id,
                     const boost::json::object& spec, const std::string& hash,
                     std::int64_t revision);
void forget_resource(pg::Connection& tx, const std::string& kind, const std::string& name);

}  // namespace wrenn::cp::fleet
